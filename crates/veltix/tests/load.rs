//! Load: many concurrent connections on one in-process server, every message sequence-numbered
//! and checked on both ends for zero loss, zero duplication and in-order handling.
//!
//! - `thousand_connections_hundred_thousand_messages` (in CI): 1,000 connections held at once,
//!   100 messages each.
//! - `full_load` (`#[ignore]`, run by `scripts/load.sh`): 10,000 connections and 1,000,000
//!   messages by default; `VELTIX_LOAD_CONNECTIONS` and `VELTIX_LOAD_MESSAGES` scale it.
//!
//! Most connections are raw Gen 3 peers on a tokio runtime of their own (a handshake with
//! `veltix::proto::Handshake`, then pipelined frames), so that ten thousand of them fit in one
//! test process; the first ones are real `veltix::Client`s (`lib_clients`), so the library's
//! client side is loaded too. The server checks, per connection, that it handles sequence
//! numbers 0, 1, 2, ... exactly once and in order, and echoes each message; every client checks
//! that the echoes come back in the same order, with the same content and request id.
//!
//! All connections are established (and counted by the server's `on_connect`) before any
//! message is sent, and stay open until every connection has received all of its echoes.
//! RLIMIT_NOFILE is raised in-process (both ends live in this process: two descriptors per
//! connection); if it cannot be raised enough, fewer connections are used and the test says so.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veltix::proto::{
    encode_parts, Decoded, Decoder, DecoderConfig, Generation, Handshake, HandshakeConfig,
};
use veltix::{
    Client, ClientConfig, ClientInfo, MessageType, Request, Response, Server, ServerConfig,
};

mod support;

