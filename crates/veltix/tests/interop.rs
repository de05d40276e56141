//! Interop with the REAL Python Veltix, as separate processes, in both directions and both wire
//! generations: 3.3.0 (Gen 3, the default) and 1.6.9 (Gen 1). The Python peers are
//! `tests/python/peer3.py` / `peer16.py`, run from virtualenvs under `target/py`.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use support::python::{payload, PyPeer, PyVersion};
use veltix::{
    Client, ClientConfig, ClientInfo, DisconnectCause, Error, Generation, MessageType, Request,
    Response, Server, ServerConfig,
};

const ECHO: MessageType = MessageType::new(200, "echo");
const NOTE: MessageType = MessageType::new(201, "note");
const PLUGIN: MessageType = MessageType::new(10000, "plugin");
const T: Duration = Duration::from_secs(20);
const BIG: usize = 5 * 1024 * 1024;

fn generation(v: PyVersion) -> Generation {
    match v {
        PyVersion::V3_3_0 => Generation::Gen3,
        PyVersion::V1_6_9 => Generation::Gen1,
    }
}

fn recv<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(T).expect("event did not arrive in time")
}

/// A Rust server answering ECHO with `"echo:" + content` (same type, same id), like the Python
/// peers' `--echo`, and reporting connects and on_recv traffic.
struct RustServer {
    server: Server,
    addr: SocketAddr,
    connects: Receiver<ClientInfo>,
    received: Receiver<(u16, Vec<u8>)>,
}

fn rust_server(v: PyVersion, max_connections: Option<usize>) -> RustServer {
    let mut config = ServerConfig::local()
        .generation(generation(v))
        .max_message_size(64 * 1024 * 1024);
    config.max_connections = max_connections;
    let server = Server::new(config);
    server.route(&ECHO, |c: &ClientInfo, m: Response| {
        let mut body = b"echo:".to_vec();
        body.extend_from_slice(m.content());
        c.send(Request::new(&ECHO, body).respond(&m))
    });
    let (ctx, connects) = channel();
    let ctx = Mutex::new(ctx);
    server.on_connect(move |c: &ClientInfo| {
        let _ = ctx.lock().unwrap().send(c.clone());
    });
    let (rtx, received) = channel();
    let rtx = Mutex::new(rtx);
    server.on_recv(move |_c: &ClientInfo, m: Response| {
        let _ = rtx
            .lock()
            .unwrap()
            .send((m.message_type(), m.content().to_vec()));
    });
    let addr = server.start().expect("rust server start");
    RustServer {
        server,
        addr,
        connects,
        received,
    }
}

fn rust_client(v: PyVersion, port: u16) -> Client {
    Client::new(
        ClientConfig::new("127.0.0.1", port)
            .generation(generation(v))
            .max_message_size(64 * 1024 * 1024),
    )
}

/// Python client `send_and_wait`s `spec` to the Rust server and checks the echo.
fn python_asks_rust(py: &PyPeer, spec: Value) {
    let sent = py.cmd_ok(json!({"cmd": "digest", "payload": spec.clone()}));
    let reply = py.cmd_ok(json!({"cmd": "send_and_wait", "type": ECHO.code(), "payload": spec.clone(), "timeout": 20}));
    assert_eq!(reply["type"], ECHO.code(), "{reply}");
    assert_eq!(
        reply["id"], reply["sent_id"],
        "reply must carry the request id: {reply}"
    );
    let len = sent["len"].as_u64().unwrap();
    assert_eq!(reply["len"].as_u64(), Some(len + 5), "{reply}");
    // Compare the digest of "echo:" + payload computed by Python itself.
    let mut expect_spec = spec.clone();
    if let Some(obj) = expect_spec.as_object_mut() {
        if obj.contains_key("pattern") {
            obj.insert("prefix_hex".into(), json!(payload::to_hex(b"echo:")));
        }
    }
    if spec.get("pattern").is_some() {
        let expect = py.cmd_ok(json!({"cmd": "digest", "payload": expect_spec}));
        assert_eq!(reply["sha256"], expect["sha256"], "echoed bytes differ");
    } else if let Some(hex) = sent["hex"].as_str() {
        assert_eq!(
            reply["hex"].as_str(),
            Some(format!("6563686f3a{hex}").as_str())
        );
    }
}

