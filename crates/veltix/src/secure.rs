//! The handshakes of one connection, in order: TLS (when configured), the Veltix handshake,
//! then the server's authenticate hook. All three share one deadline, `handshake_timeout`.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::TlsStream;
use veltix_proto::{Generation, Handshake, HandshakeConfig};

use crate::auth::{AuthDecision, AuthRequest, Authenticator};
use crate::conn::{flush_handshake, run_handshake, Transport};
use crate::observe::Event;
use crate::stats::{add, throttled, Counters, Throttle};
use crate::tls::{describe, TlsInfo};
use crate::{ClientConfig, Error, Result, ServerConfig};

/// Longest refusal reason sent to a client (Python reads handshake messages up to 30 KiB).
const MAX_REASON: usize = 1024;
/// Longest reason written to the log.
const MAX_LOGGED_REASON: usize = 200;

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Everything the server knows about its side of the handshakes.
pub(crate) struct ServerSide<'a> {
    pub cfg: &'a ServerConfig,
    pub acceptor: Option<&'a tokio_rustls::TlsAcceptor>,
    pub auth: Option<Authenticator>,
    /// The server's counters: failures go to `Stats::handshake_failures`.
    pub counters: &'a Counters,
    /// The server's throttle of handshake-failure lines (one line each, a few per second).
    pub throttle: &'a Throttle,
    pub peer: SocketAddr,
}

/// A client that passed every handshake.
pub(crate) struct Accepted {
    pub transport: Transport,
    pub leftover: Vec<u8>,
    pub peer_version: String,
    pub tls: Option<TlsInfo>,
    pub tags: HashMap<String, Value>,
}

/// A client that did not: the reason is logged already.
pub(crate) enum Refused {
    /// The connection is closed.
    Closed,
    /// Closed, but the sync authenticate hook is still running on the blocking pool: the
    /// connection slot is released when it returns (this fires).
    HookRunning(oneshot::Receiver<()>),
}

async fn handshake_on(transport: &mut Transport, hs: &mut Handshake) -> Result<Vec<u8>> {
    match transport {
        Transport::Plain(s) => run_handshake(s, hs).await,
        Transport::Tls(s) => run_handshake(&mut **s, hs).await,
    }
}

async fn flush_on(transport: &mut Transport, hs: &mut Handshake) -> Result<()> {
    match transport {
        Transport::Plain(s) => flush_handshake(s, hs).await,
        Transport::Tls(s) => flush_handshake(&mut **s, hs).await,
    }
}

async fn shutdown(transport: &mut Transport) {
    let _ = match transport {
        Transport::Plain(s) => s.shutdown().await,
        Transport::Tls(s) => s.shutdown().await,
    };
}