const SEQ: MessageType = MessageType::new(200, "seq");
/// Payload bytes after the 12-byte (connection, sequence) prefix.
const PAD: usize = 20;
/// Deadline of any single wait.
const WAIT: Duration = Duration::from_secs(120);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn vm_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Message content: connection index (u32), sequence number (u64), then a pattern.
fn content(conn: u32, seq: u64) -> [u8; 12 + PAD] {
    let mut c = [0u8; 12 + PAD];
    c[..4].copy_from_slice(&conn.to_be_bytes());
    c[4..12].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in c[12..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    c
}

fn parse(c: &[u8]) -> Option<(u32, u64)> {
    if c.len() != 12 + PAD {
        return None;
    }
    Some((
        u32::from_be_bytes(c[..4].try_into().ok()?),
        u64::from_be_bytes(c[4..12].try_into().ok()?),
    ))
}

/// Gen 3 client ids live in 0..32768.
fn req_id(seq: u64) -> u32 {
    (seq % 32768) as u32
}

/// Counts events and lets a thread wait for a count.
#[derive(Default)]
struct Counter {
    n: Mutex<usize>,
    cv: Condvar,
}

impl Counter {
    fn add(&self) {
        *lock(&self.n) += 1;
        self.cv.notify_all();
    }
    fn wait_for(&self, target: usize, what: &str) {
        let n = lock(&self.n);
        let (n, _) = self
            .cv
            .wait_timeout_while(n, WAIT, |n| *n < target)
            .unwrap_or_else(|p| p.into_inner());
        assert!(*n >= target, "{what}: {} of {target} within {WAIT:?}", *n);
    }
}

/// The server's per-connection bookkeeping: next expected sequence number and owner.
struct ServerCheck {
    next: Vec<AtomicU64>,
    owner: Vec<AtomicU64>,
    handled: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl ServerCheck {
    fn new(conns: usize) -> ServerCheck {
        ServerCheck {
            next: (0..conns).map(|_| AtomicU64::new(0)).collect(),
            owner: (0..conns).map(|_| AtomicU64::new(0)).collect(),
            handled: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Forgets everything (between rounds on the same server).
    fn reset(&self) {
        for a in self.next.iter().chain(&self.owner) {
            a.store(0, Ordering::Relaxed);
        }
        self.handled.store(0, Ordering::Relaxed);
        lock(&self.errors).clear();
    }

    fn error(&self, e: String) {
        let mut errs = lock(&self.errors);
        if errs.len() < 20 {
            errs.push(e);
        }
    }

    /// Handlers of one connection run one at a time, in order: plain loads and stores suffice.
    fn check(&self, client: &ClientInfo, msg: &Response) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        let Some((conn, seq)) = parse(msg.content()) else {
            return self.error(format!("malformed content from {}", client.addr()));
        };
        let Some(next) = self.next.get(conn as usize) else {
            return self.error(format!("unknown connection index {conn}"));
        };
        let owner = &self.owner[conn as usize];
        match owner.compare_exchange(0, client.id(), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {}
            Err(o) if o == client.id() => {}
            Err(o) => self.error(format!(
                "connection index {conn} seen on server connections {o} and {}",
                client.id()
            )),
        }
        let want = next.load(Ordering::Relaxed);
        if seq != want {
            self.error(format!(
                "connection {conn}: handled seq {seq}, expected {want}"
            ));
        }
        next.store(seq + 1, Ordering::Relaxed);
        if msg.request_id() != req_id(seq) {
            self.error(format!(
                "connection {conn} seq {seq}: request id {}",
                msg.request_id()
            ));
        }
    }
}

/// The phases every connection goes through together: all connected (`start`), all echoes
/// received (`done`, after which the server is measured), then closing (`release`).
struct Phases {
    start: tokio::sync::Barrier,
    done: tokio::sync::Barrier,
    release: tokio::sync::Barrier,
}

/// One raw connection: handshake, wait for everyone, pipeline `m` messages, check the echoes,
/// hold the connection until everyone is done.
async fn raw_conn(
    addr: SocketAddr,
    conn: u32,
    m: u64,
    connect_slots: Arc<tokio::sync::Semaphore>,
    phases: Arc<Phases>,
) -> Result<u64, String> {
    let err = |what: &str, e: &dyn std::fmt::Display| format!("connection {conn}: {what}: {e}");
    let permit = connect_slots
        .acquire()
        .await
        .map_err(|e| err("semaphore", &e))?;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| err("connect", &e))?;
    let _ = s.set_nodelay(true);
    let mut hs = Handshake::client(HandshakeConfig::new(Generation::Gen3)).unwrap();
    let mut dec = Decoder::new(DecoderConfig::new(Generation::Gen3));
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(b) = hs.poll_transmit() {
            s.write_all(&b)
                .await
                .map_err(|e| err("handshake write", &e))?;
        }
        if hs.is_done() {
            break;
        }
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| err("handshake read", &e))?;
        if n == 0 {
            return Err(err("handshake", &"server closed"));
        }
        let used = hs.feed(&buf[..n]).map_err(|e| err("handshake", &e))?;
        dec.feed(&buf[used..n]);
    }
    drop(permit);
    phases.start.wait().await;
    let (mut rd, mut wr) = s.into_split();
    let writer = async move {
        let mut out = BytesMut::new();
        for seq in 0..m {
            encode_parts(
                Generation::Gen3,
                SEQ.code(),
                req_id(seq),
                0,
                &content(conn, seq),
                &mut out,
            )
            .map_err(|e| err("encode", &e))?;
            if out.len() >= 8 * 1024 || seq + 1 == m {
                wr.write_all(&out).await.map_err(|e| err("write", &e))?;
                out.clear();
            }
        }
        Ok::<_, String>(wr)
    };
    let reader = async {
        let mut expect = 0u64;
        while expect < m {
            match dec.decode() {
                Some(Decoded::Frame(f)) => {
                    let want = content(conn, expect);
                    if f.message_type != SEQ.code()
                        || f.content[..] != want[..]
                        || f.request_id != req_id(expect)
                    {
                        return Err(format!(
                            "connection {conn}: echo #{expect} is type {} id {} {:?}",
                            f.message_type,
                            f.request_id,
                            parse(&f.content)
                        ));
                    }
                    expect += 1;
                    continue;
                }
                Some(Decoded::Rejected(r)) => return Err(err("bad frame from the server", &r)),
                None => {}
            }
            let n = rd.read(&mut buf).await.map_err(|e| err("read", &e))?;
            if n == 0 {
                return Err(err("read", &format!("server closed after {expect} echoes")));
            }
            dec.feed(&buf[..n]);
        }
        Ok(expect)
    };
    let (wr, got) = tokio::try_join!(writer, reader)?;
    // Held open until every connection got all of its echoes (and the server was measured).
    phases.done.wait().await;
    phases.release.wait().await;
    drop((rd, wr));
    Ok(got)
}

