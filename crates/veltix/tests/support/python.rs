//! Drive REAL Python Veltix peers (3.3.0 and 1.6.9) as child processes.
//!
//! Each [`PyPeer`] runs `tests/python/peer3.py` or `tests/python/peer16.py` with the venv
//! interpreter created by `scripts/setup-python.sh` (`target/py/veltix-<ver>/bin/python`; the
//! script is run once per test process if a venv is missing).
//!
//! Protocol (identical for both versions):
//! * stdout: one JSON object per line: events (`{"event": ...}`) and command replies
//!   (`{"reply": <id>, "ok": bool, ...}`). A reader thread collects them, so none are lost.
//! * stdin: one JSON command per line; [`PyPeer::cmd`] adds a fresh `"id"` and waits for the
//!   matching reply.
//! * stderr: the peer's logs; the last lines are kept and shown when something fails.
//!
//! Set `VELTIX_PY_TRACE=1` to mirror every peer line on the test's stderr.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

/// How long a command may take beyond its own `"timeout"` field.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer may take to start (import + bind, or connect incl. retries).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const STDERR_TAIL_LINES: usize = 200;

/// Which real Python Veltix a peer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PyVersion {
    /// veltix 3.3.0: wire generation 3 ("VX" header, JSON handshake, u16 ids).
    V3_3_0,
    /// veltix 1.6.9: wire generation 1 (22-byte header, HELLO/HELLO_ACK, 4-byte ids).
    V1_6_9,
}

impl PyVersion {
    pub const ALL: [PyVersion; 2] = [PyVersion::V3_3_0, PyVersion::V1_6_9];

    /// Package version string, as reported by `veltix.__version__`.
    pub fn as_str(self) -> &'static str {
        match self {
            PyVersion::V3_3_0 => "3.3.0",
            PyVersion::V1_6_9 => "1.6.9",
        }
    }

    /// Wire generation (1 or 3).
    pub fn generation(self) -> u8 {
        match self {
            PyVersion::V3_3_0 => 3,
            PyVersion::V1_6_9 => 1,
        }
    }

    fn script(self) -> &'static str {
        match self {
            PyVersion::V3_3_0 => "peer3.py",
            PyVersion::V1_6_9 => "peer16.py",
        }
    }

    fn venv(self) -> PathBuf {
        workspace_root()
            .join("target/py")
            .join(format!("veltix-{}", self.as_str()))
    }

    /// The venv interpreter (`target/py/veltix-<ver>/bin/python`).
    pub fn python(self) -> PathBuf {
        self.venv().join("bin/python")
    }
}

/// The workspace root (`crates/veltix/../..`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `scripts/setup-python.sh` once per process if a venv looks missing or unfinished.
/// The script itself takes a file lock, so parallel test binaries do not race.
pub fn ensure_venvs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let ready = PyVersion::ALL
            .iter()
            .all(|v| v.python().exists() && v.venv().join(".complete").exists());
        if ready {
            return;
        }
        let script = workspace_root().join("scripts/setup-python.sh");
        let out = Command::new("bash")
            .arg(&script)
            .current_dir(workspace_root())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

#[derive(Default)]
struct State {
    events: Vec<Value>,
    /// `taken[i]`: events[i] was already returned by a `wait_event*` call.
    taken: Vec<bool>,
    replies: HashMap<u64, Value>,
    stdout_closed: bool,
    stderr_closed: bool,
    stderr: VecDeque<String>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running Python Veltix peer (server or client). Dropping it kills the process.
pub struct PyPeer {
    version: PyVersion,
    role: &'static str,
    label: String,
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    startup: Value,
}

impl PyPeer {
    /// Starts `peerX.py server --host 127.0.0.1 --port 0 <args>` and waits for its
    /// `{"event": "listening", "port": P}` line. Extra args e.g. `&["--echo"]`,
    /// `&["--max-connections", "1"]`.
    pub fn server(version: PyVersion, args: &[&str]) -> PyPeer {
        let mut all = vec!["server", "--host", "127.0.0.1", "--port", "0"];
        all.extend_from_slice(args);
        let mut peer = PyPeer::spawn(version, "server", &all);
        let ev = peer.wait_event(|e| e["event"] == "listening", STARTUP_TIMEOUT);
        assert!(
            ev["port"].as_u64().is_some_and(|p| p > 0),
            "bad listening event {ev}"
        );
        peer.startup = ev;
        peer
    }

