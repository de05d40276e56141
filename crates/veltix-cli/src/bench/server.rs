//! The server side of the benchmarks: a veltix [`Server`] with counting and echo routes, plus a
//! plain-TCP listener for the raw baselines. It runs either in a child process
//! (`veltix bench --internal-server`, the default: like a real deployment) or in a thread of the
//! bench process (`--in-process`, Python Veltix's set-up). Both are driven by the same one-line
//! text commands, so the scenarios do not care which.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veltix::{ClientInfo, MessageType, PerformanceMode, Request, Response, Server, ServerConfig};

use super::stats::now_ns;

/// Python Veltix's PLAYER_MOVE (stress, burst, fps, large): counted by the server.
pub const MOVE: MessageType = MessageType::new(401, "player_move");
/// Python Veltix's PLAYER_SHOOT (fps): counted by the server.
pub const SHOOT: MessageType = MessageType::new(402, "player_shoot");
/// Broadcast by the server, counted by the clients.
pub const BCAST: MessageType = MessageType::new(403, "bench_broadcast");
/// Echoed back by the server with the request id (reqrep).
pub const ECHO: MessageType = MessageType::new(404, "bench_echo");

/// A message counter that timestamps the first message, the `target`-th one, and the ones at
/// 50/95/99 % of the target (for Python's "drain" percentiles), without a clock read per message.
#[derive(Default)]
pub struct Counter {
    count: AtomicU64,
    target: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    marks: [AtomicU64; 3],
    mark_ns: [AtomicU64; 3],
}

/// What a counter saw: count and timestamps (0 when not reached).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub mark_ns: [u64; 3],
}

impl Counter {
    /// Resets and expects `target` messages.
    pub fn arm(&self, target: u64) {
        self.count.store(0, Ordering::SeqCst);
        self.first_ns.store(0, Ordering::SeqCst);
        self.last_ns.store(0, Ordering::SeqCst);
        for (i, p) in [0.50, 0.95, 0.99].iter().enumerate() {
            let m = ((target as f64) * p).ceil().max(1.0) as u64;
            self.marks[i].store(m, Ordering::SeqCst);
            self.mark_ns[i].store(0, Ordering::SeqCst);
        }
        self.target.store(target, Ordering::SeqCst);
    }

    /// Changes the target without resetting the count.
    pub fn set_target(&self, target: u64) {
        self.target.store(target, Ordering::SeqCst);
        if self.count.load(Ordering::SeqCst) >= target && self.last_ns.load(Ordering::SeqCst) == 0 {
            self.last_ns.store(now_ns(), Ordering::SeqCst);
        }
    }

    /// Counts one message.
    #[inline]
    pub fn hit(&self) {
        let c = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if c == 1 {
            self.first_ns.store(now_ns(), Ordering::Release);
        }
        if c == self.target.load(Ordering::Relaxed) {
            self.last_ns.store(now_ns(), Ordering::Release);
        }
        for i in 0..3 {
            if c == self.marks[i].load(Ordering::Relaxed) {
                self.mark_ns[i].store(now_ns(), Ordering::Release);
            }
        }
    }

    pub fn snapshot(&self) -> Counts {
        Counts {
            count: self.count.load(Ordering::Acquire),
            first_ns: self.first_ns.load(Ordering::Acquire),
            last_ns: self.last_ns.load(Ordering::Acquire),
            mark_ns: [0, 1, 2].map(|i| self.mark_ns[i].load(Ordering::Acquire)),
        }
    }

    /// Waits (polling every 1 ms: the timestamps come from the handlers, so polling adds no
    /// error) until the target is reached or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> Counts {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.snapshot();
            if s.count >= self.target.load(Ordering::Acquire) || Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Server-side settings passed to the child process.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    pub workers: usize,
    pub mode: PerformanceMode,
    /// TLS certificate and key files (`--against tls`).
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ServerOpts {
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--server-workers".into(),
            self.workers.to_string(),
            "--performance-mode".into(),
            format!("{:?}", self.mode).to_lowercase(),
        ];
        if let Some((cert, key)) = &self.tls {
            args.push("--internal-tls-cert".into());
            args.push(cert.display().to_string());
            args.push("--internal-tls-key".into());
            args.push(key.display().to_string());
        }
        args
    }
}