/// A library client: same protocol through `veltix::Client` (send + route).
fn lib_conn(
    addr: SocketAddr,
    conn: u32,
    m: u64,
    rt: tokio::runtime::Handle,
    connect_slots: Arc<tokio::sync::Semaphore>,
    phases: Arc<Phases>,
) -> Result<u64, String> {
    let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()).max_workers(1));
    let state = Arc::new((Mutex::new((0u64, Vec::<String>::new())), Condvar::new()));
    let st = state.clone();
    client.route(&SEQ, move |r: Response| {
        let mut g = lock(&st.0);
        let want = content(conn, g.0);
        if r.content()[..] != want[..] || r.request_id() != req_id(g.0) {
            let e = format!(
                "lib connection {conn}: echo #{} is {:?}",
                g.0,
                parse(r.content())
            );
            g.1.push(e);
        }
        g.0 += 1;
        st.1.notify_all();
    });
    {
        let _permit = rt
            .block_on(connect_slots.acquire())
            .map_err(|e| format!("lib connection {conn}: semaphore: {e}"))?;
        client
            .connect()
            .map_err(|e| format!("lib connection {conn}: connect: {e}"))?;
    }
    rt.block_on(phases.start.wait());
    for seq in 0..m {
        client
            .send(Request::new(&SEQ, content(conn, seq).to_vec()).with_request_id(req_id(seq)))
            .map_err(|e| format!("lib connection {conn}: send #{seq}: {e}"))?;
    }
    let got = {
        let g = lock(&state.0);
        let (g, _) = state
            .1
            .wait_timeout_while(g, WAIT, |g| g.0 < m && g.1.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        if !g.1.is_empty() {
            return Err(g.1.join("; "));
        }
        g.0
    };
    rt.block_on(phases.done.wait());
    rt.block_on(phases.release.wait());
    client.disconnect();
    Ok(got)
}

/// The server of a load run, its checks and connection counters.
struct LocalServer {
    server: Server,
    check: Arc<ServerCheck>,
    connected: Arc<Counter>,
    disconnected: Arc<Counter>,
}

fn start_local(connections: usize) -> LocalServer {
    let server = Server::new(ServerConfig::local().handshake_timeout(Duration::from_secs(60)));
    let check = Arc::new(ServerCheck::new(connections));
    let c2 = check.clone();
    server.route(&SEQ, move |c: &ClientInfo, msg: Response| {
        c2.check(c, &msg);
        c.send(Request::new(&SEQ, msg.content().clone()).respond(&msg))
    });
    let connected = Arc::new(Counter::default());
    let disconnected = Arc::new(Counter::default());
    let (cc, dc) = (connected.clone(), disconnected.clone());
    server.on_connect(move |_| cc.add());
    server.on_disconnect(move |_| dc.add());
    server.start().expect("server starts");
    LocalServer {
        server,
        check,
        connected,
        disconnected,
    }
}

/// What the server saw: messages handled, connections that did not get exactly `m` in order.
struct Verdict {
    handled: u64,
    incomplete: usize,
    errors: Vec<String>,
}

