//! Scenarios about connecting and closing: typed connect errors, a full server, generations,
//! waits failing fast on a dropped link, graceful shutdown and restart, reconnect loops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veltix::proto::Generation;
use veltix::{
    ClientConfig, ClientInfo, DisconnectCause, DisconnectReason, Error, HandshakeError,
    ReconnectPolicy, Request, Response, ServerConfig,
};

use crate::face::*;

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Refused, not connected, handshake timeout: each a typed error.
pub fn scenario_connect_errors_are_typed<F: Face>() {
    let c = F::client(ClientConfig::new("127.0.0.1", free_port()));
    assert!(matches!(c.connect(), Err(Error::ConnectionRefused { .. })));
    assert!(matches!(
        c.send(Request::text(&ECHO, "x")),
        Err(Error::Disconnected(DisconnectCause::NotConnected))
    ));
    assert!(matches!(
        c.send_and_wait(Request::text(&ECHO, "x"), T),
        Err(Error::Disconnected(DisconnectCause::NotConnected))
    ));
    assert!(matches!(
        c.ping(),
        Err(Error::Disconnected(DisconnectCause::NotConnected))
    ));
    assert!(!c.is_connected());
    // A listener that never speaks: handshake timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = F::client(
        ClientConfig::new("127.0.0.1", silent.local_addr().unwrap().port())
            .handshake_timeout(Duration::from_millis(300)),
    );
    assert!(matches!(c.connect(), Err(Error::HandshakeTimeout(_))));
}

/// A full server turns clients away with a typed error, and takes them once a slot is free.
pub fn scenario_server_full_is_a_typed_error_and_frees_up<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig::local().max_connections(1));
    let gone = disconnects(&s);
    assert!(!s.is_full());
    let a = connected::<F>(addr);
    let info_a = recv(&connects);
    assert!(s.is_full());
    let b = client::<F>(addr);
    match b.connect() {
        Err(Error::ServerFull(reason)) => assert_eq!(reason, "server_full"),
        other => panic!("expected ServerFull, got {other:?}"),
    }
    a.disconnect();
    // A client leaves the count before its on_disconnect runs: after it, the slot is free.
    assert_eq!(recv(&gone), info_a);
    assert!(!s.is_full());
    b.connect().unwrap();
    assert_eq!(
        echoed(b.send_and_wait(Request::text(&ECHO, "in"), T)),
        b"in"
    );
    assert!(s.is_full());
}