/// The bench server: veltix server, counters, raw listener.
pub struct BenchServer {
    server: Server,
    counter: Arc<Counter>,
    port: u16,
    raw_port: u16,
    rss_before_start_kb: u64,
    rss_after_start_kb: u64,
}

impl BenchServer {
    pub fn start(opts: &ServerOpts) -> Result<BenchServer, Box<dyn std::error::Error>> {
        let rss_before_start_kb = vm_rss_kb(std::process::id()).unwrap_or(0);
        let mut config = ServerConfig::local()
            .max_workers(opts.workers)
            .performance_mode(opts.mode);
        config.tls = opts
            .tls
            .as_ref()
            .map(|(c, k)| veltix::tls::ServerTls::from_pem_files(c, k));
        let server = Server::new(config);
        let counter = Arc::new(Counter::default());
        for t in [MOVE, SHOOT] {
            let c = counter.clone();
            server.route(t, move |_: &ClientInfo, _: Response| c.hit());
        }
        let c = counter.clone();
        server.on_recv(move |_: &ClientInfo, _: Response| c.hit());
        server.route(ECHO, |client: &ClientInfo, msg: Response| {
            let reply = Request::new(ECHO, msg.content().clone()).respond(&msg);
            client.send(reply)
        });
        let addr = server.start()?;
        std::thread::sleep(Duration::from_millis(300));
        let rss_after_start_kb = vm_rss_kb(std::process::id()).unwrap_or(0);
        let raw_port = raw_listen()?;
        Ok(BenchServer {
            server,
            counter,
            port: addr.port(),
            raw_port,
            rss_before_start_kb,
            rss_after_start_kb,
        })
    }

    /// Runs one text command; returns the one-line reply.
    pub fn exec(&self, line: &str) -> String {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        match w.first().copied() {
            Some("arm") => {
                self.counter.arm(num(1));
                "ok".into()
            }
            Some("target") => {
                self.counter.set_target(num(1));
                "ok".into()
            }
            Some("wait") => {
                let s = self.counter.wait(Duration::from_millis(num(1)));
                format!(
                    "{} {} {} {} {} {}",
                    s.count, s.first_ns, s.last_ns, s.mark_ns[0], s.mark_ns[1], s.mark_ns[2]
                )
            }
            Some("clients") => self.server.clients().len().to_string(),
            Some("wait_clients") => {
                let deadline = Instant::now() + Duration::from_millis(num(2));
                while (self.server.clients().len() as u64) < num(1) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                self.server.clients().len().to_string()
            }
            Some("idle") => format!("{} {}", self.rss_before_start_kb, self.rss_after_start_kb),
            Some("bcast") => self.broadcast(num(1), num(2) as usize),
            Some(other) => format!("error unknown command {other:?}"),
            None => "error empty command".into(),
        }
    }

    /// Broadcasts `n` messages of `size` bytes to every client; replies
    /// `t0_ns t1_ns queued failed`.
    fn broadcast(&self, n: u64, size: usize) -> String {
        let req = Request::new(BCAST, vec![0x42u8; size]);
        let (mut queued, mut failed) = (0u64, 0u64);
        let t0 = now_ns();
        for _ in 0..n {
            match self.server.broadcast(&req, &[]) {
                Ok(k) => queued += k as u64,
                Err(_) => failed += 1,
            }
        }
        let t1 = now_ns();
        format!("{t0} {t1} {queued} {failed}")
    }

    pub fn ports(&self) -> (u16, u16) {
        (self.port, self.raw_port)
    }
}

/// `veltix bench --internal-server`: runs a [`BenchServer`] and answers commands read from
/// stdin until EOF or `quit`. The first line printed is `ready PORT RAW_PORT`.
pub fn child_main(opts: &ServerOpts) -> Result<(), Box<dyn std::error::Error>> {
    let srv = BenchServer::start(opts)?;
    let mut out = std::io::stdout().lock();
    let (p, r) = srv.ports();
    writeln!(out, "ready {p} {r}")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim() == "quit" {
            break;
        }
        writeln!(out, "{}", srv.exec(&line))?;
        out.flush()?;
    }
    srv.server.close_all();
    Ok(())
}