fn python_client_talks_to_rust_server(v: PyVersion) {
    let rs = rust_server(v, None);
    let py = PyPeer::client(v, rs.addr.port(), &["--echo"]);
    let info = recv(&rs.connects);
    assert!(info.handshake_done());
    // Python -> Rust: send_and_wait with every kind of payload.
    python_asks_rust(&py, payload::text("héllo wörld €😀"));
    python_asks_rust(
        &py,
        payload::json_value(json!({"user": "ana", "scores": [1, 2.5, null], "ok": true})),
    );
    python_asks_rust(&py, payload::bytes(&(0..=255).collect::<Vec<u8>>()));
    python_asks_rust(&py, payload::bytes(&[]));
    python_asks_rust(&py, payload::seq(BIG));
    // Python -> Rust plain send to a type without a route: Rust's on_recv.
    py.cmd_ok(json!({"cmd": "send", "type": NOTE.code(), "payload": payload::text("fyi")}));
    assert_eq!(recv(&rs.received), (NOTE.code(), b"fyi".to_vec()));
    // Python pings Rust.
    let p = py.cmd_ok(json!({"cmd": "ping", "timeout": 10}));
    assert!(p["rtt_ms"].as_f64().is_some(), "{p}");
    // Rust pings Python and asks it (its --echo answers with respond()).
    assert!(rs.server.ping_client(&info, T).is_ok());
    let r = rs
        .server
        .send_and_wait(Request::text(&NOTE, "question"), &info, T)
        .unwrap();
    assert_eq!(r.text().unwrap(), "echo:question");
    let big = payload::seq_bytes(BIG);
    let r = rs
        .server
        .send_and_wait(Request::new(&NOTE, big.clone()), &info, T)
        .unwrap();
    assert_eq!(r.content().len(), BIG + 5);
    assert!(r.content()[5..] == big[..]);
    // Rust -> Python unsolicited: a routed type and an on_recv-only type.
    rs.server
        .send(Request::text(&NOTE, "routed"), &info)
        .unwrap();
    let ev = py.wait_event(
        |e| {
            e["event"] == "recv"
                && e["type"] == NOTE.code()
                && e["hex"] == payload::to_hex(b"routed")
        },
        T,
    );
    assert_eq!(ev["via"], "route");
    rs.server
        .send(Request::json(&PLUGIN, &json!({"k": "v"})).unwrap(), &info)
        .unwrap();
    let ev = py.wait_event(|e| e["event"] == "recv" && e["type"] == PLUGIN.code(), T);
    assert_eq!(ev["via"], "on_recv");
    assert_eq!(ev["hex"], payload::to_hex(br#"{"k": "v"}"#));
    // Closing from the Rust side is seen by Python.
    assert!(rs.server.close_client(&info));
    py.wait_event(|e| e["event"] == "disconnect", T);
}

fn rust_broadcasts_to_python_clients_by_tag(v: PyVersion) {
    let rs = rust_server(v, None);
    let peers: Vec<PyPeer> = (0..3)
        .map(|_| PyPeer::client(v, rs.addr.port(), &[]))
        .collect();
    let infos: Vec<ClientInfo> = (0..3).map(|_| recv(&rs.connects)).collect();
    // Tag two of them as a group (tags are server-local, nothing goes on the wire).
    infos[0].set_tag("team", "red");
    infos[1].set_tag("team", "red");
    infos[2].set_tag("team", "blue");
    let red = rs.server.get_clients_by_tag("team", Some(&json!("red")));
    assert_eq!(red.len(), 2);
    for c in &red {
        c.send(Request::text(&NOTE, "red only")).unwrap();
    }
    // Broadcast to everyone but client 2.
    assert_eq!(
        rs.server
            .broadcast(Request::text(&NOTE, "all but one"), &infos[2..])
            .unwrap(),
        2
    );
    // Map peers to infos by port.
    for peer in &peers {
        let port = peer.startup_event()["local_port"].as_u64().unwrap() as u16;
        let info = infos
            .iter()
            .find(|i| i.port() == port)
            .expect("peer's connection");
        let red = info.get_tag("team") == Some(json!("red"));
        let all_but = info != &infos[2];
        if red {
            peer.wait_event(
                |e| e["event"] == "recv" && e["hex"] == payload::to_hex(b"red only"),
                T,
            );
        }
        if all_but {
            peer.wait_event(
                |e| e["event"] == "recv" && e["hex"] == payload::to_hex(b"all but one"),
                T,
            );
        }
    }
    // Client 2 got nothing; check it with a ping round trip (FIFO on its connection).
    let two = peers
        .iter()
        .find(|p| p.startup_event()["local_port"].as_u64() == Some(u64::from(infos[2].port())))
        .unwrap();
    two.cmd_ok(json!({"cmd": "ping", "timeout": 10}));
    assert!(
        two.events_named("recv").is_empty(),
        "{:?}",
        two.events_named("recv")
    );
}

fn rust_client_talks_to_python_server(v: PyVersion) {
    let py = PyPeer::server(v, &["--echo"]);
    let c = rust_client(v, py.port());
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let sender = c.sender();
    c.route(&NOTE, move |m: Response| {
        let _ = tx.lock().unwrap().send(m.content().to_vec());
        let mut body = b"rust:".to_vec();
        body.extend_from_slice(m.content());
        sender.send(Request::new(&NOTE, body).respond(&m))
    });
    c.connect().expect("connect to the Python server");
    let conn = py.wait_event(|e| e["event"] == "connect", T);
    let idx = conn["client"].clone();
    // Rust -> Python send_and_wait: text, json, binary, empty, big.
    let r = c
        .send_and_wait(Request::text(&ECHO, "héllo €😀"), T)
        .unwrap();
    assert_eq!(r.text().unwrap(), "echo:héllo €😀");
    let r = c
        .send_and_wait(
            Request::json(&ECHO, &json!({"a": [1, 2], "b": "é"})).unwrap(),
            T,
        )
        .unwrap();
    assert_eq!(&r.content()[..], br#"echo:{"a": [1, 2], "b": "\u00e9"}"#);
    let bin: Vec<u8> = (0..=255).collect();
    assert_eq!(
        &c.send_and_wait(Request::new(&ECHO, bin.clone()), T)
            .unwrap()
            .content()[5..],
        &bin[..]
    );
    assert_eq!(
        &c.send_and_wait(Request::new(&ECHO, Vec::new()), T)
            .unwrap()
            .content()[..],
        b"echo:"
    );
    let big = payload::seq_bytes(BIG);
    let r = c
        .send_and_wait(Request::new(&ECHO, big.clone()), T)
        .unwrap();
    assert!(r.content()[5..] == big[..]);
    // Python saw what we sent, byte for byte.
    let ev = py.wait_event(|e| e["event"] == "recv" && e["len"] == BIG, T);
    let d = py.cmd_ok(json!({"cmd": "digest", "payload": payload::seq(BIG)}));
    assert_eq!(ev["sha256"], d["sha256"]);
    // Ping both ways.
    assert!(c.ping_server(T).is_ok());
    let p = py.cmd_ok(json!({"cmd": "ping", "client": idx, "timeout": 10}));
    assert!(p["rtt_ms"].as_f64().is_some(), "{p}");
    // Python server asks the Rust client (our route replies with respond()).
    let r = py.cmd_ok(json!({"cmd": "send_and_wait", "client": idx, "type": NOTE.code(), "payload": payload::text("q?"), "timeout": 20}));
    assert_eq!(r["hex"], payload::to_hex(b"rust:q?"), "{r}");
    assert_eq!(recv(&rx), b"q?".to_vec());
    // Python broadcast reaches the Rust client's route.
    py.cmd_ok(json!({"cmd": "broadcast", "type": NOTE.code(), "payload": payload::text("to all")}));
    assert_eq!(recv(&rx), b"to all".to_vec());
    // Tags on the Python side work with a Rust client.
    py.cmd_ok(json!({"cmd": "tag", "client": idx, "name": "lang", "value": "rust"}));
    let by = py.cmd_ok(json!({"cmd": "by_tag", "name": "lang"}));
    assert_eq!(
        by["clients"]
            .as_array()
            .map(|a| a.len())
            .or(by["result"].as_array().map(|a| a.len())),
        Some(1),
        "{by}"
    );
    // The Python server closes us: pending waits fail fast, the client sees the drop.
    let (dtx, drx) = channel();
    let dtx = Mutex::new(dtx);
    c.on_disconnect(move |s| {
        let _ = dtx.lock().unwrap().send(*s);
    });
    py.cmd_ok(json!({"cmd": "close_client", "client": idx}));
    let s = recv(&drx);
    assert!(s.permanent);
    // Python closes the socket: a FIN, or a reset if our bytes were still unread there.
    assert!(matches!(
        c.send(Request::text(&ECHO, "x")),
        Err(Error::Disconnected(
            DisconnectCause::PeerClosed | DisconnectCause::Io(_)
        ))
    ));
}

#[test]
fn python_3_3_0_client_to_rust_server() {
    python_client_talks_to_rust_server(PyVersion::V3_3_0);
}

#[test]
fn python_1_6_9_client_to_rust_server() {
    python_client_talks_to_rust_server(PyVersion::V1_6_9);
}

#[test]
fn rust_client_to_python_3_3_0_server() {
    rust_client_talks_to_python_server(PyVersion::V3_3_0);
}

#[test]
fn rust_client_to_python_1_6_9_server() {
    rust_client_talks_to_python_server(PyVersion::V1_6_9);
}

#[test]
fn broadcast_and_tags_with_python_3_3_0_clients() {
    rust_broadcasts_to_python_clients_by_tag(PyVersion::V3_3_0);
}

#[test]
fn broadcast_and_tags_with_python_1_6_9_clients() {
    rust_broadcasts_to_python_clients_by_tag(PyVersion::V1_6_9);
}

#[test]
fn server_full_both_directions_gen3() {
    // Rust server full -> Python client gets ServerFullError.
    let rs = rust_server(PyVersion::V3_3_0, Some(1));
    let _first = PyPeer::client(PyVersion::V3_3_0, rs.addr.port(), &[]);
    recv(&rs.connects);
    let second = PyPeer::client_unchecked(PyVersion::V3_3_0, rs.addr.port(), &[]);
    assert_eq!(
        second.startup_event()["error"],
        "server_full",
        "{:?}",
        second.startup_event()
    );
    // Python server full -> Rust client gets Error::ServerFull.
    let py = PyPeer::server(PyVersion::V3_3_0, &["--max-connections", "1"]);
    let a = rust_client(PyVersion::V3_3_0, py.port());
    a.connect().unwrap();
    let b = rust_client(PyVersion::V3_3_0, py.port());
    match b.connect() {
        Err(Error::ServerFull(reason)) => assert_eq!(reason, "server_full"),
        other => panic!("expected ServerFull, got {other:?}"),
    }
}

#[test]
fn server_full_gen1_behaves_as_python_1_6_9_expects() {
    // Gen 1 has no rejection message: a full Rust Gen 1 server stops accepting, and the Python
    // 1.6.9 client fails with its handshake timeout, as against a full Python 1.6.9 server.
    let rs = rust_server(PyVersion::V1_6_9, Some(1));
    let _first = PyPeer::client(PyVersion::V1_6_9, rs.addr.port(), &[]);
    recv(&rs.connects);
    let second = PyPeer::client_unchecked(
        PyVersion::V1_6_9,
        rs.addr.port(),
        &["--handshake-timeout", "1"],
    );
    assert_eq!(
        second.startup_event()["error"],
        "handshake_timeout",
        "{:?}",
        second.startup_event()
    );
}

#[test]
fn wrong_generation_against_python_fails_clearly() {
    let py3 = PyPeer::server(PyVersion::V3_3_0, &[]);
    let c = Client::new(
        ClientConfig::new("127.0.0.1", py3.port())
            .generation(Generation::Gen1)
            .handshake_timeout(Duration::from_secs(3)),
    );
    let e = c.connect().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Handshake(veltix::HandshakeError::WrongGeneration(_))
        ),
        "{e}"
    );
    let py1 = PyPeer::server(PyVersion::V1_6_9, &[]);
    let c = Client::new(
        ClientConfig::new("127.0.0.1", py1.port())
            .generation(Generation::Gen3)
            .handshake_timeout(Duration::from_secs(3)),
    );
    let e = c.connect().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Handshake(veltix::HandshakeError::WrongGeneration(_))
        ),
        "{e}"
    );
}