    /// Starts `peerX.py client --host 127.0.0.1 --port <port> <args>` and waits until it is
    /// connected. Panics if the connection fails (see [`PyPeer::client_unchecked`]).
    pub fn client(version: PyVersion, port: u16, args: &[&str]) -> PyPeer {
        let peer = PyPeer::client_unchecked(version, port, args);
        assert_eq!(
            peer.startup["event"],
            "connected",
            "{} could not connect to port {port}: {}\n--- stderr tail ---\n{}",
            peer.label,
            peer.startup,
            peer.stderr_tail()
        );
        peer
    }

    /// Like [`PyPeer::client`] but returns as soon as the peer reports either
    /// `{"event": "connected"}` or `{"event": "connect_failed", "error": ...}`
    /// (see [`PyPeer::startup_event`]; the error is `"server_full"` for a 3.3.0
    /// `ServerFullError`). The process keeps running and accepts commands either way.
    pub fn client_unchecked(version: PyVersion, port: u16, args: &[&str]) -> PyPeer {
        let port = port.to_string();
        let mut all = vec!["client", "--host", "127.0.0.1", "--port", port.as_str()];
        all.extend_from_slice(args);
        let mut peer = PyPeer::spawn(version, "client", &all);
        let ev = peer.wait_event(
            |e| e["event"] == "connected" || e["event"] == "connect_failed",
            STARTUP_TIMEOUT,
        );
        peer.startup = ev;
        peer
    }

    /// Starts a client peer and returns at once, without waiting for it to connect (for
    /// `--retry` scenarios where the server comes up later). Wait for
    /// `{"event": "connected"}` / `{"event": "connect_failed"}` with [`PyPeer::wait_event`].
    pub fn client_nowait(version: PyVersion, port: u16, args: &[&str]) -> PyPeer {
        let port = port.to_string();
        let mut all = vec!["client", "--host", "127.0.0.1", "--port", port.as_str()];
        all.extend_from_slice(args);
        PyPeer::spawn(version, "client", &all)
    }

    /// Spawns the peer with raw command-line arguments (after the script name) and
    /// returns immediately, without waiting for any event.
    pub fn spawn(version: PyVersion, role: &'static str, args: &[&str]) -> PyPeer {
        ensure_venvs();
        let script = workspace_root().join("tests/python").join(version.script());
        let mut child = Command::new(version.python())
            .arg(&script)
            .args(args)
            .current_dir(workspace_root())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", version.python().display()));
        let label = format!("py{}-{role}[{}]", version.as_str(), child.id());
        let trace = std::env::var_os("VELTIX_PY_TRACE").is_some_and(|v| v != "0");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });

