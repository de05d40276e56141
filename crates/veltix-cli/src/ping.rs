//! `veltix ping`: PINGs a server over one connection and reports round-trip times.
//!
//! Output contract (stdout), for `--count N`:
//! - one line per ping: `seq=I rtt=X.XXX ms`, or `seq=I failed: REASON`;
//! - if at least one ping succeeded: `min/avg/p50/p99/max = a/b/c/d/e ms` (3 decimals;
//!   percentiles by nearest rank);
//! - always: `N sent, M ok, K failed`.
//!
//! Exits non-zero if the connection failed or any ping failed.

use std::io::Write;
use std::time::Duration;

use veltix::Generation;

use crate::serve::{parse_secs, parse_timeout};

/// Arguments of `veltix ping`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Number of pings.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Seconds allowed for connecting, and for each PONG.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Seconds to wait between pings.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    pub interval: Duration,
    /// Wire generation: gen3 (Python Veltix 2.x/3.x) or gen1 (Python Veltix 1.6.x).
    #[arg(long, value_name = "GEN", default_value = "gen3")]
    pub wire: Generation,
    #[command(flatten)]
    pub security: crate::secure::ClientArgs,
}

/// Round-trip statistics in milliseconds.
#[derive(Debug, PartialEq)]
pub(crate) struct Summary {
    pub min: f64,
    pub avg: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The value at percentile `p` (0..=100) of sorted `v`, by nearest rank.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Statistics of `rtts_ms` (`None` when empty).
pub(crate) fn summarize(rtts_ms: &[f64]) -> Option<Summary> {
    if rtts_ms.is_empty() {
        return None;
    }
    let mut v = rtts_ms.to_vec();
    v.sort_by(f64::total_cmp);
    Some(Summary {
        min: v[0],
        avg: v.iter().sum::<f64>() / v.len() as f64,
        p50: percentile(&v, 50.0),
        p99: percentile(&v, 99.0),
        max: v[v.len() - 1],
    })
}

/// A duration in milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `veltix ping`.
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = crate::send::connect_quietly(
        &args.host,
        args.port,
        args.wire,
        args.timeout,
        &args.security,
    )?;

    let mut out = std::io::stdout().lock();
    let mut rtts = Vec::with_capacity(args.count as usize);
    for seq in 1..=args.count {
        if seq > 1 && !args.interval.is_zero() {
            std::thread::sleep(args.interval);
        }
        match client.ping_server(args.timeout) {
            Ok(rtt) => {
                let rtt = ms(rtt);
                rtts.push(rtt);
                writeln!(out, "seq={seq} rtt={rtt:.3} ms")?;
            }
            Err(e) => writeln!(out, "seq={seq} failed: {e}")?,
        }
        out.flush()?;
    }
    client.disconnect();

    if let Some(s) = summarize(&rtts) {
        writeln!(
            out,
            "min/avg/p50/p99/max = {:.3}/{:.3}/{:.3}/{:.3}/{:.3} ms",
            s.min, s.avg, s.p50, s.p99, s.max
        )?;
    }
    let ok = rtts.len() as u32;
    let failed = args.count - ok;
    writeln!(out, "{} sent, {ok} ok, {failed} failed", args.count)?;
    out.flush()?;
    if failed > 0 {
        return Err(format!("{failed} of {} pings failed", args.count).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.0);
        assert_eq!(percentile(&v, 99.0), 4.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 50.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn summary_of_unsorted_values() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (s.min, s.avg, s.p50, s.p99, s.max),
            (1.0, 2.0, 2.0, 3.0, 3.0)
        );
        assert_eq!(summarize(&[]), None);
    }
}
