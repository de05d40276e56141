//! Loopback integration tests of the synchronous API, failure paths included.
//! Every wait is on an event with a generous timeout; every server binds port 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use veltix::proto::{Frame, Generation, Handshake, HandshakeConfig};
use veltix::{
    Client, ClientConfig, ClientInfo, DisconnectReason, Error, KeepAlive, MessageType,
    ReconnectPolicy, Request, Response, Server, ServerConfig,
};

const ECHO: MessageType = MessageType::new(200, "echo");
const NOTE: MessageType = MessageType::new(201, "note");
const HOLD: MessageType = MessageType::new(202, "hold");
const WAIT: Duration = Duration::from_secs(10);

fn echo_server(cfg: ServerConfig) -> (Server, SocketAddr) {
    let server = Server::new(cfg);
    server.route(&ECHO, |c: &ClientInfo, m: Response| {
        c.send(Request::new(&ECHO, m.content().clone()).respond(&m))
    });
    let addr = server.start().expect("start");
    (server, addr)
}

fn client(addr: SocketAddr) -> Client {
    Client::new(ClientConfig::new("127.0.0.1", addr.port()))
}

fn connected(addr: SocketAddr) -> Client {
    let c = client(addr);
    c.connect().expect("connect");
    c
}

/// A raw TCP peer that completed the Gen 3 handshake and then does whatever the test says.
fn raw_client(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut hs = Handshake::client(HandshakeConfig::new(Generation::Gen3));
    let mut buf = [0u8; 256];
    while !hs.is_done() {
        while let Some(b) = hs.poll_transmit() {
            s.write_all(&b).unwrap();
        }
        if hs.is_done() {
            break;
        }
        let n = s.read(&mut buf).expect("handshake read");
        assert!(n > 0, "server closed during handshake");
        let used = hs.feed(&buf[..n]).expect("handshake");
        assert_eq!(used, n, "no frames expected during the handshake");
    }
    s
}

/// Reads until EOF (or error); true if the server closed the socket within the timeout.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn recv<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(WAIT).expect("event did not arrive in time")
}

