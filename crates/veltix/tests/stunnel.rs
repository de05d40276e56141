//! TLS interop with an implementation that is not ours: stunnel (OpenSSL) between the real
//! Python Veltix 3.3.0 and veltix-rs, in both directions.
//!
//! - Python client -> stunnel (client mode, presenting a client certificate) -> our TLS
//!   server with mutual TLS;
//! - our TLS client -> stunnel (server mode) -> Python server.
//!
//! stunnel is installed by `scripts/setup-stunnel.sh` (called by `scripts/test.sh`); without it
//! these tests FAIL, they never skip. stunnel's listening port is picked by binding port 0 and
//! releasing it (stunnel cannot report a port of its own choosing); a collision is retried.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use certs::{Ca, TempDir};
use serde_json::json;
use support::python::{payload, PyPeer, PyVersion};
use veltix::auth::AuthDecision;
use veltix::tls::{ClientTls, ServerTls, TlsVersion};
use veltix::{Client, ClientConfig, ClientInfo, MessageType, Request, Server, ServerConfig};

const ECHO: MessageType = MessageType::new(200, "echo");
const T: Duration = Duration::from_secs(20);

/// The stunnel binary (`stunnel` or Debian's `stunnel4`). Panics when there is none.
fn stunnel_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["stunnel", "stunnel4"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "stunnel is not installed: run `bash scripts/setup-stunnel.sh` (installs Debian's \
         stunnel4). The TLS interop tests need it and do not skip."
    );
}

/// A running stunnel, killed on drop.
struct Stunnel {
    child: Child,
    port: u16,
    log: Receiver<String>,
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stunnel {
    /// Starts stunnel with one service accepting on a free loopback port; `service` holds the
    /// service's other lines (`client`, `connect`, certificates).
    fn start(dir: &TempDir, service: &str) -> Stunnel {
        let bin = stunnel_bin();
        let mut last = String::new();
        for attempt in 0..10 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            let conf = format!(
                "foreground = yes\npid =\ndebug = 7\n[veltix]\naccept = 127.0.0.1:{port}\n{service}\n"
            );
            let path = dir.write(&format!("stunnel-{attempt}.conf"), conf);
            let mut child = Command::new(&bin)
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let stderr = child.stderr.take().expect("stderr");
            let (tx, log) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let st = Stunnel { child, port, log };
            let deadline = Instant::now() + T;
            loop {
                match st
                    .log
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    Ok(line) if line.contains("bound to") => return st,
                    Ok(line) => last = line,
                    Err(RecvTimeoutError::Disconnected) => break, // exited: retry
                    Err(RecvTimeoutError::Timeout) => {
                        panic!("stunnel did not bind within {T:?}; last line: {last}")
                    }
                }
            }
            eprintln!("stunnel attempt {attempt} on port {port} failed: {last}");
        }
        panic!("stunnel would not start: {last}");
    }
}

struct Pki {
    dir: TempDir,
    ca_path: String,
    ca: Ca,
}

fn pki() -> Pki {
    let dir = TempDir::new("stunnel");
    let ca = Ca::new("veltix interop CA");
    let ca_path = dir.write("ca.pem", &ca.pem.cert).display().to_string();
    Pki { dir, ca_path, ca }
}

/// A Rust TLS server (mutual TLS with `client_ca`) answering ECHO with `"echo:" + content`.
fn rust_tls_server(
    p: &Pki,
    client_ca: &Ca,
    auth: bool,
) -> (Server, SocketAddr, Receiver<ClientInfo>) {
    let cert = p.ca.server();
    let server =
        Server::new(ServerConfig::local().tls(
            ServerTls::from_pem(cert.cert, cert.key).client_ca_pem(client_ca.pem.cert.clone()),
        ));
    server.route(&ECHO, |c: &ClientInfo, m: veltix::Response| {
        let mut body = b"echo:".to_vec();
        body.extend_from_slice(m.content());
        c.send(Request::new(&ECHO, body).respond(&m))
    });
    if auth {
        // Python 3.3.0 sends an empty meta: only the certificate can let it in.
        server.authenticate(|req| match req.certificate_cn() {
            Some("stunnel-client") => AuthDecision::accept().with_tag("via", "stunnel"),
            _ => AuthDecision::reject("unauthorized"),
        });
    }
    let (tx, connects) = channel();
    let tx = Mutex::new(tx);
    server.on_connect(move |c: &ClientInfo| {
        let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(c.clone());
    });
    let addr = server.start().expect("start");
    (server, addr, connects)
}

