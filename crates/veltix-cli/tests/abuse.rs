//! Abuse against a real `veltix serve` process, with its logs going where a process supervisor
//! would put them: a pipe that nobody reads, or a file.
//!
//! - `stuck_stderr_does_not_wedge_the_server`: stderr is a pipe that is never read (it fills
//!   after 64 KiB). A peer floods 60 KB echo frames and never reads; a loop of connections
//!   sends corrupt frames and garbage handshakes. A good client's `send_and_wait` must never
//!   fail, and SIGTERM must end the process within 2 s, attack still running.
//! - `flood_log_volume_is_bounded`: the same flood with stderr to a file: the number of log
//!   lines is bounded by time (first lines + one summary per second per kind), not by the
//!   number of dropped messages.
//!
//! Waits are on events (output lines, counters) with deadlines; ports are 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{env_addr, env_u64, try_raw_handshake, Lines, T};
use veltix::proto::{Frame, Generation};
use veltix::{Client, ClientConfig, Request};

/// A user type the echo server answers.
const ECHO: u16 = 200;

/// `veltix serve --mode echo` with the given extra arguments and stderr; killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Lines>,
}

impl Serve {
    fn start(global: &[&str], serve: &[&str], stderr: Stdio) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_veltix"))
            .args(global)
            .args(["serve", "--mode", "echo", "--port", "0"])
            .args(serve)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn veltix serve");
        let stdout = Lines::collect(child.stdout.take().expect("stdout"));
        let line = stdout.wait(0, "`listening on`", |l| l.starts_with("listening on "));
        let addr = line["listening on ".len()..]
            .parse()
            .expect("a socket address");
        Serve {
            child,
            addr,
            stdout,
        }
    }

    /// SIGTERM; waits (bounded) for the exit; returns how long it took.
    fn terminate(&mut self) -> Duration {
        let t0 = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "veltix serve exited with {status}");
                return t0.elapsed();
            }
            assert!(t0.elapsed() < T, "veltix serve did not exit within {T:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The last `stats: {JSON}` line printed at or after line `from`.
    fn stats(&self, from: usize) -> serde_json::Value {
        let line = self
            .stdout
            .wait(from, "`stats:`", |l| l.starts_with("stats: "));
        serde_json::from_str(&line["stats: ".len()..]).expect("stats JSON")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the attackers did.
#[derive(Default)]
struct Attack {
    stop: AtomicBool,
    flood_frames: AtomicU64,
    corrupt_conns: AtomicU64,
}

/// A peer that completes the handshake, then writes `size`-byte echo frames as fast as it can
/// (`limit` frames, or until `stop`, or until the server goes away) and never reads a byte.
fn flood(addr: SocketAddr, attack: &Attack, size: usize, limit: u64) {
    let mut s = TcpStream::connect(addr).expect("flood connect");
    try_raw_handshake(&mut s).expect("flood handshake");
    s.set_write_timeout(Some(Duration::from_millis(100)))
        .expect("write timeout");
    let frame = Frame::new(ECHO, 1, vec![b'f'; size])
        .encode(Generation::Gen3)
        .expect("frame");
    let mut off = 0;
    while !attack.stop.load(Ordering::Relaxed)
        && attack.flood_frames.load(Ordering::Relaxed) < limit
    {
        match s.write(&frame[off..]) {
            Ok(n) => {
                off += n;
                if off == frame.len() {
                    off = 0;
                    attack.flood_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // The server closed us (SIGTERM): the attack ends with it.
            Err(_) => break,
        }
    }
    // Leave the connection open, unread, until the test ends.
    while !attack.stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Connections in a loop: even ones complete the handshake and send a frame whose CRC is wrong,
/// odd ones send a hello that is not JSON. Each waits for the server to close it. Ends
/// after `limit` connections, on `stop`, or when the server is gone.
fn corrupt_loop(addr: SocketAddr, attack: &Attack, limit: u64) {
    let mut bad = Frame::new(ECHO, 2, &b"corrupt"[..])
        .encode(Generation::Gen3)
        .expect("frame")
        .to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    let mut i = 0u64;
    while !attack.stop.load(Ordering::Relaxed) && i < limit {
        let Ok(mut s) = TcpStream::connect(addr) else {
            return; // The server is gone (SIGTERM).
        };
        s.set_read_timeout(Some(T)).expect("read timeout");
        if i % 2 == 0 {
            if try_raw_handshake(&mut s).is_err() {
                return;
            }
            let _ = s.write_all(&bad);
        } else {
            // A well-framed hello that is not JSON: refused at once, not at the deadline.
            let _ = s.write_all(b"\x00\x0bnot json!!!");
        }
        let mut sink = [0u8; 256];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        i += 1;
        attack.corrupt_conns.fetch_add(1, Ordering::Relaxed);
    }
}

/// Round trips of a well-behaved library client; panics on the first failure.
fn good_round_trips(addr: SocketAddr, n: usize) {
    let c = Client::new(ClientConfig::new("127.0.0.1", addr.port()));
    c.connect().expect("good client connects");
    for i in 0..n {
        let text = format!("good {i}");
        let r = c
            .send_and_wait(Request::text(ECHO, &text), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("good client, round trip {i}: {e}"));
        assert_eq!(r.text().expect("text"), text);
    }
    c.disconnect();
}

/// Waits until `f` holds (bounded by `T`).
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < T, "{what} did not happen within {T:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn stuck_stderr_does_not_wedge_the_server() {
    // Debug logging and a small line buffer, so that the never-read pipe fills and the writer
    // has to drop lines: the server must neither block nor slow down for it.
    let mut serve = Serve::start(
        &["--log", "debug", "--log-buffer", "256"],
        &["--stats-interval", "0.1"],
        Stdio::piped(),
    );
    let _stderr: ChildStderr = serve.child.stderr.take().expect("stderr pipe (never read)");
    let addr = serve.addr;
    let attack = Arc::new(Attack::default());
    let attackers: Vec<_> = [0, 1, 2]
        .into_iter()
        .map(|k| {
            let a = attack.clone();
            std::thread::spawn(move || match k {
                0 => flood(addr, &a, 60_000, u64::MAX),
                _ => corrupt_loop(addr, &a, u64::MAX),
            })
        })
        .collect();
    // The attack is under way before the good client starts, and still is when it ends.
    wait_for("the flood", || {
        attack.flood_frames.load(Ordering::Relaxed) >= 1000
    });
    wait_for("the corrupt connections", || {
        attack.corrupt_conns.load(Ordering::Relaxed) >= 200
    });
    let goods: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || good_round_trips(addr, 500)))
        .collect();
    for g in goods {
        g.join().expect("a good client failed");
    }
    // The pipe is full and lines are being dropped, not waited for (while the attack goes on).
    let t0 = Instant::now();
    let mut from = serve.stdout.len();
    loop {
        let s = serve.stats(from);
        if s["log_lines_dropped"].as_u64() > Some(0) {
            break;
        }
        assert!(t0.elapsed() < T, "stderr never filled within {T:?}: {s}");
        from = serve.stdout.len();
    }
    good_round_trips(addr, 100);
    let from = serve.stdout.len();
    let took = serve.terminate();
    attack.stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().expect("attacker");
    }
    let stats = serve.stats(from);
    println!(
        "stuck stderr: {} flood frames, {} corrupt connections; SIGTERM exit after {took:?}; \
         stats {stats}",
        attack.flood_frames.load(Ordering::Relaxed),
        attack.corrupt_conns.load(Ordering::Relaxed)
    );
    assert!(took < Duration::from_secs(2), "SIGTERM exit took {took:?}");
    assert!(stats["dropped"]["queue_full"].as_u64() > Some(0), "{stats}");
    assert!(
        stats["rejected"]["crc_mismatch"].as_u64() > Some(0),
        "{stats}"
    );
    assert!(
        stats["handshake_failures"]["malformed"].as_u64() > Some(0),
        "{stats}"
    );
    assert!(stats["log_lines_dropped"].as_u64() > Some(0), "{stats}");
}

/// Log lines allowed for an attack lasting `secs`: the server-wide kinds (handshake failures,
/// abnormal closes, refusals) log up to 20 lines in full and then one summary per second while
/// the attack lasts; the flooded connection logs one line, one summary per second and one at
/// close; plus the start and stop lines: `LINES_FIXED + LINES_PER_SECOND * secs`, whatever the
/// number of messages.
const LINES_FIXED: usize = 3 * 20 + 12;
const LINES_PER_SECOND: usize = 6;

#[test]
fn flood_log_volume_is_bounded() {
    let dir = std::env::temp_dir().join(format!("veltix-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("stderr.log");
    let file = std::fs::File::create(&path).expect("log file");
    let mut serve = Serve::start(&[], &[], Stdio::from(file));
    let addr = serve.addr;
    let attack = Arc::new(Attack::default());
    let t0 = Instant::now();
    const FRAMES: u64 = 50_000;
    const CONNS: u64 = 400;
    let a = attack.clone();
    let flooder = std::thread::spawn(move || flood(addr, &a, 4096, FRAMES));
    let a = attack.clone();
    let corrupter = std::thread::spawn(move || corrupt_loop(addr, &a, CONNS));
    corrupter.join().expect("corrupt loop");
    wait_for("the whole flood written", || {
        attack.flood_frames.load(Ordering::Relaxed) >= FRAMES
    });
    let from = serve.stdout.len();
    serve.terminate();
    let secs = t0.elapsed().as_secs_f64();
    attack.stop.store(true, Ordering::Relaxed);
    flooder.join().expect("flood");
    let stats = serve.stats(from);
    let log = std::fs::read_to_string(&path).expect("read the log");
    let _ = std::fs::remove_dir_all(&dir);
    let lines = log.lines().count();
    let dropped = stats["dropped"]["queue_full"].as_u64().unwrap_or(0);
    let bound = LINES_FIXED + LINES_PER_SECOND * secs.ceil() as usize;
    println!(
        "flood: {FRAMES} frames of 4 KiB never read + {CONNS} corrupt connections in {secs:.2} s: \
         {dropped} sends dropped, {lines} log lines (bound {bound})"
    );
    assert!(
        dropped >= 10_000,
        "the flood did not fill the queue: {stats}"
    );
    assert!(lines <= bound, "{lines} log lines > {bound}:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI colours in a log file:\n{log}"
    );
    assert!(log.contains("outbound queue full"), "{log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut serve = Serve::start(
        &["--log", "info", "--log-format", "json"],
        &[],
        Stdio::piped(),
    );
    let stderr = Lines::collect(serve.child.stderr.take().expect("stderr"));
    good_round_trips(serve.addr, 3);
    serve.terminate();
    stderr.wait(0, "a `serving` line", |l| l.contains("serving"));
    let lines = stderr.lines();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}

#[test]
fn stats_interval_prints_stats_while_running() {
    let mut serve = Serve::start(&[], &["--stats-interval", "0.05"], Stdio::null());
    good_round_trips(serve.addr, 5);
    // Printed while the server runs, with the round trips in it.
    let from = serve.stdout.len();
    let stats = serve.stats(from);
    assert_eq!(stats["frames_in"].as_u64(), Some(5), "{stats}");
    assert_eq!(stats["connections_opened"].as_u64(), Some(1), "{stats}");
    serve.terminate();
}

#[test]
fn a_bad_log_filter_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_veltix"))
        .args(["--log", "veltix=loud", "ping", "--port", "1"])
        .output()
        .expect("run veltix");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid --log filter"), "{err}");
}

/// The attack of `flood_log_volume_is_bounded` alone, against the server at `VELTIX_ABUSE_ADDR`
/// (another build, for before/after figures): `VELTIX_ABUSE_FRAMES` (50,000) 4 KiB echo frames
/// never read, and `VELTIX_ABUSE_CONNS` (400) corrupt connections. Prints `@@ abuse ...`.
#[test]
#[ignore = "attacker side of a manual before/after measurement (RELIABILITY.md section 8)"]
fn abuse_peer() {
    let Some(addr) = env_addr("VELTIX_ABUSE_ADDR") else {
        return;
    };
    let env = env_u64;
    let (frames, conns) = (
        env("VELTIX_ABUSE_FRAMES", 50_000),
        env("VELTIX_ABUSE_CONNS", 400),
    );
    let attack = Arc::new(Attack::default());
    let t0 = Instant::now();
    let a = attack.clone();
    let flooder = std::thread::spawn(move || flood(addr, &a, 4096, frames));
    corrupt_loop(addr, &attack, conns);
    wait_for("the whole flood written", || {
        attack.flood_frames.load(Ordering::Relaxed) >= frames
    });
    println!(
        "@@ abuse {} frames, {} corrupt connections in {:.2} s",
        attack.flood_frames.load(Ordering::Relaxed),
        attack.corrupt_conns.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    attack.stop.store(true, Ordering::Relaxed);
    flooder.join().expect("flood");
}
