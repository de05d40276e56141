//! The raw-TCP baselines: the same frames on plain blocking `std::net` sockets, no framework
//! (no handshake, no decoder, no handler pool). The peer is the raw listener of the same bench
//! server process, so the process model matches the veltix measurement.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use super::server::{raw_frame, write_frames, MOVE, RAW_ECHO, RAW_SINK, RAW_SOURCE};
use super::stats::{latency_summary, now_ns};
use super::Metrics;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn connect(port: u16, mode: u8) -> Res<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.write_all(&[mode])?;
    Ok(s)
}

/// Blocking ping-pong of a 15-byte PING frame: `n` sequential round trips.
/// Returns the samples in ms and the metrics.
pub fn latency(port: u16, n: usize) -> Res<(Vec<f64>, Metrics)> {
    let mut s = connect(port, RAW_ECHO)?;
    let ping = raw_frame(0, &[]);
    let mut back = vec![0u8; ping.len()];
    for _ in 0..20 {
        s.write_all(&ping)?;
        s.read_exact(&mut back)?;
    }
    let mut samples = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&ping)?;
        s.read_exact(&mut back)?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut m = Metrics::default();
    m.push("count", n as f64);
    latency_summary(&samples, &mut m);
    m.push("throughput", n as f64 / wall);
    Ok((samples, m))
}

/// `conns` connections, each blasting `per_conn` frames of `size` content bytes from its own
/// thread to a sink that only counts bytes; throughput = total ÷ (last byte − t0). All
/// connections are open before t0; with `spawn_in_timing` t0 is taken before the sender threads
/// are started (the stress definition), otherwise when they are released.
pub fn blast(
    port: u16,
    conns: usize,
    per_conn: u64,
    size: usize,
    spawn_in_timing: bool,
) -> Res<Metrics> {
    let frame = raw_frame(MOVE.code(), &vec![0u8; size]);
    let total_bytes = per_conn * frame.len() as u64;
    let mut socks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut s = connect(port, RAW_SINK)?;
        s.write_all(&total_bytes.to_le_bytes())?;
        socks.push(s);
    }
    let frame = Arc::new(frame);
    let gate = Arc::new(Barrier::new(conns + 1));
    let t_spawn = now_ns();
    let handles: Vec<_> = socks
        .into_iter()
        .map(|mut s| {
            let frame = frame.clone();
            let gate = gate.clone();
            std::thread::spawn(move || -> Res<u64> {
                gate.wait();
                write_frames(&mut s, &frame, per_conn)?;
                let mut ts = [0u8; 8];
                s.read_exact(&mut ts)?;
                Ok(u64::from_le_bytes(ts))
            })
        })
        .collect();
    let t0 = if spawn_in_timing { t_spawn } else { now_ns() };
    gate.wait();
    let mut last = 0;
    for h in handles {
        let ts = h.join().map_err(|_| "raw sender panicked")??;
        last = last.max(ts);
    }
    let secs = last.saturating_sub(t0).max(1) as f64 / 1e9;
    let total = per_conn * conns as u64;
    let mut m = Metrics::default();
    m.push("messages", total as f64);
    m.push("throughput", total as f64 / secs);
    m.push(
        "mb_per_s",
        (total * size as u64) as f64 / secs / (1024.0 * 1024.0),
    );
    m.push("duration_s", secs);
    Ok(m)
}

/// Request/response with `in_flight` frames outstanding on each of `conns` connections (a
/// window: write one more frame per frame echoed back), `total` requests in all.
pub fn reqrep(port: u16, conns: usize, in_flight: usize, total: u64, size: usize) -> Res<Metrics> {
    let frame = Arc::new(raw_frame(MOVE.code(), &vec![0u8; size]));
    let per = total / conns.max(1) as u64;
    let gate = Arc::new(Barrier::new(conns + 1));
    let mut handles = Vec::new();
    for _ in 0..conns {
        let mut s = connect(port, RAW_ECHO)?;
        let frame = frame.clone();
        let gate = gate.clone();
        handles.push(std::thread::spawn(move || -> Res<()> {
            let flen = frame.len() as u64;
            let window = (in_flight as u64).min(per);
            gate.wait();
            write_frames(&mut s, &frame, window)?;
            let (mut sent, mut got_bytes) = (window, 0u64);
            let mut buf = vec![0u8; 64 * 1024];
            while got_bytes < per * flen {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Err("raw echo closed".into());
                }
                let before = got_bytes / flen;
                got_bytes += n as u64;
                let done = got_bytes / flen - before;
                let more = done.min(per - sent);
                if more > 0 {
                    write_frames(&mut s, &frame, more)?;
                    sent += more;
                }
            }
            Ok(())
        }));
    }
    let t0 = Instant::now();
    gate.wait();
    for h in handles {
        h.join().map_err(|_| "raw client panicked")??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut m = Metrics::default();
    m.push("requests", (per * conns as u64) as f64);
    m.push("throughput", (per * conns as u64) as f64 / secs);
    Ok(m)
}

/// The server writes `n` frames of `size` bytes to each of `clients` connections; deliveries/s
/// = clients × n ÷ (last byte at the slowest client − t0).
pub fn broadcast(port: u16, clients: usize, n: u64, size: usize) -> Res<Metrics> {
    let flen = (15 + size) as u64;
    let mut socks = Vec::with_capacity(clients);
    for _ in 0..clients {
        socks.push(connect(port, RAW_SOURCE)?);
    }
    let gate = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = socks
        .into_iter()
        .map(|mut s| {
            let gate = gate.clone();
            std::thread::spawn(move || -> Res<u64> {
                let mut hdr = n.to_le_bytes().to_vec();
                hdr.extend_from_slice(&(size as u32).to_le_bytes());
                gate.wait();
                s.write_all(&hdr)?;
                let mut left = n * flen;
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    let r = s.read(&mut buf)?;
                    if r == 0 {
                        return Err("raw source closed".into());
                    }
                    left = left.saturating_sub(r as u64);
                }
                Ok(now_ns())
            })
        })
        .collect();
    let t0 = now_ns();
    gate.wait();
    let mut last = 0;
    for h in handles {
        last = last.max(h.join().map_err(|_| "raw reader panicked")??);
    }
    let secs = last.saturating_sub(t0).max(1) as f64 / 1e9;
    let total = clients as u64 * n;
    let mut m = Metrics::default();
    m.push("deliveries", total as f64);
    m.push("deliveries_per_s", total as f64 / secs);
    Ok(m)
}