enum Kind {
    Child {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    },
    Local(Arc<BenchServer>),
}

/// A running bench server, in a child process or in this one.
pub struct ServerProc {
    kind: Kind,
    pub port: u16,
    pub raw_port: u16,
}

impl ServerProc {
    pub fn spawn(
        in_process: bool,
        opts: &ServerOpts,
    ) -> Result<ServerProc, Box<dyn std::error::Error>> {
        if in_process {
            let srv = BenchServer::start(opts)?;
            let (port, raw_port) = srv.ports();
            return Ok(ServerProc {
                kind: Kind::Local(Arc::new(srv)),
                port,
                raw_port,
            });
        }
        // /proc/self/exe still runs this very binary if the file was replaced meanwhile (a
        // rebuild during a long benchmark).
        let exe = if Path::new("/proc/self/exe").exists() {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe()?
        };
        let mut child = Command::new(exe)
            .arg("bench")
            .arg("--internal-server")
            .args(opts.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or("no stdin for the server process")?;
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or("no stdout for the server process")?,
        );
        let mut sp = ServerProc {
            kind: Kind::Child {
                child,
                stdin,
                stdout,
            },
            port: 0,
            raw_port: 0,
        };
        let ready = sp.read_line()?;
        let w: Vec<&str> = ready.split_whitespace().collect();
        match (
            w.first(),
            w.get(1).and_then(|s| s.parse().ok()),
            w.get(2).and_then(|s| s.parse().ok()),
        ) {
            (Some(&"ready"), Some(p), Some(r)) => {
                sp.port = p;
                sp.raw_port = r;
                Ok(sp)
            }
            _ => Err(format!("bench server did not start: {ready:?}").into()),
        }
    }

    fn read_line(&mut self) -> Result<String, Box<dyn std::error::Error>> {
        match &mut self.kind {
            Kind::Child { stdout, .. } => {
                let mut s = String::new();
                if stdout.read_line(&mut s)? == 0 {
                    return Err("the bench server process exited".into());
                }
                Ok(s.trim().to_string())
            }
            Kind::Local(_) => Err("no output to read in-process".into()),
        }
    }

    /// Sends a command, returns the reply.
    pub fn cmd(&mut self, line: &str) -> Result<String, Box<dyn std::error::Error>> {
        let reply = match &mut self.kind {
            Kind::Local(s) => s.exec(line),
            Kind::Child { stdin, .. } => {
                writeln!(stdin, "{line}")?;
                stdin.flush()?;
                self.read_line()?
            }
        };
        if reply.starts_with("error") {
            return Err(format!("bench server: {reply}").into());
        }
        Ok(reply)
    }

    pub fn arm(&mut self, target: u64) -> Result<(), Box<dyn std::error::Error>> {
        self.cmd(&format!("arm {target}")).map(|_| ())
    }

    pub fn set_target(&mut self, target: u64) -> Result<(), Box<dyn std::error::Error>> {
        self.cmd(&format!("target {target}")).map(|_| ())
    }

    pub fn wait(&mut self, timeout: Duration) -> Result<Counts, Box<dyn std::error::Error>> {
        let r = self.cmd(&format!("wait {}", timeout.as_millis()))?;
        let v = nums(&r, 6)?;
        Ok(Counts {
            count: v[0],
            first_ns: v[1],
            last_ns: v[2],
            mark_ns: [v[3], v[4], v[5]],
        })
    }