#[test]
fn python_client_reaches_our_mutual_tls_server_through_stunnel() {
    let p = pki();
    let client_ca = Ca::new("veltix interop client CA");
    let me = client_ca.client("stunnel-client");
    let cert = p.dir.write("client.pem", &me.cert).display().to_string();
    let key = p.dir.write("client.key", &me.key).display().to_string();
    let (server, addr, connects) = rust_tls_server(&p, &client_ca, true);
    let tunnel = Stunnel::start(
        &p.dir,
        &format!(
            "client = yes\nconnect = 127.0.0.1:{}\nCAfile = {}\nverifyChain = yes\n\
             checkHost = localhost\ncert = {cert}\nkey = {key}",
            addr.port(),
            p.ca_path
        ),
    );
    let py = PyPeer::client(PyVersion::V3_3_0, tunnel.port, &["--echo"]);
    let info = connects
        .recv_timeout(T)
        .expect("the Python client connects");
    let tls = info.tls().expect("a TLS session");
    assert_eq!(
        tls.peer_certificate.as_ref().map(|c| c.subject.as_str()),
        Some("CN=stunnel-client, O=Veltix Tests"),
        "{tls:?}"
    );
    assert_eq!(info.get_tag("via"), Some(json!("stunnel")));
    // Python -> Rust request/response, small and large.
    for spec in [
        payload::text("héllo through stunnel"),
        payload::seq(1024 * 1024),
    ] {
        let sent = py.cmd_ok(json!({"cmd": "digest", "payload": spec.clone()}));
        let reply = py.cmd_ok(
            json!({"cmd": "send_and_wait", "type": ECHO.code(), "payload": spec, "timeout": 20}),
        );
        assert_eq!(reply["id"], reply["sent_id"], "{reply}");
        assert_eq!(
            reply["len"].as_u64(),
            Some(sent["len"].as_u64().unwrap() + 5),
            "{reply}"
        );
    }
    let ping = py.cmd_ok(json!({"cmd": "ping", "timeout": 10}));
    assert!(ping["rtt_ms"].as_f64().is_some(), "{ping}");
    // Rust -> Python: ping and a request its --echo answers.
    assert!(server.ping_client(&info, T).is_ok());
    let r = server
        .send_and_wait(Request::text(&ECHO, "question"), &info, T)
        .expect("python answers through stunnel");
    assert_eq!(r.text().unwrap(), "echo:question");
    drop(py);
    server.close_all();
}

#[test]
fn a_python_client_without_a_certificate_is_refused_by_our_server_behind_stunnel() {
    let p = pki();
    let client_ca = Ca::new("veltix interop client CA");
    // The tunnel presents no client certificate: the TLS handshake is refused, and the
    // Python client's connect() fails.
    let (server, addr, connects) = rust_tls_server(&p, &client_ca, true);
    let tunnel = Stunnel::start(
        &p.dir,
        &format!(
            "client = yes\nconnect = 127.0.0.1:{}\nCAfile = {}\nverifyChain = yes\ncheckHost = localhost",
            addr.port(),
            p.ca_path
        ),
    );
    let py = PyPeer::client_unchecked(
        PyVersion::V3_3_0,
        tunnel.port,
        &["--handshake-timeout", "5"],
    );
    assert_eq!(
        py.startup_event()["event"],
        "connect_failed",
        "{}",
        py.startup_event()
    );
    assert!(server.tls_failures() >= 1);
    assert!(connects.try_recv().is_err());
    server.close_all();
}

#[test]
fn a_python_client_refused_by_the_authenticate_hook_sees_its_connect_fail() {
    let server = Server::new(ServerConfig::local());
    server.authenticate(|req| match req.token() {
        Some("good") => AuthDecision::accept(),
        _ => AuthDecision::reject("unauthorized"),
    });
    let addr = server.start().expect("start");
    // Python 3.3.0 sends `"meta": {}`: no token, refused with {"error": "unauthorized"}.
    let py = PyPeer::client_unchecked(PyVersion::V3_3_0, addr.port(), &[]);
    assert_eq!(
        py.startup_event()["event"],
        "connect_failed",
        "{}",
        py.startup_event()
    );
    assert_eq!(server.auth_failures(), 1);
    assert!(server.clients().is_empty());
    // A Rust client with the token gets in.
    let good = Client::new(ClientConfig::new("127.0.0.1", addr.port()).with_token("good"));
    good.connect().expect("accepted");
    server.close_all();
}

#[test]
fn our_tls_client_talks_to_a_python_server_behind_stunnel() {
    let p = pki();
    let cert = p.ca.server();
    let cert_path = p.dir.write("server.pem", &cert.cert).display().to_string();
    let key_path = p.dir.write("server.key", &cert.key).display().to_string();
    let py = PyPeer::server(PyVersion::V3_3_0, &["--echo"]);
    let tunnel = Stunnel::start(
        &p.dir,
        &format!(
            "connect = 127.0.0.1:{}\ncert = {cert_path}\nkey = {key_path}",
            py.port()
        ),
    );
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let client = Client::new(
            ClientConfig::new("127.0.0.1", tunnel.port)
                .tls(ClientTls::ca_file(&p.ca_path).versions(&[version])),
        );
        client
            .connect()
            .unwrap_or_else(|e| panic!("{version:?} through stunnel: {e}"));
        let r = client
            .send_and_wait(Request::text(&ECHO, "hi python"), T)
            .expect("echo from Python");
        assert_eq!(r.text().unwrap(), "echo:hi python");
        let big = vec![0x5au8; 2 * 1024 * 1024];
        let r = client
            .send_and_wait(Request::new(&ECHO, big.clone()), T)
            .expect("big echo from Python");
        assert_eq!(r.content().len(), big.len() + 5);
        assert!(client.ping_server(T).is_ok());
        // Python -> Rust through the tunnel.
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        client.on_recv(move |m| {
            let _ = tx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(m.text().unwrap_or("").to_string());
        });
        // The Python server's on_connect for this connection gives its index.
        let ev = py.wait_event(|e| e["event"] == "connect", T);
        let idx = ev["client"].clone();
        py.cmd_ok(json!({"cmd": "send", "client": idx, "type": 201, "payload": payload::text("from python")}));
        assert_eq!(rx.recv_timeout(T).expect("python's message"), "from python");
        client.disconnect();
    }
    // A client that does not trust the tunnel's CA is refused by our certificate check.
    let other = Ca::new("unrelated");
    let client = Client::new(
        ClientConfig::new("127.0.0.1", tunnel.port).tls(ClientTls::ca_pem(other.pem.cert.clone())),
    );
    assert!(matches!(client.connect(), Err(veltix::Error::Tls(r)) if r.contains("UnknownIssuer")));
}
