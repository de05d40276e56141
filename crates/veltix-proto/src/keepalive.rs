//! Keep-alive as a sans-I/O state machine: the policy ([`KeepAlive`]) and its timer
//! ([`KeepAliveTimer`]), driven by the receive times and the `now` the caller passes in.
//!
//! Both drivers of a connection use it: [`Connection`](crate::Connection) (its
//! `handle_timeout`/`poll_timeout`) and the `veltix` runtime's per-connection timer task, so the
//! rule (PING after `interval` of silence, again every `interval`, close after `timeout` of
//! silence) is written once.

use std::time::{Duration, Instant};

/// Keep-alive: after `interval` without receiving anything, send a PING (again every
/// `interval`); after `timeout` without receiving anything, close the connection.
///
/// ```
/// use std::time::Duration;
/// use veltix_proto::KeepAlive;
/// let ka = KeepAlive::new(Duration::from_secs(5), Duration::from_secs(15));
/// assert_eq!(ka.timeout, Duration::from_secs(15));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// Idle time before a PING is sent.
    pub interval: Duration,
    /// Idle time after which the peer counts as gone.
    pub timeout: Duration,
}

impl KeepAlive {
    /// A keep-alive policy (an `interval` of zero counts as 1 ms).
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        KeepAlive {
            interval: interval.max(Duration::from_millis(1)),
            timeout,
        }
    }
}

/// What [`KeepAliveTimer::poll`] says to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAliveAction {
    /// Nothing is due.
    Nothing,
    /// Send a PING (its PONG, like anything received, resets the timer).
    Ping,
    /// The peer sent nothing for the keep-alive timeout: close the connection.
    Close {
        /// How long the peer was silent.
        idle: Duration,
    },
}

/// The keep-alive state of one connection: when something was last received and when the last
/// keep-alive PING went out. No clock inside: every method takes the caller's `now`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use veltix_proto::{KeepAlive, KeepAliveAction, KeepAliveTimer};
/// let s = Duration::from_secs(1);
/// let t0 = Instant::now();
/// let mut ka = KeepAliveTimer::new(KeepAlive::new(5 * s, 15 * s), t0);
/// assert_eq!(ka.next_deadline(), Some(t0 + 5 * s));
/// assert_eq!(ka.poll(t0 + 4 * s), KeepAliveAction::Nothing);
/// assert_eq!(ka.poll(t0 + 5 * s), KeepAliveAction::Ping);
/// assert_eq!(ka.poll(t0 + 6 * s), KeepAliveAction::Nothing); // one PING per interval
/// assert_eq!(ka.next_deadline(), Some(t0 + 10 * s));
/// ka.on_receive(t0 + 7 * s); // the PONG (or anything else) arrived
/// assert_eq!(ka.next_deadline(), Some(t0 + 12 * s));
/// assert_eq!(ka.poll(t0 + 22 * s), KeepAliveAction::Close { idle: 15 * s });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAliveTimer {
    policy: KeepAlive,
    last_rx: Instant,
    last_ping: Option<Instant>,
}

impl KeepAliveTimer {
    /// A timer for a connection that last received something (or was established) at `now`.
    pub fn new(policy: KeepAlive, now: Instant) -> Self {
        KeepAliveTimer {
            policy,
            last_rx: now,
            last_ping: None,
        }
    }

    /// The policy in use.
    pub fn policy(&self) -> KeepAlive {
        self.policy
    }

    /// Something was received at `now`: the peer is alive, the PING cycle starts over. A `now`
    /// earlier than the latest receive seen does not move the timer back.
    pub fn on_receive(&mut self, now: Instant) {
        self.last_rx = self.last_rx.max(now);
        self.last_ping = None;
    }

    /// When something was last received (or the timer was created).
    pub fn last_receive(&self) -> Instant {
        self.last_rx
    }

    /// When the connection closes unless something arrives before (`None`: beyond the clock).
    pub fn close_deadline(&self) -> Option<Instant> {
        self.last_rx.checked_add(self.policy.timeout)
    }

    /// What is due at `now`: [`KeepAliveAction::Close`] once the peer has been silent for the
    /// timeout; else [`KeepAliveAction::Ping`] once it has been silent for the interval and no
    /// PING went out during the last interval (the PING is then counted as sent at `now`).
    pub fn poll(&mut self, now: Instant) -> KeepAliveAction {
        let idle = now.saturating_duration_since(self.last_rx);
        if idle >= self.policy.timeout {
            return KeepAliveAction::Close { idle };
        }
        let ping_due = idle >= self.policy.interval
            && self
                .last_ping
                .is_none_or(|t| now.saturating_duration_since(t) >= self.policy.interval);
        if ping_due {
            self.last_ping = Some(now);
            return KeepAliveAction::Ping;
        }
        KeepAliveAction::Nothing
    }

    /// When [`poll`](Self::poll) can next return something other than `Nothing` (`None`:
    /// beyond the clock).
    pub fn next_deadline(&self) -> Option<Instant> {
        let close = self.close_deadline();
        let ping = self
            .last_ping
            .unwrap_or(self.last_rx)
            .checked_add(self.policy.interval);
        earliest(close, ping)
    }
}