    /// Waits until `n` clients completed the handshake; returns how many did.
    pub fn wait_clients(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<usize, Box<dyn std::error::Error>> {
        let r = self.cmd(&format!("wait_clients {n} {}", timeout.as_millis()))?;
        Ok(nums(&r, 1)?[0] as usize)
    }

    /// `(t0_ns, t1_ns, queued, failed)` of `n` broadcasts.
    pub fn broadcast(
        &mut self,
        n: u64,
        size: usize,
    ) -> Result<[u64; 4], Box<dyn std::error::Error>> {
        let r = self.cmd(&format!("bcast {n} {size}"))?;
        let v = nums(&r, 4)?;
        Ok([v[0], v[1], v[2], v[3]])
    }

    /// The server's RSS before and after `Server::start` (same process only when separate).
    pub fn idle_rss(&mut self) -> Result<(u64, u64), Box<dyn std::error::Error>> {
        let r = self.cmd("idle")?;
        let v = nums(&r, 2)?;
        Ok((v[0], v[1]))
    }

    /// The process id holding the server.
    pub fn pid(&self) -> u32 {
        match &self.kind {
            Kind::Child { child, .. } => child.id(),
            Kind::Local(_) => std::process::id(),
        }
    }

    pub fn is_separate(&self) -> bool {
        matches!(self.kind, Kind::Child { .. })
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Kind::Child { child, stdin, .. } = &mut self.kind {
            let _ = writeln!(stdin, "quit");
            let _ = stdin.flush();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

fn nums(reply: &str, n: usize) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let v: Vec<u64> = reply
        .split_whitespace()
        .map(|s| s.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bench server reply {reply:?}: {e}"))?;
    if v.len() < n {
        return Err(format!("bench server reply {reply:?}: expected {n} numbers").into());
    }
    Ok(v)
}

/// `VmRSS` of a process in KiB, from `/proc/PID/status`.
pub fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Raw TCP: the same bytes without framework logic.

/// Raw mode bytes: the first byte a raw client sends.
pub const RAW_ECHO: u8 = b'E';
pub const RAW_SINK: u8 = b'S';
pub const RAW_SOURCE: u8 = b'B';

fn raw_listen() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::Builder::new()
        .name("raw-accept".into())
        .spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let _ = std::thread::Builder::new()
                    .name("raw-conn".into())
                    .spawn(move || {
                        let _ = raw_conn(s);
                    });
            }
        })?;
    Ok(port)
}

/// One raw connection: `E` echoes everything; `S` + u64 byte count reads and counts, then
/// answers the `CLOCK_MONOTONIC` ns of the last byte; `B` + u64 frames + u32 content size writes
/// that many frames as fast as it can.
fn raw_conn(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    let mut buf = vec![0u8; 64 * 1024];
    match mode[0] {
        RAW_ECHO => loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        },
        RAW_SINK => loop {
            let mut want = [0u8; 8];
            if s.read_exact(&mut want).is_err() {
                return Ok(());
            }
            let mut left = u64::from_le_bytes(want);
            while left > 0 {
                let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = s.read(&mut buf[..cap])?;
                if n == 0 {
                    return Ok(());
                }
                left -= n as u64;
            }
            s.write_all(&now_ns().to_le_bytes())?;
        },
        RAW_SOURCE => {
            let mut hdr = [0u8; 12];
            s.read_exact(&mut hdr)?;
            let n = u64::from_le_bytes(hdr[..8].try_into().unwrap_or([0; 8]));
            let size = u32::from_le_bytes(hdr[8..].try_into().unwrap_or([0; 4])) as usize;
            let frame = raw_frame(BCAST.code(), &vec![0x42u8; size]);
            write_frames(&mut s, &frame, n)?;
            // Wait for the client to close.
            while s.read(&mut buf)? > 0 {}
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A Gen 3 frame with request id 0.
pub fn raw_frame(message_type: u16, content: &[u8]) -> Vec<u8> {
    veltix::proto::Frame::new(message_type, 0, content.to_vec())
        .encode(veltix::Generation::Gen3)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// Writes `n` copies of `frame`, batched into writes of about 64 KiB (a pipelined blast).
pub fn write_frames(s: &mut impl Write, frame: &[u8], n: u64) -> std::io::Result<()> {
    let per = (64 * 1024 / frame.len().max(1)).max(1) as u64;
    let chunk: Vec<u8> = frame.repeat(per as usize);
    let mut left = n;
    while left > 0 {
        let k = left.min(per);
        s.write_all(&chunk[..k as usize * frame.len()])?;
        left -= k;
    }
    Ok(())
}
