//! Runs the programs in `examples/` as processes and checks what they print.
//!
//! The example binaries live next to this test's own binary (`target/<profile>/examples/`).
//! `cargo test --all-targets` builds them; for a plain `cargo test --test examples` they are
//! built (or brought up to date) once, with `cargo build --examples` in the same profile.
//!
//! No fixed ports (servers bind port 0 and print their address), no sleeps: output is read line
//! by line through a channel with a deadline, and children are killed when a test ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Deadline for any single line or exit (generous: CI machines are slow and busy).
const TIMEOUT: Duration = Duration::from_secs(30);

/// `target/<profile>/examples`, built and up to date.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe.parent().expect("test binary has a parent directory");
        let profile_dir = deps.parent().expect("deps has a parent directory");
        let dir = profile_dir.join("examples");
        build_examples(profile_dir, &dir);
        dir
    })
}

/// Runs `cargo build --examples` in the profile of this test binary (a quick no-op when the
/// examples are fresh). If cargo cannot be run at all, binaries already present are used.
fn build_examples(profile_dir: &Path, dir: &Path) {
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "veltix",
        "--examples",
        "--manifest-path",
    ])
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "cargo build --examples failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if dir.join(exe_name("echo_server")).exists() => {
            eprintln!(
                "cannot run cargo ({e}); using the example binaries in {}",
                dir.display()
            );
        }
        Err(e) => panic!("cannot run cargo to build the examples: {e}"),
    }
}

fn exe_name(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

fn example(name: &str) -> Command {
    let path = examples_dir().join(exe_name(name));
    assert!(path.exists(), "example binary {} not found", path.display());
    Command::new(path)
}

/// A running child: stdout lines arrive on a channel, stderr is collected; killed on drop.
struct Proc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &str) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next stdout line; panics (with stderr) on timeout or end of output.
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "{}: no output line within {TIMEOUT:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "{}: stdout ended (status {status:?}); stderr:\n{}",
                    self.name,
                    self.stderr()
                )
            }
        }
    }

    /// The rest of stdout, until the child closes it.
    fn remaining_lines(&mut self) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut out = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => out.push(line),
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: stdout still open after {TIMEOUT:?}; got {out:?}",
                        self.name
                    )
                }
            }
        }
    }

    fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().expect("piped stdin")
    }

    fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Waits for the exit (bounded by `TIMEOUT`), then for the end of its stderr.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {TIMEOUT:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A server's `listening on ADDR` line; returns the port.
    fn listening_port(&mut self) -> u16 {
        let line = self.line();
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{}: expected `listening on ADDR`, got {line:?}", self.name));
        let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
        assert_ne!(addr.port(), 0);
        addr.port()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_example(name: &str, args: &[&str]) -> Proc {
    let mut cmd = example(name);
    cmd.args(args);
    Proc::spawn(cmd, name)
}

#[test]
fn echo_client_gets_its_text_back() {
    let mut server = run_example("echo_server", &[]);
    let port = server.listening_port().to_string();
    let mut client = run_example("echo_client", &[&port, "hello, veltix"]);
    assert_eq!(client.line(), "hello, veltix");
    let status = client.wait();
    assert!(
        status.success(),
        "echo_client: {status}; stderr:\n{}",
        client.stderr()
    );
}

#[test]
fn chat_clients_see_each_others_lines() {
    let mut server = run_example("chat_server", &[]);
    let port = server.listening_port().to_string();
    let mut alice = run_example("chat_client", &[&port, "alice"]);
    assert!(alice.line().starts_with("welcome alice"));
    let mut bob = run_example("chat_client", &[&port, "bob"]);
    assert!(bob.line().starts_with("welcome bob"));

    writeln!(alice.stdin(), "hi bob").expect("write to alice");
    assert_eq!(bob.line(), "alice: hi bob");
    writeln!(bob.stdin(), "hello alice").expect("write to bob");
    assert_eq!(alice.line(), "bob: hello alice");

    // End of input: both leave cleanly, and neither heard its own line.
    bob.close_stdin();
    assert!(bob.wait().success(), "bob: {}", bob.stderr());
    assert_eq!(bob.remaining_lines(), Vec::<String>::new());
    alice.close_stdin();
    assert!(alice.wait().success(), "alice: {}", alice.stderr());
    assert_eq!(alice.remaining_lines(), Vec::<String>::new());
}

#[test]
fn ping_prints_round_trip_times() {
    let mut server = run_example("echo_server", &[]);
    let port = server.listening_port().to_string();
    let mut ping = run_example("ping", &[&port, "3"]);
    let lines = ping.remaining_lines();
    assert!(ping.wait().success(), "ping: {}", ping.stderr());
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let rest = line
            .strip_prefix(&format!("seq={} rtt=", i + 1))
            .and_then(|r| r.strip_suffix(" ms"))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let ms: f64 = rest.parse().expect("rtt is a number");
        assert!(ms >= 0.0);
    }
}

#[test]
fn examples_fail_with_a_message() {
    let mut bad = run_example("echo_server", &["not-a-port"]);
    assert!(!bad.wait().success());
    assert_eq!(bad.remaining_lines(), Vec::<String>::new());
    assert!(bad.stderr().contains("bad port"), "{}", bad.stderr());

    let mut usage = run_example("echo_client", &[]);
    assert!(!usage.wait().success());
    assert!(usage.stderr().contains("usage"), "{}", usage.stderr());

    // A port nobody listens on: bind one, then free it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port().to_string()
    };
    let mut refused = run_example("ping", &[&port, "1"]);
    assert!(!refused.wait().success());
    assert!(refused.stderr().contains("refused"), "{}", refused.stderr());
}

#[test]
fn async_echo_runs_server_and_client_in_one_tokio_program() {
    let mut p = run_example("async_echo", &["hi from tokio"]);
    let line = p.line();
    assert!(line.starts_with("hi from tokio (ping "), "{line}");
    assert!(p.wait().success(), "async_echo: {}", p.stderr());
}
