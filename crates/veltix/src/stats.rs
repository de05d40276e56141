//! Counters of what a server or client did and refused ([`Stats`]), and the throttle that
//! keeps repeated log lines to a few per second whatever a peer does.
//!
//! Counting is cheap: relaxed atomic additions, made once per read or write system call on the
//! data path (not once per frame) and once per event on the refusal paths.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use veltix_proto::{HandshakeError, Rejection};

use crate::util::lock;
use crate::Error;

/// A snapshot of a server's or client's counters since it was created (kept across
/// `restart()` and reconnects). Returned by [`Server::stats`](crate::Server::stats),
/// [`Client::stats`](crate::Client::stats) and their async twins.
///
/// ```
/// use veltix::{Server, ServerConfig};
/// let server = Server::new(ServerConfig::local());
/// let stats = server.stats();
/// assert_eq!(stats.frames_in, 0);
/// assert_eq!(stats.dropped.queue_full, 0);
/// // Serialisable, e.g. for a metrics endpoint:
/// let json = serde_json::to_value(&stats).unwrap();
/// assert_eq!(json["refused"]["server_full"], 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now (server: handshaking ones included; client: 0 or 1).
    pub connections: u64,
    /// Connections whose handshake succeeded, in total.
    pub connections_opened: u64,
    /// Frames received and decoded (PINGs and replies included).
    pub frames_in: u64,
    /// Bytes received after the handshakes.
    pub bytes_in: u64,
    /// Frames handed to the socket for sending.
    pub frames_out: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Frames that were not delivered, by reason.
    pub dropped: Dropped,
    /// Frames refused by the decoder (each closes its connection), by reason.
    pub rejected: Rejected,
    /// Connections refused before their handshake, by reason.
    pub refused: Refused,
    /// Handshakes that failed, by reason.
    pub handshake_failures: HandshakeFailures,
    /// Connections closed by keep-alive (nothing received for its timeout).
    pub keepalive_timeouts: u64,
}

/// Frames not delivered, by reason (see [`Stats::dropped`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Dropped {
    /// Sends refused because the peer's outbound queue was full ([`Error::QueueFull`]):
    /// replies, broadcasts and other sends to a peer that does not read.
    pub queue_full: u64,
    /// Sends refused because their connection was closed or closing
    /// ([`Error::Disconnected`], whatever its cause).
    pub closed: u64,
    /// PONGs not sent because the outbound queue of a peer flooding PINGs was full.
    pub pongs: u64,
    /// Received frames with no route and no `on_recv` handler.
    pub unrouted: u64,
}

/// Decoder rejections, by reason (see [`Stats::rejected`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Rejected {
    /// Gen 3 frames that did not start with `"VX"`.
    pub bad_magic: u64,
    /// Headers declaring more than `max_message_size`.
    pub oversize: u64,
    /// Frames whose CRC did not match their content.
    pub crc_mismatch: u64,
    /// Frames of a type the decoder was told to refuse.
    pub unknown_type: u64,
    /// Connections that ended in the middle of a frame.
    pub truncated: u64,
}

/// Refused connections, by reason (see [`Stats::refused`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Refused {
    /// Refused because `max_connections` was reached.
    pub server_full: u64,
}

/// Failed handshakes, by reason (see [`Stats::handshake_failures`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct HandshakeFailures {
    /// Not completed within `handshake_timeout`.
    pub timeout: u64,
    /// The peer closed the connection during the handshake.
    pub eof: u64,
    /// The peer speaks a protocol version we cannot.
    pub incompatible_version: u64,
    /// The peer speaks the other wire generation.
    pub wrong_generation: u64,
    /// Anything else that is not a valid handshake (bad JSON, oversize message, bad frame).
    pub malformed: u64,
    /// Client side: the server refused us (for example because it is full).
    pub refused: u64,
    /// A read or write failed during the handshake.
    pub io: u64,
    /// The TLS handshake failed or did not finish within `handshake_timeout` (an untrusted or
    /// expired certificate, a wrong name, no client certificate under mutual TLS, a peer that
    /// does not speak TLS).
    pub tls: u64,
    /// Server side: clients the authenticate hook refused, did not answer for within
    /// `handshake_timeout`, or panicked on. Client side: the server's hook refused us
    /// ([`Error::Rejected`]).
    pub auth: u64,
}

