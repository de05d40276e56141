//! One error for a lost link: every send and wait on a link that is gone fails with
//! `Error::Disconnected(cause)`, the cause being the FIRST thing that ended the connection. One
//! test per cause, on both sides where the side can see it: the peer closed, closed locally,
//! never connected (or reconnecting), server stopped, keep-alive timeout (a silent raw TCP peer)
//! and protocol violation (a corrupt frame from a raw TCP peer).
//!
//! Pending waits are always proven pending first: the peer signals (or the raw peer reads) the
//! request before the link is ended, and waits have a 60 s timeout, so a `Timeout` or a late
//! answer cannot pass for the expected cause. Nothing sleeps: every step waits on a channel.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use support::raw::gen3_peer;
use veltix::proto::{
    encode_parts, Decoded, Decoder, DecoderConfig, Generation, Handshake, HandshakeConfig,
};
use veltix::{
    AsyncClient, Client, ClientConfig, ClientInfo, DisconnectCause, DisconnectState, Error,
    KeepAlive, ReconnectPolicy, Request, Response, Result, Server, ServerConfig,
};

/// How long a test waits for an event before failing.
const T: Duration = Duration::from_secs(20);
/// The timeout of waits that must end with the link, not with their timeout.
const LONG: Duration = Duration::from_secs(60);
/// A request that is never answered: the peer only reports that it arrived.
const HOLD: u16 = 300;
/// Any other message.
const NOTE: u16 = 301;
/// Keep-alive for the keep-alive tests: PING after 50 ms of silence, cut after 300 ms.
const KEEPALIVE: KeepAlive = KeepAlive::new(Duration::from_millis(50), Duration::from_millis(300));

fn held() -> Request {
    Request::text(HOLD, "never answered")
}

fn note() -> Request {
    Request::text(NOTE, "x")
}

/// Asserts that `r` failed with `Error::Disconnected(cause)`.
#[track_caller]
fn assert_cause<T: std::fmt::Debug>(r: Result<T>, cause: DisconnectCause) {
    match r {
        Err(Error::Disconnected(c)) if c == cause => {}
        other => panic!("expected Err(Disconnected({cause:?})), got {other:?}"),
    }
}

/// A local server whose HOLD route reports each request (never answering it); returns the
/// server, its address, the clients it accepts and the HOLD requests it receives.
fn hold_server(cfg: ServerConfig) -> (Server, SocketAddr, Receiver<ClientInfo>, Receiver<()>) {
    let server = Server::new(cfg);
    let (ctx, connects) = channel();
    server.on_connect(move |c| {
        let _ = ctx.send(c.clone());
    });
    let (htx, holds) = channel();
    server.route(HOLD, move |_c: &ClientInfo, _m: Response| {
        let _ = htx.send(());
    });
    let addr = server.start().expect("start");
    (server, addr, connects, holds)
}

/// A client of `addr` whose HOLD route reports each request (never answering it).
fn hold_client(cfg: ClientConfig) -> (Arc<Client>, Receiver<()>) {
    let client = Client::new(cfg);
    let (htx, holds) = channel();
    client.route(HOLD, move |_m: Response| {
        let _ = htx.send(());
    });
    (Arc::new(client), holds)
}

fn client_config(addr: SocketAddr) -> ClientConfig {
    ClientConfig::new("127.0.0.1", addr.port())
}

/// Starts a client's `send_and_wait` of an unanswered request on another thread.
fn client_waits(client: &Arc<Client>) -> JoinHandle<Result<Response>> {
    let c = client.clone();
    std::thread::spawn(move || c.send_and_wait(held(), LONG))
}

/// Starts a server's `send_and_wait` of an unanswered request to `info` on another thread.
fn server_waits(info: &ClientInfo) -> JoinHandle<Result<Response>> {
    let info = info.clone();
    std::thread::spawn(move || info.send_and_wait(held(), LONG))
}

fn join<R>(h: JoinHandle<R>) -> R {
    h.join().expect("waiting thread panicked")
}

// ------------------------------------------------------------------------------ raw TCP peers

fn frame(message_type: u16, id: u32, content: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    encode_parts(Generation::Gen3, message_type, id, 0, content, &mut out).expect("frame");
    out.to_vec()
}

/// A Gen 3 frame whose CRC does not match its content (one CRC byte flipped).
fn corrupt_frame() -> Vec<u8> {
    let mut f = frame(NOTE, 1, b"checksummed");
    f[9] ^= 0x55;
    f
}

