//! Self-test of the Python peer harness (`support::python`), without the Rust runtime:
//! real Python Veltix servers talking to real Python Veltix clients of the same version.
//! If these pass, interop tests can trust what the peers report.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::python::{payload, PyPeer, PyVersion};

const T: Duration = Duration::from_secs(20);

fn is_event(ev: &Value, name: &str) -> bool {
    ev["event"] == name
}

/// Starts a server and `n` clients (each with `client_args`); returns them once the server
/// has reported `n` connect events. `idx[k]` is the server-side index of `clients[k]`
/// (matched by the clients' local ports).
fn server_with_clients(
    v: PyVersion,
    server_args: &[&str],
    n: usize,
    client_args: &[&str],
) -> (PyPeer, Vec<PyPeer>, Vec<u64>) {
    let server = PyPeer::server(v, server_args);
    let clients: Vec<PyPeer> = (0..n)
        .map(|_| PyPeer::client(v, server.port(), client_args))
        .collect();
    let connects = server.wait_events(n, |e| is_event(e, "connect"), T);
    let idx = clients
        .iter()
        .map(|c| {
            let lp = &c.startup_event()["local_port"];
            connects
                .iter()
                .find(|e| &e["addr"][1] == lp)
                .unwrap_or_else(|| {
                    panic!("no server connect event for local port {lp}: {connects:?}")
                })["client"]
                .as_u64()
                .expect("client index")
        })
        .collect();
    (server, clients, idx)
}

/// Payload bytes as the peer encodes them (asks the peer, so JSON formatting matches Python).
fn digest(peer: &PyPeer, spec: Value) -> Value {
    peer.cmd_ok(json!({"cmd": "digest", "payload": spec}))
}

/// Client `send_and_wait`s `spec` to an `--echo` server; checks the reply (same type, same
/// id, "echo:" + payload) and the server's recv event.
fn check_echo(server: &PyPeer, client: &PyPeer, ty: u16, spec: Value) {
    let sent = digest(client, spec.clone());
    let reply = client.cmd_ok(json!({
        "cmd": "send_and_wait", "type": ty, "payload": spec, "timeout": 20,
    }));
    assert_eq!(reply["type"], ty, "{reply}");
    assert_eq!(
        reply["id"], reply["sent_id"],
        "reply must carry the request id: {reply}"
    );

    let len = sent["len"].as_u64().unwrap();
    assert_eq!(reply["len"].as_u64(), Some(len + 5), "{reply}");
    if let Some(hex) = sent["hex"].as_str() {
        assert_eq!(
            reply["hex"].as_str(),
            Some(format!("6563686f3a{hex}").as_str())
        );
    }

    let id = reply["sent_id"].clone();
    let ev = server.wait_event(
        |e| is_event(e, "recv") && e["type"] == ty && e["id"] == id,
        T,
    );
    assert_eq!(ev["len"], sent["len"], "{ev}");
    assert_eq!(ev["sha256"], sent["sha256"], "{ev}");
}