/// The live counters of one server or client, shared by its connections.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections_opened: AtomicU64,
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_closed: AtomicU64,
    pub dropped_pongs: AtomicU64,
    pub dropped_unrouted: AtomicU64,
    pub rejected_bad_magic: AtomicU64,
    pub rejected_oversize: AtomicU64,
    pub rejected_crc_mismatch: AtomicU64,
    pub rejected_unknown_type: AtomicU64,
    pub rejected_truncated: AtomicU64,
    pub refused_server_full: AtomicU64,
    pub hs_timeout: AtomicU64,
    pub hs_eof: AtomicU64,
    pub hs_incompatible_version: AtomicU64,
    pub hs_wrong_generation: AtomicU64,
    pub hs_malformed: AtomicU64,
    pub hs_refused: AtomicU64,
    pub hs_io: AtomicU64,
    pub hs_tls: AtomicU64,
    pub hs_auth: AtomicU64,
    pub keepalive_timeouts: AtomicU64,
    /// The owner's event observer (`Server::on_event` / `Client::on_event`), reached by its
    /// connections through these shared counters.
    pub observer: crate::observe::Hook,
}

/// Adds `n` to a counter (relaxed: counters order nothing).
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Counters {
    /// Copies the counters out; `connections` is the owner's current count.
    pub(crate) fn snapshot(&self, connections: u64) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections,
            connections_opened: g(&self.connections_opened),
            frames_in: g(&self.frames_in),
            bytes_in: g(&self.bytes_in),
            frames_out: g(&self.frames_out),
            bytes_out: g(&self.bytes_out),
            dropped: Dropped {
                queue_full: g(&self.dropped_queue_full),
                closed: g(&self.dropped_closed),
                pongs: g(&self.dropped_pongs),
                unrouted: g(&self.dropped_unrouted),
            },
            rejected: Rejected {
                bad_magic: g(&self.rejected_bad_magic),
                oversize: g(&self.rejected_oversize),
                crc_mismatch: g(&self.rejected_crc_mismatch),
                unknown_type: g(&self.rejected_unknown_type),
                truncated: g(&self.rejected_truncated),
            },
            refused: Refused {
                server_full: g(&self.refused_server_full),
            },
            handshake_failures: HandshakeFailures {
                timeout: g(&self.hs_timeout),
                eof: g(&self.hs_eof),
                incompatible_version: g(&self.hs_incompatible_version),
                wrong_generation: g(&self.hs_wrong_generation),
                malformed: g(&self.hs_malformed),
                refused: g(&self.hs_refused),
                io: g(&self.hs_io),
                tls: g(&self.hs_tls),
                auth: g(&self.hs_auth),
            },
            keepalive_timeouts: g(&self.keepalive_timeouts),
        }
    }

    /// Counts a refused send by its error (other errors are the caller's, not drops).
    pub(crate) fn send_refused(&self, e: &Error) {
        match e {
            Error::QueueFull { .. } => add(&self.dropped_queue_full, 1),
            Error::Disconnected(_) => add(&self.dropped_closed, 1),
            _ => {}
        }
    }

    /// Counts a decoder rejection.
    pub(crate) fn rejection(&self, r: &Rejection) {
        let c = match r {
            Rejection::BadMagic { .. } => &self.rejected_bad_magic,
            Rejection::Oversize { .. } => &self.rejected_oversize,
            Rejection::CrcMismatch { .. } => &self.rejected_crc_mismatch,
            Rejection::UnknownType { .. } => &self.rejected_unknown_type,
            Rejection::Truncated { .. } => &self.rejected_truncated,
            _ => &self.rejected_bad_magic,
        };
        add(c, 1);
    }

    /// Counts a failed handshake by its error.
    pub(crate) fn handshake_failed(&self, e: &Error) {
        let c = match e {
            Error::HandshakeTimeout(_) => &self.hs_timeout,
            Error::ServerFull(_) => &self.hs_refused,
            Error::Io(_) => &self.hs_io,
            Error::Tls(_) => &self.hs_tls,
            Error::Rejected(_) => &self.hs_auth,
            Error::Handshake(h) => match h {
                HandshakeError::Eof => &self.hs_eof,
                HandshakeError::IncompatibleVersion { .. } => &self.hs_incompatible_version,
                HandshakeError::WrongGeneration(_) => &self.hs_wrong_generation,
                HandshakeError::ServerFull(_) => &self.hs_refused,
                _ => &self.hs_malformed,
            },
            _ => &self.hs_malformed,
        };
        add(c, 1);
    }
}