/// A client of the other generation fails with `WrongGeneration`, well within the timeouts.
pub fn scenario_wrong_generation_fails_clearly_within_the_handshake_timeout<F: Face>() {
    let (_g3, addr3, _c3) =
        setup::<F>(ServerConfig::local().handshake_timeout(Duration::from_millis(500)));
    let (_g1, addr1, _c1) = setup::<F>(ServerConfig::local().generation(Generation::Gen1));
    let t0 = Instant::now();
    let c = F::client(
        ClientConfig::new("127.0.0.1", addr3.port())
            .generation(Generation::Gen1)
            .handshake_timeout(Duration::from_secs(2)),
    );
    let e = c.connect().unwrap_err();
    assert!(
        matches!(e, Error::Handshake(HandshakeError::WrongGeneration(_))),
        "{e}"
    );
    let c = F::client(
        ClientConfig::new("127.0.0.1", addr1.port())
            .generation(Generation::Gen3)
            .handshake_timeout(Duration::from_secs(2)),
    );
    let e = c.connect().unwrap_err();
    assert!(
        matches!(e, Error::Handshake(HandshakeError::WrongGeneration(_))),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// Gen 1 (Python 1.6.x's protocol) between a Rust server and client: requests, 32-bit ids,
/// pings both ways.
pub fn scenario_gen1_rust_to_rust<F: Face>() {
    let (s, addr, _connects) = setup::<F>(ServerConfig::local().generation(Generation::Gen1));
    let c = F::client(ClientConfig::new("127.0.0.1", addr.port()).generation(Generation::Gen1));
    c.connect().unwrap();
    assert_eq!(
        echoed(c.send_and_wait(Request::text(&ECHO, "gen1"), T)),
        b"gen1"
    );
    // Gen 1 ids are 32-bit.
    let r = c
        .send_and_wait(
            Request::text(&ECHO, "big id").with_request_id(0xDEAD_BEEF),
            T,
        )
        .unwrap();
    assert_eq!(r.request_id(), 0xDEAD_BEEF);
    assert_eq!(r.text().unwrap(), "echo:big id");
    assert!(c.ping().is_ok());
    let mut clients = s.clients();
    assert_eq!(clients.len(), 1);
    let info = clients.pop().unwrap();
    assert!(s.ping(&info).is_ok());
}

/// Waits on both ends fail with `Disconnected` as soon as the link drops (not at their 60 s
/// timeout), and the client then refuses to send.
pub fn scenario_pending_waits_fail_fast_when_the_connection_drops<F: Face>() {
    let s = F::server(ServerConfig::local());
    let connects = connects(&s);
    // Neither side ever answers HOLD; each tells the test when a request arrived (so the
    // sender's wait is registered: ids are registered before sending).
    let (stx, srx) = channel();
    let arrived_at_server = forward(stx);
    s.route(&HOLD, move |_c: &ClientInfo, _m: Response| {
        arrived_at_server(())
    });
    let addr = s.start();
    let s = Arc::new(s);
    let c = Arc::new(client::<F>(addr));
    let (ctx, crx) = channel();
    let arrived_at_client = forward(ctx);
    c.route(&HOLD, move |_m: Response| arrived_at_client(()));
    c.connect().unwrap();
    let info = recv(&connects);
    let t0 = Instant::now();
    let long = Duration::from_secs(60);
    let server_wait = {
        let (s, info) = (s.clone(), info.clone());
        std::thread::spawn(move || {
            s.send_and_wait(Request::text(&HOLD, "never answered"), &info, long)
        })
    };
    let client_wait = {
        let c = c.clone();
        std::thread::spawn(move || c.send_and_wait(Request::text(&HOLD, "never answered"), long))
    };
    recv(&srx);
    recv(&crx);
    assert!(s.close_client(&info));
    let client_result = client_wait.join().unwrap();
    let server_result = server_wait.join().unwrap();
    // The server closed it: the client's wait sees the peer's close, the server's its own.
    assert!(
        matches!(
            client_result,
            Err(Error::Disconnected(DisconnectCause::PeerClosed))
        ),
        "{client_result:?}"
    );
    assert!(
        matches!(
            server_result,
            Err(Error::Disconnected(DisconnectCause::ClosedLocally))
        ),
        "{server_result:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "waits must not sleep out their timeout"
    );
    assert!(!s.close_client(&info), "already closed");
    // No reconnect configured: later sends report what ended the link.
    assert!(matches!(
        c.send(Request::text(&NOTE, "x")),
        Err(Error::Disconnected(DisconnectCause::PeerClosed))
    ));
}

/// `close_all` delivers everything queued before it, tells the client why, and stops the
/// server; `restart` serves again on the same address with the same routes.
pub fn scenario_close_all_flushes_what_was_queued_and_restart_keeps_routes<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig::local());
    let c = client::<F>(addr);
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    c.route(&NOTE, move |_m: Response| {
        g.fetch_add(1, Ordering::SeqCst);
    });
    let (dtx, drx) = channel();
    let f = forward(dtx);
    c.on_disconnect(move |st| f(*st));
    c.connect().unwrap();
    let info = recv(&connects);
    assert_eq!(s.clients(), vec![info.clone()]);
    assert!(s.is_running());
    for i in 0..2000 {
        s.send(Request::text(&NOTE, &format!("message {i}")), &info)
            .unwrap();
    }
    s.close_all();
    let state = recv(&drx);
    assert!(state.permanent);
    assert_eq!(state.reason, DisconnectReason::ServerClosed);
    // on_disconnect runs after every message of the connection was handled.
    assert_eq!(
        got.load(Ordering::SeqCst),
        2000,
        "close_all must flush queued messages"
    );
    assert!(!s.is_running());
    assert!(s.clients().is_empty());
    // Restart: same address, same routes.
    assert_eq!(s.restart(), addr);
    assert!(s.is_running());
    let c = connected::<F>(addr);
    assert_eq!(
        echoed(c.send_and_wait(Request::text(&ECHO, "again"), T)),
        b"again"
    );
}

/// `close_all` returns only after every handler and `on_disconnect` callback ran.
pub fn scenario_close_all_returns_after_every_handler_and_on_disconnect_ran<F: Face>() {
    let s = F::server(ServerConfig::local());
    let handled = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    s.route(&NOTE, move |_c: &ClientInfo, _m: Response| {
        h.fetch_add(1, Ordering::SeqCst);
    });
    let g = gone.clone();
    s.on_disconnect(move |_c: &ClientInfo| {
        g.fetch_add(1, Ordering::SeqCst);
    });
    let addr = s.start();
    let clients: Vec<F::C> = (0..5).map(|_| connected::<F>(addr)).collect();
    for c in &clients {
        for i in 0..200 {
            c.send(Request::text(&NOTE, &i.to_string())).unwrap();
        }
        // The ping's answer proves the server has read everything sent before it.
        c.ping().unwrap();
    }
    s.close_all();
    // No waiting here: close_all itself waited for the handlers.
    assert_eq!(handled.load(Ordering::SeqCst), 1000);
    assert_eq!(gone.load(Ordering::SeqCst), 5);
}

