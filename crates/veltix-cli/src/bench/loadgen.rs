//! `scale`: many connections × many requests in flight of echo request/response, against
//! `veltix serve --mode echo` in its own process and, side by side in the same run, against a
//! raw-TCP echo server (the bench server process's raw listener: the same bytes echoed back, no
//! veltix), both driven by the **same load generator**.
//!
//! The load generator is independent of the code under test, like the C generator issue 14
//! measured with: plain tokio sockets on one current-thread runtime (one task per connection,
//! one OS thread in all), Gen 3 frames encoded here (header layout, CRC-32 and handshake bytes
//! of `shared/reference/PROTOCOL.md` §B.1 and §B.3, written out by hand, not through
//! `veltix::proto`), and replies counted by parsing their 15-byte headers. Each connection keeps
//! `in_flight` requests outstanding: request slot `i` always carries request id `i`, and each
//! reply (matched by its id) is timed and answered by the next request on that slot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::server::ServerProc;
use super::stats::latency_summary;
use super::{Metrics, Outcome, Params};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The message type the generator sends (a user type: `veltix serve --mode echo` echoes
/// every type code >= 200).
const ECHO_TYPE: u16 = 404;
/// Gen 3 header length.
const HDR: usize = 15;

/// zlib's CRC-32 (reflected 0xEDB88320), bit by bit: only used to pre-encode the frames.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A Gen 3 frame: `"VX"`, flags 0, type u16 BE, size u32 BE, CRC u32 BE, request id u16 BE.
pub fn gen3_frame(type_code: u16, request_id: u16, content: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HDR + content.len());
    f.extend_from_slice(b"VX");
    f.push(0);
    f.extend_from_slice(&type_code.to_be_bytes());
    f.extend_from_slice(&(content.len() as u32).to_be_bytes());
    f.extend_from_slice(&crc32(content).to_be_bytes());
    f.extend_from_slice(&request_id.to_be_bytes());
    f.extend_from_slice(content);
    f
}

fn read_hs_message(s: &mut StdStream) -> Res<String> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The client side of the Gen 3 handshake (PROTOCOL.md §B.3), with the bytes Python 3.3.0 sends.
fn handshake(s: &mut StdStream) -> Res<()> {
    let hello = read_hs_message(s)?;
    if hello.contains("\"error\"") {
        return Err(format!("server refused the connection: {hello}").into());
    }
    let ours = br#"{"v": "3.3.0", "pv": "1.0", "meta": {}}"#;
    let mut msg = (ours.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(ours);
    s.write_all(&msg)?;
    let ack = read_hs_message(s)?;
    if !ack.contains("\"ok\"") {
        return Err(format!("handshake not accepted: {ack}").into());
    }
    Ok(())
}

/// Where the generator connects.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// A veltix server: Gen 3 handshake first.
    Veltix(u16),
    /// The raw echo listener of the bench server process (mode byte `E` first).
    RawEcho(u16),
}

/// What one generator run measured.
pub struct LoadResult {
    pub samples_ms: Vec<f64>,
    pub replies: u64,
    pub wall_s: f64,
}

/// Drives `conns` connections with `in_flight` echo requests of `size` bytes outstanding on
/// each, `per_conn` requests per connection, from one thread. Fails if a connection breaks or
/// nothing arrives for `timeout`.
pub fn drive(
    target: Target,
    conns: usize,
    in_flight: usize,
    per_conn: u64,
    size: usize,
    timeout: Duration,
) -> Res<LoadResult> {
    let k = in_flight.clamp(1, usize::from(u16::MAX));
    let mut socks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (port, raw) = match target {
            Target::Veltix(p) => (p, false),
            Target::RawEcho(p) => (p, true),
        };
        let mut s = StdStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        if raw {
            s.write_all(&[super::server::RAW_ECHO])?;
        } else {
            handshake(&mut s)?;
        }
        s.set_read_timeout(None)?;
        s.set_nonblocking(true)?;
        socks.push(s);
    }
    let content = vec![0u8; size];
    let frames: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..k)
            .map(|i| gen3_frame(ECHO_TYPE, i as u16, &content))
            .collect(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut tasks = Vec::with_capacity(conns);
        let mut streams = Vec::with_capacity(conns);
        for s in socks {
            streams.push(tokio::net::TcpStream::from_std(s)?);
        }
        let t0 = Instant::now();
        for s in streams {
            let frames = frames.clone();
            tasks.push(tokio::spawn(one_conn(s, frames, per_conn, timeout)));
        }
        let mut samples = Vec::with_capacity(conns * per_conn as usize);
        let mut replies = 0;
        for t in tasks {
            let (s, n) = t.await.map_err(|e| format!("load task: {e}"))??;
            samples.extend(s);
            replies += n;
        }
        Ok(LoadResult {
            samples_ms: samples,
            replies,
            wall_s: t0.elapsed().as_secs_f64(),
        })
    })
}

