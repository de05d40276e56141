//! The connection-event observer (`Server::on_event` / `Client::on_event`, `veltix::observe`):
//! every event kind is produced by a real exchange and its fields are checked. Events are
//! collected through a channel and waited for with generous timeouts; servers bind port 0.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use support::raw::{closed_by_server, corrupt_gen3_frame, gen3_peer};
use veltix::observe::Event;
use veltix::{Client, ClientConfig, Error, MessageType, Server, ServerConfig};

const T: Duration = Duration::from_secs(10);
const ECHO: MessageType = MessageType::new(200, "echo");

/// An owned copy of an [`Event`] (events are borrowed).
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Ping(SocketAddr, u32),
    Pong(SocketAddr, u32),
    Started(SocketAddr),
    Done(SocketAddr, String),
    Failed(SocketAddr, String),
    Full(SocketAddr, usize, usize),
    Accept(String),
    Violation(SocketAddr, String),
}

fn own(e: &Event<'_>) -> Seen {
    match e {
        Event::PingReceived { peer, request_id } => Seen::Ping(*peer, *request_id),
        Event::PongSent { peer, request_id } => Seen::Pong(*peer, *request_id),
        Event::HandshakeStarted { peer } => Seen::Started(*peer),
        Event::HandshakeDone { peer, peer_version } => Seen::Done(*peer, peer_version.to_string()),
        Event::HandshakeFailed { peer, error } => Seen::Failed(*peer, format!("{error:?}")),
        Event::ServerFull { peer, current, max } => Seen::Full(*peer, *current, *max),
        Event::AcceptFailed { error } => Seen::Accept(error.to_string()),
        Event::ProtocolViolation { peer, reason } => Seen::Violation(*peer, reason.to_string()),
        other => panic!("an event this test does not know: {other:?}"),
    }
}

fn watch_server(server: &Server) -> Receiver<Seen> {
    let (tx, rx) = channel();
    server.on_event(move |e| {
        let _ = tx.send(own(e));
    });
    rx
}

fn watch_client(client: &Client) -> Receiver<Seen> {
    let (tx, rx) = channel();
    client.on_event(move |e| {
        let _ = tx.send(own(e));
    });
    rx
}

/// Waits (up to `T`) for an event that `want` accepts; returns it. Other events are skipped.
fn wait_for(rx: &Receiver<Seen>, what: &str, want: impl Fn(&Seen) -> bool) -> Seen {
    let end = Instant::now() + T;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if want(&e) => return e,
            Ok(_) => continue,
            Err(_) => panic!("no {what} event within {T:?}"),
        }
    }
}

fn echo_server(config: ServerConfig) -> (Server, u16) {
    let server = Server::new(config);
    server.route(&ECHO, |client, msg| {
        client.send(veltix::Request::new(&ECHO, msg.content().clone()).respond(&msg))
    });
    let port = server.start().expect("start").port();
    (server, port)
}

#[test]
fn handshakes_pings_and_pongs_are_observed_on_both_sides() {
    let (server, port) = echo_server(ServerConfig::local());
    let srv = watch_server(&server);
    let client = Client::new(ClientConfig::new("127.0.0.1", port));
    let cli = watch_client(&client);
    client.connect().expect("connect");

    let local = match wait_for(&srv, "server HandshakeStarted", |e| {
        matches!(e, Seen::Started(_))
    }) {
        Seen::Started(peer) => peer,
        _ => unreachable!(),
    };
    match wait_for(&srv, "server HandshakeDone", |e| {
        matches!(e, Seen::Done(..))
    }) {
        Seen::Done(peer, version) => {
            assert_eq!(peer, local);
            assert!(!version.is_empty());
        }
        _ => unreachable!(),
    }
    let server_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(
        wait_for(&cli, "client HandshakeStarted", |e| matches!(
            e,
            Seen::Started(_)
        )),
        Seen::Started(server_addr)
    );
    match wait_for(&cli, "client HandshakeDone", |e| {
        matches!(e, Seen::Done(..))
    }) {
        Seen::Done(peer, version) => {
            assert_eq!(peer, server_addr);
            assert!(!version.is_empty());
        }
        _ => unreachable!(),
    }

    // Client PINGs: the server sees the PING and sends the PONG, same id.
    client.ping_server(T).expect("ping_server");
    let ping = wait_for(&srv, "server PingReceived", |e| matches!(e, Seen::Ping(..)));
    let Seen::Ping(peer, id) = ping else {
        unreachable!()
    };
    assert_eq!(peer, local);
    assert_eq!(
        wait_for(&srv, "server PongSent", |e| matches!(e, Seen::Pong(..))),
        Seen::Pong(local, id)
    );
    // Server PINGs: now the client answers.
    let info = server.clients().pop().expect("one client");
    server.ping_client(&info, T).expect("ping_client");
    let Seen::Ping(peer, id) =
        wait_for(&cli, "client PingReceived", |e| matches!(e, Seen::Ping(..)))
    else {
        unreachable!()
    };
    assert_eq!(peer, server_addr);
    assert_eq!(
        wait_for(&cli, "client PongSent", |e| matches!(e, Seen::Pong(..))),
        Seen::Pong(server_addr, id)
    );
    client.disconnect();
    server.close_all();
}