        let stdout = child.stdout.take().expect("piped stdout");
        let sh = shared.clone();
        let lb = label.clone();
        thread::Builder::new()
            .name(format!("{label}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if trace {
                        eprintln!("[{lb} >] {line}");
                    }
                    let value = match serde_json::from_str::<Value>(&line) {
                        Ok(v) if v.is_object() => v,
                        _ => json!({"event": "unparsed_stdout", "line": line}),
                    };
                    let mut st = sh.lock();
                    if let Some(id) = value.get("reply").and_then(Value::as_u64) {
                        st.replies.insert(id, value);
                    } else {
                        st.events.push(value);
                        st.taken.push(false);
                    }
                    drop(st);
                    sh.cv.notify_all();
                }
                sh.lock().stdout_closed = true;
                sh.cv.notify_all();
            })
            .expect("spawn stdout reader");

        let stderr = child.stderr.take().expect("piped stderr");
        let sh = shared.clone();
        let lb = label.clone();
        thread::Builder::new()
            .name(format!("{label}-stderr"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if trace {
                        eprintln!("[{lb} !] {line}");
                    }
                    let mut st = sh.lock();
                    if st.stderr.len() >= STDERR_TAIL_LINES {
                        st.stderr.pop_front();
                    }
                    st.stderr.push_back(line);
                }
                sh.lock().stderr_closed = true;
                sh.cv.notify_all();
            })
            .expect("spawn stderr reader");

        let stdin = child.stdin.take();
        PyPeer {
            version,
            role,
            label,
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            shared,
            next_id: AtomicU64::new(1),
            startup: Value::Null,
        }
    }

    pub fn version(&self) -> PyVersion {
        self.version
    }

    /// "server" or "client".
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// OS process id of the Python peer.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// The server's real listening port (from the `listening` event).
    pub fn port(&self) -> u16 {
        let port = self.startup["port"].as_u64().unwrap_or_else(|| {
            panic!(
                "{} has no port (startup event {})",
                self.label, self.startup
            )
        });
        u16::try_from(port).expect("port fits u16")
    }

    /// The `listening` (server) or `connected` / `connect_failed` (client) event.
    pub fn startup_event(&self) -> &Value {
        &self.startup
    }

    /// True if the client peer connected at startup.
    pub fn connected(&self) -> bool {
        self.startup["event"] == "connected"
    }

    /// Sends a command object (an `"id"` is added) and waits for its reply
    /// (`{"reply": id, "ok": ..., ...}`). Waits up to 30 s plus the command's own
    /// `"timeout"` (seconds). Panics, with the peer's stderr tail, if the peer dies or
    /// does not answer in time.
    pub fn cmd(&self, cmd: Value) -> Value {
        let mut cmd = cmd;
        assert!(cmd.is_object(), "command must be a JSON object: {cmd}");
        let obj = cmd.as_object_mut().expect("object");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        obj.insert("id".into(), json!(id));
        let extra = obj
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t > 0.0)
            .map_or(Duration::ZERO, Duration::from_secs_f64);
        self.write_line(&cmd);

        let deadline = Instant::now() + CMD_TIMEOUT + extra;
        let mut st = self.shared.lock();
        loop {
            if let Some(reply) = st.replies.remove(&id) {
                return reply;
            }
            if st.stdout_closed {
                drop(st);
                self.fail(&format!("died before replying to {cmd}"));
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                self.fail(&format!(
                    "no reply to {cmd} within {:?}",
                    CMD_TIMEOUT + extra
                ));
            }
            st = self.wait_cv(st, deadline - now);
        }
    }

    /// [`PyPeer::cmd`] that also asserts `"ok": true`.
    pub fn cmd_ok(&self, cmd: Value) -> Value {
        let shown = cmd.to_string();
        let reply = self.cmd(cmd);
        if reply["ok"] != true {
            self.fail(&format!("command {shown} failed: {reply}"));
        }
        reply
    }

    /// Waits for the first not-yet-taken event matching `pred` (events already returned by
    /// an earlier `wait_event*` call are skipped; earlier unmatched ones are not) and marks it
    /// taken. Panics with the peer's stderr tail on timeout.
    pub fn wait_event(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        match self.try_wait_event(pred, timeout) {
            Some(ev) => ev,
            None => self.fail(&format!("no matching event within {timeout:?}")),
        }
    }

    /// Like [`PyPeer::wait_event`] but returns `None` on timeout (or if the peer exited
    /// without producing a matching event).
    pub fn try_wait_event(
        &self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            let st_ref = &mut *st;
            if let Some(i) =
                (0..st_ref.events.len()).find(|&i| !st_ref.taken[i] && pred(&st_ref.events[i]))
            {
                st_ref.taken[i] = true;
                return Some(st_ref.events[i].clone());
            }
            let now = Instant::now();
            if st.stdout_closed || now >= deadline {
                return None;
            }
            st = self.wait_cv(st, deadline - now);
        }
    }

    /// Waits for `n` matching events (each taken as by [`PyPeer::wait_event`]), in order of
    /// arrival.
    pub fn wait_events(
        &self,
        n: usize,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        (0..n)
            .map(|k| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.try_wait_event(&pred, left).unwrap_or_else(|| {
                    self.fail(&format!(
                        "only {k} of {n} matching events within {timeout:?}"
                    ))
                })
            })
            .collect()
    }

    /// Snapshot of every event received so far (taken or not), in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    /// Snapshot of the events named `name` (`{"event": name, ...}`).
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// The last lines the peer wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        let st = self.shared.lock();
        st.stderr.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// `true` while the process has not exited.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    /// Sends `close` (server: `close_all()`, client: `disconnect()`), waits for the reply and
    /// for the process to exit; returns its exit status.
    pub fn close(self) -> ExitStatus {
        self.cmd_ok(json!({"cmd": "close"}));
        self.wait_exit(CMD_TIMEOUT)
    }

    /// Closes the peer's stdin (the peer then shuts down cleanly and exits 0).
    pub fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Waits for the process to exit (panics after `timeout`).
    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        // Exit is observed through stdout EOF (no polling), then reaped.
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        while !st.stdout_closed {
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                self.fail(&format!("did not exit within {timeout:?}"));
            }
            st = self.wait_cv(st, deadline - now);
        }
        drop(st);
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.wait().expect("wait for python peer")
    }

    fn write_line(&self, v: &Value) {
        let mut guard = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stdin) = guard.as_mut() else {
            drop(guard);
            self.fail("stdin already closed");
        };
        let mut line = v.to_string();
        line.push('\n');
        if let Err(e) = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
        {
            drop(guard);
            self.fail(&format!("cannot write command {v}: {e}"));
        }
    }

    fn wait_cv<'a>(
        &self,
        guard: std::sync::MutexGuard<'a, State>,
        dur: Duration,
    ) -> std::sync::MutexGuard<'a, State> {
        self.shared
            .cv
            .wait_timeout(guard, dur)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// Panics with context: what went wrong, the exit status if the peer died, the
    /// recent events and the stderr tail.
    fn fail(&self, what: &str) -> ! {
        // If the process is gone, give the stderr reader a moment to drain the pipe.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut st = self.shared.lock();
        while st.stdout_closed && !st.stderr_closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self.wait_cv(st, deadline - now);
        }
        let events: Vec<String> = st
            .events
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(Value::to_string)
            .collect();
        let stderr: Vec<String> = st.stderr.iter().cloned().collect();
        drop(st);
        let status = match self.child.lock() {
            Ok(mut c) => match c.try_wait() {
                Ok(Some(s)) => format!("exited: {s}"),
                Ok(None) => "still running".to_string(),
                Err(e) => format!("unknown: {e}"),
            },
            Err(_) => "unknown".to_string(),
        };
        panic!(
            "{}: {what} ({status})\n--- last events ---\n{}\n--- stderr tail ---\n{}",
            self.label,
            events.join("\n"),
            stderr.join("\n")
        );
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl std::fmt::Debug for PyPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyPeer")
            .field("label", &self.label)
            .field("startup", &self.startup)
            .finish()
    }
}