/// TLS accept, Veltix handshake, authenticate hook, within `handshake_timeout` of the accept.
pub(crate) async fn server_handshake(
    side: ServerSide<'_>,
    stream: TcpStream,
) -> std::result::Result<Accepted, Refused> {
    let cfg = side.cfg;
    let peer = side.peer;
    // One bounded line per failure (throttled per server), with the peer's address.
    let log = |what: &str| {
        throttled!(
            side.throttle,
            peer,
            summary: "{count} handshakes failed in {secs} s",
            "{}; closing",
            cut(what, MAX_LOGGED_REASON)
        );
    };
    let deadline = Instant::now() + cfg.settings.handshake_timeout;
    let hook = &side.counters.observer;
    hook.emit(|| Event::HandshakeStarted { peer });
    let hs_failed = |error: Error| {
        hook.emit(|| Event::HandshakeFailed {
            peer,
            error: &error,
        })
    };
    let mut transport = match side.acceptor {
        None => Transport::Plain(stream),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(s)) => Transport::Tls(Box::new(TlsStream::Server(s))),
            Ok(Err(e)) => {
                add(&side.counters.hs_tls, 1);
                log(&format!("TLS handshake failed: {}", describe(&e)));
                hs_failed(Error::Tls(describe(&e)));
                return Err(Refused::Closed);
            }
            Err(_) => {
                add(&side.counters.hs_tls, 1);
                log(&format!(
                    "TLS handshake timed out after {:?}",
                    cfg.settings.handshake_timeout
                ));
                hs_failed(Error::HandshakeTimeout(cfg.settings.handshake_timeout));
                return Err(Refused::Closed);
            }
        },
    };
    let tls = match &transport {
        Transport::Tls(s) => match &**s {
            TlsStream::Server(s) => Some(TlsInfo::of(s.get_ref().1)),
            TlsStream::Client(s) => Some(TlsInfo::of(s.get_ref().1)),
        },
        Transport::Plain(_) => None,
    };
    let hs_cfg = HandshakeConfig {
        timestamp_ms: crate::rt::monotonic_ms(),
        ..HandshakeConfig::new(cfg.settings.generation)
    };
    let failed_handshake = |e: Error| {
        side.counters.handshake_failed(&e);
        log(&e.to_string());
        hs_failed(e);
        Refused::Closed
    };
    let hs = match side.auth {
        Some(_) => Handshake::server_with_verdict(hs_cfg),
        None => Handshake::server(hs_cfg),
    };
    let mut hs = hs.map_err(|e| failed_handshake(e.into()))?;
    let timeout = || Error::HandshakeTimeout(cfg.settings.handshake_timeout);
    let leftover = match tokio::time::timeout_at(deadline, handshake_on(&mut transport, &mut hs))
        .await
        .unwrap_or_else(|_| Err(timeout()))
    {
        Ok(leftover) => leftover,
        Err(e) => return Err(failed_handshake(e)),
    };
    let peer_version = hs.peer_version().unwrap_or("").to_string();
    let Some(auth) = side.auth else {
        hook.emit(|| Event::HandshakeDone {
            peer,
            peer_version: &peer_version,
        });
        return Ok(Accepted {
            transport,
            leftover,
            peer_version,
            tls,
            tags: HashMap::new(),
        });
    };
    let request = AuthRequest {
        peer,
        meta: hs
            .peer_hello()
            .and_then(|h| h.get("meta"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        peer_version: peer_version.clone(),
        tls: tls.clone(),
    };
    let failed = |what: &str| {
        add(&side.counters.hs_auth, 1);
        log(&format!("authentication failed: {what}"));
        hs_failed(Error::Rejected(format!("authentication failed: {what}")));
    };
    // (decision, already counted and logged)
    let (decision, counted) = match auth {
        Authenticator::Sync(f) => {
            let (done_tx, done_rx) = oneshot::channel::<()>();
            let hook = tokio::task::spawn_blocking(move || {
                let _done = done_tx;
                f(&request)
            });
            match tokio::time::timeout_at(deadline, hook).await {
                Ok(Ok(d)) => (d, false),
                Ok(Err(_)) => {
                    failed("the authenticate hook panicked");
                    (AuthDecision::reject("authentication failed"), true)
                }
                Err(_) => {
                    failed(&format!(
                        "the authenticate hook did not answer within {:?}",
                        cfg.settings.handshake_timeout
                    ));
                    return Err(Refused::HookRunning(done_rx));
                }
            }
        }
        Authenticator::Async(f) => {
            let mut hook = tokio::spawn(f(request));
            match tokio::time::timeout_at(deadline, &mut hook).await {
                Ok(Ok(d)) => (d, false),
                Ok(Err(_)) => {
                    failed("the authenticate hook panicked");
                    (AuthDecision::reject("authentication failed"), true)
                }
                Err(_) => {
                    hook.abort();
                    failed(&format!(
                        "the authenticate hook did not answer within {:?}",
                        cfg.settings.handshake_timeout
                    ));
                    return Err(Refused::Closed);
                }
            }
        }
    };
    match decision {
        AuthDecision::Accept(tags) => {
            hs.accept();
            match tokio::time::timeout_at(deadline, flush_on(&mut transport, &mut hs))
                .await
                .unwrap_or_else(|_| Err(timeout()))
            {
                Ok(()) => {
                    hook.emit(|| Event::HandshakeDone {
                        peer,
                        peer_version: &peer_version,
                    });
                    Ok(Accepted {
                        transport,
                        leftover,
                        peer_version,
                        tls,
                        tags,
                    })
                }
                Err(e) => Err(failed_handshake(e)),
            }
        }
        AuthDecision::Reject(reason) => {
            if !counted {
                failed(&format!("rejected: {reason}"));
            }
            if cfg.settings.generation == Generation::Gen3 {
                // Cut to MAX_REASON bytes, the refusal always fits a handshake message.
                let _ = hs.reject(cut(&reason, MAX_REASON));
                // The refusal is best effort: bounded by the deadline (and 2 s at least, so a
                // hook that used the whole deadline still gets its reason delivered).
                let until = deadline.max(Instant::now() + std::time::Duration::from_secs(2));
                let _ = tokio::time::timeout_at(until, async {
                    let _ = flush_on(&mut transport, &mut hs).await;
                    shutdown(&mut transport).await;
                })
                .await;
            }
            Err(Refused::Closed)
        }
    }
}

/// Client side: TLS connect (when configured) and the Veltix handshake with our `meta`, within
/// `handshake_timeout`. Returns the transport, the bytes read past the handshake and the
/// server's announced version.
pub(crate) async fn client_handshake(
    cfg: &ClientConfig,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    stream: TcpStream,
) -> Result<(Transport, Vec<u8>, String)> {
    let work = async {
        let mut transport = match tls {
            None => Transport::Plain(stream),
            Some((connector, name)) => {
                let s = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| Error::Tls(describe(&e)))?;
                Transport::Tls(Box::new(TlsStream::Client(s)))
            }
        };
        let mut hs = Handshake::client(HandshakeConfig {
            timestamp_ms: crate::rt::monotonic_ms(),
            meta: cfg.meta.clone(),
            ..HandshakeConfig::new(cfg.settings.generation)
        })?;
        let leftover = handshake_on(&mut transport, &mut hs)
            .await
            .map_err(tls_alert)?;
        let version = hs.peer_version().unwrap_or("").to_string();
        Ok((transport, leftover, version))
    };
    match tokio::time::timeout(cfg.settings.handshake_timeout, work).await {
        Err(_) => Err(Error::HandshakeTimeout(cfg.settings.handshake_timeout)),
        Ok(r) => r,
    }
}

/// A TLS 1.3 server refuses a client certificate after the client's side of the TLS handshake
/// is done: the alert arrives during the Veltix handshake, as an I/O error carrying a rustls
/// error. Reported as the TLS failure it is.
fn tls_alert(e: Error) -> Error {
    match e {
        Error::Io(io) if io.get_ref().is_some_and(|r| r.is::<rustls::Error>()) => {
            Error::Tls(describe(&io))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(super::cut("héllo", 2), "h");
        assert_eq!(super::cut("abc", 10), "abc");
    }
}
