//! The TLS and authentication flags of `veltix serve`, `send` and `ping`, with certificates
//! generated per run.
//!
//! No fixed ports (the server binds port 0 and prints `listening on ADDR`), no sleeps as
//! synchronisation, every wait bounded, children killed when a test ends.

#[path = "../../veltix/tests/support/certs.rs"]
mod certs;
#[path = "support/command.rs"]
mod command;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};

use certs::{Ca, TempDir};
use command::{run, veltix, TIMEOUT};

/// `veltix serve --port 0 EXTRA...`, killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    _lines: Receiver<String>,
}

impl Serve {
    fn start(extra: &[&str]) -> Serve {
        let mut args = vec!["serve", "--port", "0"];
        args.extend_from_slice(extra);
        let mut child = veltix()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn veltix serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = lines.recv_timeout(TIMEOUT).expect("listening line");
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
            .parse()
            .expect("address");
        Serve {
            child,
            addr,
            _lines: lines,
        }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Files {
    _dir: TempDir,
    ca: String,
    cert: String,
    key: String,
    other_ca: String,
    client_ca: String,
    client_cert: String,
    client_key: String,
    tokens: String,
}

fn files() -> Files {
    let dir = TempDir::new("cli-tls");
    let ca = Ca::new("cli CA");
    let server = ca.server();
    let other = Ca::new("other CA");
    let client_ca = Ca::new("cli client CA");
    let me = client_ca.client("cli-client");
    let p = |name: &str, data: &str| dir.write(name, data).display().to_string();
    Files {
        ca: p("ca.pem", &ca.pem.cert),
        cert: p("server.pem", &server.cert),
        key: p("server.key", &server.key),
        other_ca: p("other-ca.pem", &other.pem.cert),
        client_ca: p("client-ca.pem", &client_ca.pem.cert),
        client_cert: p("client.pem", &me.cert),
        client_key: p("client.key", &me.key),
        tokens: p("tokens.txt", "alpha\n\n  beta  \n"),
        _dir: dir,
    }
}

#[test]
fn tls_serve_with_tokens_answers_send_and_ping_and_refuses_the_rest() {
    let f = files();
    let s = Serve::start(&[
        "--tls-cert",
        &f.cert,
        "--tls-key",
        &f.key,
        "--auth-token-file",
        &f.tokens,
        "--handshake-timeout",
        "1",
    ]);
    let port = s.port();
    let base = ["--port", port.as_str(), "--timeout", "5"];
    let send = |extra: &[&str]| {
        let mut a = vec!["send", "--type", "200", "--text", "hello tls", "--wait"];
        a.extend_from_slice(&base);
        a.extend_from_slice(extra);
        run(&a)
    };
    let out = send(&["--tls-ca", &f.ca, "--token", "beta"]);
    assert_eq!(out.assert_ok().stdout_text(), "hello tls\n");
    let mut ping = vec!["ping", "--count", "2"];
    ping.extend_from_slice(&base);
    ping.extend_from_slice(&["--tls-ca", &f.ca, "--token", "alpha"]);
    let out = run(&ping);
    assert!(
        out.assert_ok()
            .stdout_text()
            .contains("2 sent, 2 ok, 0 failed"),
        "{}",
        out.stdout_text()
    );
    // A wrong or missing token: the server's reason.
    send(&["--tls-ca", &f.ca, "--token", "gamma"])
        .assert_one_line_error("rejected the connection: unauthorized");
    send(&["--tls-ca", &f.ca]).assert_one_line_error("unauthorized");
    // Failed certificate checks.
    send(&["--tls-ca", &f.other_ca, "--token", "beta"]).assert_one_line_error("UnknownIssuer");
    send(&[
        "--tls-ca",
        &f.ca,
        "--tls-server-name",
        "elsewhere.example",
        "--token",
        "beta",
    ])
    .assert_one_line_error("not valid for name");
    // The system store does not trust a private CA.
    send(&["--tls", "--token", "beta"]).assert_one_line_error("TLS handshake failed");
    // A plaintext client gets nowhere (cut at the server's handshake timeout).
    send(&["--token", "beta"]).assert_one_line_error("handshake");
}

#[test]
fn mutual_tls_serve_requires_a_client_certificate() {
    let f = files();
    let s = Serve::start(&[
        "--tls-cert",
        &f.cert,
        "--tls-key",
        &f.key,
        "--tls-client-ca",
        &f.client_ca,
    ]);
    let port = s.port();
    let send = |extra: &[&str]| {
        let mut a = vec![
            "send",
            "--port",
            port.as_str(),
            "--type",
            "200",
            "--text",
            "m",
            "--wait",
        ];
        a.extend_from_slice(&["--tls-ca", &f.ca]);
        a.extend_from_slice(extra);
        run(&a)
    };
    assert_eq!(
        send(&["--tls-cert", &f.client_cert, "--tls-key", &f.client_key])
            .assert_ok()
            .stdout_text(),
        "m\n"
    );
    send(&[]).assert_one_line_error("TLS handshake failed");
}

#[test]
fn bad_files_and_flags_fail_with_one_clear_line() {
    let f = files();
    run(&[
        "serve",
        "--port",
        "0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        &f.key,
    ])
    .assert_one_line_error("cannot read certificate file /nonexistent/cert.pem");
    run(&[
        "serve",
        "--port",
        "0",
        "--tls-cert",
        &f.cert,
        "--tls-key",
        &f.cert,
    ])
    .assert_one_line_error("private key");
    run(&[
        "serve",
        "--port",
        "0",
        "--auth-token-file",
        "/nonexistent/tokens",
    ])
    .assert_one_line_error("cannot read token file /nonexistent/tokens");
    run(&[
        "send",
        "--port",
        "9",
        "--type",
        "200",
        "--text",
        "x",
        "--tls-ca",
        "/nonexistent/ca.pem",
    ])
    .assert_one_line_error("cannot read CA file /nonexistent/ca.pem");
    // --tls-cert without --tls-key is a usage error.
    let out = run(&["serve", "--port", "0", "--tls-cert", &f.cert]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("--tls-key"), "{}", out.stderr);
}
