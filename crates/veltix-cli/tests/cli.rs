//! Runs the `veltix` binary as processes: serve, send, ping, demo.
//!
//! No fixed ports (servers bind port 0 and print `listening on ADDR`), no sleeps as
//! synchronisation (output is read through channels with deadlines), every wait is bounded, and
//! children are killed when a test ends.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};

#[path = "support/command.rs"]
mod command;

use command::{collect, run, veltix, wait_bounded, Output, TIMEOUT};
use veltix::{Client, ClientConfig, Request, Response};

/// A long-running `veltix` (a server): stdout lines on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = veltix()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn veltix");
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
        let stderr = Some(collect(child.stderr.take().expect("stderr")));
        Proc {
            child,
            lines,
            stderr,
        }
    }

    /// Starts `veltix serve --port 0 EXTRA...` and returns it with its address.
    fn serve(extra: &[&str]) -> (Proc, SocketAddr) {
        let mut args = vec!["serve", "--port", "0"];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn(&args);
        let line = p.line();
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
            .parse::<SocketAddr>()
            .expect("a socket address");
        assert_ne!(addr.port(), 0);
        (p, addr)
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no output line within {TIMEOUT:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("stdout ended: {:?}", self.finish_stderr())
            }
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the exit; returns the status, the remaining stdout lines and stderr.
    fn finish(&mut self) -> (ExitStatus, Vec<String>, String) {
        let status = wait_bounded(&mut self.child, "veltix serve");
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(TIMEOUT) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("stdout still open after exit"),
            }
        }
        (status, rest, self.finish_stderr())
    }

    fn finish_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on (bound, then released).
fn dead_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port().to_string()
}

/// A library client whose received messages arrive on a channel.
fn lib_client(addr: SocketAddr) -> (Client, Receiver<Response>) {
    let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()));
    let (tx, rx) = mpsc::channel();
    client.on_recv(move |msg| {
        let _ = tx.send(msg);
    });
    client.connect().expect("library client connects");
    (client, rx)
}