/// How often a throttled event is summarised while it lasts.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// What a [`Throttle`] says about one occurrence of its event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log this occurrence in full (the event starts, or is still within its burst).
    First,
    /// A new window began with occurrences left unlogged in the last one: log that `count`
    /// events (this one included) happened in `over`.
    Summary { count: u64, over: Duration },
    /// Counted, to be summarised later: log nothing.
    Quiet,
}

#[derive(Debug, Default)]
struct ThrottleState {
    /// Start of the current window (`None`: nothing happened yet).
    since: Option<Instant>,
    /// Occurrences logged in full in the current window.
    logged: u32,
    /// Occurrences counted and not yet logged.
    pending: u64,
}

/// Rate limit for one kind of repeated event (on one connection, or one server). Time is cut
/// into windows of [`SUMMARY_EVERY`]: in a window, the first `burst` occurrences are logged in
/// full and the others only counted; the first occurrence of a later window logs that count as
/// one summary line (and the rest of that window is counted too); [`Throttle::finish`] returns
/// what is left when the owner ends. So an event costs at most `burst` lines, then one line per
/// second while it lasts, whatever its rate. The clock is passed in, so the rule is
/// unit-tested without time passing.
#[derive(Debug)]
pub(crate) struct Throttle {
    burst: u32,
    state: Mutex<ThrottleState>,
}

impl Default for Throttle {
    /// One full line, then summaries.
    fn default() -> Self {
        Throttle::with_burst(1)
    }
}

impl Throttle {
    /// A throttle that logs up to `burst` occurrences per window in full.
    pub(crate) fn with_burst(burst: u32) -> Throttle {
        Throttle {
            burst: burst.max(1),
            state: Mutex::default(),
        }
    }

    /// Records one event at `now`.
    pub(crate) fn hit_at(&self, now: Instant) -> Verdict {
        let mut s = lock(&self.state);
        let Some(since) = s.since else {
            s.since = Some(now);
            s.logged = 1;
            return Verdict::First;
        };
        let over = now.saturating_duration_since(since);
        if over < SUMMARY_EVERY {
            if s.logged < self.burst {
                s.logged += 1;
                return Verdict::First;
            }
            s.pending += 1;
            return Verdict::Quiet;
        }
        s.since = Some(now);
        if s.pending == 0 {
            // Nothing left unlogged: the event starts anew.
            s.logged = 1;
            return Verdict::First;
        }
        // Still going: one summary, and the rest of this window is only counted.
        s.logged = self.burst;
        let count = std::mem::take(&mut s.pending) + 1;
        Verdict::Summary { count, over }
    }

    /// Records one event now.
    pub(crate) fn hit(&self) -> Verdict {
        self.hit_at(Instant::now())
    }

    /// Events not logged yet, and the time since the current window began; resets the
    /// throttle.
    pub(crate) fn finish_at(&self, now: Instant) -> Option<(u64, Duration)> {
        let mut s = lock(&self.state);
        let pending = std::mem::take(&mut s.pending);
        s.logged = 0;
        let since = s.since.take()?;
        (pending > 0).then(|| (pending, now.saturating_duration_since(since)))
    }

    /// [`Throttle::finish_at`] now.
    pub(crate) fn finish(&self) -> Option<(u64, Duration)> {
        self.finish_at(Instant::now())
    }
}

/// `56230` as `56,230`, for counts in log lines.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Logs one occurrence of a throttled event (see [`Throttle`]) as a WARN line with the peer:
/// the full line (the arguments after `summary`) when the event starts, then `summary` (a
/// format string that may use `{count}` and `{secs}`) at most once per [`SUMMARY_EVERY`].
macro_rules! throttled {
    ($throttle:expr, $peer:expr, summary: $summary:literal, $($first:tt)+) => {
        match $throttle.hit() {
            $crate::stats::Verdict::First => tracing::warn!(peer = %$peer, $($first)+),
            $crate::stats::Verdict::Summary { count, over } => tracing::warn!(
                peer = %$peer,
                $summary,
                count = $crate::stats::thousands(count),
                secs = format_args!("{:.1}", over.as_secs_f64()),
            ),
            $crate::stats::Verdict::Quiet => {}
        }
    };
}
pub(crate) use throttled;