/// Payload specs understood by the peers' `send`, `send_and_wait`, `broadcast` and `digest`
/// commands, plus Rust-side helpers for the same bytes.
pub mod payload {
    use serde_json::{json, Value};

    /// UTF-8 text (3.3.0: `Request(text=...)`; 1.6.9: `text.encode()`).
    pub fn text(s: &str) -> Value {
        json!({ "text": s })
    }

    /// Raw bytes.
    pub fn bytes(b: &[u8]) -> Value {
        json!({ "hex": to_hex(b) })
    }

    /// A JSON value (3.3.0: `Request(json=...)`; 1.6.9: `json.dumps(v).encode()`, same bytes).
    pub fn json_value(v: Value) -> Value {
        json!({ "json": v })
    }

    /// `seq_bytes(len)` without shipping the bytes through the command line.
    pub fn seq(len: usize) -> Value {
        json!({ "pattern": "seq", "len": len })
    }

    /// `prefix ++ seq_bytes(len)`, e.g. to ask a peer for the digest of an echo reply.
    pub fn prefixed_seq(prefix: &[u8], len: usize) -> Value {
        json!({ "pattern": "seq", "len": len, "prefix_hex": to_hex(prefix) })
    }

    /// The bytes of the `seq` pattern: `i % 251` for `i` in `0..len`.
    pub fn seq_bytes(len: usize) -> Vec<u8> {
        // i % 251 < 251, so the cast is lossless.
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    pub fn to_hex(b: &[u8]) -> String {
        use std::fmt::Write;
        b.iter()
            .fold(String::with_capacity(b.len() * 2), |mut s, x| {
                let _ = write!(s, "{x:02x}");
                s
            })
    }

    pub fn from_hex(s: &str) -> Vec<u8> {
        assert!(s.len() % 2 == 0, "odd hex length: {s}");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }
}
