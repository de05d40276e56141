//! Reconnect policy and the disconnect notifications a [`Client`](crate::Client) emits.

use std::time::Duration;

use crate::{Error, Result};

/// How long to wait between reconnect attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backoff {
    /// The same delay every time (Python Veltix's only behaviour).
    Constant,
    /// `initial_delay * factor^(attempt-1)`, capped at `max_delay`, then randomised by up to
    /// ±`jitter` (a fraction, 0.0..=1.0) so a fleet of clients does not reconnect in lockstep.
    Exponential {
        /// Growth factor per attempt (>= 1.0).
        factor: f64,
        /// Upper bound of the delay before jitter.
        max_delay: Duration,
        /// Relative jitter, 0.0 = none.
        jitter: f64,
    },
}

/// The client's reconnect policy. The default is Python's: no retry.
///
/// ```
/// use std::time::Duration;
/// use veltix::{Backoff, ReconnectPolicy};
/// let p = ReconnectPolicy::exponential(10, Duration::from_millis(100), Duration::from_secs(5));
/// // Without jitter the schedule is exact: 100, 200, 400 ms ...
/// let p = p.backoff(Backoff::Exponential { factor: 2.0, max_delay: Duration::from_secs(5), jitter: 0.0 });
/// assert_eq!(p.delay(3, 0.5), Duration::from_millis(400));
/// assert_eq!(p.delay(30, 0.5), Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Attempts after a drop or a failed connect (0 = never reconnect).
    pub retries: u32,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// How the delay grows.
    pub backoff: Backoff,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            retries: 0,
            initial_delay: Duration::from_secs(1),
            backoff: Backoff::Constant,
        }
    }
}

impl ReconnectPolicy {
    /// Python-like: `retries` attempts, `delay` apart.
    pub fn constant(retries: u32, delay: Duration) -> Self {
        ReconnectPolicy {
            retries,
            initial_delay: delay,
            backoff: Backoff::Constant,
        }
    }

    /// Exponential backoff doubling from `initial` up to `max`, with 20 % jitter.
    pub fn exponential(retries: u32, initial: Duration, max: Duration) -> Self {
        ReconnectPolicy {
            retries,
            initial_delay: initial,
            backoff: Backoff::Exponential {
                factor: 2.0,
                max_delay: max,
                jitter: 0.2,
            },
        }
    }

    /// No retry (Python's default; the same as `ReconnectPolicy::default()`).
    pub fn never() -> Self {
        Self::default()
    }

    /// The delay before attempt `attempt` (1-based). `random` is a number in `[0, 1)` that
    /// drives the jitter (0.5 = no jitter), so the schedule is testable without a clock.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        match self.backoff {
            Backoff::Constant => self.initial_delay,
            Backoff::Exponential {
                factor,
                max_delay,
                jitter,
            } => {
                let exp = factor.powi(attempt.saturating_sub(1).min(1000) as i32);
                let base = (self.initial_delay.as_secs_f64() * exp).min(max_delay.as_secs_f64());
                let j = jitter.clamp(0.0, 1.0) * (2.0 * random.clamp(0.0, 1.0) - 1.0);
                Duration::from_secs_f64((base * (1.0 + j)).max(0.0))
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.retries > 0 && self.initial_delay.is_zero() {
            return Err(Error::Config("reconnect initial_delay must be > 0".into()));
        }
        if let Backoff::Exponential { factor, jitter, .. } = self.backoff {
            if !(factor >= 1.0 && (0.0..=1.0).contains(&jitter)) {
                return Err(Error::Config(
                    "backoff needs factor >= 1.0 and jitter in 0.0..=1.0".into(),
                ));
            }
        }
        Ok(())
    }
}

crate::util::setters!(ReconnectPolicy {
    /// Sets [`ReconnectPolicy::retries`] (0 = never reconnect).
    retries: u32 => std::convert::identity;
    /// Sets [`ReconnectPolicy::initial_delay`].
    initial_delay: Duration => std::convert::identity;
    /// Sets [`ReconnectPolicy::backoff`].
    backoff: Backoff => std::convert::identity;
});

/// Why a client lost (or could not get) its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// `disconnect()` was called.
    Manual,
    /// The server closed the connection (or it was reset) mid-session.
    ServerClosed,
    /// Connecting failed (refused, timed out, I/O error).
    Error,
    /// The server was full.
    ServerFull,
    /// The handshake failed (version mismatch, wrong generation, timeout).
    HandshakeFailed,
    /// Keep-alive found the link dead.
    KeepAliveTimeout,
}

/// What `on_disconnect` receives: the same sequence Python Veltix emits (see the crate docs'
/// "Reconnecting" section).
///
/// ```
/// use veltix::{DisconnectReason, DisconnectState};
/// fn on_disconnect(s: DisconnectState) {
///     if s.permanent && s.reason == DisconnectReason::Manual {
///         println!("bye after {} of {} attempts", s.attempt, s.retry_max);
///     }
/// }
/// # let _ = on_disconnect;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisconnectState {
    /// True when no more attempts will follow.
    pub permanent: bool,
    /// 0 for the first notification, then the number of the failed attempt.
    pub attempt: u32,
    /// The configured number of retries.
    pub retry_max: u32,
    /// Why.
    pub reason: DisconnectReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn constant_schedule_is_python_like() {
        let p = ReconnectPolicy::constant(3, MS(250));
        for attempt in 1..=10 {
            for r in [0.0, 0.5, 0.999] {
                assert_eq!(p.delay(attempt, r), MS(250));
            }
        }
    }

    #[test]
    fn exponential_schedule_doubles_and_caps() {
        let p = ReconnectPolicy::exponential(10, MS(100), MS(1000)).backoff(Backoff::Exponential {
            factor: 2.0,
            max_delay: MS(1000),
            jitter: 0.0,
        });
        let got: Vec<Duration> = (1..=6).map(|a| p.delay(a, 0.9)).collect();
        assert_eq!(
            got,
            vec![MS(100), MS(200), MS(400), MS(800), MS(1000), MS(1000)]
        );
        // Huge attempt numbers neither overflow nor exceed the cap.
        assert_eq!(p.delay(u32::MAX, 0.5), MS(1000));
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let p = ReconnectPolicy::exponential(10, MS(100), MS(10_000)); // 20 % jitter
        for attempt in 1..=8 {
            let base = p.delay(attempt, 0.5).as_secs_f64();
            for i in 0..=100 {
                let r = f64::from(i) / 100.0;
                let d = p.delay(attempt, r).as_secs_f64();
                assert!(
                    d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                    "{attempt} {r} {d} {base}"
                );
            }
            assert!(p.delay(attempt, 0.0) < p.delay(attempt, 1.0));
        }
    }

    #[test]
    fn invalid_policies_are_rejected() {
        assert!(ReconnectPolicy::constant(1, Duration::ZERO)
            .validate()
            .is_err());
        assert!(ReconnectPolicy::constant(0, Duration::ZERO)
            .validate()
            .is_ok());
        let bad = ReconnectPolicy {
            backoff: Backoff::Exponential {
                factor: 0.5,
                max_delay: MS(1),
                jitter: 0.0,
            },
            ..ReconnectPolicy::default()
        };
        assert!(bad.validate().is_err());
    }
}
