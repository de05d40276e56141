//! Scenarios with raw TCP peers (the same raw peer against either server face): abusive input,
//! silence during the handshake, a peer that never reads, a peer that never answers keep-alive.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use veltix::proto::{Frame, Generation};
use veltix::{ClientConfig, Error, KeepAlive, Request, ServerConfig};

use crate::face::*;
use crate::support::raw::{closed_by_server, gen3_peer};

/// Garbage, an oversize header, a CRC mismatch and garbage before the handshake: each abusive
/// peer is disconnected, and a good client of the same server never notices.
pub fn scenario_abusive_peers_are_disconnected_and_others_keep_working<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig::local().max_message_size(1024));
    let gone = disconnects(&s);
    let good = connected::<F>(addr);
    let good_info = recv(&connects);
    // Garbage after the handshake.
    let mut p = gen3_peer(addr, T);
    let peer = recv(&connects);
    p.write_all(b"this is not a veltix frame at all").unwrap();
    assert!(closed_by_server(&mut p));
    assert_eq!(recv(&gone), peer);
    // Oversize header (declares 4 GiB).
    let mut p = gen3_peer(addr, T);
    let peer = recv(&connects);
    p.write_all(&[
        0x56, 0x58, 0, 0, 200, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1,
    ])
    .unwrap();
    assert!(closed_by_server(&mut p));
    assert_eq!(recv(&gone), peer);
    // CRC mismatch.
    let mut p = gen3_peer(addr, T);
    let peer = recv(&connects);
    let mut f = Frame::new(200, 1, &b"abc"[..])
        .encode(Generation::Gen3)
        .unwrap()
        .to_vec();
    f[9] ^= 0xff;
    p.write_all(&f).unwrap();
    assert!(closed_by_server(&mut p));
    assert_eq!(recv(&gone), peer);
    // Garbage before the handshake.
    let mut p = TcpStream::connect(addr).unwrap();
    p.set_read_timeout(Some(T)).unwrap();
    p.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_by_server(&mut p));
    // The good client never noticed.
    for i in 0..50 {
        let t = format!("still fine {i}");
        assert_eq!(
            echoed(good.send_and_wait(Request::text(&ECHO, &t), T)),
            t.as_bytes()
        );
    }
    // The abusive peers left clients() before their on_disconnect ran (awaited above).
    assert_eq!(s.clients(), vec![good_info]);
}

/// A connection that never starts the handshake is cut at the handshake timeout.
pub fn scenario_silent_connections_are_cut_at_the_handshake_timeout<F: Face>() {
    let (_s, addr, _connects) =
        setup::<F>(ServerConfig::local().handshake_timeout(Duration::from_millis(300)));
    let mut p = TcpStream::connect(addr).unwrap();
    p.set_read_timeout(Some(T)).unwrap();
    let t0 = Instant::now();
    assert!(closed_by_server(&mut p));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// Sends to a peer that never reads fail with `QueueFull` once its bounded queue is full;
/// other clients are unaffected.
pub fn scenario_a_peer_that_never_reads_fills_its_bounded_queue<F: Face>() {
    let (s, addr, connects) = setup::<F>(ServerConfig::local().max_queued_bytes(256 * 1024));
    let _stuck = gen3_peer(addr, T); // never reads
    let info = recv(&connects);
    let chunk = vec![7u8; 64 * 1024];
    let mut full = None;
    for i in 0..100_000 {
        if let Err(e) = s.send(Request::new(&NOTE, chunk.clone()), &info) {
            full = Some((i, e));
            break;
        }
    }
    let (i, e) = full.expect("the queue must fill up");
    assert!(matches!(e, Error::QueueFull { .. }), "{e}");
    // Kernel buffers take some megabytes; the rest is bounded by max_queued_bytes.
    assert!(i < 2000, "sent {i} x 64 KiB before the queue filled");
    // Other clients are unaffected.
    let c = connected::<F>(addr);
    assert!(c.ping().is_ok());
}

/// Keep-alive cuts a peer that completed the handshake and then never answers PINGs, within a
/// few timeouts; a client that answers them stays connected through it.
pub fn scenario_keepalive_detects_a_silent_peer<F: Face>() {
    let ka = Some(KeepAlive::new(
        Duration::from_millis(100),
        Duration::from_millis(400),
    ));
    let mut config = ServerConfig::local();
    config.settings.keepalive = ka;
    let (s, addr, connects) = setup::<F>(config);
    let gone = disconnects(&s);
    // The live client with keep-alive enabled connects first, so it stays idle (but for
    // keep-alive) at least as long as the silent peer takes to be cut.
    let mut config = ClientConfig::new("127.0.0.1", addr.port());
    config.settings.keepalive = ka;
    let c = F::client(config);
    let c_events = events(&c);
    c.connect().unwrap();
    assert_eq!(recv(&c_events), "connect");
    let live = recv(&connects);
    let _silent = gen3_peer(addr, T); // never reads, never answers
    let silent = recv(&connects);
    let t0 = Instant::now();
    assert_eq!(recv(&gone), silent);
    assert!(t0.elapsed() < Duration::from_secs(5));
    // The live client went through at least one keep-alive timeout without being cut.
    assert!(c.is_connected());
    for _ in 0..5 {
        assert!(s.ping(&live).is_ok());
        assert!(c.ping().is_ok());
    }
    assert_eq!(s.clients(), vec![live]);
    assert!(gone.try_recv().is_err());
    assert!(c_events.try_recv().is_err());
}