#[test]
fn server_full_is_observed_by_the_server_and_as_a_failed_handshake_by_the_client() {
    let (server, port) = echo_server(ServerConfig::local().max_connections(1));
    let srv = watch_server(&server);
    let first = Client::new(ClientConfig::new("127.0.0.1", port));
    first.connect().expect("first");
    let second = Client::new(ClientConfig::new("127.0.0.1", port));
    let cli = watch_client(&second);
    assert!(matches!(second.connect(), Err(Error::ServerFull(_))));
    match wait_for(&srv, "ServerFull", |e| matches!(e, Seen::Full(..))) {
        Seen::Full(_, current, max) => assert_eq!((current, max), (1, 1)),
        _ => unreachable!(),
    }
    match wait_for(&cli, "client HandshakeFailed", |e| {
        matches!(e, Seen::Failed(..))
    }) {
        Seen::Failed(_, error) => assert!(error.contains("ServerFull"), "{error}"),
        _ => unreachable!(),
    }
    first.disconnect();
    server.close_all();
}

#[test]
fn failed_handshakes_and_protocol_violations_are_observed() {
    let (server, port) = echo_server(ServerConfig::local());
    let srv = watch_server(&server);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // A hello that is not JSON.
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(b"\x00\x04nope").expect("write");
    assert!(closed_by_server(&mut s));
    match wait_for(&srv, "HandshakeFailed", |e| matches!(e, Seen::Failed(..))) {
        Seen::Failed(peer, error) => {
            assert_eq!(peer, s.local_addr().expect("local addr"));
            assert!(error.contains("Handshake"), "{error}");
        }
        _ => unreachable!(),
    }
    // A corrupt frame after a good handshake.
    let mut raw = gen3_peer(addr, T);
    let bad = corrupt_gen3_frame(ECHO.code());
    raw.write_all(&bad).expect("write");
    assert!(closed_by_server(&mut raw));
    match wait_for(&srv, "ProtocolViolation", |e| {
        matches!(e, Seen::Violation(..))
    }) {
        Seen::Violation(peer, reason) => {
            assert_eq!(peer, raw.local_addr().expect("local addr"));
            assert!(reason.to_lowercase().contains("crc"), "{reason}");
        }
        _ => unreachable!(),
    }
    server.close_all();
}

#[test]
fn a_panicking_observer_is_contained_and_can_be_replaced() {
    let (server, port) = echo_server(ServerConfig::local());
    server.on_event(|_| panic!("observer boom"));
    let client = Client::new(ClientConfig::new("127.0.0.1", port));
    client
        .connect()
        .expect("connect despite the panicking observer");
    let reply = client
        .send_and_wait(veltix::Request::text(&ECHO, "still up"), T)
        .expect("echo");
    assert_eq!(reply.text().expect("text"), "still up");
    let srv = watch_server(&server);
    client.ping_server(T).expect("ping");
    wait_for(&srv, "PingReceived after replacing", |e| {
        matches!(e, Seen::Ping(..))
    });
    client.disconnect();
    server.close_all();
}