/// Reads frames from a raw peer until one of `message_type` arrives (keep-alive PINGs are
/// skipped). Panics on EOF or after the stream's read timeout.
fn read_until(s: &mut TcpStream, decoder: &mut Decoder, message_type: u16) {
    let mut buf = [0u8; 4096];
    loop {
        while let Some(d) = decoder.decode() {
            match d {
                Decoded::Frame(f) if f.message_type == message_type => return,
                Decoded::Frame(_) => {}
                Decoded::Rejected(r) => panic!("the runtime sent a bad frame: {r}"),
            }
        }
        let n = s.read(&mut buf).expect("raw peer read");
        assert!(
            n > 0,
            "closed before a frame of type {message_type} arrived"
        );
        decoder.feed(&buf[..n]);
    }
}

fn gen3_decoder() -> Decoder {
    Decoder::new(DecoderConfig::new(Generation::Gen3))
}

/// A raw TCP "server" for one client: accepts, completes the server side of the Gen 3
/// handshake, then runs `script` on the socket.
fn raw_server(script: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(T)).expect("read timeout");
        let mut hs =
            Handshake::server(HandshakeConfig::new(Generation::Gen3)).expect("a default handshake");
        let mut buf = [0u8; 4096];
        loop {
            while let Some(b) = hs.poll_transmit() {
                s.write_all(&b).expect("raw server write");
            }
            if hs.is_done() {
                break;
            }
            let n = s.read(&mut buf).expect("raw server read");
            assert!(n > 0, "client closed during the handshake");
            hs.feed(&buf[..n]).expect("client's hello");
        }
        script(s);
    });
    addr
}

/// Reads and discards until the peer closes (or the read timeout).
fn drain(mut s: TcpStream) {
    let mut b = [0u8; 4096];
    while matches!(s.read(&mut b), Ok(n) if n > 0) {}
}

// ------------------------------------------------------------------------------------ causes

/// The peer closes: a pending wait and the next sends fail with `PeerClosed`, on the client
/// (the server closed it) and on the server (the client disconnected). A later local stop does
/// not overwrite the first cause.
#[test]
fn peer_close_is_peer_closed_for_a_pending_wait_and_the_next_send() {
    let (server, addr, connects, server_holds) = hold_server(ServerConfig::local());

    // The server closes the client.
    let (client, _) = hold_client(client_config(addr));
    client.connect().expect("connect");
    let info = connects.recv_timeout(T).expect("on_connect");
    let wait = client_waits(&client);
    server_holds.recv_timeout(T).expect("request at the server");
    assert!(server.close_client(&info));
    assert_cause(join(wait), DisconnectCause::PeerClosed);
    assert_cause(client.send(note()), DisconnectCause::PeerClosed);
    assert_cause(
        client.send_and_wait(held(), LONG),
        DisconnectCause::PeerClosed,
    );
    assert_cause(client.ping_server(LONG), DisconnectCause::PeerClosed);
    assert_cause(client.sender().send(note()), DisconnectCause::PeerClosed);

    // The client disconnects while the server waits for it.
    let (client, client_holds) = hold_client(client_config(addr));
    client.connect().expect("connect");
    let info = connects.recv_timeout(T).expect("on_connect");
    let wait = server_waits(&info);
    client_holds.recv_timeout(T).expect("request at the client");
    client.disconnect();
    assert_cause(join(wait), DisconnectCause::PeerClosed);
    assert_cause(info.send(note()), DisconnectCause::PeerClosed);
    assert_cause(info.ping(LONG), DisconnectCause::PeerClosed);
    // First writer wins: stopping the server later does not change why this link ended.
    server.close_all();
    assert_cause(info.send(note()), DisconnectCause::PeerClosed);
    assert_eq!(
        server.stats().dropped.closed,
        2,
        "refused sends on a dead connection are counted"
    );
}

/// We close it: `close_client` on the server, `disconnect()` or dropping on the client; a
/// pending wait and the next sends fail with `ClosedLocally`.
#[test]
fn local_close_is_closed_locally() {
    let (server, addr, connects, server_holds) = hold_server(ServerConfig::local());

    // The server closes a client it waits for.
    let (client, client_holds) = hold_client(client_config(addr));
    client.connect().expect("connect");
    let info = connects.recv_timeout(T).expect("on_connect");
    let wait = server_waits(&info);
    client_holds.recv_timeout(T).expect("request at the client");
    assert!(server.close_client(&info));
    assert_cause(join(wait), DisconnectCause::ClosedLocally);
    assert_cause(info.send(note()), DisconnectCause::ClosedLocally);
    assert_cause(
        server.send_and_wait(held(), &info, LONG),
        DisconnectCause::ClosedLocally,
    );

    // The client disconnects while it waits.
    let (client, _) = hold_client(client_config(addr));
    client.connect().expect("connect");
    connects.recv_timeout(T).expect("on_connect");
    let wait = client_waits(&client);
    server_holds.recv_timeout(T).expect("request at the server");
    client.disconnect();
    assert_cause(join(wait), DisconnectCause::ClosedLocally);
    assert_cause(client.send(note()), DisconnectCause::ClosedLocally);
    assert_cause(client.ping_server(LONG), DisconnectCause::ClosedLocally);

    // A sender outliving its client.
    let (client, _) = hold_client(client_config(addr));
    client.connect().expect("connect");
    let tx = client.sender();
    tx.send(note()).expect("send while connected");
    drop(client);
    assert_cause(tx.send(note()), DisconnectCause::ClosedLocally);
}