/// Logs what a throttle still holds when its owner ends, with the same `summary` format as
/// [`throttled!`].
macro_rules! finish_throttled {
    ($throttle:expr, $peer:expr, summary: $summary:literal) => {
        if let Some((count, over)) = $throttle.finish() {
            tracing::warn!(
                peer = %$peer,
                $summary,
                count = $crate::stats::thousands(count),
                secs = format_args!("{:.1}", over.as_secs_f64()),
            );
        }
    };
}
pub(crate) use finish_throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_one_summary_per_second_then_remainder() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert_eq!(t.hit_at(t0), Verdict::First);
        for i in 1..1000 {
            assert_eq!(t.hit_at(ms(i)), Verdict::Quiet, "at {i} ms");
        }
        assert_eq!(
            t.hit_at(ms(1000)),
            Verdict::Summary {
                count: 1000,
                over: Duration::from_secs(1)
            }
        );
        assert_eq!(t.hit_at(ms(1001)), Verdict::Quiet);
        assert_eq!(t.hit_at(ms(1500)), Verdict::Quiet);
        assert_eq!(t.finish_at(ms(1600)), Some((2, Duration::from_millis(600))));
        // After finish the throttle starts over.
        assert_eq!(t.hit_at(ms(1700)), Verdict::First);
        assert_eq!(t.finish_at(ms(1800)), None);
    }

    #[test]
    fn a_lone_event_after_a_quiet_period_is_logged_in_full() {
        let t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.hit_at(t0), Verdict::First);
        assert_eq!(t.hit_at(t0 + Duration::from_secs(60)), Verdict::First);
        assert_eq!(t.finish_at(t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn lines_per_second_stay_bounded_whatever_the_rate() {
        // A million events spread over 10 s: one first line plus one summary per second.
        let t = Throttle::default();
        let t0 = Instant::now();
        let mut lines = 0;
        for i in 0..1_000_000u64 {
            if t.hit_at(t0 + Duration::from_micros(i * 10)) != Verdict::Quiet {
                lines += 1;
            }
        }
        assert!(t.finish_at(t0 + Duration::from_secs(10)).is_some());
        assert!(lines <= 11, "{lines} lines");
    }

    #[test]
    fn a_burst_is_logged_in_full_then_summarised() {
        let t = Throttle::with_burst(3);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        for i in 0..3 {
            assert_eq!(t.hit_at(ms(i)), Verdict::First, "occurrence {i}");
        }
        for i in 3..100 {
            assert_eq!(t.hit_at(ms(i)), Verdict::Quiet, "occurrence {i}");
        }
        // Next window: one summary of the 97 + this one, then the window is only counted.
        assert_eq!(
            t.hit_at(ms(1100)),
            Verdict::Summary {
                count: 98,
                over: Duration::from_millis(1100)
            }
        );
        assert_eq!(t.hit_at(ms(1101)), Verdict::Quiet);
        // A window without leftovers: the burst is available again.
        assert_eq!(t.finish_at(ms(1200)), Some((1, Duration::from_millis(100))));
        assert_eq!(t.hit_at(ms(5000)), Verdict::First);
        assert_eq!(t.hit_at(ms(5001)), Verdict::First);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(56230), "56,230");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn snapshot_copies_every_counter() {
        let c = Counters::default();
        c.send_refused(&Error::QueueFull {
            queued: 1,
            limit: 1,
        });
        c.send_refused(&Error::Disconnected(crate::DisconnectCause::PeerClosed));
        c.send_refused(&Error::Timeout(Duration::from_secs(1)));
        c.rejection(&Rejection::CrcMismatch {
            message_type: 200,
            request_id: 1,
            expected: 0,
            actual: 1,
        });
        c.handshake_failed(&Error::Handshake(HandshakeError::Eof));
        c.handshake_failed(&Error::HandshakeTimeout(Duration::from_secs(1)));
        let s = c.snapshot(3);
        assert_eq!(s.connections, 3);
        assert_eq!((s.dropped.queue_full, s.dropped.closed), (1, 1));
        assert_eq!(s.rejected.crc_mismatch, 1);
        assert_eq!(
            (s.handshake_failures.eof, s.handshake_failures.timeout),
            (1, 1)
        );
    }
}