#[test]
fn echo_payloads_text_json_binary_empty_large() {
    let (server, addr) = echo_server(ServerConfig {
        max_message_size: 32 * 1024 * 1024,
        ..ServerConfig::local()
    });
    let c = Client::new(ClientConfig {
        max_message_size: 32 * 1024 * 1024,
        ..ClientConfig::new("127.0.0.1", addr.port())
    });
    c.connect().unwrap();
    let r = c
        .send_and_wait(Request::text(&ECHO, "héllo wörld €😀"), WAIT)
        .unwrap();
    assert_eq!(r.text().unwrap(), "héllo wörld €😀");
    let r = c
        .send_and_wait(
            Request::json(&ECHO, &serde_json::json!({"a": [1, 2], "b": "é"})).unwrap(),
            WAIT,
        )
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().unwrap()["b"], "é");
    assert_eq!(&r.content()[..], br#"{"a": [1, 2], "b": "\u00e9"}"#);
    let bin: Vec<u8> = (0..=255).collect();
    assert_eq!(
        &c.send_and_wait(Request::new(&ECHO, bin.clone()), WAIT)
            .unwrap()
            .content()[..],
        &bin[..]
    );
    assert!(c
        .send_and_wait(Request::new(&ECHO, Vec::new()), WAIT)
        .unwrap()
        .content()
        .is_empty());
    let big: Vec<u8> = (0..6 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = c
        .send_and_wait(Request::new(&ECHO, big.clone()), WAIT)
        .unwrap();
    assert_eq!(r.content().len(), big.len());
    assert!(r.content()[..] == big[..]);
    // Replies carry the request id we sent.
    let r = c
        .send_and_wait(Request::text(&ECHO, "x").with_request_id(777), WAIT)
        .unwrap();
    assert_eq!(r.request_id(), 777);
    c.disconnect();
    server.close_all();
}

#[test]
fn on_recv_is_the_fallback_and_unhandled_types_do_not_break_the_link() {
    let server = Server::new(ServerConfig::local());
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.on_recv(move |_c: &ClientInfo, m: Response| {
        let _ = tx.lock().unwrap().send(m.message_type());
    });
    server.route(&ECHO, |c: &ClientInfo, m: Response| {
        c.send(Request::new(&ECHO, m.content().clone()).respond(&m))
    });
    let addr = server.start().unwrap();
    let c = connected(addr);
    c.send(Request::text(&NOTE, "to on_recv")).unwrap();
    assert_eq!(recv(&rx), NOTE.code());
    // A route wins over on_recv.
    c.send_and_wait(Request::text(&ECHO, "routed"), WAIT)
        .unwrap();
    assert!(rx.try_recv().is_err());
    // A client without any handler just logs unsolicited messages.
    let c2 = connected(addr);
    server
        .broadcast(Request::text(&NOTE, "nobody listens"), &[])
        .unwrap();
    assert!(c2.ping_server(WAIT).is_ok());
}

#[test]
fn messages_of_one_connection_are_handled_in_order() {
    let server = Server::new(ServerConfig {
        max_workers: 4,
        ..ServerConfig::local()
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let s2 = seen.clone();
    server.route(&NOTE, move |_c: &ClientInfo, m: Response| {
        let n: u32 = m.text().unwrap().parse().unwrap();
        s2.lock().unwrap().push(n);
        if n == 4999 {
            let _ = tx.lock().unwrap().send(());
        }
    });
    let addr = server.start().unwrap();
    let c = connected(addr);
    for i in 0..5000u32 {
        c.send(Request::text(&NOTE, &i.to_string())).unwrap();
    }
    recv(&rx);
    let seen = seen.lock().unwrap();
    assert_eq!(*seen, (0..5000).collect::<Vec<_>>());
}

#[test]
fn different_connections_are_handled_in_parallel_and_slow_handlers_do_not_block_ping() {
    let server = Server::new(ServerConfig {
        max_workers: 2,
        ..ServerConfig::local()
    });
    // Both handlers must be inside the barrier at once: only possible if they run in parallel.
    let barrier = Arc::new(Barrier::new(2));
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let b = barrier.clone();
    server.route(&HOLD, move |c: &ClientInfo, m: Response| {
        b.wait();
        let _ = tx.lock().unwrap().send(c.id());
        c.send(Request::text(&HOLD, "done").respond(&m))
    });
    let addr = server.start().unwrap();
    let a = connected(addr);
    let b = connected(addr);
    a.send(Request::text(&HOLD, "a")).unwrap();
    // While a's handler is blocked in the barrier, pings are still answered (inline).
    assert!(a.ping_server(WAIT).is_ok());
    assert!(b.ping_server(WAIT).is_ok());
    b.send(Request::text(&HOLD, "b")).unwrap();
    let x = recv(&rx);
    let y = recv(&rx);
    assert_ne!(x, y);
}

#[test]
fn ping_both_ways_and_async_ping() {
    let server = Server::new(ServerConfig::local());
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.on_connect(move |c: &ClientInfo| {
        let _ = tx.lock().unwrap().send(c.clone());
    });
    let addr = server.start().unwrap();
    let c = connected(addr);
    let info = recv(&rx);
    assert!(c.ping_server(WAIT).unwrap() < WAIT);
    assert!(server.ping_client(&info, WAIT).unwrap() < WAIT);
    let (ptx, prx) = channel();
    server.ping_client_async(
        &info,
        move |r| {
            let _ = ptx.send(r.is_ok());
        },
        WAIT,
    );
    assert!(recv(&prx));
}

#[test]
fn server_send_and_wait_is_correlated_per_connection() {
    let server = Server::new(ServerConfig::local());
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.on_connect(move |c: &ClientInfo| {
        let _ = tx.lock().unwrap().send(c.clone());
    });
    let (otx, orx) = channel();
    let otx = Mutex::new(otx);
    server.on_recv(move |c: &ClientInfo, m: Response| {
        let _ = otx.lock().unwrap().send((c.id(), m.request_id()));
    });
    let addr = server.start().unwrap();
    let a = connected(addr);
    let info_a = recv(&rx);
    let b = connected(addr);
    let info_b = recv(&rx);
    // a answers requests only when told to.
    let (go_tx, go_rx) = channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let a_tx = a.sender();
    a.route(&ECHO, move |m: Response| {
        go_rx.lock().unwrap().recv_timeout(WAIT).ok();
        a_tx.send(Request::text(&ECHO, "from a").respond(&m))
    });
    let s2 = server.sender();
    let ia = info_a.clone();
    let waiter = std::thread::spawn(move || {
        let _s = s2;
        ia.send_and_wait(Request::text(&ECHO, "question"), WAIT)
    });
    // b sends a frame carrying the id the server allocated for a (the first server id, 32768):
    // it must reach on_recv, not a's waiter.
    b.send(Request::text(&NOTE, "impostor").with_request_id(32768))
        .unwrap();
    assert_eq!(recv(&orx), (info_b.id(), 32768));
    go_tx.send(()).unwrap();
    let reply = waiter.join().unwrap().unwrap();
    assert_eq!(reply.text().unwrap(), "from a");
}

#[test]
fn pending_waits_fail_fast_when_the_connection_drops() {
    let server = Server::new(ServerConfig::local());
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.on_connect(move |c: &ClientInfo| {
        let _ = tx.lock().unwrap().send(c.clone());
    });
    // Neither side ever answers HOLD; each tells the test when a request arrived (so the
    // sender's wait is registered: ids are registered before sending).
    let (stx, srx) = channel();
    let stx = Mutex::new(stx);
    server.route(&HOLD, move |_c: &ClientInfo, _m: Response| {
        let _ = stx.lock().unwrap().send(());
    });
    let addr = server.start().unwrap();
    let c = connected(addr);
    let info = recv(&rx);
    let (ctx, crx) = channel();
    let ctx = Mutex::new(ctx);
    c.route(&HOLD, move |_m: Response| {
        let _ = ctx.lock().unwrap().send(());
    });
    let t0 = Instant::now();
    let long = Duration::from_secs(60);
    let server_wait = {
        let info = info.clone();
        std::thread::spawn(move || info.send_and_wait(Request::text(&HOLD, "never answered"), long))
    };
    let client_wait = std::thread::spawn(move || {
        let r = c.send_and_wait(Request::text(&HOLD, "never answered"), long);
        (r, c)
    });
    recv(&srx);
    recv(&crx);
    assert!(server.close_client(&info));
    let (client_result, _c) = client_wait.join().unwrap();
    let server_result = server_wait.join().unwrap();
    assert!(
        matches!(client_result, Err(Error::Disconnected)),
        "{client_result:?}"
    );
    assert!(
        matches!(server_result, Err(Error::Disconnected)),
        "{server_result:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "waits must not sleep out their timeout"
    );
    assert!(!server.close_client(&info), "already closed");
}

#[test]
fn broadcast_with_except_and_tags() {
    let server = Server::new(ServerConfig::local());
    let (ctx, crx) = channel();
    let ctx = Mutex::new(ctx);
    server.on_connect(move |c: &ClientInfo| {
        let _ = ctx.lock().unwrap().send(c.clone());
    });
    server.route(&ECHO, |c: &ClientInfo, m: Response| {
        c.set_tag("room", m.text().unwrap_or(""));
        c.send(Request::text(&ECHO, "joined").respond(&m))
    });
    let addr = server.start().unwrap();
    let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let (dtx, drx) = channel();
    let mut clients = Vec::new();
    let mut infos = Vec::new();
    for (i, n) in counts.iter().enumerate() {
        let c = connected(addr);
        infos.push(recv(&crx));
        let n = n.clone();
        let dtx = Mutex::new(dtx.clone());
        c.route(&NOTE, move |_m: Response| {
            n.fetch_add(1, Ordering::SeqCst);
            let _ = dtx.lock().unwrap().send(i);
        });
        let room = if i == 2 { "blue" } else { "red" };
        c.send_and_wait(Request::text(&ECHO, room), WAIT).unwrap();
        clients.push(c);
    }
    assert_eq!(server.clients().len(), 3);
    let red = server.get_clients_by_tag("room", Some(&serde_json::json!("red")));
    assert_eq!(red.len(), 2);
    assert_eq!(server.get_clients_by_tag("room", None).len(), 3);
    assert!(server.get_clients_by_tag("nope", None).is_empty());
    // Broadcast to all but client 0.
    assert_eq!(
        server
            .broadcast(Request::text(&NOTE, "hi"), &infos[..1])
            .unwrap(),
        2
    );
    let mut got = vec![recv(&drx), recv(&drx)];
    got.sort();
    assert_eq!(got, vec![1, 2]);
    assert_eq!(counts[0].load(Ordering::SeqCst), 0);
    // Tag API, visible through every clone.
    let t = &infos[0];
    assert!(t.add_tag("admin", true));
    assert!(!t.add_tag("admin", false));
    assert_eq!(
        infos[0].clone().get_tag("admin"),
        Some(serde_json::json!(true))
    );
    assert!(t.has_all_tags(&["admin", "room"]) && t.has_all_tags(&[]));
    assert!(t.has_any_tags(&["x", "admin"]) && !t.has_any_tags(&[]));
    assert!(t.remove_tag("admin") && !t.remove_tag("admin"));
    t.clear_tags();
    assert!(!t.has_tag("room"));
    // The sender handle works from another thread.
    let sender = server.sender();
    std::thread::spawn(move || {
        sender
            .broadcast(Request::text(&NOTE, "from thread"), &[])
            .unwrap()
    })
    .join()
    .unwrap();
    for _ in 0..3 {
        recv(&drx);
    }
}

#[test]
fn server_full_is_a_typed_error_and_frees_up() {
    let (server, addr) = echo_server(ServerConfig {
        max_connections: Some(1),
        ..ServerConfig::local()
    });
    let a = connected(addr);
    assert!(server.is_full());
    let b = client(addr);
    match b.connect() {
        Err(Error::ServerFull(reason)) => assert_eq!(reason, "server_full"),
        other => panic!("expected ServerFull, got {other:?}"),
    }
    a.disconnect();
    // Once a's slot is free, b gets in (retry until the server noticed a's departure).
    let deadline = Instant::now() + WAIT;
    loop {
        match b.connect() {
            Ok(()) => break,
            Err(Error::ServerFull(_)) if Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(b.send_and_wait(Request::text(&ECHO, "in"), WAIT).is_ok());
}

#[test]
fn connect_errors_are_typed() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Client::new(ClientConfig::new("127.0.0.1", port));
    assert!(matches!(c.connect(), Err(Error::ConnectionRefused { .. })));
    assert!(matches!(
        c.send(Request::text(&ECHO, "x")),
        Err(Error::NotConnected)
    ));
    assert!(matches!(c.ping_server(WAIT), Err(Error::NotConnected)));
    // A listener that never speaks: handshake timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = Client::new(ClientConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ClientConfig::new("127.0.0.1", silent.local_addr().unwrap().port())
    });
    assert!(matches!(c.connect(), Err(Error::HandshakeTimeout(_))));
}

#[test]
fn wrong_generation_fails_clearly_within_the_handshake_timeout() {
    let (_g3, addr3) = echo_server(ServerConfig {
        handshake_timeout: Duration::from_millis(500),
        ..ServerConfig::local()
    });
    let (_g1, addr1) = echo_server(ServerConfig {
        generation: Generation::Gen1,
        ..ServerConfig::local()
    });
    let t0 = Instant::now();
    let c = Client::new(ClientConfig {
        generation: Generation::Gen1,
        handshake_timeout: Duration::from_secs(2),
        ..ClientConfig::new("127.0.0.1", addr3.port())
    });
    let e = c.connect().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Handshake(veltix::HandshakeError::WrongGeneration(_))
        ),
        "{e}"
    );
    let c = Client::new(ClientConfig {
        generation: Generation::Gen3,
        handshake_timeout: Duration::from_secs(2),
        ..ClientConfig::new("127.0.0.1", addr1.port())
    });
    let e = c.connect().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Handshake(veltix::HandshakeError::WrongGeneration(_))
        ),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn gen1_rust_to_rust() {
    let (server, addr) = echo_server(ServerConfig {
        generation: Generation::Gen1,
        ..ServerConfig::local()
    });
    let c = Client::new(ClientConfig {
        generation: Generation::Gen1,
        ..ClientConfig::new("127.0.0.1", addr.port())
    });
    c.connect().unwrap();
    let r = c.send_and_wait(Request::text(&ECHO, "gen1"), WAIT).unwrap();
    assert_eq!(r.text().unwrap(), "gen1");
    // Gen 1 ids are 32-bit.
    let r = c
        .send_and_wait(
            Request::text(&ECHO, "big id").with_request_id(0xDEAD_BEEF),
            WAIT,
        )
        .unwrap();
    assert_eq!(r.request_id(), 0xDEAD_BEEF);
    assert!(c.ping_server(WAIT).is_ok());
    let info = server.clients().pop().unwrap();
    assert!(server.ping_client(&info, WAIT).is_ok());
}