/// No link at all: a client that never connected, or one that is reconnecting, fails at once
/// with `NotConnected` (nothing is queued).
#[test]
fn no_link_is_not_connected() {
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let never = Client::new(ClientConfig::new("127.0.0.1", port));
    assert_cause(never.send(note()), DisconnectCause::NotConnected);
    assert_cause(
        never.send_and_wait(held(), LONG),
        DisconnectCause::NotConnected,
    );
    assert_cause(never.ping_server(LONG), DisconnectCause::NotConnected);
    assert_cause(never.sender().send(note()), DisconnectCause::NotConnected);
    assert!(matches!(
        never.connect(),
        Err(Error::ConnectionRefused { .. })
    ));
    assert_cause(never.send(note()), DisconnectCause::NotConnected);

    // Reconnecting: the server is gone, the client retries (a long delay after the first,
    // immediate, attempt) and sends fail with NotConnected meanwhile.
    let (server, addr, connects, _) = hold_server(ServerConfig::local());
    let policy = ReconnectPolicy::constant(3, Duration::from_secs(3600));
    let client = Client::new(client_config(addr).reconnect(policy));
    let (dtx, disconnects) = channel::<DisconnectState>();
    client.on_disconnect(move |s| {
        let _ = dtx.send(*s);
    });
    client.connect().expect("connect");
    connects.recv_timeout(T).expect("on_connect");
    drop(server);
    let first = disconnects.recv_timeout(T).expect("on_disconnect");
    assert!(!first.permanent, "{first:?}: a reconnect loop must run");
    assert_cause(client.send(note()), DisconnectCause::NotConnected);
    assert_cause(
        client.send_and_wait(held(), LONG),
        DisconnectCause::NotConnected,
    );
    client.stop_retry();
    client.disconnect();
    assert_cause(client.send(note()), DisconnectCause::ClosedLocally);
}

/// The server stops (`close_all`, or it is dropped): its connections and its senders fail with
/// `ServerStopped`; its clients see the peer close.
#[test]
fn server_stop_is_server_stopped() {
    let (server, addr, connects, server_holds) = hold_server(ServerConfig::local());
    let (client, client_holds) = hold_client(client_config(addr));
    client.connect().expect("connect");
    let info = connects.recv_timeout(T).expect("on_connect");
    // Both sides wait for each other.
    let server_wait = server_waits(&info);
    client_holds.recv_timeout(T).expect("request at the client");
    let client_wait = client_waits(&client);
    server_holds.recv_timeout(T).expect("request at the server");
    let tx = server.sender();
    server.close_all();
    assert_cause(join(server_wait), DisconnectCause::ServerStopped);
    assert_cause(info.send(note()), DisconnectCause::ServerStopped);
    assert_cause(tx.send(note(), &info), DisconnectCause::ServerStopped);
    assert_cause(join(client_wait), DisconnectCause::PeerClosed);
    assert_cause(client.send(note()), DisconnectCause::PeerClosed);

    // A sender outliving its server.
    let addr = server.start().expect("restart");
    let client = Client::new(client_config(addr));
    client.connect().expect("connect");
    let info = connects.recv_timeout(T).expect("on_connect");
    tx.send(note(), &info).expect("send while running");
    drop(server);
    // Its connection tasks may still hold the server a moment: either way, ServerStopped.
    assert_cause(tx.send(note(), &info), DisconnectCause::ServerStopped);
    assert_cause(info.send(note()), DisconnectCause::ServerStopped);
    // Nothing else holds a server that never started: the sender finds it gone.
    let idle = Server::new(ServerConfig::local());
    let tx = idle.sender();
    drop(idle);
    assert_cause(tx.broadcast(note(), &[]), DisconnectCause::ServerStopped);
    assert_cause(tx.send(note(), &info), DisconnectCause::ServerStopped);
}

