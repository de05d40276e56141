//! Connection-level events for observers: handshakes, PINGs and PONGs, server-full refusals,
//! accept errors and protocol violations, as they happen (the events Python Veltix 3.3.0 puts
//! on its bus, which `veltix_rs` forwards).
//!
//! Set one observer per [`Server`](crate::Server) or [`Client`](crate::Client) with
//! [`Server::on_event`](crate::Server::on_event) / [`Client::on_event`](crate::Client::on_event).
//! It is called **inline on the I/O thread** that saw the event, so it must be quick and must
//! not block (hand the event to a channel if it needs to do more). Until one is set, each call
//! site costs one atomic load; events are only built when an observer exists. A panic in the
//! observer is logged and contained.
//!
//! This module defines the events and the observer slot (`Hook`) and depends on nothing but
//! `error`: the faces' `on_event` methods live with the faces, in `server` and `client`.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use veltix::observe::Event;
//! use veltix::{Client, ClientConfig, Server, ServerConfig};
//!
//! let server = Server::new(ServerConfig::local());
//! let done = Arc::new(AtomicUsize::new(0));
//! let seen = done.clone();
//! server.on_event(move |e| {
//!     if let Event::HandshakeDone { .. } = e {
//!         seen.fetch_add(1, Ordering::SeqCst);
//!     }
//! });
//! let addr = server.start()?;
//! let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()));
//! client.connect()?;
//! client.ping_server(std::time::Duration::from_secs(5))?;
//! client.disconnect();
//! server.close_all();
//! assert_eq!(done.load(Ordering::SeqCst), 1);
//! # Ok::<(), veltix::Error>(())
//! ```

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::Error;

/// Something that happened on a connection (or on a server's listener). Borrowed: copy out what
/// you keep. More variants may be added.
#[non_exhaustive]
#[derive(Debug)]
pub enum Event<'a> {
    /// A PING arrived from `peer` (before its PONG is queued).
    PingReceived {
        /// The peer that sent it.
        peer: SocketAddr,
        /// Its request id (the PONG carries the same).
        request_id: u32,
    },
    /// The automatic PONG reply to a PING was queued.
    PongSent {
        /// The peer it goes to.
        peer: SocketAddr,
        /// The request id of the PING it answers.
        request_id: u32,
    },
    /// A handshake begins (server: after the accept; client: after the TCP connect).
    HandshakeStarted {
        /// The other side.
        peer: SocketAddr,
    },
    /// The handshake (TLS, Veltix and the authenticate hook, when configured) succeeded.
    HandshakeDone {
        /// The other side.
        peer: SocketAddr,
        /// The Veltix version the peer announced.
        peer_version: &'a str,
    },
    /// The handshake failed; the connection is closed. `error` is what failed:
    /// [`Error::ServerFull`] / [`Error::Rejected`] (refused by the server, or by this server's
    /// authenticate hook), [`Error::Handshake`] (incompatible version, bad message, no
    /// acknowledgement), [`Error::HandshakeTimeout`], [`Error::Tls`], [`Error::Io`].
    HandshakeFailed {
        /// The other side.
        peer: SocketAddr,
        /// Why.
        error: &'a Error,
    },
    /// Server: a connection was refused because `max_connections` was reached (it is sent the
    /// `server_full` refusal and closed).
    ServerFull {
        /// The refused peer.
        peer: SocketAddr,
        /// Connections open at that moment.
        current: usize,
        /// The configured `max_connections`.
        max: usize,
    },
    /// Server: `accept()` failed (the listener backs off and retries).
    AcceptFailed {
        /// The error.
        error: &'a std::io::Error,
    },
    /// The peer sent a frame that is refused (bad magic, CRC mismatch, too large, unknown or
    /// reserved type, truncated): the connection is closed.
    ProtocolViolation {
        /// The peer.
        peer: SocketAddr,
        /// What was wrong with the frame.
        reason: &'a crate::proto::Rejection,
    },
    /// Client: a reconnect attempt succeeded after
    /// [`Client::stop_retry`](crate::Client::stop_retry) (or `disconnect()`) was called during
    /// it, so the new connection was closed again at once (Python Veltix 3.3.0's
    /// `ReconnectEvent.CANCELLED`). A `stop_retry()` between attempts ends the loop without this
    /// event.
    ReconnectCancelled {
        /// The server.
        peer: SocketAddr,
        /// The attempt (1-based) that was cancelled.
        attempt: u32,
    },
}

type Observer = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// The observer slot of one server or client (shared with its connections).
#[derive(Default)]
pub(crate) struct Hook {
    set: AtomicBool,
    observer: RwLock<Option<Observer>>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("set", &self.set.load(Ordering::Relaxed))
            .finish()
    }
}

impl Hook {
    /// True once an observer is set (one atomic load: the cost of every call site without one).
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Calls the observer with the event `make` builds, if there is an observer.
    #[inline]
    pub(crate) fn emit<'a>(&self, make: impl FnOnce() -> Event<'a>) {
        if self.is_set() {
            self.call(&make());
        }
    }

    #[cold]
    fn call(&self, event: &Event<'_>) {
        let f = self
            .observer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(f) = f {
            if catch_unwind(AssertUnwindSafe(|| f(event))).is_err() {
                tracing::error!("the veltix event observer panicked (event: {event:?})");
            }
        }
    }

    /// Sets the observer (`on_event` of each face), replacing any previous one.
    pub(crate) fn replace(&self, f: Observer) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(f);
        self.set.store(true, Ordering::Release);
    }
}
