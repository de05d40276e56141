//! TLS and authentication, end to end on loopback, with certificates generated per run (rcgen):
//! round trips on both faces and both wire generations, mutual TLS, every way a TLS handshake
//! can be refused (each within its deadline, with a log line, other clients unaffected), bad
//! certificate files, and the authenticate hook (accept with tags, reject, time out).
//!
//! Every wait is on an event with a generous timeout; every server binds port 0.

#[path = "support/certs.rs"]
mod certs;
#[path = "support/logs.rs"]
mod logs;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certs::{Ca, TempDir};
use logs::logs;
use veltix::auth::{AuthDecision, AuthRequest};
use veltix::tls::{ClientTls, ServerTls, TlsVersion};
use veltix::{
    AsyncClient, AsyncServer, Client, ClientConfig, ClientInfo, Error, Generation, MessageType,
    Request, Server, ServerConfig,
};

const ECHO: MessageType = MessageType::new(200, "echo");
const NOTE: MessageType = MessageType::new(201, "note");
/// Generous: what a wait for an event allows.
const T: Duration = Duration::from_secs(10);
/// The servers' handshake deadline in refusal tests.
const HS: Duration = Duration::from_millis(700);

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------------------
// Captured logs (tests/support/logs.rs)

/// Waits for a log line that names `peer` and contains `needle`.
fn wait_log(peer: SocketAddr, needle: &str) -> String {
    logs()
        .wait_line(0, Some(peer), needle)
        .unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------------------------------------
// Set-up

struct Pki {
    ca: Ca,
    dir: TempDir,
    server: certs::Pem,
}

fn pki() -> Pki {
    let ca = Ca::new("veltix test CA");
    let server = ca.server();
    Pki {
        dir: TempDir::new("tls"),
        ca,
        server,
    }
}

impl Pki {
    fn server_tls(&self) -> ServerTls {
        ServerTls::from_pem(self.server.cert.clone(), self.server.key.clone())
    }
    fn client_tls(&self) -> ClientTls {
        ClientTls::ca_pem(self.ca.pem.cert.clone())
    }
}

fn tls_server_config(p: &Pki, generation: Generation) -> ServerConfig {
    ServerConfig::local()
        .generation(generation)
        .handshake_timeout(HS)
        .tls(p.server_tls())
}

fn client_config(addr: SocketAddr, generation: Generation, tls: Option<ClientTls>) -> ClientConfig {
    let mut config = ClientConfig::new("127.0.0.1", addr.port())
        .generation(generation)
        .handshake_timeout(T)
        .connect_timeout(T);
    config.tls = tls;
    config
}

/// An echo server (replies with the same content and id) that reports connected clients.
fn echo_server(cfg: ServerConfig) -> (Server, SocketAddr, Receiver<ClientInfo>) {
    let server = Server::new(cfg);
    server.route(&ECHO, |c, m| {
        c.send(Request::new(&ECHO, m.content().clone()).respond(&m))
    });
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.on_connect(move |c| {
        let _ = lock(&tx).send(c.clone());
    });
    let addr = server.start().expect("start");
    (server, addr, rx)
}

/// A TLS client that completes a round trip to `echo_server`.
fn assert_echo(client: &Client) {
    let r = client
        .send_and_wait(Request::text(&ECHO, "over tls"), T)
        .expect("echo");
    assert_eq!(r.text().unwrap(), "over tls");
}

// ------------------------------------------------------------------------------------------
// Round trips

fn round_trip_blocking(generation: Generation) {
    let p = pki();
    let (server, addr, connected) = echo_server(tls_server_config(&p, generation));
    let client = Client::new(client_config(addr, generation, Some(p.client_tls())));
    let (note_tx, notes) = channel();
    let note_tx = Mutex::new(note_tx);
    client.route(&NOTE, move |m| {
        let _ = lock(&note_tx).send(m.text().unwrap_or("").to_string());
    });
    client.connect().expect("connect over TLS");
    let info = connected.recv_timeout(T).expect("on_connect");
    let tls = info.tls().expect("the server sees a TLS session");
    assert!(tls.protocol.starts_with("TLSv1."), "{tls:?}");
    assert!(tls.peer_certificate.is_none());

    // Echo, a large message (several TLS records), a burst, pings both ways, server push.
    assert_echo(&client);
    let big = vec![7u8; 300_000];
    let r = client
        .send_and_wait(Request::new(&ECHO, big.clone()), T)
        .expect("big echo");
    assert_eq!(&r.content()[..], &big[..]);
    for i in 0..200 {
        client
            .send(Request::text(&NOTE, &format!("n{i}")))
            .expect("send");
    }
    assert!(client.ping_server(T).expect("ping server") < T);
    assert!(server.ping_client(&info, T).expect("ping client") < T);
    info.send(Request::text(&NOTE, "pushed")).expect("push");
    assert_eq!(notes.recv_timeout(T).expect("push arrives"), "pushed");
    // TLS links are counted like plaintext ones (plaintext bytes, frames).
    let (ss, cs) = (server.stats(), client.stats());
    assert!(ss.frames_in >= 203 && ss.bytes_in > 300_000, "{ss:?}");
    assert!(cs.frames_out >= 203 && cs.bytes_out > 300_000, "{cs:?}");
    assert!(cs.frames_in >= 3 && ss.frames_out >= 3, "{cs:?} {ss:?}");
    client.disconnect();
    server.close_all();
    assert_eq!(server.tls_failures(), 0);
}

#[test]
fn tls_round_trip_blocking_gen3() {
    round_trip_blocking(Generation::Gen3);
}

#[test]
fn tls_round_trip_blocking_gen1() {
    round_trip_blocking(Generation::Gen1);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn round_trip_async(generation: Generation) {
    let p = pki();
    rt().block_on(async {
        let server = AsyncServer::new(tls_server_config(&p, generation));
        server.route_async(&ECHO, |c, m| async move {
            c.send(Request::new(&ECHO, m.content().clone()).respond(&m))
        });
        let (tx, mut connected) = tokio::sync::mpsc::unbounded_channel();
        server.on_connect(move |c| {
            let _ = tx.send(c.clone());
        });
        let addr = server.start().expect("start");
        let client = AsyncClient::new(client_config(addr, generation, Some(p.client_tls())));
        client.connect().await.expect("connect over TLS");
        let info = tokio::time::timeout(T, connected.recv())
            .await
            .expect("on_connect in time")
            .expect("on_connect");
        assert!(info.tls().is_some());
        let r = client
            .send_and_wait(Request::text(&ECHO, "async tls"), T)
            .await
            .expect("echo");
        assert_eq!(r.text().unwrap(), "async tls");
        // Many requests in flight at once on one TLS connection.
        let waits =
            (0..64).map(|i| client.send_and_wait(Request::text(&ECHO, &format!("r{i}")), T));
        let replies = futures_join(waits).await;
        for (i, r) in replies.into_iter().enumerate() {
            assert_eq!(r.expect("reply").text().unwrap(), format!("r{i}"));
        }
        assert!(client.ping(T).await.expect("ping") < T);
        assert!(server.ping_client(&info, T).await.expect("ping client") < T);
        client.disconnect().await;
        server.close_all().await;
    });
}

/// Awaits every future concurrently (no futures crate needed: one task each).
async fn futures_join<F, V>(futs: impl Iterator<Item = F>) -> Vec<V>
where
    F: std::future::Future<Output = V>,
{
    let mut pinned: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<V>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future done"))
        .collect()
}

#[test]
fn tls_round_trip_async_gen3() {
    round_trip_async(Generation::Gen3);
}

#[test]
fn tls_round_trip_async_gen1() {
    round_trip_async(Generation::Gen1);
}

#[test]
fn tls12_and_tls13_are_both_spoken() {
    let p = pki();
    for (version, name) in [
        (TlsVersion::Tls12, "TLSv1.2"),
        (TlsVersion::Tls13, "TLSv1.3"),
    ] {
        let (server, addr, connected) =
            echo_server(ServerConfig::local().tls(p.server_tls().versions(&[version])));
        let client = Client::new(client_config(addr, Generation::Gen3, Some(p.client_tls())));
        client.connect().expect("connect");
        assert_echo(&client);
        let info = connected.recv_timeout(T).expect("on_connect");
        assert_eq!(info.tls().expect("tls").protocol, name);
        client.disconnect();
        server.close_all();
    }
}

#[test]
fn pem_files_work_like_pem_in_memory_and_hostname_is_checked() {
    let p = pki();
    let cert = p.dir.write("server.pem", &p.server.cert);
    let key = p.dir.write("server.key", &p.server.key);
    let ca = p.dir.write("ca.pem", &p.ca.pem.cert);
    let (server, addr, _c) =
        echo_server(ServerConfig::local().tls(ServerTls::from_pem_files(&cert, &key)));
    // By name (`localhost` is in the certificate) and by IP (the default server name).
    for (host, name) in [
        ("127.0.0.1", None),
        ("localhost", None),
        ("127.0.0.1", Some("localhost")),
    ] {
        let mut tls = ClientTls::ca_file(&ca);
        if let Some(n) = name {
            tls = tls.server_name(n);
        }
        let client = Client::new(client_config(addr, Generation::Gen3, Some(tls)).host(host));
        client
            .connect()
            .unwrap_or_else(|e| panic!("{host} / {name:?}: {e}"));
        assert_echo(&client);
        client.disconnect();
    }
    server.close_all();
}

// ------------------------------------------------------------------------------------------
// Mutual TLS

#[test]
fn mutual_tls_accepts_a_certificate_of_the_client_ca_and_shows_its_subject() {
    let p = pki();
    let client_ca = Ca::new("veltix client CA");
    let me = client_ca.client("sensor-17");
    let (server, addr, connected) = echo_server(
        ServerConfig::local().tls(p.server_tls().client_ca_pem(client_ca.pem.cert.clone())),
    );
    let client = Client::new(client_config(
        addr,
        Generation::Gen3,
        Some(
            p.client_tls()
                .client_cert_pem(me.cert.clone(), me.key.clone()),
        ),
    ));
    client.connect().expect("mTLS connect");
    assert_echo(&client);
    let info = connected.recv_timeout(T).expect("on_connect");
    let cert = info
        .tls()
        .and_then(|t| t.peer_certificate.clone())
        .expect("the client's certificate");
    assert_eq!(cert.subject, "CN=sensor-17, O=Veltix Tests");
    assert_eq!(cert.common_name.as_deref(), Some("sensor-17"));
    assert!(!cert.der.is_empty());
    client.disconnect();
    server.close_all();
}

#[test]
fn mutual_tls_refuses_clients_without_a_valid_certificate() {
    let p = pki();
    let client_ca = Ca::new("veltix client CA");
    let stranger = Ca::new("someone else").client("intruder");
    let (server, addr, connected) = echo_server(
        ServerConfig::local()
            .handshake_timeout(HS)
            .tls(p.server_tls().client_ca_pem(client_ca.pem.cert.clone())),
    );
    let cases = [
        ("no certificate", p.client_tls()),
        (
            "certificate of another CA",
            p.client_tls()
                .client_cert_pem(stranger.cert.clone(), stranger.key.clone()),
        ),
    ];
    for (i, (what, tls)) in cases.into_iter().enumerate() {
        let client = Client::new(client_config(addr, Generation::Gen3, Some(tls)));
        let t0 = Instant::now();
        match client.connect() {
            Err(Error::Tls(reason)) => eprintln!("{what}: refused: {reason}"),
            other => panic!("{what}: expected a TLS refusal, got {other:?}"),
        }
        assert!(t0.elapsed() < T, "{what}: refused in time");
        let deadline = Instant::now() + T;
        while server.tls_failures() < i as u64 + 1 {
            assert!(Instant::now() < deadline, "{what}: counted");
            std::thread::yield_now();
        }
    }
    assert!(connected.try_recv().is_err(), "nobody got in");
    // A good client is unaffected.
    let good = client_ca.client("good");
    let client = Client::new(client_config(
        addr,
        Generation::Gen3,
        Some(p.client_tls().client_cert_pem(good.cert, good.key)),
    ));
    client.connect().expect("a valid client still gets in");
    assert_echo(&client);
    server.close_all();
}

// ------------------------------------------------------------------------------------------
// Refusals during the TLS handshake

/// Connects a TLS client with `tls` to a TLS server and expects `Error::Tls` containing
/// `needle`, a log line on the server and a counted failure, while another client's session
/// keeps working.
fn refused(server_tls: ServerTls, tls: ClientTls, needle: &str) {
    let p = pki();
    let (server, addr, _c) =
        echo_server(ServerConfig::local().handshake_timeout(HS).tls(server_tls));
    let witness = Client::new(client_config(addr, Generation::Gen3, Some(p.client_tls())));
    let witness_ok = witness.connect().is_ok();
    let client = Client::new(client_config(addr, Generation::Gen3, Some(tls)));
    let t0 = Instant::now();
    match client.connect() {
        Err(Error::Tls(reason)) => assert!(reason.contains(needle), "{needle:?} in {reason:?}"),
        other => panic!("expected a TLS error with {needle:?}, got {other:?}"),
    }
    assert!(t0.elapsed() < T);
    assert_eq!(
        client.stats().handshake_failures.tls,
        1,
        "the client counts it too"
    );
    let deadline = Instant::now() + T;
    while server.tls_failures() == 0 {
        assert!(Instant::now() < deadline, "the failure is counted");
        std::thread::yield_now();
    }
    if witness_ok {
        assert_echo(&witness);
    }
    server.close_all();
}

#[test]
fn a_wrong_server_name_is_refused() {
    let p = pki();
    refused(
        p.server_tls(),
        p.client_tls().server_name("not-the-server.example"),
        "not valid for name",
    );
}

#[test]
fn an_unknown_ca_is_refused() {
    let p = pki();
    let other = Ca::new("unrelated CA");
    refused(
        p.server_tls(),
        ClientTls::ca_pem(other.pem.cert.clone()),
        "UnknownIssuer",
    );
}

#[test]
fn an_expired_certificate_is_refused() {
    let p = pki();
    let old = p.ca.expired_server();
    refused(
        ServerTls::from_pem(old.cert, old.key),
        p.client_tls(),
        "certificate expired",
    );
}

#[test]
fn a_plaintext_client_to_a_tls_server_is_cut_at_the_handshake_timeout() {
    let p = pki();
    let (server, addr, _c) = echo_server(tls_server_config(&p, Generation::Gen3));
    let good = Client::new(client_config(addr, Generation::Gen3, Some(p.client_tls())));
    good.connect().expect("TLS client");
    let plain = Client::new(client_config(addr, Generation::Gen3, None));
    let t0 = Instant::now();
    let r = plain.connect();
    assert!(
        matches!(r, Err(Error::Handshake(_)) | Err(Error::Io(_))),
        "got {r:?}"
    );
    assert!(t0.elapsed() < HS + T, "cut within the deadline");
    assert!(server.tls_failures() >= 1);
    assert_echo(&good);
    server.close_all();
}

#[test]
fn a_tls_client_to_a_plaintext_server_fails_clearly_on_both_ends() {
    let p = pki();
    let (server, addr, _c) = echo_server(ServerConfig::local().handshake_timeout(HS));
    let client = Client::new(client_config(addr, Generation::Gen3, Some(p.client_tls())));
    let r = client.connect();
    match r {
        Err(Error::Tls(reason)) => assert!(reason.contains("does not speak TLS"), "{reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // The server recognises a ClientHello where it expected its handshake.
    let mut raw = TcpStream::connect(addr).expect("connect");
    let me = raw.local_addr().unwrap();
    raw.write_all(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00])
        .expect("write");
    wait_log(me, "the peer speaks TLS");
    server.close_all();
}

#[test]
fn garbage_and_slow_loris_during_the_tls_handshake_are_cut_and_others_are_unaffected() {
    let p = pki();
    let (server, addr, _c) = echo_server(tls_server_config(&p, Generation::Gen3));
    // Garbage: refused at once.
    let mut garbage = TcpStream::connect(addr).expect("connect");
    let g_addr = garbage.local_addr().unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    garbage.set_read_timeout(Some(T)).unwrap();
    let t0 = Instant::now();
    let mut sink = [0u8; 256];
    while let Ok(n) = garbage.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    assert!(t0.elapsed() < T, "garbage is cut");
    wait_log(g_addr, "TLS handshake failed");
    // Slow loris: three bytes of a ClientHello, then nothing.
    let mut loris = TcpStream::connect(addr).expect("connect");
    let l_addr = loris.local_addr().unwrap();
    loris.write_all(&[0x16, 0x03, 0x01]).expect("write");
    // Meanwhile a real client connects and works.
    let good = Client::new(client_config(addr, Generation::Gen3, Some(p.client_tls())));
    good.connect().expect("a client during the slow loris");
    assert_echo(&good);
    loris.set_read_timeout(Some(T)).unwrap();
    let t0 = Instant::now();
    while let Ok(n) = loris.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    let took = t0.elapsed();
    assert!(took < HS + T, "slow loris cut after {took:?}");
    wait_log(l_addr, "TLS handshake timed out");
    assert!(server.tls_failures() >= 2);
    assert_echo(&good);
    server.close_all();
}

// ------------------------------------------------------------------------------------------
// Bad files: typed errors, never a panic

#[test]
fn missing_unreadable_or_mismatched_files_are_typed_errors_at_start_and_connect() {
    let p = pki();
    let cert = p.dir.write("server.pem", &p.server.cert);
    let key = p.dir.write("server.key", &p.server.key);
    let other_key = p.dir.write("other.key", p.ca.client("x").key);
    let junk = p.dir.write("junk.pem", "this is not PEM\n");
    let missing = p.dir.0.join("missing.pem");
    let start = |tls: ServerTls| Server::new(ServerConfig::local().tls(tls)).start();
    let cases: Vec<(&str, ServerTls, &str)> = vec![
        (
            "missing cert",
            ServerTls::from_pem_files(&missing, &key),
            "missing.pem",
        ),
        (
            "missing key",
            ServerTls::from_pem_files(&cert, &missing),
            "missing.pem",
        ),
        (
            "junk cert",
            ServerTls::from_pem_files(&junk, &key),
            "no certificate",
        ),
        (
            "junk key",
            ServerTls::from_pem_files(&cert, &junk),
            "private key",
        ),
        (
            "key of another cert",
            ServerTls::from_pem_files(&cert, &other_key),
            "do not make",
        ),
        (
            "cert as key",
            ServerTls::from_pem_files(&cert, &cert),
            "private key",
        ),
        (
            "missing client CA",
            ServerTls::from_pem_files(&cert, &key).client_ca_file(&missing),
            "missing.pem",
        ),
    ];
    for (what, tls, needle) in cases {
        match start(tls) {
            Err(Error::TlsConfig(m)) => assert!(m.contains(needle), "{what}: {needle:?} in {m:?}"),
            other => panic!("{what}: expected TlsConfig, got {other:?}"),
        }
    }
    // Client side: nothing is even dialled (port 9 is never contacted).
    let connect =
        |tls: ClientTls| Client::new(ClientConfig::new("127.0.0.1", 9).tls(tls)).connect();
    let cases: Vec<(&str, ClientTls, &str)> = vec![
        ("missing CA", ClientTls::ca_file(&missing), "missing.pem"),
        ("junk CA", ClientTls::ca_file(&junk), "no certificate"),
        (
            "missing client key",
            ClientTls::ca_file(&cert).client_cert_files(&cert, &missing),
            "missing.pem",
        ),
        (
            "mismatched client key",
            ClientTls::ca_file(&cert).client_cert_files(&cert, &other_key),
            "do not make",
        ),
        (
            "bad server name",
            ClientTls::ca_file(&cert).server_name("bad name!"),
            "server name",
        ),
    ];
    for (what, tls, needle) in cases {
        match connect(tls) {
            Err(Error::TlsConfig(m)) => assert!(m.contains(needle), "{what}: {needle:?} in {m:?}"),
            other => panic!("{what}: expected TlsConfig, got {other:?}"),
        }
    }
}

#[test]
fn system_roots_load_and_do_not_trust_a_private_ca() {
    let p = pki();
    let (server, addr, _c) = echo_server(tls_server_config(&p, Generation::Gen3));
    let client = Client::new(client_config(
        addr,
        Generation::Gen3,
        Some(ClientTls::system_roots()),
    ));
    match client.connect() {
        Err(Error::Tls(reason)) => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        // A machine without a CA store: the typed error says so.
        Err(Error::TlsConfig(reason)) => assert!(reason.contains("system"), "{reason}"),
        other => panic!("expected UnknownIssuer, got {other:?}"),
    }
    server.close_all();
}

// ------------------------------------------------------------------------------------------
// Authentication

fn token_hook(req: &AuthRequest) -> AuthDecision {
    match req.token() {
        Some("good") => AuthDecision::accept().with_tag("role", "admin"),
        _ => AuthDecision::reject("unauthorized"),
    }
}

#[test]
fn auth_accepts_with_tags_and_rejects_with_a_typed_error_on_both_faces() {
    let p = pki();
    // Blocking face, plaintext and TLS.
    for tls in [false, true] {
        let mut config = ServerConfig::local();
        config.tls = tls.then(|| p.server_tls());
        let server = Server::new(config);
        server.authenticate(token_hook);
        let (tx, connected) = channel();
        let tx = Mutex::new(tx);
        server.on_connect(move |c| {
            let _ = lock(&tx).send(c.get_tag("role"));
        });
        server.route(&ECHO, |c, m| {
            c.send(Request::new(&ECHO, m.content().clone()).respond(&m))
        });
        let addr = server.start().expect("start");
        let cfg = || client_config(addr, Generation::Gen3, tls.then(|| p.client_tls()));
        let good = Client::new(cfg().with_token("good"));
        good.connect().expect("accepted");
        assert_echo(&good);
        assert_eq!(
            connected.recv_timeout(T).expect("on_connect"),
            Some(serde_json::json!("admin")),
            "on_connect sees the hook's tags"
        );
        for bad in [cfg().with_token("bad"), cfg()] {
            let client = Client::new(bad);
            match client.connect() {
                Err(Error::Rejected(reason)) => assert_eq!(reason, "unauthorized"),
                other => panic!("expected Rejected, got {other:?}"),
            }
            assert!(!client.is_connected());
        }
        assert_eq!(server.auth_failures(), 2);
        assert_eq!(server.stats().handshake_failures.auth, 2);
        assert!(
            connected.try_recv().is_err(),
            "refused clients never connect"
        );
        assert_echo(&good);
        server.close_all();
    }
    // Async face with an async hook.
    rt().block_on(async {
        let server = AsyncServer::new(ServerConfig::local());
        server.authenticate_async(|req| async move { token_hook(&req) });
        let addr = server.start().expect("start");
        let good = AsyncClient::new(client_config(addr, Generation::Gen3, None).with_token("good"));
        good.connect().await.expect("accepted");
        let bad = AsyncClient::new(client_config(addr, Generation::Gen3, None).with_token("x"));
        assert!(matches!(bad.connect().await, Err(Error::Rejected(r)) if r == "unauthorized"));
        assert_eq!(server.auth_failures(), 1);
        good.disconnect().await;
        server.close_all().await;
    });
}

#[test]
fn a_rejection_is_logged_with_the_peer_and_never_with_the_token() {
    let server = Server::new(ServerConfig::local());
    server.authenticate(token_hook);
    let addr = server.start().expect("start");
    let client =
        Client::new(client_config(addr, Generation::Gen3, None).with_token("hunter2-secret"));
    assert!(matches!(client.connect(), Err(Error::Rejected(_))));
    let deadline = Instant::now() + T;
    let line = loop {
        let text = logs().text().clone();
        if let Some(l) = text
            .lines()
            .find(|l| l.contains("authentication failed: rejected: unauthorized"))
        {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no rejection line");
        std::thread::yield_now();
    };
    assert!(line.contains("127.0.0.1:"), "names the peer: {line}");
    assert!(
        !logs().text().contains("hunter2-secret"),
        "the token is never logged"
    );
    server.close_all();
}

#[test]
fn the_hook_sees_the_tls_identity_and_meta() {
    let p = pki();
    let client_ca = Ca::new("veltix client CA");
    let me = client_ca.client("device-42");
    let server = Server::new(
        ServerConfig::local().tls(p.server_tls().client_ca_pem(client_ca.pem.cert.clone())),
    );
    let (tx, seen) = channel();
    let tx = Mutex::new(tx);
    server.authenticate(move |req| {
        let _ = lock(&tx).send(req.clone());
        match req.certificate_cn() {
            Some(cn) if cn.starts_with("device-") => AuthDecision::accept().with_tag("device", cn),
            _ => AuthDecision::reject("unknown device"),
        }
    });
    let (ctx, connected) = channel();
    let ctx = Mutex::new(ctx);
    server.on_connect(move |c| {
        let _ = lock(&ctx).send(c.get_tag("device"));
    });
    let addr = server.start().expect("start");
    let mut cfg = client_config(
        addr,
        Generation::Gen3,
        Some(p.client_tls().client_cert_pem(me.cert, me.key)),
    );
    cfg.meta
        .insert("firmware".into(), serde_json::json!({"v": 3}));
    let client = Client::new(cfg);
    client.connect().expect("accepted by certificate");
    let req = seen.recv_timeout(T).expect("hook ran");
    assert_eq!(req.meta["firmware"]["v"], 3);
    assert_eq!(req.peer_version, "3.3.0");
    assert!(req.peer.ip().is_loopback());
    assert_eq!(req.certificate_cn(), Some("device-42"));
    assert_eq!(
        connected.recv_timeout(T).expect("on_connect"),
        Some(serde_json::json!("device-42"))
    );
    server.close_all();
}

#[test]
fn a_slow_hook_is_cut_at_the_handshake_timeout_and_holds_only_its_slot() {
    // Sync hook: blocks for token "slow" until released.
    let (release_tx, release_rx) = channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let server = Server::new(ServerConfig::local().handshake_timeout(HS));
    let gate = release_rx.clone();
    server.authenticate(move |req| {
        if req.token() == Some("slow") {
            let _ = lock(&gate).recv_timeout(Duration::from_secs(60));
        }
        token_hook(req)
    });
    let addr = server.start().expect("start");
    let slow = std::thread::spawn(move || {
        let c = Client::new(client_config(addr, Generation::Gen3, None).with_token("slow"));
        let t0 = Instant::now();
        (c.connect(), t0.elapsed())
    });
    // Wait until the slow client is in its hook: it occupies a slot.
    let deadline = Instant::now() + T;
    while server.auth_failures() == 0 && Instant::now() < deadline {
        // Meanwhile, others get in.
        let good = Client::new(client_config(addr, Generation::Gen3, None).with_token("good"));
        good.connect()
            .expect("others are unaffected by a slow hook");
        assert_echo_plain(&good);
        good.disconnect();
    }
    let (r, took) = slow.join().expect("slow client");
    assert!(r.is_err(), "the slow client is cut: {r:?}");
    assert!(took < HS + T, "within the deadline ({took:?})");
    assert_eq!(server.auth_failures(), 1);
    // The hook is still blocked: its slot stays taken until it returns.
    release_tx.send(()).expect("release");
    server.close_all();

    // Async hook that never answers: cancelled at the deadline.
    rt().block_on(async {
        let server = AsyncServer::new(ServerConfig::local().handshake_timeout(HS));
        server.authenticate_async(|req| async move {
            if req.token() == Some("slow") {
                std::future::pending::<()>().await;
            }
            token_hook(&req)
        });
        let addr = server.start().expect("start");
        let slow = AsyncClient::new(client_config(addr, Generation::Gen3, None).with_token("slow"));
        let t0 = Instant::now();
        assert!(slow.connect().await.is_err());
        assert!(t0.elapsed() < HS + T);
        assert_eq!(server.auth_failures(), 1);
        let good = AsyncClient::new(client_config(addr, Generation::Gen3, None).with_token("good"));
        good.connect().await.expect("accepted");
        server.close_all().await;
    });
}

fn assert_echo_plain(client: &Client) {
    // The auth servers here have no echo route: a ping proves the link works.
    assert!(client.ping_server(T).expect("ping") < T);
}

#[test]
fn a_panicking_hook_refuses_the_client_and_the_server_keeps_serving() {
    let server = Server::new(ServerConfig::local());
    server.authenticate(|req| {
        if req.token() == Some("boom") {
            panic!("hook bug");
        }
        token_hook(req)
    });
    let addr = server.start().expect("start");
    let c = Client::new(client_config(addr, Generation::Gen3, None).with_token("boom"));
    assert!(matches!(c.connect(), Err(Error::Rejected(r)) if r == "authentication failed"));
    assert_eq!(server.auth_failures(), 1);
    let good = Client::new(client_config(addr, Generation::Gen3, None).with_token("good"));
    good.connect().expect("accepted");
    server.close_all();
}

#[test]
fn gen1_has_no_refusal_message_so_a_refused_client_is_disconnected() {
    // Gen 1 carries no meta: the hook decides on the address and the TLS identity alone.
    let p = pki();
    let client_ca = Ca::new("gen1 client CA");
    let allowed = client_ca.client("allowed");
    let other = client_ca.client("other");
    let server = Server::new(
        ServerConfig::local()
            .generation(Generation::Gen1)
            .tls(p.server_tls().client_ca_pem(client_ca.pem.cert.clone())),
    );
    server.authenticate(|req| {
        assert!(req.meta.is_empty());
        match req.certificate_cn() {
            Some("allowed") => AuthDecision::accept(),
            _ => AuthDecision::reject("unauthorized"),
        }
    });
    let (tx, connected) = channel();
    let tx = Mutex::new(tx);
    server.on_connect(move |c| {
        let _ = lock(&tx).send(c.tls().and_then(|t| t.peer_certificate.clone()));
    });
    let addr = server.start().expect("start");
    let connect = |who: &certs::Pem| {
        let c = Client::new(client_config(
            addr,
            Generation::Gen1,
            Some(
                p.client_tls()
                    .client_cert_pem(who.cert.clone(), who.key.clone()),
            ),
        ));
        let (dtx, dropped) = channel();
        let dtx = Mutex::new(dtx);
        c.on_disconnect(move |s| {
            let _ = lock(&dtx).send(s.permanent);
        });
        (c.connect(), c, dropped)
    };
    let (r, good, _) = connect(&allowed);
    r.expect("allowed in");
    assert!(good.ping_server(T).is_ok());
    let cert = connected
        .recv_timeout(T)
        .expect("on_connect")
        .expect("cert");
    assert_eq!(cert.common_name.as_deref(), Some("allowed"));
    // The Gen 1 client's handshake completes before the hook has spoken, so its connect()
    // may succeed; the server then closes the link, and on_connect never runs for it.
    let (r, bad, dropped) = connect(&other);
    if r.is_ok() {
        assert!(
            dropped.recv_timeout(T).expect("disconnected"),
            "permanent drop"
        );
        assert!(bad.ping_server(T).is_err());
    }
    let deadline = Instant::now() + T;
    while server.auth_failures() == 0 {
        assert!(Instant::now() < deadline, "counted");
        std::thread::yield_now();
    }
    assert!(
        connected.try_recv().is_err(),
        "the refused client never connected"
    );
    server.close_all();
}

#[test]
fn a_tls_client_reconnects_to_a_restarted_tls_server() {
    let p = pki();
    let (server, addr, connected) = echo_server(tls_server_config(&p, Generation::Gen3));
    let client = Client::new(
        client_config(addr, Generation::Gen3, Some(p.client_tls())).reconnect(
            veltix::ReconnectPolicy::constant(50, Duration::from_millis(50)),
        ),
    );
    let (tx, reconnected) = channel();
    let tx = Mutex::new(tx);
    client.on_connect(move || {
        let _ = lock(&tx).send(());
    });
    client.connect().expect("connect");
    reconnected.recv_timeout(T).expect("first on_connect");
    connected.recv_timeout(T).expect("server on_connect");
    assert_echo(&client);
    // Same address, new TLS acceptor (files are read again by start()).
    server.restart().expect("restart");
    reconnected.recv_timeout(T).expect("reconnected over TLS");
    let info = connected
        .recv_timeout(T)
        .expect("server sees the new session");
    assert!(info.tls().is_some());
    assert_echo(&client);
    client.disconnect();
    server.close_all();
}
