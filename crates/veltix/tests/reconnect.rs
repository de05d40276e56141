//! Resilience against real processes: restarts, reconnects with backoff, half-open links.

mod support;

use std::process::Command;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use support::python::{payload, PyPeer, PyVersion};
use veltix::{
    Client, ClientConfig, ClientInfo, DisconnectReason, DisconnectState, KeepAlive, MessageType,
    ReconnectPolicy, Request, Response, Server, ServerConfig,
};

const ECHO: MessageType = MessageType::new(200, "echo");
const T: Duration = Duration::from_secs(30);

fn recv<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(T).expect("event did not arrive in time")
}

#[derive(Debug, PartialEq)]
enum Ev {
    Connect,
    Disconnect(DisconnectState),
    Recv(Vec<u8>),
}

fn observed_client(cfg: ClientConfig) -> (Client, Receiver<Ev>) {
    let c = Client::new(cfg);
    let (tx, rx) = channel();
    let t1 = Mutex::new(tx.clone());
    c.on_connect(move || {
        let _ = t1.lock().unwrap().send(Ev::Connect);
    });
    let t2 = Mutex::new(tx.clone());
    c.on_disconnect(move |s| {
        let _ = t2.lock().unwrap().send(Ev::Disconnect(*s));
    });
    let t3 = Mutex::new(tx);
    c.on_recv(move |m: Response| {
        let _ = t3.lock().unwrap().send(Ev::Recv(m.content().to_vec()));
    });
    (c, rx)
}

/// Skips failed-attempt notifications until the client is connected again.
fn until_reconnected(rx: &Receiver<Ev>) {
    loop {
        match recv(rx) {
            Ev::Connect => return,
            Ev::Disconnect(s) => assert!(!s.permanent, "gave up: {s:?}"),
            Ev::Recv(b) => panic!("unexpected message while reconnecting: {b:?}"),
        }
    }
}

#[test]
fn rust_client_reconnects_to_a_restarted_python_server() {
    let py = PyPeer::server(PyVersion::V3_3_0, &["--echo"]);
    let port = py.port();
    let (c, rx) = observed_client(ClientConfig::new("127.0.0.1", port).reconnect(
        ReconnectPolicy::exponential(40, Duration::from_millis(50), Duration::from_millis(500)),
    ));
    c.connect().unwrap();
    assert_eq!(recv(&rx), Ev::Connect);
    assert_eq!(
        c.send_and_wait(Request::text(&ECHO, "one"), T)
            .unwrap()
            .text()
            .unwrap(),
        "echo:one"
    );
    // Kill the Python server process (SIGKILL) and start a new one on the same port.
    drop(py);
    match recv(&rx) {
        Ev::Disconnect(s) => {
            assert_eq!((s.permanent, s.attempt, s.retry_max), (false, 0, 40));
            assert_eq!(s.reason, DisconnectReason::ServerClosed);
        }
        other => panic!("{other:?}"),
    }
    let py = PyPeer::server(PyVersion::V3_3_0, &["--echo", "--port", &port.to_string()]);
    until_reconnected(&rx);
    // Routes, on_recv and send_and_wait all work on the new connection.
    assert_eq!(
        c.send_and_wait(Request::text(&ECHO, "two"), T)
            .unwrap()
            .text()
            .unwrap(),
        "echo:two"
    );
    py.cmd_ok(
        json!({"cmd": "broadcast", "type": 10000, "payload": payload::text("after restart")}),
    );
    assert_eq!(recv(&rx), Ev::Recv(b"after restart".to_vec()));
    c.disconnect();
}

#[test]
fn python_client_reconnects_to_a_restarted_rust_server() {
    let server = Server::new(ServerConfig::local());
    server.route(&ECHO, |c: &ClientInfo, m: Response| {
        let mut body = b"echo:".to_vec();
        body.extend_from_slice(m.content());
        c.send(Request::new(&ECHO, body).respond(&m))
    });
    let (ctx, crx) = channel();
    let ctx = Mutex::new(ctx);
    server.on_connect(move |c: &ClientInfo| {
        let _ = ctx.lock().unwrap().send(c.id());
    });
    let addr = server.start().unwrap();
    let py = PyPeer::client(
        PyVersion::V3_3_0,
        addr.port(),
        &["--retry", "50", "--retry-delay", "0.1"],
    );
    recv(&crx);
    server.close_all();
    py.wait_event(
        |e| e["event"] == "disconnect" && e["attempt"] == 0 && e["permanent"] == false,
        T,
    );
    assert_eq!(server.restart().unwrap(), addr);
    py.wait_event(|e| e["event"] == "connect", T);
    recv(&crx);
    let r = py.cmd_ok(json!({"cmd": "send_and_wait", "type": ECHO.code(), "payload": payload::text("back"), "timeout": 20}));
    assert_eq!(r["hex"], payload::to_hex(b"echo:back"));
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "kill {sig} {pid}");
}

/// Resumes a stopped process even if the test fails.
struct Cont(u32);
impl Drop for Cont {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

const KA: KeepAlive = KeepAlive::new(Duration::from_millis(200), Duration::from_millis(800));

#[test]
fn keepalive_detects_a_stopped_python_server() {
    let py = PyPeer::server(PyVersion::V3_3_0, &["--echo"]);
    let (c, rx) = observed_client(ClientConfig::new("127.0.0.1", py.port()).keepalive(KA));
    c.connect().unwrap();
    assert_eq!(recv(&rx), Ev::Connect);
    // Python answers keep-alive PINGs: the link stays up across several intervals.
    for _ in 0..5 {
        assert!(c.ping_server(T).is_ok());
    }
    signal(py.pid(), "-STOP");
    let _cont = Cont(py.pid());
    let t0 = Instant::now();
    match recv(&rx) {
        Ev::Disconnect(s) => {
            assert_eq!(s.reason, DisconnectReason::KeepAliveTimeout);
            assert!(s.permanent);
        }
        other => panic!("{other:?}"),
    }
    // Detected within the timeout plus scheduling slack, not by TCP's own (minutes-long) timers.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[test]
fn keepalive_detects_a_stopped_python_client() {
    let server = Server::new(ServerConfig::local().keepalive(KA));
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    server.on_disconnect(move |c: &ClientInfo| {
        let _ = tx.lock().unwrap().send(c.id());
    });
    let addr = server.start().unwrap();
    let py = PyPeer::client(PyVersion::V3_3_0, addr.port(), &[]);
    signal(py.pid(), "-STOP");
    let _cont = Cont(py.pid());
    let t0 = Instant::now();
    recv(&rx);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(server.clients().is_empty());
}