impl LocalServer {
    fn verdict(&self, m: u64) -> Verdict {
        Verdict {
            handled: self.check.handled.load(Ordering::Relaxed),
            incomplete: self
                .check
                .next
                .iter()
                .filter(|n| n.load(Ordering::Relaxed) != m)
                .count(),
            errors: lock(&self.check.errors).clone(),
        }
    }
}

/// The server process of a separate-process run: this test binary again, running
/// `load_server_process`, driven by lines on its stdin; it answers with `@@ ...` lines.
struct ChildServer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    addr: SocketAddr,
}

impl ChildServer {
    fn spawn(connections: usize) -> ChildServer {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "load_server_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VELTIX_LOAD_SERVER", connections.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the server process");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // The harness may print "test NAME ... " on the same line first.
                if let Some(i) = line.find("@@ ") {
                    if tx.send(line[i + 3..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let first = lines.recv_timeout(WAIT).expect("the server process starts");
        let addr = first
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        ChildServer {
            child,
            stdin,
            lines,
            addr,
        }
    }

    fn cmd(&mut self, c: &str) -> Vec<String> {
        use std::io::Write;
        writeln!(self.stdin, "{c}").expect("write to the server process");
        self.stdin.flush().expect("flush");
        let reply = self
            .lines
            .recv_timeout(WAIT + Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no reply to {c:?} from the server process"));
        reply.split_whitespace().map(str::to_string).collect()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Srv {
    Local(LocalServer),
    Child(ChildServer),
}

fn num(v: &[String], i: usize) -> u64 {
    v.get(i).and_then(|x| x.parse().ok()).unwrap_or(u64::MAX)
}

impl Srv {
    fn addr(&self) -> SocketAddr {
        match self {
            Srv::Local(l) => l.server.local_addr().expect("running"),
            Srv::Child(c) => c.addr,
        }
    }

    /// Waits until `n` clients completed the handshake; returns the clients held and the
    /// server's RSS in KiB (this process's when the server is in process).
    fn wait_connected(&mut self, n: usize) -> (usize, u64) {
        match self {
            Srv::Local(l) => {
                l.connected.wait_for(n, "connections established");
                (l.server.clients().len(), vm_rss_kb())
            }
            Srv::Child(c) => {
                let r = c.cmd(&format!("wait-connected {n}"));
                (num(&r, 0) as usize, num(&r, 1))
            }
        }
    }

    fn wait_disconnected(&mut self, n: usize) -> (usize, u64) {
        match self {
            Srv::Local(l) => {
                l.disconnected.wait_for(n, "connections closed");
                (l.server.clients().len(), vm_rss_kb())
            }
            Srv::Child(c) => {
                let r = c.cmd(&format!("wait-disconnected {n}"));
                (num(&r, 0) as usize, num(&r, 1))
            }
        }
    }

    fn reset(&mut self) {
        match self {
            Srv::Local(l) => l.check.reset(),
            Srv::Child(c) => {
                c.cmd("reset");
            }
        }
    }

    fn rss_kb(&mut self) -> u64 {
        match self {
            Srv::Local(_) => vm_rss_kb(),
            Srv::Child(c) => num(&c.cmd("rss"), 0),
        }
    }

    fn verdict(&mut self, m: u64) -> Verdict {
        match self {
            Srv::Local(l) => l.verdict(m),
            Srv::Child(c) => {
                let r = c.cmd(&format!("verdict {m}"));
                Verdict {
                    handled: num(&r, 0),
                    incomplete: num(&r, 1) as usize,
                    errors: if r.get(2).map(String::as_str) == Some("-") {
                        Vec::new()
                    } else {
                        vec![r[2..].join(" ")]
                    },
                }
            }
        }
    }
}

/// The server process of `full_load` (see [`ChildServer`]). Does nothing unless
/// `VELTIX_LOAD_SERVER` is set.
#[test]
#[ignore = "helper process of full_load; does nothing on its own"]
fn load_server_process() {
    use std::io::BufRead;
    let Some(connections) = std::env::var("VELTIX_LOAD_SERVER")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let _ = support::limits::raise_nofile(connections as u64 + 512);
    let l = start_local(connections);
    println!("@@ listening {}", l.server.local_addr().expect("running"));
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let arg = || w.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match w.first().copied() {
            Some("wait-connected") => {
                l.connected
                    .wait_for(arg() as usize, "connections established");
                println!("@@ {} {}", l.server.clients().len(), vm_rss_kb());
            }
            Some("wait-disconnected") => {
                l.disconnected
                    .wait_for(arg() as usize, "connections closed");
                println!("@@ {} {}", l.server.clients().len(), vm_rss_kb());
            }
            Some("reset") => {
                l.check.reset();
                println!("@@ ok");
            }
            Some("rss") => println!("@@ {}", vm_rss_kb()),
            Some("verdict") => {
                let v = l.verdict(arg());
                let first = v.errors.first().cloned().unwrap_or_else(|| "-".into());
                println!("@@ {} {} {first}", v.handled, v.incomplete);
            }
            _ => break,
        }
    }
    l.server.close_all();
}

struct Report {
    round: usize,
    connections: usize,
    lib_clients: usize,
    separate: bool,
    held: usize,
    messages: u64,
    connect_secs: f64,
    traffic_secs: f64,
    server_rss_connected_kb: u64,
    server_rss_traffic_kb: u64,
    server_rss_after_kb: u64,
}

/// `rounds` times: `want_connections` new connections held at once, `messages` in all.
/// `separate`: the server runs in its own process (its RSS is then the server's alone, and each
/// process needs one descriptor per connection instead of two).
fn run(want_connections: usize, messages: u64, separate: bool, rounds: usize) -> Vec<Report> {
    let per_conn = if separate { 1 } else { 2 };
    let nofile = support::limits::raise_nofile(per_conn * want_connections as u64 + 512)
        .unwrap_or_else(|_| support::limits::nofile());
    let connections = want_connections.min((nofile.saturating_sub(512) / per_conn) as usize);
    if connections < want_connections {
        println!(
            "RLIMIT_NOFILE is {nofile} and cannot be raised: using {connections} connections \
             instead of {want_connections}"
        );
    }
    assert!(
        connections >= 100,
        "RLIMIT_NOFILE {nofile} is too low for a load test"
    );
    let m = messages / connections as u64;
    let total = m * connections as u64;
    let lib_clients = (connections / 10).min(100);

    let mut srv = if separate {
        Srv::Child(ChildServer::spawn(connections))
    } else {
        Srv::Local(start_local(connections))
    };
    let addr = srv.addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");
    let mut reports = Vec::new();
    for round in 0..rounds {
        srv.reset();
        let barrier = || tokio::sync::Barrier::new(connections + 1);
        let phases = Arc::new(Phases {
            start: barrier(),
            done: barrier(),
            release: barrier(),
        });
        // Connection attempts in flight at once: below the server's listen backlog (std's
        // 128); see the ignored `connect_storm_every_client_gets_the_hello` in hostile.rs.
        let slots = Arc::new(tokio::sync::Semaphore::new(64));
        let t0 = Instant::now();
        let raw: Vec<_> = (lib_clients..connections)
            .map(|conn| {
                rt.spawn(raw_conn(
                    addr,
                    conn as u32,
                    m,
                    slots.clone(),
                    phases.clone(),
                ))
            })
            .collect();
        let lib: Vec<_> = (0..lib_clients)
            .map(|conn| {
                let h = rt.handle().clone();
                let (sl, ph) = (slots.clone(), phases.clone());
                std::thread::spawn(move || lib_conn(addr, conn as u32, m, h, sl, ph))
            })
            .collect();

        let cumulative = connections * (round + 1);
        let (held, server_rss_connected_kb) = srv.wait_connected(cumulative);
        let connect_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        rt.block_on(phases.start.wait());
        rt.block_on(phases.done.wait());
        let traffic_secs = t1.elapsed().as_secs_f64();
        let server_rss_traffic_kb = srv.rss_kb();
        rt.block_on(phases.release.wait());

        let mut errors = Vec::new();
        let mut echoed = 0u64;
        for h in raw {
            match rt.block_on(h) {
                Ok(Ok(n)) => echoed += n,
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(format!("task: {e}")),
            }
        }
        for h in lib {
            match h.join() {
                Ok(Ok(n)) => echoed += n,
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("a library client thread panicked".into()),
            }
        }
        let verdict = srv.verdict(m);
        errors.extend(verdict.errors);
        let (left, server_rss_after_kb) = srv.wait_disconnected(cumulative);
        assert!(
            errors.is_empty(),
            "round {round}: {} errors, first ones: {:#?}",
            errors.len(),
            &errors[..errors.len().min(10)]
        );
        assert_eq!(held, connections, "connections held at once");
        assert_eq!(verdict.handled, total, "messages handled by the server");
        assert_eq!(
            verdict.incomplete, 0,
            "connections whose messages were not all handled"
        );
        assert_eq!(echoed, total, "echoes checked by the clients");
        assert_eq!(left, 0, "clients left on the server after teardown");
        let r = Report {
            round,
            connections,
            lib_clients,
            separate,
            held,
            messages: total,
            connect_secs,
            traffic_secs,
            server_rss_connected_kb,
            server_rss_traffic_kb,
            server_rss_after_kb,
        };
        print(&r);
        reports.push(r);
    }
    if let Srv::Local(l) = &srv {
        l.server.close_all();
    }
    reports
}

fn print(r: &Report) {
    let whose = if r.separate {
        "server process"
    } else {
        "process (server and clients)"
    };
    println!(
        "load round {}: {} connections ({} veltix::Client, {} raw) held at once: {}; {} \
         messages, each handled once and in order by the server and echoed back in order (zero \
         loss, zero duplication); connect {:.2} s, traffic {:.2} s ({:.0} msg/s each way); {whose} \
         RSS: all connected {} MiB, end of traffic {} MiB, after teardown {} MiB",
        r.round + 1,
        r.connections,
        r.lib_clients,
        r.connections - r.lib_clients,
        r.held,
        r.messages,
        r.connect_secs,
        r.traffic_secs,
        r.messages as f64 / r.traffic_secs,
        r.server_rss_connected_kb / 1024,
        r.server_rss_traffic_kb / 1024,
        r.server_rss_after_kb / 1024,
    );
}

#[test]
fn thousand_connections_hundred_thousand_messages() {
    let t0 = Instant::now();
    run(1_000, 100_000, false, 1);
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
}

/// `VELTIX_LOAD_CONNECTIONS` (10,000), `VELTIX_LOAD_MESSAGES` (1,000,000 per round),
/// `VELTIX_LOAD_ROUNDS` (3: new connections each round, on the same server; the server's RSS
/// after each teardown shows whether anything accumulates), `VELTIX_LOAD_SEPARATE` (1: the
/// server in its own process; 0: in this process).
#[test]
#[ignore = "the full load run (10,000 connections, 1,000,000 messages): scripts/load.sh"]
fn full_load() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let conns = env("VELTIX_LOAD_CONNECTIONS", 10_000) as usize;
    let msgs = env("VELTIX_LOAD_MESSAGES", 1_000_000);
    let separate = env("VELTIX_LOAD_SEPARATE", 1) != 0;
    let rounds = env("VELTIX_LOAD_ROUNDS", 3).max(1) as usize;
    let reports = run(conns, msgs, separate, rounds);
    if let (Some(first), Some(last)) = (reports.first(), reports.last()) {
        // Allocator caches keep memory after a teardown; what must not happen is growth that
        // accumulates round after round.
        assert!(
            last.server_rss_after_kb <= first.server_rss_after_kb * 5 / 4 + 32 * 1024,
            "server RSS after teardown grew from {} to {} KiB over {rounds} rounds",
            first.server_rss_after_kb,
            last.server_rss_after_kb
        );
    }
}
