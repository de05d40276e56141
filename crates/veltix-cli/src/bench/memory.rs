//! Memory: RSS per connection.
//!
//! Default (separate processes): the server runs alone in its process and its `VmRSS` is read
//! from `/proc/PID/status`; the connections are raw sockets doing the Gen 3 handshake with
//! [`veltix::proto::Handshake`], so the client process stays light. Steps follow Python's memory
//! bench (idle server, first 10 one by one, 10→50), then go on to `connections` (10,000).
//!
//! `--in-process`: Python's set-up: one process, real veltix `Client`s for the first 50, so a
//! "client" costs both ends (as in Python); beyond 50, raw handshake sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use veltix::proto::{Handshake, HandshakeConfig};
use veltix::{Client, Generation};

use super::scenarios::{client_config, Res};
use super::server::{vm_rss_kb, ServerProc};
use super::stats::{mean, median, stdev};
use super::{progress, Metrics, Outcome, Params};

/// Opens a connection and completes the Gen 3 handshake as a client, with no runtime.
pub fn handshake_connect(port: u16) -> Res<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut hs = Handshake::client(HandshakeConfig::new(Generation::Gen3))?;
    let mut buf = [0u8; 4096];
    loop {
        while let Some(b) = hs.poll_transmit() {
            s.write_all(&b)?;
        }
        if hs.is_done() {
            return Ok(s);
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err("server closed during the handshake".into());
        }
        hs.feed(&buf[..n])?;
    }
}

/// Raises `RLIMIT_NOFILE` (inherited by the server process) to at least `want` if allowed
/// (raising the hard limit needs privileges), else to the hard limit. Returns the soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if hard < want {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: Some(want),
            },
        );
    }
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

enum Conn {
    #[allow(dead_code)] // held open, never read
    Raw(TcpStream),
    #[allow(dead_code)] // held open, never read
    Tls(Box<super::tlsbench::RawTls>),
    Client(Client),
}

pub fn run(p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    let pid = srv.pid();
    let rss = || vm_rss_kb(pid).map(|v| v as f64).ok_or("cannot read VmRSS");
    let separate = srv.is_separate();
    let port = srv.port;
    let open = |i: usize| -> Res<Conn> {
        if !separate && i < 50 {
            let c = Client::new(client_config(p, port));
            c.connect()?;
            Ok(Conn::Client(c))
        } else if let Some(tls) = &p.raw_tls {
            Ok(Conn::Tls(Box::new(super::tlsbench::handshake_connect(
                port, tls,
            )?)))
        } else {
            Ok(Conn::Raw(handshake_connect(port)?))
        }
    };
    let (before, after) = srv.idle_rss()?;
    let mut n = p.connections.max(1);
    let mut notes = Vec::new();
    // Descriptors: one per connection in each process, two in one process.
    let per = if separate { 1 } else { 2 };
    let limit = raise_nofile((n * per + 512) as u64) as usize;
    if limit < n * per + 256 {
        let fit = limit.saturating_sub(256) / per;
        notes.push(format!(
            "RLIMIT_NOFILE is {limit}: measured {fit} connections instead of {n}"
        ));
        n = fit.max(1);
    }
    let first = n.min(10);
    let baseline = rss()?;
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    let mut deltas = Vec::new();
    for i in 0..first {
        let r0 = rss()?;
        conns.push(open(i)?);
        std::thread::sleep(Duration::from_millis(50));
        deltas.push(rss()? - r0);
    }
    let ram_10 = rss()?;
    let mid = n.min(50);
    for i in first..mid {
        conns.push(open(i)?);
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let ram_50 = rss()?;
    let pb = progress(n as u64, "memory: connecting");
    pb.set_position(mid as u64);
    for i in mid..n {
        conns.push(open(i)?);
        if i % 100 == 0 {
            pb.set_position(i as u64);
        }
    }
    pb.finish_and_clear();
    let seen = srv.wait_clients(n, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(1000));
    let ram_n = rss()?;
    for c in conns.drain(..) {
        if let Conn::Client(c) = c {
            c.disconnect();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while srv.cmd("clients")?.trim() != "0" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after_teardown = rss()?;
    let mut m = Metrics::default();
    m.push("connections", n as f64);
    m.push("connected", seen as f64);
    m.push("separate_process", if separate { 1.0 } else { 0.0 });
    m.push("server_idle_kb", after as f64 - before as f64);
    m.push("baseline_kb", baseline);
    m.push("client_cost_avg_kb", mean(&deltas));
    m.push(
        "client_cost_min_kb",
        deltas.iter().copied().fold(f64::INFINITY, f64::min),
    );
    m.push(
        "client_cost_max_kb",
        deltas.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    m.push("client_cost_median_kb", median(&deltas));
    m.push("client_cost_stdev_kb", stdev(&deltas));
    m.push("ram_10_clients_kb", ram_10);
    m.push("ram_50_clients_kb", ram_50);
    if mid > first {
        m.push("cost_10_50_kb", (ram_50 - ram_10) / (mid - first) as f64);
    }
    m.push("ram_n_clients_kb", ram_n);
    m.push("per_conn_kb_at_n", (ram_n - baseline) / n as f64);
    m.push("ram_after_teardown_kb", after_teardown);
    m.push("leak_kb", after_teardown - baseline);
    let mut out = Outcome::new(m);
    out.notes = notes;
    Ok(out)
}