/// `wait_until_closed` (from another thread) returns once `close_all` is called.
pub fn scenario_wait_until_closed_returns_after_close_all<F: Face>() {
    let (s, _addr, _connects) = setup::<F>(ServerConfig::local());
    let s = Arc::new(s);
    let s2 = s.clone();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        s2.wait_until_closed();
        let _ = tx.send(());
    });
    assert!(rx.try_recv().is_err(), "returned before close_all");
    s.close_all();
    recv(&rx);
}

/// A client with a reconnect policy comes back after the server went away (stopped and
/// started again, then restarted), with every handler and callback (Python loses `on_recv`).
pub fn scenario_client_reconnects_after_a_server_restart_and_keeps_every_handler<F: Face>() {
    let (s, addr, _connects) = setup::<F>(ServerConfig::local());
    s.on_connect(|c: &ClientInfo| {
        let _ = c.send(Request::text(&NOTE, "welcome"));
    });
    let c = F::client(ClientConfig::new("127.0.0.1", addr.port()).reconnect(
        ReconnectPolicy::exponential(50, Duration::from_millis(20), Duration::from_millis(200)),
    ));
    // One channel for the callbacks and the messages: their order is checked too.
    let (etx, erx) = channel();
    events_to(&c, etx.clone());
    let f = forward(etx);
    c.on_recv(move |m: Response| f(format!("recv {}", m.text().unwrap_or(""))));
    c.connect().unwrap();
    assert_eq!(recv(&erx), "connect");
    assert_eq!(recv(&erx), "recv welcome");
    s.close_all();
    assert_eq!(recv(&erx), "disconnect false 0 ServerClosed");
    // Failed attempts while the server is down are reported; then it comes back.
    let first = recv(&erx);
    assert!(
        first.starts_with("disconnect false 1") || first == "connect",
        "{first}"
    );
    assert_eq!(s.start(), addr);
    let mut ev = first;
    while ev != "connect" {
        assert!(ev.starts_with("disconnect false "), "{ev}");
        ev = recv(&erx);
    }
    // on_recv survived the reconnect, and routes too.
    assert_eq!(recv(&erx), "recv welcome");
    assert_eq!(
        echoed(c.send_and_wait(Request::text(&ECHO, "back"), T)),
        b"back"
    );
    // Once more through restart().
    assert_eq!(s.restart(), addr);
    assert_eq!(recv(&erx), "disconnect false 0 ServerClosed");
    loop {
        let ev = recv(&erx);
        if ev == "connect" {
            break;
        }
        assert!(ev.starts_with("disconnect false "), "{ev}");
    }
    assert_eq!(recv(&erx), "recv welcome");
    assert_eq!(
        echoed(c.send_and_wait(Request::text(&ECHO, "back again"), T)),
        b"back again"
    );
    c.disconnect();
    assert_eq!(recv(&erx), "disconnect true 0 Manual");
    c.wait_until_closed();
    assert!(erx.try_recv().is_err());
}

/// A connect whose every retry fails reports Python's sequence of states.
pub fn scenario_retries_exhausted_give_the_python_sequence<F: Face>() {
    let c = F::client(
        ClientConfig::new("127.0.0.1", free_port())
            .reconnect(ReconnectPolicy::constant(3, Duration::from_millis(10))),
    );
    let seq = Arc::new(Mutex::new(Vec::new()));
    let s2 = seq.clone();
    c.on_disconnect(move |s| {
        s2.lock()
            .unwrap()
            .push((s.permanent, s.attempt, s.retry_max))
    });
    assert!(c.connect().is_err());
    c.wait_until_closed();
    assert_eq!(
        *seq.lock().unwrap(),
        vec![
            (false, 0, 3),
            (false, 1, 3),
            (false, 2, 3),
            (false, 3, 3),
            (true, 3, 3)
        ]
    );
}

/// `stop_retry` ends a background `retry` loop long before its attempts run out.
pub fn scenario_stop_retry_ends_a_background_retry_loop<F: Face>() {
    let c = F::client(
        ClientConfig::new("127.0.0.1", free_port())
            .reconnect(ReconnectPolicy::constant(1000, Duration::from_millis(20))),
    );
    let (tx, rx) = channel();
    let f = forward(tx);
    c.on_disconnect(move |s| f(*s));
    c.retry(Some(1000));
    // Wait for a couple of failed attempts, then cancel.
    let first = recv(&rx);
    assert_eq!((first.permanent, first.attempt), (false, 0));
    assert_eq!(recv(&rx).attempt, 1);
    c.stop_retry();
    let t0 = Instant::now();
    loop {
        let s = recv(&rx);
        if s.permanent {
            assert!(s.attempt < 1000);
            break;
        }
    }
    assert!(t0.elapsed() < T);
    c.wait_until_closed();
    assert!(!c.is_connected());
}