/// One connection: keeps one request in flight per slot until `per_conn` replies came back.
async fn one_conn(
    mut s: tokio::net::TcpStream,
    frames: Arc<Vec<Vec<u8>>>,
    per_conn: u64,
    timeout: Duration,
) -> Res<(Vec<f64>, u64)> {
    let k = frames.len();
    let window = (k as u64).min(per_conn) as usize;
    let mut sent_at = vec![Instant::now(); k];
    let mut out = Vec::with_capacity(k * frames[0].len());
    for f in frames.iter().take(window) {
        out.extend_from_slice(f);
    }
    let t = Instant::now();
    sent_at.iter_mut().take(window).for_each(|x| *x = t);
    s.write_all(&out).await?;
    let mut sent = window as u64;
    let mut got = 0u64;
    let mut samples = Vec::with_capacity(per_conn as usize);
    let mut buf = vec![0u8; 256 * 1024];
    let mut have = 0usize;
    while got < per_conn {
        if have == buf.len() {
            return Err("reply larger than the read buffer".into());
        }
        let n = tokio::time::timeout(timeout, s.read(&mut buf[have..]))
            .await
            .map_err(|_| format!("no reply within {timeout:?} ({got} of {per_conn} received)"))??;
        if n == 0 {
            return Err(format!("server closed the connection after {got} replies").into());
        }
        have += n;
        let now = Instant::now();
        out.clear();
        let mut at = 0;
        while have - at >= HDR {
            let h = &buf[at..at + HDR];
            if &h[..2] != b"VX" {
                return Err("reply is not a Gen 3 frame".into());
            }
            let len = HDR + u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
            if have - at < len {
                break;
            }
            let id = usize::from(u16::from_be_bytes([h[13], h[14]]));
            let Some(t) = sent_at.get_mut(id) else {
                return Err(format!("reply with unknown request id {id}").into());
            };
            samples.push(now.duration_since(*t).as_secs_f64() * 1e3);
            got += 1;
            if sent < per_conn {
                out.extend_from_slice(&frames[id]);
                *t = now;
                sent += 1;
            }
            at += len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        if !out.is_empty() {
            s.write_all(&out).await?;
        }
    }
    Ok((samples, got))
}

/// `veltix serve --mode echo` in its own process, killed on drop.
pub struct ServeProc {
    child: Child,
    pub port: u16,
}

impl ServeProc {
    /// Starts `veltix serve --mode echo --port 0` (this binary) and waits for its
    /// `listening on ADDR` line. `io_threads` sets `VELTIX_IO_THREADS` for that process only.
    pub fn spawn(workers: usize, mode: &str, io_threads: Option<usize>) -> Res<ServeProc> {
        let exe = if Path::new("/proc/self/exe").exists() {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe()?
        };
        let mut cmd = Command::new(exe);
        cmd.args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--mode",
            "echo",
        ])
        .args(["--workers", &workers.to_string()])
        .args(["--performance-mode", mode])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(n) = io_threads {
            cmd.env("VELTIX_IO_THREADS", n.to_string());
        }
        let mut child = cmd.spawn()?;
        let out = child.stdout.take().ok_or("no stdout for veltix serve")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok());
        match port {
            Some(port) => Ok(ServeProc { child, port }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("veltix serve did not start: {line:?}").into())
            }
        }
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metrics(p: &Params, r: &LoadResult) -> Metrics {
    let mut m = Metrics::default();
    m.push("connections", p.connections as f64);
    m.push("in_flight", p.in_flight as f64);
    m.push("replies", r.replies as f64);
    m.push("throughput", r.replies as f64 / r.wall_s.max(1e-9));
    latency_summary(&r.samples_ms, &mut m);
    m
}

fn per_conn(p: &Params) -> u64 {
    (p.count / p.connections.max(1)).max(1) as u64
}

/// The scenario's load (connections, in flight, count, size, timeout from `p`) against `target`.
fn drive_scale(p: &Params, target: Target) -> Res<LoadResult> {
    drive(
        target,
        p.connections.max(1),
        p.in_flight,
        per_conn(p),
        p.size,
        p.timeout,
    )
}

/// One run against `veltix serve --mode echo` (a fresh process per run).
pub fn run_veltix(
    p: &Params,
    workers: usize,
    mode: &str,
    io_threads: Option<usize>,
) -> Res<Outcome> {
    let serve = ServeProc::spawn(workers, mode, io_threads)?;
    let r = drive_scale(p, Target::Veltix(serve.port))?;
    drop(serve);
    let m = metrics(p, &r);
    let mut o = Outcome::new(m);
    o.samples_ms = r.samples_ms;
    Ok(o)
}

/// The same generator against the bench server process's raw echo listener.
pub fn run_raw(p: &Params, srv: &ServerProc) -> Res<(Metrics, Vec<f64>)> {
    let r = drive_scale(p, Target::RawEcho(srv.raw_port))?;
    Ok((metrics(p, &r), r.samples_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"hello"), 0x3610_A686);
    }

    #[test]
    fn frame_matches_veltix_proto() {
        let ours = gen3_frame(404, 7, b"abc");
        let theirs = veltix::proto::Frame::new(404, 7, b"abc".to_vec())
            .encode(veltix::Generation::Gen3)
            .map(|b| b.to_vec())
            .unwrap_or_default();
        assert_eq!(ours, theirs);
    }
}