fn echo_suite(v: PyVersion) {
    let server = PyPeer::server(v, &["--echo"]);
    let client = PyPeer::client(v, server.port(), &[]);
    let c = server.wait_event(|e| is_event(e, "connect"), T);
    assert_eq!(c["client"], 0);

    check_echo(&server, &client, 200, payload::text("hello héllo €😀"));
    check_echo(
        &server,
        &client,
        201,
        payload::json_value(json!({"a": [1, 2, "x"], "b": null})),
    );
    let mut bin: Vec<u8> = (0..=255u8).collect();
    bin.extend_from_slice(&[0, 0, 0xff, 0x56, 0x58]);
    check_echo(&server, &client, 202, payload::bytes(&bin));
    check_echo(&server, &client, 203, payload::bytes(&[]));
    // Types without a route reach on_recv (and are echoed too).
    check_echo(&server, &client, 10000, payload::text("plugin range"));
    check_echo(&server, &client, 65535, payload::text("max code"));

    // Route vs on_recv dispatch is reported.
    let via: Vec<(Value, Value)> = server
        .events_named("recv")
        .iter()
        .map(|e| (e["type"].clone(), e["via"].clone()))
        .collect();
    assert!(via.contains(&(json!(200), json!("route"))), "{via:?}");
    assert!(via.contains(&(json!(10000), json!("on_recv"))), "{via:?}");

    // 5 MiB, checked by length and sha256 only.
    const BIG: usize = 5 * 1024 * 1024;
    let reply = client.cmd_ok(json!({
        "cmd": "send_and_wait", "type": 204, "payload": payload::seq(BIG), "timeout": 60,
    }));
    let want = digest(&client, payload::prefixed_seq(b"echo:", BIG));
    assert_eq!(reply["len"].as_u64(), Some(BIG as u64 + 5));
    assert_eq!(reply["sha256"], want["sha256"]);
    assert!(reply.get("hex").is_none(), "no hex for big payloads");
    assert_eq!(reply["id"], reply["sent_id"]);
    let ev = server.wait_event(|e| is_event(e, "recv") && e["type"] == 204, T);
    assert_eq!(ev["sha256"], digest(&server, payload::seq(BIG))["sha256"]);

    // Plain send: the echo comes back as an unsolicited recv event with the same id.
    let sent = client.cmd_ok(json!({"cmd": "send", "type": 205, "payload": payload::text("fire")}));
    let id = sent["request_id"].clone();
    let ev = client.wait_event(|e| is_event(e, "recv") && e["type"] == 205, T);
    assert_eq!(ev["id"], id);
    assert_eq!(ev["hex"], payload::to_hex(b"echo:fire"));

    // Unknown commands and bad arguments are reported, not fatal.
    let r = client.cmd(json!({"cmd": "no_such_command"}));
    assert_eq!(r["ok"], false);
    let r = client.cmd(json!({"cmd": "clients"}));
    assert_eq!(r["ok"], false, "server-only command on a client");
    let r = server
        .cmd(json!({"cmd": "send", "client": 99, "type": 200, "payload": payload::text("x")}));
    assert_eq!(r["ok"], false, "unknown client index");

    assert!(client.close().success());
    let d = server.wait_event(|e| is_event(e, "disconnect"), T);
    assert_eq!(d["client"], 0);
    assert!(server.close().success());
}