/// The earlier of two optional deadlines (`None`: never), as a timer loop combining several
/// sources of deadlines needs it. (`Option`'s own `min` would take `None` as the earliest.)
///
/// ```
/// use std::time::{Duration, Instant};
/// use veltix_proto::earliest;
/// let t = Instant::now();
/// let later = t + Duration::from_secs(1);
/// assert_eq!(earliest(Some(later), Some(t)), Some(t));
/// assert_eq!(earliest(None, Some(later)), Some(later));
/// assert_eq!(earliest(None, None), None);
/// ```
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timer(t0: Instant) -> KeepAliveTimer {
        KeepAliveTimer::new(KeepAlive::new(5 * S, 15 * S), t0)
    }

    #[test]
    fn pings_once_per_interval_then_closes() {
        let t0 = Instant::now();
        let mut ka = timer(t0);
        let got: Vec<_> = (0..=15).map(|s| ka.poll(t0 + s * S)).collect();
        let pings: Vec<u32> = (0..=15u32)
            .filter(|s| got[*s as usize] == KeepAliveAction::Ping)
            .collect();
        assert_eq!(pings, [5, 10]);
        assert_eq!(got[15], KeepAliveAction::Close { idle: 15 * S });
        // Closing is sticky: the peer stays silent.
        assert_eq!(
            ka.poll(t0 + 16 * S),
            KeepAliveAction::Close { idle: 16 * S }
        );
    }

    #[test]
    fn receiving_restarts_the_cycle() {
        let t0 = Instant::now();
        let mut ka = timer(t0);
        assert_eq!(ka.poll(t0 + 5 * S), KeepAliveAction::Ping);
        ka.on_receive(t0 + 6 * S);
        assert_eq!(ka.last_receive(), t0 + 6 * S);
        assert_eq!(ka.next_deadline(), Some(t0 + 11 * S));
        assert_eq!(ka.close_deadline(), Some(t0 + 21 * S));
        assert_eq!(ka.poll(t0 + 10 * S), KeepAliveAction::Nothing);
        assert_eq!(ka.poll(t0 + 11 * S), KeepAliveAction::Ping);
        // An out-of-order (older) receive time does not move the timer back.
        ka.on_receive(t0 + 2 * S);
        assert_eq!(ka.last_receive(), t0 + 6 * S);
        assert_eq!(
            ka.poll(t0 + 21 * S),
            KeepAliveAction::Close { idle: 15 * S }
        );
    }

    #[test]
    fn a_late_poll_sends_one_ping_not_a_backlog() {
        let t0 = Instant::now();
        let mut ka = timer(t0);
        // The caller was late by several intervals (but within the timeout): one PING.
        assert_eq!(ka.poll(t0 + 14 * S), KeepAliveAction::Ping);
        assert_eq!(ka.poll(t0 + 14 * S), KeepAliveAction::Nothing);
        assert_eq!(ka.next_deadline(), Some(t0 + 15 * S));
    }

    #[test]
    fn deadlines_beyond_the_clock_are_none() {
        let t0 = Instant::now();
        let ka = KeepAliveTimer::new(KeepAlive::new(Duration::MAX, Duration::MAX), t0);
        assert_eq!(ka.next_deadline(), None);
        assert_eq!(ka.close_deadline(), None);
    }

    #[test]
    fn zero_interval_counts_as_one_millisecond() {
        let t0 = Instant::now();
        let mut ka = KeepAliveTimer::new(KeepAlive::new(Duration::ZERO, S), t0);
        assert_eq!(ka.next_deadline(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(ka.poll(t0), KeepAliveAction::Nothing);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the receive and poll times: `next_deadline` is never in the past of the
            /// last poll's answer, nothing is due strictly before it, PINGs are at least one
            /// interval apart while silent, and the close comes exactly when the silence
            /// reaches the timeout.
            #[test]
            fn timer_invariants(
                interval_ms in 1u64..50,
                extra_ms in 0u64..100,
                steps in proptest::collection::vec((0u64..40, any::<bool>()), 1..60),
            ) {
                let t0 = Instant::now();
                let policy = KeepAlive::new(
                    Duration::from_millis(interval_ms),
                    Duration::from_millis(interval_ms + extra_ms),
                );
                let mut ka = KeepAliveTimer::new(policy, t0);
                let mut now = t0;
                let mut last_ping: Option<Instant> = None;
                for (advance, receive) in steps {
                    let deadline = ka.next_deadline().unwrap();
                    now += Duration::from_millis(advance);
                    if receive {
                        ka.on_receive(now);
                        last_ping = None;
                        continue;
                    }
                    let before = ka;
                    let action = ka.poll(now);
                    if now < deadline {
                        prop_assert_eq!(action, KeepAliveAction::Nothing);
                        prop_assert_eq!(ka, before);
                    }
                    let idle = now - before.last_receive();
                    match action {
                        KeepAliveAction::Close { idle: got } => {
                            prop_assert!(idle >= policy.timeout);
                            prop_assert_eq!(got, idle);
                            break;
                        }
                        KeepAliveAction::Ping => {
                            prop_assert!(idle >= policy.interval && idle < policy.timeout);
                            if let Some(p) = last_ping {
                                prop_assert!(now - p >= policy.interval);
                            }
                            last_ping = Some(now);
                        }
                        KeepAliveAction::Nothing => prop_assert!(idle < policy.timeout),
                    }
                }
            }
        }
    }
}
