//! Logs of the `veltix` command: to stderr through a bounded, non-blocking writer, as text
//! (ANSI colours only when stderr is a terminal) or as JSON lines for log shippers.
//!
//! Why non-blocking: a process supervisor that reads stderr slowly (or not at all) must not be
//! able to stall the server. With a plain `stderr` writer, the I/O and handler threads block in
//! `write(2)` once the pipe is full. Here they only push the line onto a bounded queue that a
//! dedicated thread writes out; when the queue is full the line is dropped and counted
//! ([`Logging::dropped_lines`]; `veltix serve` prints the count with its stats).
//! tracing-appender's writer does exactly this (lossy mode, bounded channel, one worker thread).

use std::io::IsTerminal;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines waiting for the writer thread before new ones are dropped (`--log-buffer`).
pub const BUFFERED_LINES: usize = 16 * 1024;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, span).
    Json,
}

/// The installed logger; keep it alive until the end of `main`, then call [`Logging::finish`].
pub struct Logging {
    guard: WorkerGuard,
    dropped: ErrorCounter,
}

impl Logging {
    /// Installs the global subscriber. `filter` uses tracing's EnvFilter syntax; at most
    /// `buffered_lines` lines wait for stderr, newer ones are dropped.
    pub fn init(filter: &str, format: LogFormat, buffered_lines: usize) -> Result<Logging, String> {
        let filter = tracing_subscriber::EnvFilter::try_new(filter)
            .map_err(|e| format!("invalid --log filter {filter:?}: {e}"))?;
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(buffered_lines.max(1))
            .thread_name("veltix-log")
            .finish(std::io::stderr());
        let dropped = writer.error_counter();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer);
        let installed = match format {
            LogFormat::Text => builder
                .with_ansi(std::io::stderr().is_terminal())
                .try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
        installed.map_err(|e| format!("cannot install the logger: {e}"))?;
        Ok(Logging { guard, dropped })
    }

    /// Log lines dropped so far because stderr did not keep up.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.dropped_lines() as u64
    }

    /// Flushes what is queued, waiting at most [`FLUSH_TIMEOUT`]: a stuck stderr must not hold
    /// the process at exit. (tracing-appender's own flush on drop can wait 1.1 s, and prints
    /// to stdout when its queue is full: then the queue is simply abandoned.)
    pub fn finish(self) {
        if self.dropped_lines() > 0 {
            std::mem::forget(self.guard);
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let guard = self.guard;
        let flush = std::thread::Builder::new()
            .name("veltix-log-flush".into())
            .spawn(move || {
                drop(guard);
                let _ = tx.send(());
            });
        if flush.is_ok() {
            let _ = rx.recv_timeout(FLUSH_TIMEOUT);
        }
    }
}

/// How long [`Logging::finish`] waits for queued lines to be written.
pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);
