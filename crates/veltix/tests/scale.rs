//! Scale: 10,000 `AsyncClient`s and 10,000 blocking `Client`s connected at once from this
//! process to a server in a child process (this test binary again, running `child_server`).
//! The process's thread count stays flat (one handler pool and one runtime for all of them, not
//! a pool per client), and the client-side memory per connection stays under 32 KiB
//! (`VmRSS` before and after; printed).
//!
//! RLIMIT_NOFILE is raised for both processes (the child inherits it); the test fails if it
//! cannot be raised enough.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use veltix::{AsyncClient, Client, ClientConfig, Request, Response, Server, ServerConfig};

mod support;

const PER_KIND: usize = 10_000;
/// The target.
const MAX_BYTES_PER_CONNECTION: u64 = 32 * 1024;
const CHILD_ENV: &str = "VELTIX_SCALE_CHILD";
const WAIT: Duration = Duration::from_secs(60);

fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}

fn threads() -> u64 {
    status_field("Threads:")
}

fn rss_bytes() -> u64 {
    status_field("VmRSS:") * 1024
}

/// Descriptors a process needs besides its connections (stdio, pipes, epoll, eventfds...).
const FD_MARGIN: u64 = 256;
/// Fewer connections per kind than this is no scale test: fail.
const MIN_PER_KIND: usize = 5_000;

/// Connections per kind: `PER_KIND`, or as many as the descriptor limit allows (said loudly on
/// stderr); fails when that is under `MIN_PER_KIND`.
fn connections_per_kind() -> usize {
    let want = 2 * PER_KIND as u64 + FD_MARGIN;
    if let Some(n) = std::env::var("VELTIX_SCALE_PER_KIND")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        support::limits::raise_nofile(2 * n as u64 + FD_MARGIN).unwrap_or_else(|e| panic!("{e}"));
        return n;
    }
    let have = support::limits::raise_nofile(want).unwrap_or_else(|e| panic!("{e}"));
    if have >= want {
        return PER_KIND;
    }
    let n = usize::try_from(have.saturating_sub(FD_MARGIN) / 2).unwrap_or(0);
    assert!(
        n >= MIN_PER_KIND,
        "RLIMIT_NOFILE is {have} and cannot be raised to {want}: only {n} connections per kind"
    );
    eprintln!(
        "WARNING: RLIMIT_NOFILE cannot be raised above {have} (hard limit; raising it needs \
         CAP_SYS_RESOURCE), {want} are needed for {PER_KIND} + {PER_KIND} connections: \
         running {n} + {n} instead"
    );
    n
}

/// The server side, in the child process: an echo server; prints its port, then serves until
/// its stdin closes (the parent ended or dropped it).
#[test]
fn child_server() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return; // only meaningful when spawned by `twenty_thousand_clients_one_process`
    }
    let server = Server::new(ServerConfig::local());
    server.on_recv(|c, m: Response| c.send(Request::new(201u16, m.content().clone()).respond(&m)));
    let addr = server.start().expect("child: start");
    println!("VELTIX_SCALE_PORT={}", addr.port());
    std::io::stdout().flush().expect("child: stdout");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server() -> (Child, u16) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", "child_server", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server process");
    let stdout = child.stdout.take().expect("child stdout");
    let child = Child(child);
    let mut port = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child stdout");
        // libtest may print "test child_server ... " on the same line first.
        if let Some((_, p)) = line.split_once("VELTIX_SCALE_PORT=") {
            port = Some(p.trim().parse().expect("a port"));
            break;
        }
    }
    (child, port.expect("the server process printed its port"))
}

#[test]
fn twenty_thousand_clients_one_process() {
    // Both processes hold one descriptor per connection, plus a margin (the child inherits).
    let per_kind = connections_per_kind();
    let (_child, port) = spawn_server();
    // The async clients' runtime (the blocking ones use veltix's shared runtime).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    // Warm up: runtimes and the handler pool started, allocator arenas in use.
    let warm_async: Vec<AsyncClient> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..50 {
            let c = AsyncClient::new(ClientConfig::new("127.0.0.1", port));
            c.connect().await.expect("connect");
            v.push(c);
        }
        v
    });
    let warm_sync: Vec<Client> = (0..50)
        .map(|_| {
            let c = Client::new(ClientConfig::new("127.0.0.1", port));
            c.connect().expect("connect");
            c
        })
        .collect();
    for c in &warm_sync {
        c.send_and_wait(Request::text(200u16, "warm"), WAIT)
            .expect("echo");
    }
    eprintln!("scale: warmed up");
    let threads_before = threads();
    let rss_before = rss_bytes();

    let async_clients: Vec<Arc<AsyncClient>> = rt.block_on(async {
        let mut all = Vec::with_capacity(per_kind);
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in (0..per_kind).step_by(500) {
            for i in chunk..(chunk + 500).min(per_kind) {
                tasks.spawn(async move {
                    let c = AsyncClient::new(ClientConfig::new("127.0.0.1", port));
                    c.connect().await.expect("async connect");
                    (i, Arc::new(c))
                });
            }
            while let Some(r) = tasks.join_next().await {
                all.push(r.expect("connect task"));
            }
        }
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, c)| c).collect()
    });
    let threads_mid = threads();
    eprintln!("scale: {per_kind} async clients connected");
    // Connected from a few threads of our own (joined before measuring).
    let sync_clients: Vec<Client> = std::thread::scope(|s| {
        let parts: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    (t..per_kind)
                        .step_by(4)
                        .map(|_| {
                            let c = Client::new(ClientConfig::new("127.0.0.1", port));
                            c.connect().expect("connect");
                            c
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("connect thread"))
            .collect()
    });
    let threads_after = threads();
    let rss_after = rss_bytes();

    assert_eq!(async_clients.len() + sync_clients.len(), 2 * per_kind);
    assert!(async_clients.iter().all(|c| c.is_connected()));
    assert!(sync_clients.iter().all(|c| c.is_connected()));
    // Every link works (a sample of each kind, through the shared pool and runtimes).
    for c in sync_clients.iter().step_by(997) {
        c.send_and_wait(Request::text(200u16, "still there"), WAIT)
            .expect("echo");
    }
    rt.block_on(async {
        for c in async_clients.iter().step_by(997) {
            c.send_and_wait(Request::text(200u16, "still there"), WAIT)
                .await
                .expect("echo");
        }
    });

    let per_conn = rss_after.saturating_sub(rss_before) / (2 * per_kind) as u64;
    println!(
        "scale: {} connections; threads {threads_before} -> {threads_mid} -> {threads_after}; \
         RSS {} KiB -> {} KiB: {per_conn} B ({:.1} KiB) per connection; handler pool {} threads",
        2 * per_kind,
        rss_before / 1024,
        rss_after / 1024,
        per_conn as f64 / 1024.0,
        veltix::handler_threads(),
    );
    // Flat: at most the handler pool's threads start on top of what ran with 100 clients.
    let pool = veltix::handler_threads() as u64;
    assert!(
        threads_after <= threads_before + pool,
        "threads grew from {threads_before} to {threads_after} with {} connections",
        2 * per_kind
    );
    assert!(
        per_conn <= MAX_BYTES_PER_CONNECTION,
        "{per_conn} bytes per connection (limit {MAX_BYTES_PER_CONNECTION})"
    );
    drop(sync_clients);
    rt.block_on(async {
        drop(async_clients);
        drop(warm_async);
    });
    drop(warm_sync);
}
