//! `Server::stats` / `Client::stats` (and the async faces): every counter moves when its event
//! happens, by exactly the expected amount, and repeated events cost a bounded number of log
//! lines (captured from this process's tracing output).
//!
//! Waits are on events (replies, callbacks, the server closing a socket) with deadlines.

mod support;

use std::io::{Read, Write};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use support::logs::logs;
use support::raw::{closed_by_server, corrupt_gen3_frame, gen3_peer};
use veltix::proto::{Frame, Generation};
use veltix::{
    AsyncClient, AsyncServer, Client, ClientConfig, Error, Request, Server, ServerConfig, Stats,
};

const T: Duration = Duration::from_secs(20);
const ECHO: u16 = 200;

/// WARN lines of this process's log (tests/support/logs.rs) that mention `peer` and contain
/// `needle`.
fn lines_with(peer: &str, needle: &str) -> Vec<String> {
    logs()
        .text()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(peer) && l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn echo_server(cfg: ServerConfig) -> (Server, u16) {
    logs();
    let server = Server::new(cfg);
    server.route(ECHO, |c: &veltix::ClientInfo, m: veltix::Response| {
        c.send(Request::new(ECHO, m.content().clone()).respond(&m))
    });
    let port = server.start().expect("start").port();
    (server, port)
}

fn wait_stats(what: &str, get: impl Fn() -> Stats, ok: impl Fn(&Stats) -> bool) -> Stats {
    let t0 = Instant::now();
    loop {
        let s = get();
        if ok(&s) {
            return s;
        }
        assert!(t0.elapsed() < T, "{what} not seen within {T:?}: {s:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn traffic_is_counted_on_both_sides() {
    let (server, port) = echo_server(ServerConfig::local());
    let client = Client::new(ClientConfig::new("127.0.0.1", port));
    client.connect().expect("connect");
    for i in 0..50 {
        let r = client
            .send_and_wait(Request::text(ECHO, &format!("m{i}")), T)
            .expect("echo");
        assert_eq!(r.text().expect("text"), format!("m{i}"));
    }
    client.ping_server(T).expect("ping");
    let c = client.stats();
    assert_eq!((c.connections, c.connections_opened), (1, 1));
    assert_eq!((c.frames_out, c.frames_in), (51, 51), "{c:?}");
    // The server has read what the client wrote and written what the client read.
    let s = wait_stats(
        "server side",
        || server.stats(),
        |s| s.bytes_in == c.bytes_out,
    );
    assert_eq!((s.frames_in, s.frames_out), (51, 51), "{s:?}");
    assert_eq!(s.bytes_out, c.bytes_in);
    assert_eq!((s.connections, s.connections_opened), (1, 1));
    assert_eq!(s.dropped, Default::default());
    client.disconnect();
    server.close_all();
    assert_eq!(server.stats().connections, 0);
    assert_eq!(client.stats().connections, 0);
}

#[test]
fn a_peer_that_never_reads_costs_counted_drops_and_few_log_lines() {
    let (server, port) = echo_server(ServerConfig::local().max_queued_bytes(64 * 1024));
    let (tx, rx) = channel();
    server.on_connect(move |c| {
        let _ = tx.send(c.clone());
    });
    let mut peer = gen3_peer(([127, 0, 0, 1], port).into(), T);
    let me = peer.local_addr().expect("addr").to_string();
    let client = rx.recv_timeout(T).expect("on_connect");
    // The peer never reads: after its socket buffers and 64 KiB of queue, sends fail.
    let payload = bytes::Bytes::from(vec![7u8; 16 * 1024]);
    let (mut ok, mut full) = (0u64, 0u64);
    while full < 10_000 {
        match server.send(Request::new(ECHO, payload.clone()), &client) {
            Ok(()) => ok += 1,
            Err(Error::QueueFull { .. }) => full += 1,
            Err(e) => panic!("unexpected send error after {ok} sends: {e}"),
        }
    }
    assert_eq!(server.stats().dropped.queue_full, full);
    // Broadcasts to it are refused (and counted) too.
    assert_eq!(
        server
            .broadcast(Request::new(ECHO, payload.clone()), &[])
            .expect("broadcast"),
        0
    );
    assert_eq!(server.stats().dropped.queue_full, full + 1);
    // PINGs it sends are not answered while the queue is full: counted as dropped PONGs. (The
    // kernel may still take some bytes as its buffers grow, so refill the queue before each
    // batch and go on until 100 were dropped.)
    let ping = Frame::new(0, 9, &b""[..])
        .encode(Generation::Gen3)
        .expect("ping");
    let t0 = Instant::now();
    let mut pings = 0;
    while server.stats().dropped.pongs < 100 {
        assert!(t0.elapsed() < T, "PONGs not dropped: {:?}", server.stats());
        while server
            .send(Request::new(ECHO, bytes::Bytes::new()), &client)
            .is_ok()
        {}
        for _ in 0..100 {
            peer.write_all(&ping).expect("ping");
        }
        pings += 100;
        wait_stats(
            "the PINGs read",
            || server.stats(),
            |s| s.frames_in == pings,
        );
    }
    let pongs = server.stats().dropped.pongs;
    let total = server.stats().dropped.queue_full;
    assert_eq!(lines_with(&me, "sends to it are dropped").len(), 1);
    assert_eq!(lines_with(&me, "PONG dropped").len(), 1);
    // Closing the connection logs the rest as summaries: one per second while it lasted, one
    // at the end; together they count every drop but the first.
    server.close_client(&client);
    let mut sink = Vec::new();
    let _ = peer.read_to_end(&mut sink);
    let t0 = Instant::now();
    while summed(&me, "dropped ", " sends to this peer") != total - 1
        || summed(&me, "dropped ", " PONGs") != pongs - 1
    {
        assert!(
            t0.elapsed() < T,
            "summaries: {:#?}",
            lines_with(&me, "dropped")
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // A first line and a closing summary per kind, plus one summary per second at most.
    let bound = 6 + 2 * t0.elapsed().as_secs() as usize;
    assert!(
        lines_with(&me, "").len() <= bound,
        "{:#?}",
        lines_with(&me, "")
    );
    server.close_all();
}

/// The sum of the counts N in `{before}N{after}` log lines for `peer` (N with thousands
/// separators).
fn summed(peer: &str, before: &str, after: &str) -> u64 {
    lines_with(peer, after)
        .iter()
        .filter_map(|l| {
            let start = l.find(before)? + before.len();
            let end = start + l[start..].find(after)?;
            l[start..end].replace(',', "").parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn refusals_and_handshake_failures_are_counted() {
    let (server, port) = echo_server(
        ServerConfig::local()
            .max_connections(1)
            .handshake_timeout(Duration::from_millis(300)),
    );
    let addr = ([127, 0, 0, 1], port).into();
    // A hello that is not JSON: malformed.
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(b"\x00\x04nope").expect("write");
    assert!(closed_by_server(&mut s));
    // Silence: timeout.
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    assert!(closed_by_server(&mut s));
    let st = wait_stats(
        "handshake failures",
        || server.stats(),
        |s| s.handshake_failures.timeout == 1,
    );
    assert_eq!(st.handshake_failures.malformed, 1, "{st:?}");
    // A good client takes the only slot; the next one is refused as server_full, both sides.
    let first = Client::new(ClientConfig::new("127.0.0.1", port));
    first.connect().expect("first");
    let second = Client::new(ClientConfig::new("127.0.0.1", port));
    assert!(matches!(second.connect(), Err(Error::ServerFull(_))));
    assert_eq!(second.stats().handshake_failures.refused, 1);
    assert_eq!(server.stats().refused.server_full, 1);
    // A corrupt frame after the handshake: rejected, the connection closed.
    first.disconnect();
    wait_stats("slot free", || server.stats(), |s| s.connections == 0);
    let mut raw = gen3_peer(addr, T);
    let bad = corrupt_gen3_frame(ECHO);
    raw.write_all(&bad).expect("write");
    assert!(closed_by_server(&mut raw));
    wait_stats(
        "CRC rejection",
        || server.stats(),
        |s| s.rejected.crc_mismatch == 1,
    );
    server.close_all();
}

#[test]
fn unrouted_frames_are_counted_on_the_client_too() {
    let server = Server::new(ServerConfig::local());
    let (tx, rx) = channel();
    server.on_connect(move |c| {
        let _ = tx.send(c.clone());
    });
    let port = server.start().expect("start").port();
    let client = Client::new(ClientConfig::new("127.0.0.1", port));
    client.connect().expect("connect");
    let c = rx.recv_timeout(T).expect("on_connect");
    for i in 0..300 {
        server
            .send(Request::text(4242u16, &format!("{i}")), &c)
            .expect("send");
    }
    client.ping_server(T).expect("ping after the frames");
    wait_stats("unrouted", || client.stats(), |s| s.dropped.unrouted == 300);
    client.disconnect();
    server.close_all();
}

#[test]
fn async_faces_expose_the_same_counters() {
    logs();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let server = AsyncServer::new(ServerConfig::local());
        server.route(ECHO, |c: &veltix::ClientInfo, m: veltix::Response| {
            c.send(Request::new(ECHO, m.content().clone()).respond(&m))
        });
        let port = server.start().expect("start").port();
        let client = AsyncClient::new(ClientConfig::new("127.0.0.1", port));
        client.connect().await.expect("connect");
        client
            .send_and_wait(Request::text(ECHO, "a"), T)
            .await
            .expect("echo");
        let c = client.stats();
        assert_eq!(
            (c.frames_out, c.frames_in, c.connections),
            (1, 1, 1),
            "{c:?}"
        );
        let s = server.stats();
        assert_eq!(
            (s.frames_in, s.frames_out, s.connections),
            (1, 1, 1),
            "{s:?}"
        );
        // The blocking face of the same server sees the same counters.
        let server = Server::from(server);
        assert_eq!(s, server.stats());
        client.disconnect().await;
        server.as_async().close_all().await;
    });
}
