//! This test process's log output (tracing, INFO and up, no ANSI), captured in memory with a
//! condition variable to wait on. Every test of a binary writes here; look lines up by peer.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Deadline of [`Logs::wait_line`].
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Logs {
    text: Mutex<String>,
    cv: Condvar,
}

struct LogWriter(&'static Logs);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.text().push_str(&String::from_utf8_lossy(buf));
        self.0.cv.notify_all();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured logs; the first call installs the subscriber.
pub fn logs() -> &'static Logs {
    static LOGS: OnceLock<&'static Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Logs = Box::leak(Box::new(Logs {
            text: Mutex::new(String::new()),
            cv: Condvar::new(),
        }));
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_writer(move || LogWriter(logs))
            .try_init();
        logs
    })
}

/// True if `line` names `addr` exactly (not a longer port with the same prefix).
pub fn mentions(line: &str, addr: SocketAddr) -> bool {
    let a = addr.to_string();
    line.match_indices(&a)
        .any(|(i, _)| !line[i + a.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

impl Logs {
    /// Everything captured so far.
    pub fn text(&self) -> MutexGuard<'_, String> {
        self.text.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A position to look for lines written after it.
    pub fn mark(&self) -> usize {
        self.text().len()
    }

    /// Lines since `from` that mention `peer` and contain `needle`.
    pub fn count_lines(&self, from: usize, peer: SocketAddr, needle: &str) -> usize {
        self.text()[from..]
            .lines()
            .filter(|l| l.contains(needle) && mentions(l, peer))
            .count()
    }

    /// Waits (up to [`WAIT`]) for a line written after `from` that contains `needle` (and
    /// names `peer`).
    pub fn wait_line(
        &self,
        from: usize,
        peer: Option<SocketAddr>,
        needle: &str,
    ) -> Result<String, String> {
        let deadline = Instant::now() + WAIT;
        let mut text = self.text();
        loop {
            if let Some(line) = text[from..]
                .lines()
                .find(|l| l.contains(needle) && peer.is_none_or(|p| mentions(l, p)))
            {
                return Ok(line.to_string());
            }
            let now = Instant::now();
            if now >= deadline {
                let tail: Vec<&str> = text[from..].lines().rev().take(8).collect();
                return Err(format!(
                    "no log line with {needle:?}{} within {WAIT:?}; last lines: {tail:#?}",
                    peer.map(|p| format!(" for {p}")).unwrap_or_default()
                ));
            }
            text = self
                .cv
                .wait_timeout(text, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