fn ping_suite(v: PyVersion) {
    let server = PyPeer::server(v, &[]);
    let client = PyPeer::client(v, server.port(), &[]);
    let idx = server.wait_event(|e| is_event(e, "connect"), T)["client"].clone();

    let r = client.cmd_ok(json!({"cmd": "ping", "timeout": 5}));
    assert!(r["rtt_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{r}");
    assert!(r["value"].is_number(), "{r}");

    let r = server.cmd_ok(json!({"cmd": "ping", "client": idx, "timeout": 5}));
    assert!(r["rtt_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{r}");

    // Server-initiated request/response: the client echoes with the server's id.
    let client2 = PyPeer::client(v, server.port(), &["--echo"]);
    let lp = client2.startup_event()["local_port"].clone();
    let idx2 =
        server.wait_event(|e| is_event(e, "connect") && e["addr"][1] == lp, T)["client"].clone();
    let r = server.cmd_ok(json!({
        "cmd": "send_and_wait", "client": idx2, "type": 206, "payload": payload::text("to client"), "timeout": 10,
    }));
    assert_eq!(r["id"], r["sent_id"]);
    assert_eq!(r["hex"], payload::to_hex(b"echo:to client"));

    // A client without --echo never answers: send_and_wait times out.
    let r = server.cmd(json!({
        "cmd": "send_and_wait", "client": idx, "type": 207, "payload": payload::text("?"), "timeout": 0.3,
    }));
    assert_eq!(r["ok"], false);
    assert_eq!(r["error"], "timeout");
    client.wait_event(|e| is_event(e, "recv") && e["type"] == 207, T);
}

fn broadcast_suite(v: PyVersion) {
    // --workers 1: callbacks run in arrival order, so per-client event order is meaningful.
    let (server, clients, idx) = server_with_clients(v, &[], 3, &["--workers", "1"]);
    let mut sorted = idx.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2]);

    let b =
        server.cmd_ok(json!({"cmd": "broadcast", "type": 208, "payload": payload::text("to all")}));
    for c in &clients {
        let ev = c.wait_event(|e| is_event(e, "recv") && e["type"] == 208, T);
        assert_eq!(ev["hex"], payload::to_hex(b"to all"));
        assert_eq!(ev["id"], b["request_id"], "one id for the whole broadcast");
    }

    // Exclude clients[1]; then a broadcast to everybody acts as a barrier.
    server.cmd_ok(json!({
        "cmd": "broadcast", "type": 209, "payload": payload::text("not you"), "except": [idx[1]],
    }));
    server.cmd_ok(json!({"cmd": "broadcast", "type": 210, "payload": payload::text("barrier")}));
    for (k, c) in clients.iter().enumerate() {
        c.wait_event(|e| is_event(e, "recv") && e["type"] == 210, T);
        let got_209 = c.events_named("recv").iter().any(|e| e["type"] == 209);
        assert_eq!(
            got_209,
            k != 1,
            "client {k} (server idx {}): {:?}",
            idx[k],
            c.events()
        );
    }

    // close_client: the client sees the server close, the server reports the disconnect.
    let r = server.cmd_ok(json!({"cmd": "close_client", "client": idx[2]}));
    assert_eq!(r["result"], true);
    let d = clients[2].wait_event(|e| is_event(e, "disconnect"), T);
    assert_eq!(d["reason"], "SERVER_CLOSED", "{d}");
    assert_eq!(d["permanent"], true);
    let d = server.wait_event(|e| is_event(e, "disconnect") && e["client"] == idx[2], T);
    assert!(d.get("repeat").is_none(), "{d}");
    let listed = server.cmd_ok(json!({"cmd": "clients"}));
    let listed: Vec<Value> = listed["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].clone())
        .collect();
    let mut want = vec![json!(idx[0]), json!(idx[1])];
    want.sort_by_key(|v| v.as_u64());
    assert_eq!(listed, want);

    assert!(server.close().success());
    for c in &clients[..2] {
        c.wait_event(|e| is_event(e, "disconnect"), T);
    }
}

#[test]
fn v3_echo_text_json_binary_empty_and_5mib() {
    echo_suite(PyVersion::V3_3_0);
}

#[test]
fn v3_ping_both_ways_and_server_send_and_wait() {
    ping_suite(PyVersion::V3_3_0);
}

#[test]
fn v3_broadcast_to_three_clients() {
    broadcast_suite(PyVersion::V3_3_0);
}

fn tags_suite(v: PyVersion) {
    let (server, _clients, idx) = server_with_clients(v, &[], 3, &[]);
    let tag = |k: usize, name: &str, value: Value| {
        server.cmd_ok(json!({"cmd": "tag", "client": idx[k], "name": name, "value": value}))
            ["result"]
            .clone()
    };
    assert_eq!(tag(0, "room", json!("a")), true);
    assert_eq!(tag(1, "room", json!("b")), true);
    assert_eq!(tag(2, "room", json!("a")), true);
    assert_eq!(tag(2, "vip", json!(true)), true);

    let by = |q: Value| -> Vec<u64> {
        let mut q = q;
        q["cmd"] = json!("by_tag");
        server.cmd_ok(q)["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let mut a = vec![idx[0], idx[2]];
    a.sort_unstable();
    assert_eq!(by(json!({"name": "room", "value": "a"})), a);
    assert_eq!(by(json!({"name": "room", "value": "b"})), vec![idx[1]]);
    assert_eq!(by(json!({"name": "room"})), vec![0, 1, 2]);
    assert_eq!(by(json!({"name": "vip"})), vec![idx[2]]);
    assert_eq!(by(json!({"name": "nope"})), Vec::<u64>::new());

    // add_tag refuses to overwrite; set_tag (default mode) overwrites.
    let r = server.cmd_ok(
        json!({"cmd": "tag", "client": idx[1], "name": "room", "value": "a", "mode": "add"}),
    );
    assert_eq!(r["result"], false);
    assert_eq!(by(json!({"name": "room", "value": "b"})), vec![idx[1]]);
    tag(1, "room", json!("a"));
    assert_eq!(by(json!({"name": "room", "value": "a"})), vec![0, 1, 2]);

    let r = server.cmd_ok(json!({"cmd": "untag", "client": idx[2], "name": "vip"}));
    assert_eq!(r["result"], true);
    assert_eq!(by(json!({"name": "vip"})), Vec::<u64>::new());

    let listed = server.cmd_ok(json!({"cmd": "clients"}));
    let c0 = listed["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == idx[0])
        .unwrap()
        .clone();
    assert_eq!(c0["tags"], json!({"room": "a"}));
    assert_eq!(c0["handshake_done"], true);
}

#[test]
fn v3_tags_and_by_tag() {
    tags_suite(PyVersion::V3_3_0);
}

#[test]
fn v16_tags_and_by_tag() {
    tags_suite(PyVersion::V1_6_9);
}

#[test]
fn v3_server_full_is_reported() {
    let server = PyPeer::server(PyVersion::V3_3_0, &["--max-connections", "1"]);
    let first = PyPeer::client(PyVersion::V3_3_0, server.port(), &[]);
    server.wait_event(|e| is_event(e, "connect"), T);

    let second = PyPeer::client_unchecked(PyVersion::V3_3_0, server.port(), &[]);
    assert_eq!(second.startup_event()["event"], "connect_failed");
    assert_eq!(second.startup_event()["error"], "server_full");
    // 3.3.0 reports the rejection as a non-permanent SERVER_CLOSED disconnect.
    let d = second.wait_event(|e| is_event(e, "disconnect"), T);
    assert_eq!(d["reason"], "SERVER_CLOSED", "{d}");

    // The first client is unaffected.
    let r = first.cmd_ok(json!({"cmd": "ping", "timeout": 5}));
    assert!(r["rtt_ms"].is_number());
}

#[test]
fn v3_threading_core_echo() {
    let server = PyPeer::server(PyVersion::V3_3_0, &["--echo", "--socket-core", "threading"]);
    let client = PyPeer::client(
        PyVersion::V3_3_0,
        server.port(),
        &["--socket-core", "threading"],
    );
    check_echo(&server, &client, 200, payload::text("threading backend"));
    check_echo(&server, &client, 201, payload::seq(1024 * 1024));
}

#[test]
fn v16_echo_text_json_binary_empty_and_5mib() {
    echo_suite(PyVersion::V1_6_9);
}

#[test]
fn v16_ping_both_ways_and_server_send_and_wait() {
    ping_suite(PyVersion::V1_6_9);
}

#[test]
fn v16_broadcast_to_three_clients() {
    broadcast_suite(PyVersion::V1_6_9);
}

#[test]
fn v16_full_server_stalls_the_handshake() {
    // 1.6.9 has no rejection message: a full server just stops calling accept(), so the
    // client's HELLO never comes and connect() fails after handshake_timeout.
    let server = PyPeer::server(PyVersion::V1_6_9, &["--max-connections", "1"]);
    let _first = PyPeer::client(PyVersion::V1_6_9, server.port(), &[]);
    server.wait_event(|e| is_event(e, "connect"), T);
    let second = PyPeer::client_unchecked(
        PyVersion::V1_6_9,
        server.port(),
        &["--handshake-timeout", "0.5"],
    );
    assert_eq!(second.startup_event()["event"], "connect_failed");
    assert_eq!(second.startup_event()["error"], "handshake_timeout");
    let d = second.wait_event(|e| is_event(e, "disconnect"), T);
    assert_eq!(d["reason"], "MANUAL", "{d}");
}

#[test]
fn v16_explicit_request_ids() {
    let server = PyPeer::server(PyVersion::V1_6_9, &["--echo"]);
    let client = PyPeer::client(PyVersion::V1_6_9, server.port(), &[]);
    let r = client.cmd_ok(json!({
        "cmd": "send_and_wait", "type": 200, "payload": payload::text("x"), "request_id": 0x0102_0304u32,
    }));
    assert_eq!(r["id"], 0x0102_0304u32);
    assert_eq!(r["id_hex"], "01020304");
    // A short explicit id is right-padded with zeros on the wire, but 1.6.9 registers the
    // pending wait under the unpadded bytes: the echo (id 05000000) never matches it, so
    // send_and_wait times out and the reply falls through to the route as a recv event.
    let r = client.cmd(json!({
        "cmd": "send_and_wait", "type": 201, "payload": payload::text("y"),
        "request_id_hex": "05", "timeout": 0.5,
    }));
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["sent_id_hex"], "05000000");
    let ev = client.wait_event(|e| is_event(e, "recv") && e["type"] == 201, T);
    assert_eq!(ev["id_hex"], "05000000");
    assert_eq!(ev["hex"], payload::to_hex(b"echo:y"));
}

#[test]
fn peer_exits_cleanly_on_stdin_eof() {
    for v in PyVersion::ALL {
        let server = PyPeer::server(v, &[]);
        let client = PyPeer::client(v, server.port(), &[]);
        server.wait_event(|e| is_event(e, "connect"), T);
        client.close_stdin();
        assert!(client.wait_exit(T).success());
        server.wait_event(|e| is_event(e, "disconnect"), T);
        server.close_stdin();
        assert!(server.wait_exit(T).success());
    }
}