#[test]
fn abusive_peers_are_disconnected_and_others_keep_working() {
    let (server, addr) = echo_server(ServerConfig {
        max_message_size: 1024,
        ..ServerConfig::local()
    });
    let good = connected(addr);
    // Garbage after the handshake.
    let mut s = raw_client(addr);
    s.write_all(b"this is not a veltix frame at all").unwrap();
    assert!(closed_by_server(&mut s));
    // Oversize header (declares 4 GiB).
    let mut s = raw_client(addr);
    s.write_all(&[
        0x56, 0x58, 0, 0, 200, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1,
    ])
    .unwrap();
    assert!(closed_by_server(&mut s));
    // CRC mismatch.
    let mut s = raw_client(addr);
    let mut f = Frame::new(200, 1, &b"abc"[..])
        .encode(Generation::Gen3)
        .unwrap()
        .to_vec();
    f[9] ^= 0xff;
    s.write_all(&f).unwrap();
    assert!(closed_by_server(&mut s));
    // Garbage before the handshake.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_by_server(&mut s));
    // The good client never noticed.
    for i in 0..50 {
        let t = format!("still fine {i}");
        assert_eq!(
            good.send_and_wait(Request::text(&ECHO, &t), WAIT)
                .unwrap()
                .text()
                .unwrap(),
            t
        );
    }
    assert_eq!(server.clients().len(), 1);
}

