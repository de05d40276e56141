//! Drives a sans-I/O `Connection` with arbitrary peer bytes, clock advances and local requests.
//!
//! Checks: no panic; every request gets at most one outcome (reply, timeout or abandonment) and,
//! once the clock has passed every deadline, exactly one; `handle_timeout(now)` always moves
//! `poll_timeout` past `now`; nothing is reported after `Closed`; and the peer bytes give the
//! same events whole and in arbitrary pieces.
//!
//! Input layout: `[mode, seed, ...script]`. `mode` bit 0: Gen 1 (else Gen 3); bit 1: server
//! role; bit 2: keep-alive on; bit 3: a small `max_message_size` (64). `seed` drives the piece
//! sizes. The script is a sequence of commands: a byte `c`, then for `c % 8`:
//! 0..=3 feed the next `c / 8 + 1` bytes as peer input; 4 advance the clock by `c / 8` × 37 ms;
//! 5 send a request (timeout `c / 8` × 50 ms); 6 send a PING; 7 end of stream.

#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use veltix_proto::{
    CloseReason, Connection, ConnectionConfig, Event, Generation, IdAllocator, KeepAlive,
    Rejection, Role,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (mode, seed) = (data[0], data[1]);
    let script = &data[2..];
    let a = normalise(run(mode, script, |chunk| vec![chunk.to_vec()]));
    let b = normalise(run(mode, script, |chunk| pieces(seed, chunk)));
    assert_eq!(a, b, "events depend on how the peer bytes are cut");
});

/// How many bytes a resynchronisation threw away depends on how many had arrived when the
/// connection closed (it closes at the first rejection): compare everything else.
fn normalise(mut events: Vec<Event>) -> Vec<Event> {
    for e in &mut events {
        if let Event::Closed(CloseReason::Protocol(
            Rejection::BadMagic { discarded } | Rejection::Oversize { discarded, .. },
        )) = e
        {
            *discarded = 0;
        }
    }
    events
}

fn config(mode: u8) -> ConnectionConfig {
    let generation = if mode & 1 != 0 { Generation::Gen1 } else { Generation::Gen3 };
    let role = if mode & 2 != 0 { Role::Server } else { Role::Client };
    let mut cfg = ConnectionConfig::new(role, generation);
    if mode & 4 != 0 {
        cfg.keepalive = Some(KeepAlive::new(Duration::from_millis(500), Duration::from_millis(1500)));
    }
    if mode & 8 != 0 {
        cfg.max_message_size = 64;
    }
    cfg
}

fn run(mode: u8, script: &[u8], cut: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> Vec<Event> {
    let t0 = Instant::now();
    let mut now = t0;
    let cfg = config(mode);
    let ids = match cfg.generation {
        Generation::Gen1 => IdAllocator::random_seeded(7),
        Generation::Gen3 => IdAllocator::for_role(cfg.generation, cfg.role == Role::Server),
    };
    let mut c = Connection::with_ids(cfg, ids, t0);
    let mut log = Vec::new();
    let mut open: HashSet<u32> = HashSet::new();
    let mut last_deadline = t0;
    let mut closed = false;
    let mut i = 0;
    while i < script.len() {
        let cmd = script[i];
        i += 1;
        let arg = usize::from(cmd / 8);
        match cmd % 8 {
            0..=3 => {
                let end = (i + arg + 1).min(script.len());
                for piece in cut(&script[i..end]) {
                    c.handle_input(now, &piece);
                }
                i = end;
            }
            4 => {
                let target = now + Duration::from_millis(37 * arg as u64);
                // Stop at every timer on the way, as a runtime would.
                for _ in 0..10_000 {
                    match c.poll_timeout() {
                        Some(t) if t <= target => {
                            now = now.max(t);
                            c.handle_timeout(now);
                            if let Some(next) = c.poll_timeout() {
                                assert!(next > now, "poll_timeout did not move past now");
                            }
                        }
                        _ => break,
                    }
                }
                now = target;
            }
            5 | 6 => {
                let timeout = Duration::from_millis(50 * arg as u64);
                let r = if cmd % 8 == 5 {
                    c.request(now, 200, [cmd], timeout)
                } else {
                    c.ping(now, timeout)
                };
                if let Ok(id) = r {
                    assert!(open.insert(id), "request id {id} handed out twice");
                    last_deadline = last_deadline.max(now + timeout);
                }
            }
            _ => c.handle_eof(),
        }
        drain(&mut c, &mut open, &mut closed, &mut log);
        let _ = c.poll_transmit();
    }
    // Past every deadline (and the keep-alive timeout: no input comes any more), every request
    // has had its outcome and no waiter is left.
    let keepalive = c.config().keepalive;
    let end = last_deadline.max(now) + keepalive.map_or(Duration::ZERO, |ka| ka.timeout);
    for _ in 0..10_000 {
        match c.poll_timeout() {
            Some(t) if t <= end => {
                now = now.max(t);
                c.handle_timeout(now);
                drain(&mut c, &mut open, &mut closed, &mut log);
            }
            _ => break,
        }
    }
    c.handle_timeout(end);
    drain(&mut c, &mut open, &mut closed, &mut log);
    assert!(open.is_empty(), "requests without an outcome: {open:?}");
    assert_eq!(c.pending_requests(), 0, "waiters left after every deadline");
    assert!(keepalive.is_none() || closed, "keep-alive did not close a silent peer");
    log
}

fn drain(c: &mut Connection, open: &mut HashSet<u32>, closed: &mut bool, log: &mut Vec<Event>) {
    while let Some(e) = c.poll_event() {
        assert!(!*closed, "event after Closed: {e:?}");
        match &e {
            Event::Reply { request_id, .. }
            | Event::TimedOut { request_id }
            | Event::Abandoned { request_id } => {
                assert!(open.remove(request_id), "second outcome for {request_id}")
            }
            Event::Closed(_) => *closed = true,
            _ => {}
        }
        log.push(e);
    }
}

fn pieces(seed: u8, input: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rng = u32::from(seed);
    let mut rest = input;
    while !rest.is_empty() {
        rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = if seed == 0 { 1 } else { 1 + (rng >> 16) as usize % 7 };
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a.to_vec());
        rest = b;
    }
    out
}