/// A silent peer (handshake done, then nothing, not even PONGs) is cut by keep-alive: the
/// pending wait and the next sends fail with `KeepAliveTimeout`, on both sides.
#[test]
fn keepalive_timeout_is_keepalive_timeout() {
    // Server side: a raw client that reads but never writes.
    let (server, addr, connects, _) = hold_server(ServerConfig::local().keepalive(KEEPALIVE));
    let mut raw = gen3_peer(addr, T);
    let info = connects.recv_timeout(T).expect("on_connect");
    let wait = server_waits(&info);
    read_until(&mut raw, &mut gen3_decoder(), HOLD);
    assert_cause(join(wait), DisconnectCause::KeepAliveTimeout);
    assert_cause(info.send(note()), DisconnectCause::KeepAliveTimeout);
    assert_eq!(server.stats().keepalive_timeouts, 1);
    drop(raw);

    // Client side: a raw server that reads but never writes after its handshake.
    let (rtx, requests) = channel();
    let addr = raw_server(move |mut s| {
        read_until(&mut s, &mut gen3_decoder(), HOLD);
        let _ = rtx.send(());
        drain(s);
    });
    let (client, _) = hold_client(client_config(addr).keepalive(KEEPALIVE));
    client.connect().expect("connect");
    let wait = client_waits(&client);
    requests.recv_timeout(T).expect("request at the raw server");
    assert_cause(join(wait), DisconnectCause::KeepAliveTimeout);
    assert_cause(client.send(note()), DisconnectCause::KeepAliveTimeout);
    assert_eq!(client.stats().keepalive_timeouts, 1);
}

/// A corrupt frame (CRC mismatch) ends the connection: the pending wait and the next sends fail
/// with `ProtocolViolation`, on both sides.
#[test]
fn corrupt_frame_is_protocol_violation() {
    // Server side: a raw client answers the server's request with a corrupt frame.
    let (server, addr, connects, _) = hold_server(ServerConfig::local());
    let mut raw = gen3_peer(addr, T);
    let info = connects.recv_timeout(T).expect("on_connect");
    let wait = server_waits(&info);
    read_until(&mut raw, &mut gen3_decoder(), HOLD);
    raw.write_all(&corrupt_frame()).expect("raw write");
    assert_cause(join(wait), DisconnectCause::ProtocolViolation);
    assert_cause(info.send(note()), DisconnectCause::ProtocolViolation);
    assert_eq!(server.stats().rejected.crc_mismatch, 1);
    drop(raw);

    // Client side: a raw server does the same.
    let addr = raw_server(|mut s| {
        read_until(&mut s, &mut gen3_decoder(), HOLD);
        s.write_all(&corrupt_frame()).expect("raw server write");
        drain(s);
    });
    let (client, _) = hold_client(client_config(addr));
    client.connect().expect("connect");
    let wait = client_waits(&client);
    assert_cause(join(wait), DisconnectCause::ProtocolViolation);
    assert_cause(client.send(note()), DisconnectCause::ProtocolViolation);
    assert_eq!(client.stats().rejected.crc_mismatch, 1);
}

/// The async face reports the same causes: a pending `send_and_wait` future fails with
/// `PeerClosed` when the server closes the client, and so does the next send.
#[test]
fn async_client_wait_sees_the_cause() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (server, addr, connects, server_holds) = hold_server(ServerConfig::local());
    let client = {
        let _g = rt.enter();
        Arc::new(AsyncClient::new(client_config(addr)))
    };
    rt.block_on(client.connect()).expect("connect");
    let info = connects.recv_timeout(T).expect("on_connect");
    let wait = {
        let c = client.clone();
        rt.spawn(async move { c.send_and_wait(held(), LONG).await })
    };
    server_holds.recv_timeout(T).expect("request at the server");
    assert!(server.close_client(&info));
    assert_cause(
        rt.block_on(wait).expect("task"),
        DisconnectCause::PeerClosed,
    );
    assert_cause(
        rt.block_on(client.send(note())),
        DisconnectCause::PeerClosed,
    );
    assert_cause(rt.block_on(client.ping(LONG)), DisconnectCause::PeerClosed);
}

/// The cause is cheap (`Copy`), comparable, and displayed as part of the error.
#[test]
fn cause_is_copy_and_displayed() {
    let c = DisconnectCause::Io(std::io::ErrorKind::ConnectionReset);
    let copy = c;
    assert_eq!(c, copy);
    let e = Error::Disconnected(c);
    assert_eq!(e.to_string(), "disconnected: I/O error: connection reset");
    assert_eq!(
        Error::Disconnected(DisconnectCause::NotConnected).to_string(),
        "disconnected: not connected"
    );
}