#[test]
fn silent_connections_are_cut_at_the_handshake_timeout() {
    let (_server, addr) = echo_server(ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::local()
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let t0 = Instant::now();
    assert!(closed_by_server(&mut s));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn oversize_sends_are_refused_locally() {
    let (_server, addr) = echo_server(ServerConfig::local());
    let c = Client::new(ClientConfig {
        max_message_size: 100,
        ..ClientConfig::new("127.0.0.1", addr.port())
    });
    c.connect().unwrap();
    assert!(matches!(
        c.send(Request::new(&ECHO, vec![0u8; 100])),
        Err(Error::MessageTooLarge { .. })
    ));
    assert!(c.send(Request::new(&ECHO, vec![0u8; 85])).is_ok());
}

#[test]
fn a_peer_that_never_reads_fills_its_bounded_queue() {
    let server = Server::new(ServerConfig {
        max_queued_bytes: 256 * 1024,
        ..ServerConfig::local()
    });
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.on_connect(move |c: &ClientInfo| {
        let _ = tx.lock().unwrap().send(c.clone());
    });
    let addr = server.start().unwrap();
    let _stuck = raw_client(addr); // never reads
    let info = recv(&rx);
    let chunk = vec![7u8; 64 * 1024];
    let mut full = None;
    for i in 0..100_000 {
        match info.send(Request::new(&NOTE, chunk.clone())) {
            Ok(()) => {}
            Err(e) => {
                full = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = full.expect("the queue must fill up");
    assert!(matches!(e, Error::QueueFull { .. }), "{e}");
    // Kernel buffers take some megabytes; the rest is bounded by max_queued_bytes.
    assert!(i < 2000, "sent {i} x 64 KiB before the queue filled");
    // Other clients are unaffected.
    let c = connected(addr);
    assert!(c.ping_server(WAIT).is_ok());
}

#[test]
fn close_all_flushes_what_was_queued_and_restart_keeps_routes() {
    let (server, addr) = echo_server(ServerConfig::local());
    let c = connected(addr);
    let got = Arc::new(AtomicUsize::new(0));
    let (dtx, drx) = channel();
    let g = got.clone();
    c.route(&NOTE, move |_m: Response| {
        g.fetch_add(1, Ordering::SeqCst);
    });
    c.on_disconnect(move |s| {
        let _ = dtx.send(*s);
    });
    let info = server.clients().pop().unwrap();
    for i in 0..2000 {
        info.send(Request::text(&NOTE, &format!("message {i}")))
            .unwrap();
    }
    server.close_all();
    let state = recv(&drx);
    assert!(state.permanent);
    assert_eq!(state.reason, DisconnectReason::ServerClosed);
    assert_eq!(
        got.load(Ordering::SeqCst),
        2000,
        "close_all must flush queued messages"
    );
    assert!(!server.is_running());
    // Restart: same address, same routes.
    let addr2 = server.restart().unwrap();
    assert_eq!(addr2, addr);
    let c = connected(addr2);
    assert_eq!(
        c.send_and_wait(Request::text(&ECHO, "again"), WAIT)
            .unwrap()
            .text()
            .unwrap(),
        "again"
    );
}

#[test]
fn wait_until_closed_returns_after_close_all() {
    let (server, _addr) = echo_server(ServerConfig::local());
    let server = Arc::new(server);
    let s2 = server.clone();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        s2.wait_until_closed();
        let _ = tx.send(());
    });
    server.close_all();
    recv(&rx);
}

#[test]
fn client_reconnects_after_a_server_restart_and_keeps_every_handler() {
    let (server, addr) = echo_server(ServerConfig::local());
    server.on_connect(|c: &ClientInfo| {
        let _ = c.send(Request::text(&NOTE, "welcome"));
    });
    let c = Client::new(ClientConfig {
        reconnect: ReconnectPolicy::exponential(
            50,
            Duration::from_millis(20),
            Duration::from_millis(200),
        ),
        ..ClientConfig::new("127.0.0.1", addr.port())
    });
    let (etx, erx) = channel();
    let e1 = Mutex::new(etx.clone());
    c.on_disconnect(move |s| {
        let _ = e1.lock().unwrap().send(format!(
            "disconnect {} {} {:?}",
            s.permanent, s.attempt, s.reason
        ));
    });
    let e2 = Mutex::new(etx.clone());
    c.on_connect(move || {
        let _ = e2.lock().unwrap().send("connect".to_string());
    });
    let e3 = Mutex::new(etx);
    c.on_recv(move |m: Response| {
        let _ = e3
            .lock()
            .unwrap()
            .send(format!("recv {}", m.text().unwrap_or("")));
    });
    c.connect().unwrap();
    assert_eq!(recv(&erx), "connect");
    assert_eq!(recv(&erx), "recv welcome");
    server.close_all();
    assert_eq!(recv(&erx), "disconnect false 0 ServerClosed");
    // Failed attempts while the server is down are reported; then it comes back.
    let first = recv(&erx);
    assert!(
        first.starts_with("disconnect false 1") || first == "connect",
        "{first}"
    );
    server.start().unwrap();
    let mut ev = first;
    while ev != "connect" {
        assert!(ev.starts_with("disconnect false "), "{ev}");
        ev = recv(&erx);
    }
    // on_recv survived the reconnect (Python loses it), and routes too.
    assert_eq!(recv(&erx), "recv welcome");
    assert_eq!(
        c.send_and_wait(Request::text(&ECHO, "back"), WAIT)
            .unwrap()
            .text()
            .unwrap(),
        "back"
    );
    c.disconnect();
    assert_eq!(recv(&erx), "disconnect true 0 Manual");
    c.wait_until_closed();
}

#[test]
fn retries_exhausted_give_the_python_sequence() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Client::new(ClientConfig {
        reconnect: ReconnectPolicy::constant(3, Duration::from_millis(10)),
        ..ClientConfig::new("127.0.0.1", port)
    });
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

#[test]
fn keepalive_detects_a_silent_peer() {
    // Server side: a raw client that completed the handshake and then never answers PINGs.
    let server = Server::new(ServerConfig {
        keepalive: Some(KeepAlive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(400),
        }),
        ..ServerConfig::local()
    });
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.on_disconnect(move |c: &ClientInfo| {
        let _ = tx.lock().unwrap().send(c.id());
    });
    let addr = server.start().unwrap();
    let silent = TcpStream::connect(addr).unwrap();
    let mut hs_stream = silent.try_clone().unwrap();
    hs_stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut hs = Handshake::client(HandshakeConfig::new(Generation::Gen3));
    let mut buf = [0u8; 256];
    while !hs.is_done() {
        while let Some(b) = hs.poll_transmit() {
            hs_stream.write_all(&b).unwrap();
        }
        if hs.is_done() {
            break;
        }
        let n = hs_stream.read(&mut buf).unwrap();
        hs.feed(&buf[..n]).unwrap();
    }
    let t0 = Instant::now();
    recv(&rx);
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A live client with keep-alive enabled stays connected (it answers PINGs).
    let c = Client::new(ClientConfig {
        keepalive: Some(KeepAlive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(400),
        }),
        ..ClientConfig::new("127.0.0.1", addr.port())
    });
    c.connect().unwrap();
    let info = server.clients().into_iter().next().unwrap();
    // Several keep-alive periods later, both ends still talk.
    for _ in 0..5 {
        assert!(server.ping_client(&info, WAIT).is_ok());
        assert!(c.ping_server(WAIT).is_ok());
    }
}

#[test]
fn close_all_returns_after_every_handler_and_on_disconnect_ran() {
    let server = Server::new(ServerConfig::local());
    let handled = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    server.route(&NOTE, move |_c: &ClientInfo, _m: Response| {
        h.fetch_add(1, Ordering::SeqCst);
    });
    let g = gone.clone();
    server.on_disconnect(move |_c: &ClientInfo| {
        g.fetch_add(1, Ordering::SeqCst);
    });
    let addr = server.start().unwrap();
    let clients: Vec<Client> = (0..5).map(|_| connected(addr)).collect();
    for c in &clients {
        for i in 0..200 {
            c.send(Request::text(&NOTE, &i.to_string())).unwrap();
        }
        // The ping's answer proves the server has read everything sent before it.
        c.ping_server(WAIT).unwrap();
    }
    server.close_all();
    // No waiting here: close_all itself waited for the handlers.
    assert_eq!(handled.load(Ordering::SeqCst), 1000);
    assert_eq!(gone.load(Ordering::SeqCst), 5);
}

#[test]
fn reserved_type_codes_are_refused_before_sending() {
    let (server, addr) = echo_server(ServerConfig::local());
    let c = connected(addr);
    for code in [2u16, 10, 150, 199] {
        let e = c.send(Request::text(code, "x")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Protocol(veltix::proto::Error::ReservedTypeCode { .. })
            ),
            "{e}"
        );
    }
    assert!(server.broadcast(Request::text(5u16, "x"), &[]).is_err());
    // System types are allowed (a PING is answered with a PONG that reaches on_recv).
    assert!(c.send(Request::new(veltix::PING, Vec::new())).is_ok());
    assert!(c.send(Request::text(200u16, "user code")).is_ok());
}

#[test]
fn stop_retry_ends_a_background_retry_loop() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Client::new(ClientConfig {
        reconnect: ReconnectPolicy::constant(1000, Duration::from_millis(20)),
        ..ClientConfig::new("127.0.0.1", port)
    });
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    c.on_disconnect(move |s| {
        let _ = tx.lock().unwrap().send(*s);
    });
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
    assert!(t0.elapsed() < WAIT);
    c.wait_until_closed();
}
