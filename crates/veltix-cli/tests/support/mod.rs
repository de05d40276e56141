//! Helpers shared by the process tests of the `veltix` binary: output lines of a child process
//! waited on with deadlines, and a raw Gen 3 handshake on a blocking socket.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use veltix::proto::{Generation, Handshake, HandshakeConfig};

/// Deadline of any single wait.
pub const T: Duration = Duration::from_secs(30);

/// The socket address in environment variable `name`, if set and valid (helper processes).
pub fn env_addr(name: &str) -> Option<std::net::SocketAddr> {
    std::env::var(name).ok()?.parse().ok()
}

/// The number in environment variable `name`, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lines of a child's output, kept and waited on.
#[derive(Default)]
pub struct Lines {
    lines: Mutex<Vec<String>>,
    cv: Condvar,
    closed: AtomicBool,
}

impl Lines {
    pub fn collect(pipe: impl Read + Send + 'static) -> Arc<Lines> {
        let l = Arc::new(Lines::default());
        let l2 = l.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lock(&l2.lines).push(line);
                l2.cv.notify_all();
            }
            l2.closed.store(true, Ordering::SeqCst);
            l2.cv.notify_all();
        });
        l
    }

    /// Waits for a line at index >= `from` for which `f` holds.
    pub fn wait(&self, from: usize, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + T;
        let mut lines = lock(&self.lines);
        loop {
            if let Some(l) = lines.iter().skip(from).find(|l| f(l)) {
                return l.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline && !self.closed.load(Ordering::SeqCst),
                "no line {what} within {T:?}; got: {:#?}",
                lines.iter().skip(from).rev().take(10).collect::<Vec<_>>()
            );
            lines = self
                .cv
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.lines).len()
    }

    /// A copy of the lines so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }
}

/// Raw Gen 3 handshake on a blocking socket; panics on failure.
pub fn raw_handshake(s: &mut TcpStream) {
    try_raw_handshake(s).expect("handshake");
}

/// Raw Gen 3 handshake on a blocking socket (reads time out after [`T`]).
pub fn try_raw_handshake(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(T))?;
    let mut hs = Handshake::client(HandshakeConfig::new(Generation::Gen3)).unwrap();
    let mut buf = [0u8; 256];
    while !hs.is_done() {
        while let Some(b) = hs.poll_transmit() {
            s.write_all(&b)?;
        }
        if hs.is_done() {
            break;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        hs.feed(&buf[..n]).map_err(std::io::Error::other)?;
    }
    Ok(())
}