fn send_wait(addr: SocketAddr, extra: &[&str]) -> Output {
    let port = addr.port().to_string();
    let mut args = vec!["send", "--port", &port, "--type", "300", "--wait"];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn send_wait_gets_the_echo_of_text_json_and_files() {
    let (_server, addr) = Proc::serve(&[]);

    let out = send_wait(addr, &["--text", "hello veltix"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout_text(), "hello veltix\n");

    // Validated, then formatted like Python's json.dumps (key order kept, ASCII escapes).
    let out = send_wait(addr, &["--json", r#"{"b":"é","a":[1,2.5,null]}"#]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.stdout_text(),
        "{\"b\": \"\\u00e9\", \"a\": [1, 2.5, null]}\n"
    );

    let dir = std::env::temp_dir().join(format!("veltix-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Text ending with a newline comes back byte for byte.
    let text = dir.join("text.txt");
    std::fs::write(&text, "line 1\nline 2\n").expect("write");
    let out = send_wait(addr, &["--file", text.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, b"line 1\nline 2\n");
    // Binary content is written raw.
    let bin = dir.join("data.bin");
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    std::fs::write(&bin, &bytes).expect("write");
    let out = send_wait(addr, &["--file", bin.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, bytes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn send_without_wait_is_delivered_before_exit() {
    let (_server, addr) = Proc::serve(&["--mode", "chat"]);
    let (_listener, rx) = lib_client(addr);
    let port = addr.port().to_string();
    let out = run(&[
        "send",
        "--port",
        &port,
        "--type",
        "250",
        "--text",
        "fire and forget",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    let msg = rx
        .recv_timeout(TIMEOUT)
        .expect("broadcast reaches the other client");
    assert_eq!(
        (msg.message_type(), msg.text().ok()),
        (250, Some("fire and forget"))
    );
}

#[test]
fn send_to_a_closed_port_fails_with_refused() {
    run(&[
        "send",
        "--port",
        &dead_port(),
        "--type",
        "300",
        "--text",
        "x",
    ])
    .assert_one_line_error("refused");
}

#[test]
fn send_rejects_reserved_types_and_invalid_json() {
    run(&["send", "--port", &dead_port(), "--type", "5", "--text", "x"])
        .assert_one_line_error("reserved");
    run(&[
        "send",
        "--port",
        &dead_port(),
        "--type",
        "300",
        "--json",
        "{nope",
    ])
    .assert_one_line_error("invalid JSON");
    run(&[
        "send",
        "--port",
        &dead_port(),
        "--type",
        "300",
        "--file",
        "/nonexistent/veltix",
    ])
    .assert_one_line_error("cannot read");
    // Argument errors are clap's (exit status 2).
    let out = run(&["send", "--type", "300", "--text", "a", "--json", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn send_to_a_full_server_fails_with_full() {
    let (_server, addr) = Proc::serve(&["--max-connections", "1"]);
    let (holder, _rx) = lib_client(addr);
    let port = addr.port().to_string();
    run(&["send", "--port", &port, "--type", "300", "--text", "x"]).assert_one_line_error("full");
    // The slot holder is unaffected.
    let rtt = holder.ping_server(TIMEOUT);
    assert!(rtt.is_ok(), "{rtt:?}");
}

#[test]
fn ping_prints_rtts_and_a_summary() {
    let (_server, addr) = Proc::serve(&[]);
    let port = addr.port().to_string();
    let out = run(&["ping", "--port", &port, "--count", "3"]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for (i, line) in lines[..3].iter().enumerate() {
        let rtt = line
            .strip_prefix(&format!("seq={} rtt=", i + 1))
            .and_then(|r| r.strip_suffix(" ms"))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        assert!(rtt.parse::<f64>().is_ok_and(|v| v >= 0.0), "{line:?}");
    }
    let stats = lines[3]
        .strip_prefix("min/avg/p50/p99/max = ")
        .and_then(|r| r.strip_suffix(" ms"))
        .unwrap_or_else(|| panic!("unexpected summary {:?}", lines[3]));
    let v: Vec<f64> = stats
        .split('/')
        .map(|x| x.parse().expect("number"))
        .collect();
    assert_eq!(v.len(), 5);
    assert!(
        v[0] <= v[2] && v[2] <= v[3] && v[3] <= v[4] && v[0] <= v[1] && v[1] <= v[4],
        "{v:?}"
    );
    assert_eq!(lines[4], "3 sent, 3 ok, 0 failed");
}

#[test]
fn ping_to_a_dead_port_fails() {
    let out = run(&["ping", "--port", &dead_port(), "--count", "3"]);
    out.assert_one_line_error("refused");
    assert!(out.stdout.is_empty());
}

#[test]
fn chat_mode_broadcasts_to_the_other_clients() {
    let (_server, addr) = Proc::serve(&["--mode", "chat"]);
    let (alice, alice_rx) = lib_client(addr);
    let (bob, bob_rx) = lib_client(addr);

    alice
        .send(Request::text(300u16, "hi bob"))
        .expect("alice sends");
    let got = bob_rx.recv_timeout(TIMEOUT).expect("bob hears alice");
    assert_eq!((got.message_type(), got.text().ok()), (300, Some("hi bob")));

    bob.send(Request::new(301u16, vec![0u8, 1, 2]))
        .expect("bob sends");
    let got = alice_rx.recv_timeout(TIMEOUT).expect("alice hears bob");
    assert_eq!(
        (got.message_type(), &got.content()[..]),
        (301, &[0u8, 1, 2][..])
    );

    // Nobody hears themselves: a PONG proves each link is drained up to here.
    alice.ping_server(TIMEOUT).expect("ping");
    bob.ping_server(TIMEOUT).expect("ping");
    assert!(alice_rx.try_recv().is_err());
    assert!(bob_rx.try_recv().is_err());
}

#[test]
fn sink_mode_reports_the_count_on_sigterm() {
    let (mut server, addr) = Proc::serve(&["--mode", "sink"]);
    let (client, _rx) = lib_client(addr);
    for i in 0..10u8 {
        client
            .send(Request::new(300u16, vec![i; 100]))
            .expect("send");
    }
    // The server answers a PING when it reads it, so everything before it has been read.
    client.ping_server(TIMEOUT).expect("ping");
    server.signal("TERM");
    let (status, rest, stderr) = server.finish();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(rest.len(), 2, "{rest:?}");
    // The stats line (10 messages + the PING read), then sink mode's count.
    let stats = stats_line(&rest[0]);
    assert_eq!(stats["frames_in"], 11, "{stats}");
    assert_eq!(stats["connections_opened"], 1, "{stats}");
    assert!(
        rest[1].starts_with("received 10 messages (1000 bytes) in ") && rest[1].ends_with(" msg/s"),
        "{:?}",
        rest[1]
    );
}

/// Parses a `stats: {JSON}` line of `veltix serve`.
fn stats_line(line: &str) -> serde_json::Value {
    let json = line
        .strip_prefix("stats: ")
        .unwrap_or_else(|| panic!("not a stats line: {line:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("stats JSON ({e}): {line:?}"))
}

#[test]
fn gen1_serve_and_send_work_and_sigint_exits_zero() {
    let (mut server, addr) = Proc::serve(&["--wire", "gen1"]);
    let out = send_wait(addr, &["--wire", "gen1", "--text", "old school"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout_text(), "old school\n");
    let port = addr.port().to_string();
    let out = run(&["ping", "--port", &port, "--wire", "gen1", "--count", "2"]);
    assert!(out.status.success(), "{}", out.stderr);
    server.signal("INT");
    let (status, rest, stderr) = server.finish();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(rest.len(), 1, "only the stats line: {rest:?}");
    // Two connections (send, ping): one echo and two PINGs.
    let stats = stats_line(&rest[0]);
    assert_eq!(stats["connections_opened"], 2, "{stats}");
    assert_eq!(stats["frames_in"], 3, "{stats}");
}

#[test]
fn serve_fails_when_the_port_is_taken_or_arguments_are_bad() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = run(&["serve", "--port", &port]);
    out.assert_one_line_error("cannot listen");
    assert!(out.stdout.is_empty());

    for bad in [
        ["--mode", "loud"],
        ["--wire", "gen2"],
        ["--handshake-timeout", "0"],
    ] {
        let out = run(&["serve", "--port", "0", bad[0], bad[1]]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", out.stderr);
    }
}

#[test]
fn demo_narrates_and_summarizes() {
    let out = run(&["demo", "--clients", "3", "--messages", "2"]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = out.stdout_text();
    assert!(text.contains("listening on 127.0.0.1:"), "{text}");
    assert!(
        text.contains("bob, carol received \"alice: hello from alice\""),
        "{text}"
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("summary: 3 client(s), "), "{text}");
    assert!(last.contains("median echo rtt"), "{text}");
}
