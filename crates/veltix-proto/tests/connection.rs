//! The sans-I/O `Connection`: unit tests, and property tests that drive two connections through
//! an in-memory pair with a simulated clock (random message sequences, random chunking of the
//! byte streams, random clock advances), as quinn-proto's tests do.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use veltix_proto::{
    encode_parts, CloseReason, Connection, ConnectionConfig, Error, Event, Frame, Generation,
    IdAllocator, KeepAlive, Rejection, Role, TypeSet, PONG,
};

const SEC: Duration = Duration::from_secs(1);

fn pair_configs(generation: Generation) -> (ConnectionConfig, ConnectionConfig) {
    (
        ConnectionConfig::new(Role::Client, generation),
        ConnectionConfig::new(Role::Server, generation),
    )
}

fn conn(role: Role, generation: Generation, t0: Instant) -> Connection {
    let cfg = ConnectionConfig::new(role, generation);
    Connection::with_ids(cfg, ids(role, generation), t0)
}

fn ids(role: Role, generation: Generation) -> IdAllocator {
    match generation {
        Generation::Gen1 => IdAllocator::random_seeded(if role == Role::Client { 1 } else { 2 }),
        Generation::Gen3 => IdAllocator::for_role(generation, role == Role::Server),
    }
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Moves everything `from` has to write into `to`.
fn deliver(now: Instant, from: &mut Connection, to: &mut Connection) {
    while let Some(b) = from.poll_transmit() {
        to.handle_input(now, &b);
    }
}

fn frame_bytes(generation: Generation, message_type: u16, id: u32, content: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    encode_parts(generation, message_type, id, 0, content, &mut out).unwrap();
    out.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Unit tests

#[test]
fn request_reply_and_ping_in_both_generations() {
    for generation in [Generation::Gen3, Generation::Gen1] {
        let t0 = Instant::now();
        let mut c = conn(Role::Client, generation, t0);
        let mut s = conn(Role::Server, generation, t0);
        let id = c.request(t0, 300, b"q", 5 * SEC).unwrap();
        if generation == Generation::Gen3 {
            assert_eq!(id, 0, "Gen 3 client ids start at 0");
        }
        let sid = s.request(t0, 300, b"from server", 5 * SEC).unwrap();
        if generation == Generation::Gen3 {
            assert_eq!(sid, 32_768, "Gen 3 server ids start at 32768");
        }
        deliver(t0, &mut c, &mut s);
        deliver(t0, &mut s, &mut c);
        let Some(Event::Message(f)) = s.poll_event() else {
            panic!("{generation}: server got no message")
        };
        assert_eq!(
            (f.message_type, f.request_id, &f.content[..]),
            (300, id, &b"q"[..])
        );
        let Some(Event::Message(g)) = c.poll_event() else {
            panic!("{generation}: client got no message")
        };
        s.send(301, f.request_id, b"a").unwrap();
        c.send(301, g.request_id, b"b").unwrap();
        let p = c.ping(t0, SEC).unwrap();
        deliver(t0, &mut c, &mut s);
        deliver(t0, &mut s, &mut c);
        let got = events(&mut c);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            matches!(&got[0], Event::Reply { request_id, frame } if *request_id == id && &frame.content[..] == b"a")
        );
        assert!(
            matches!(&got[1], Event::Reply { request_id, frame } if *request_id == p && frame.message_type == PONG.code())
        );
        assert!(
            matches!(events(&mut s)[..], [Event::Reply { request_id, .. }] if request_id == sid)
        );
        assert_eq!(s.stats().pings_answered, 1);
        assert_eq!(c.pending_requests(), 0);
        assert_eq!(c.poll_timeout(), None);
    }
}

#[test]
fn request_deadlines_expire_on_the_given_clock() {
    let t0 = Instant::now();
    let mut c = conn(Role::Client, Generation::Gen3, t0);
    let a = c.request(t0, 200, b"", 3 * SEC).unwrap();
    let b = c.request(t0, 200, b"", SEC).unwrap();
    assert_eq!(c.poll_timeout(), Some(t0 + SEC));
    c.handle_timeout(t0 + SEC - Duration::from_nanos(1));
    assert_eq!(c.poll_event(), None);
    c.handle_timeout(t0 + SEC);
    assert_eq!(c.poll_event(), Some(Event::TimedOut { request_id: b }));
    assert_eq!(c.poll_timeout(), Some(t0 + 3 * SEC));
    c.handle_timeout(t0 + 10 * SEC);
    assert_eq!(c.poll_event(), Some(Event::TimedOut { request_id: a }));
    assert_eq!(c.poll_event(), None);
    // A late reply is a plain message now: nobody waits for it.
    c.handle_input(
        t0 + 10 * SEC,
        &frame_bytes(Generation::Gen3, 201, a, b"late"),
    );
    assert!(matches!(c.poll_event(), Some(Event::Message(f)) if f.request_id == a));
}

#[test]
fn close_abandons_pending_requests_and_refuses_new_ones() {
    let t0 = Instant::now();
    let mut c = conn(Role::Client, Generation::Gen3, t0);
    let a = c.request(t0, 200, b"", SEC).unwrap();
    let b = c.request(t0, 200, b"", SEC).unwrap();
    c.close();
    assert_eq!(
        events(&mut c),
        vec![
            Event::Abandoned { request_id: a },
            Event::Abandoned { request_id: b },
            Event::Closed(CloseReason::Local)
        ]
    );
    // Queued bytes can still be flushed; nothing new is accepted.
    assert!(c.poll_transmit().is_some());
    assert_eq!(
        c.send(200, 0, b""),
        Err(Error::ConnectionClosed(CloseReason::Local))
    );
    assert!(matches!(
        c.request(t0, 200, b"", SEC),
        Err(Error::ConnectionClosed(_))
    ));
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(t0 + 5 * SEC);
    assert_eq!(c.poll_event(), None, "no timeout after the abandonment");
}

#[test]
fn outgoing_checks() {
    let t0 = Instant::now();
    let mut cfg = ConnectionConfig::new(Role::Client, Generation::Gen3);
    cfg.max_message_size = 100;
    let mut c = Connection::new(cfg, t0);
    assert_eq!(
        c.send(200, 0, [0u8; 86]),
        Err(Error::FrameTooLarge {
            len: 101,
            limit: 100
        })
    );
    assert!(c.send(200, 0, [0u8; 85]).is_ok());
    assert_eq!(
        c.send(150, 0, b""),
        Err(Error::ReservedTypeCode { code: 150 })
    );
    assert!(matches!(
        c.send(200, 70_000, b""),
        Err(Error::RequestIdOutOfRange { .. })
    ));
    assert_eq!(c.pending_requests(), 0);
    assert!(
        c.request(t0, 2, b"", SEC).is_err(),
        "HEARTBEAT is Gen 1 only"
    );
    assert_eq!(
        c.pending_requests(),
        0,
        "a refused request leaves no waiter"
    );
    // Gen 1's system types may be sent.
    let mut g1 = conn(Role::Client, Generation::Gen1, t0);
    assert!(g1.send(2, 7, b"").is_ok());
}

fn close_reason_after(
    generation: Generation,
    cfg_edit: impl Fn(&mut ConnectionConfig),
    input: &[u8],
) -> Option<CloseReason> {
    let t0 = Instant::now();
    let mut cfg = ConnectionConfig::new(Role::Server, generation);
    cfg_edit(&mut cfg);
    let mut c = Connection::new(cfg, t0);
    let pending = c.request(t0, 200, b"", SEC).unwrap();
    c.handle_input(t0, input);
    let ev = events(&mut c);
    let closed = ev.iter().find_map(|e| match e {
        Event::Closed(r) => Some(r.clone()),
        _ => None,
    });
    if closed.is_some() {
        assert!(
            ev.contains(&Event::Abandoned {
                request_id: pending
            }),
            "{ev:?}"
        );
        assert_eq!(ev.last(), Some(&Event::Closed(closed.clone().unwrap())));
        assert_eq!(c.close_reason(), closed.as_ref());
    }
    closed
}

#[test]
fn bad_frames_close_with_the_right_reason() {
    let g3 = Generation::Gen3;
    let none = |_: &mut ConnectionConfig| {};
    let good = frame_bytes(g3, 200, 1, b"hello");

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert!(matches!(
        close_reason_after(g3, none, &bad_magic),
        Some(CloseReason::Protocol(Rejection::BadMagic { .. }))
    ));

    let mut bad_crc = good.clone();
    bad_crc[16] ^= 1;
    assert!(matches!(
        close_reason_after(g3, none, &bad_crc),
        Some(CloseReason::Protocol(Rejection::CrcMismatch { .. }))
    ));

    assert!(matches!(
        close_reason_after(g3, |c| c.max_message_size = 16, &good),
        Some(CloseReason::Protocol(Rejection::Oversize {
            declared: 20,
            limit: 16,
            ..
        }))
    ));

    let known: TypeSet = [0u16, 1, 201].into_iter().collect();
    assert!(matches!(
        close_reason_after(g3, |c| c.known_types = Some(known.clone()), &good),
        Some(CloseReason::Protocol(Rejection::UnknownType {
            message_type: 200,
            ..
        }))
    ));

    assert_eq!(
        close_reason_after(g3, none, &frame_bytes(g3, 150, 9, b"")),
        Some(CloseReason::ReservedType {
            message_type: 150,
            request_id: 9
        })
    );
    // Gen 1's system types are not violations there (HEARTBEAT is delivered), but are in Gen 3.
    let g1 = Generation::Gen1;
    assert_eq!(
        close_reason_after(g1, none, &frame_bytes(g1, 2, 9, b"")),
        None
    );
    assert!(matches!(
        close_reason_after(g3, none, &frame_bytes(g3, 2, 9, b"")),
        Some(CloseReason::ReservedType {
            message_type: 2,
            ..
        })
    ));
    // Frames before the bad one are still delivered, nothing after it.
    let t0 = Instant::now();
    let mut c = conn(Role::Server, g3, t0);
    let mut input = good.clone();
    input.extend_from_slice(&bad_crc);
    input.extend_from_slice(&good);
    c.handle_input(t0, &input);
    let ev = events(&mut c);
    assert!(
        matches!(
            &ev[..],
            [Event::Message(_), Event::Closed(CloseReason::Protocol(_))]
        ),
        "{ev:?}"
    );
    c.handle_input(t0, &good);
    assert_eq!(c.poll_event(), None, "nothing is read after the close");
}

#[test]
fn end_of_stream() {
    let t0 = Instant::now();
    let good = frame_bytes(Generation::Gen3, 200, 1, b"hello");
    let mut c = conn(Role::Client, Generation::Gen3, t0);
    c.handle_input(t0, &good);
    c.handle_eof();
    assert!(matches!(
        &events(&mut c)[..],
        [Event::Message(_), Event::Closed(CloseReason::PeerClosed)]
    ));
    let mut c = conn(Role::Client, Generation::Gen3, t0);
    c.handle_input(t0, &good[..7]);
    c.handle_eof();
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseReason::Protocol(Rejection::Truncated {
            buffered: 7
        }))]
    );
}

#[test]
fn keepalive_pings_an_idle_peer_and_closes_a_silent_one() {
    let t0 = Instant::now();
    let ka = KeepAlive::new(5 * SEC, 15 * SEC);
    let (mut cc, sc) = pair_configs(Generation::Gen3);
    cc.keepalive = Some(ka);
    let mut c = Connection::new(cc, t0);
    let mut s = Connection::new(sc, t0);
    // Idle: a PING at 5 s, answered, so the connection lives on.
    assert_eq!(c.poll_timeout(), Some(t0 + 5 * SEC));
    let t = t0 + 5 * SEC;
    c.handle_timeout(t);
    assert_eq!(c.stats().keepalive_pings, 1);
    deliver(t, &mut c, &mut s);
    deliver(t, &mut s, &mut c);
    assert_eq!(events(&mut c), vec![], "keep-alive PONGs are not reported");
    assert_eq!(c.pending_requests(), 0);
    assert_eq!(c.poll_timeout(), Some(t + 5 * SEC));
    // Now the peer goes silent: PINGs at +5 s and +10 s, the close at +15 s.
    let mut now = t;
    let mut pings = 0;
    for _ in 0..100 {
        let Some(next) = c.poll_timeout() else { break };
        now = next;
        c.handle_timeout(now);
        if c.poll_transmit().is_some() {
            pings += 1;
        }
    }
    assert_eq!(pings, 2);
    assert_eq!(now, t + 15 * SEC);
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseReason::KeepAliveTimeout {
            idle: 15 * SEC
        })]
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: two connections, an in-memory pair, a simulated clock

#[derive(Clone, Debug)]
enum Op {
    /// A request from one side; the peer answers it if `answer`.
    Request {
        from_client: bool,
        len: usize,
        timeout_ms: u64,
        answer: bool,
    },
    /// A message that expects no reply.
    Message { from_client: bool, len: usize },
    /// A PING from one side.
    Ping { from_client: bool, timeout_ms: u64 },
    /// Up to `max` bytes of one direction's stream arrive.
    Deliver { to_client: bool, max: usize },
    /// The clock moves on.
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), 0usize..64, 1u64..3_000, prop::bool::weighted(0.8)).prop_map(
            |(from_client, len, timeout_ms, answer)| Op::Request { from_client, len, timeout_ms, answer }
        ),
        1 => (any::<bool>(), 0usize..64).prop_map(|(from_client, len)| Op::Message { from_client, len }),
        1 => (any::<bool>(), 1u64..3_000).prop_map(|(from_client, timeout_ms)| Op::Ping { from_client, timeout_ms }),
        4 => (any::<bool>(), 1usize..200).prop_map(|(to_client, max)| Op::Deliver { to_client, max }),
        2 => (0u64..1_500).prop_map(|ms| Op::Advance { ms }),
    ]
}

const ANSWER: u8 = 1;
const SILENT: u8 = 0;

/// One side of the simulation: its connection, bytes in flight towards it, and the requests it
/// made (id -> (deadline, expected reply content, outcome seen)).
struct Side {
    conn: Connection,
    inbound: Vec<u8>,
    outstanding: HashMap<u32, (Instant, Option<Vec<u8>>)>,
    outcomes: usize,
    requests: usize,
    messages_received: usize,
}

struct Sim {
    now: Instant,
    sides: [Side; 2], // 0 = client, 1 = server
    messages_sent: [usize; 2],
    /// When each side last received a byte.
    last_rx: [Instant; 2],
    /// Bytes towards this side vanish (a silent peer).
    black_hole: [bool; 2],
    closes: Vec<CloseReason>,
}

impl Sim {
    fn new(generation: Generation, keepalive: Option<KeepAlive>) -> Sim {
        let now = Instant::now();
        let side = |role| {
            let mut cfg = ConnectionConfig::new(role, generation);
            cfg.keepalive = keepalive;
            Side {
                conn: Connection::with_ids(cfg, ids(role, generation), now),
                inbound: Vec::new(),
                outstanding: HashMap::new(),
                outcomes: 0,
                requests: 0,
                messages_received: 0,
            }
        };
        Sim {
            now,
            sides: [side(Role::Client), side(Role::Server)],
            messages_sent: [0; 2],
            last_rx: [now; 2],
            black_hole: [false; 2],
            closes: Vec::new(),
        }
    }

    fn idx(from_client: bool) -> usize {
        if from_client {
            0
        } else {
            1
        }
    }

    /// Moves each side's output into the other's inbound queue.
    fn collect_output(&mut self) {
        for i in 0..2 {
            while let Some(b) = self.sides[i].conn.poll_transmit() {
                if !self.black_hole[1 - i] {
                    self.sides[1 - i].inbound.extend_from_slice(&b);
                }
            }
        }
    }

    /// Handles every event of both sides: requests answered (echo), outcomes checked.
    fn process_events(&mut self) -> Result<(), TestCaseError> {
        for i in 0..2 {
            while let Some(ev) = self.sides[i].conn.poll_event() {
                let now = self.now;
                let side = &mut self.sides[i];
                match ev {
                    Event::Message(f) => {
                        // 301: a reply that came after its request timed out.
                        if f.message_type != 301 {
                            side.messages_received += 1;
                        }
                        if f.message_type == 300 && f.content.first() == Some(&ANSWER) {
                            side.conn
                                .send(301, f.request_id, &f.content)
                                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        }
                    }
                    Event::Reply { request_id, frame } => {
                        let (deadline, expected) =
                            side.outstanding.remove(&request_id).ok_or_else(|| {
                                TestCaseError::fail(format!(
                                    "reply to unknown or finished request {request_id}"
                                ))
                            })?;
                        prop_assert!(now < deadline, "reply after the deadline");
                        match expected {
                            Some(content) => prop_assert_eq!(&frame.content[..], &content[..]),
                            None => prop_assert_eq!(frame.message_type, PONG.code()),
                        }
                        side.outcomes += 1;
                    }
                    Event::TimedOut { request_id } => {
                        let (deadline, _) =
                            side.outstanding.remove(&request_id).ok_or_else(|| {
                                TestCaseError::fail(format!(
                                    "timeout of unknown or finished request {request_id}"
                                ))
                            })?;
                        prop_assert_eq!(now, deadline, "a timeout fires exactly at its deadline");
                        side.outcomes += 1;
                    }
                    Event::Abandoned { request_id } => {
                        side.outstanding.remove(&request_id).ok_or_else(|| {
                            TestCaseError::fail(format!("abandoned unknown request {request_id}"))
                        })?;
                        side.outcomes += 1;
                    }
                    Event::Closed(r) => self.closes.push(r),
                    other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                }
            }
        }
        self.collect_output();
        Ok(())
    }

    /// Moves the clock to `target`, stopping at every timer on the way.
    fn advance_to(&mut self, target: Instant) -> Result<(), TestCaseError> {
        let mut stuck = 0;
        loop {
            let next = self
                .sides
                .iter()
                .filter_map(|s| s.conn.poll_timeout())
                .min();
            match next {
                Some(t) if t <= target => {
                    // handle_timeout must move the timer on (or the caller would spin).
                    stuck = if t <= self.now { stuck + 1 } else { 0 };
                    prop_assert!(
                        stuck < 4,
                        "poll_timeout stays at {:?} after handle_timeout",
                        t
                    );
                    self.now = self.now.max(t);
                    for s in &mut self.sides {
                        if s.conn.poll_timeout().is_some_and(|d| d <= self.now) {
                            s.conn.handle_timeout(self.now);
                        }
                    }
                    self.process_events()?;
                }
                _ => break,
            }
        }
        self.now = target;
        Ok(())
    }

    fn deliver(&mut self, to: usize, max: usize) -> Result<(), TestCaseError> {
        let n = max.min(self.sides[to].inbound.len());
        let chunk: Vec<u8> = self.sides[to].inbound.drain(..n).collect();
        if !chunk.is_empty() {
            self.last_rx[to] = self.now;
        }
        self.sides[to].conn.handle_input(self.now, &chunk);
        self.process_events()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match *op {
            Op::Request {
                from_client,
                len,
                timeout_ms,
                answer,
            } => {
                let i = Self::idx(from_client);
                let mut content = vec![if answer { ANSWER } else { SILENT }; 1];
                content.extend((0..len).map(|k| k as u8));
                let timeout = Duration::from_millis(timeout_ms);
                let side = &mut self.sides[i];
                if let Ok(id) = side.conn.request(now, 300, &content, timeout) {
                    prop_assert!(side
                        .outstanding
                        .insert(id, (now + timeout, Some(content)))
                        .is_none());
                    side.requests += 1;
                    self.messages_sent[i] += 1;
                }
            }
            Op::Message { from_client, len } => {
                let i = Self::idx(from_client);
                let content = vec![SILENT; len + 1];
                if self.sides[i].conn.send_message(400, &content).is_ok() {
                    self.messages_sent[i] += 1;
                }
            }
            Op::Ping {
                from_client,
                timeout_ms,
            } => {
                let side = &mut self.sides[Self::idx(from_client)];
                let timeout = Duration::from_millis(timeout_ms);
                if let Ok(id) = side.conn.ping(now, timeout) {
                    prop_assert!(side.outstanding.insert(id, (now + timeout, None)).is_none());
                    side.requests += 1;
                }
            }
            Op::Deliver { to_client, max } => self.deliver(Self::idx(to_client), max)?,
            Op::Advance { ms } => self.advance_to(now + Duration::from_millis(ms))?,
        }
        self.collect_output();
        Ok(())
    }

    /// Delivers everything in flight, in pieces of `piece` bytes, until both sides are quiet.
    fn flush(&mut self, piece: usize) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if self.sides.iter().all(|s| s.inbound.is_empty()) {
                return Ok(());
            }
            for to in 0..2 {
                if !self.sides[to].inbound.is_empty() {
                    self.deliver(to, piece)?;
                }
            }
        }
        Err(TestCaseError::fail("the pair never went quiet"))
    }
}

fn generation() -> impl Strategy<Value = Generation> {
    prop_oneof![Just(Generation::Gen3), Just(Generation::Gen1)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every request gets exactly one outcome (its reply, before its deadline, or its timeout,
    /// exactly at its deadline), whatever the message sequence, the chunking and the clock.
    #[test]
    fn every_request_gets_exactly_one_outcome(
        generation in generation(),
        ops in prop::collection::vec(op(), 1..120),
        piece in 1usize..64,
    ) {
        let mut sim = Sim::new(generation, None);
        for op in &ops {
            sim.apply(op)?;
        }
        sim.flush(piece)?;
        // Requests still waiting have answers in no queue: all of them time out.
        let last = sim.sides.iter().flat_map(|s| s.outstanding.values().map(|(d, _)| *d)).max();
        if let Some(last) = last {
            sim.advance_to(last)?;
            sim.flush(piece)?;
        }
        for (i, side) in sim.sides.iter().enumerate() {
            prop_assert!(side.outstanding.is_empty(), "side {} left {:?}", i, side.outstanding.keys());
            prop_assert_eq!(side.outcomes, side.requests);
            prop_assert_eq!(side.conn.pending_requests(), 0);
        }
        // Nothing was lost or invented: each side got every message and request of the other.
        prop_assert_eq!(sim.sides[1].messages_received, sim.messages_sent[0]);
        prop_assert_eq!(sim.sides[0].messages_received, sim.messages_sent[1]);
        prop_assert!(sim.closes.is_empty(), "{:?}", sim.closes);
    }

    /// With keep-alive on and both sides delivering, idle periods of any length are bridged by
    /// PINGs; a peer whose bytes stop arriving is closed exactly `timeout` after the last byte.
    #[test]
    fn keepalive_bridges_idle_links_and_closes_silent_ones(
        generation in generation(),
        ops in prop::collection::vec(op(), 1..60),
        interval_ms in 100u64..2_000,
        extra_ms in 1u64..2_000,
        silence_ms in 0u64..20_000,
    ) {
        let ka = KeepAlive::new(Duration::from_millis(interval_ms), Duration::from_millis(interval_ms + extra_ms));
        let mut sim = Sim::new(generation, Some(ka));
        for op in &ops {
            // Deliver everything after each step: the link is healthy, only idle.
            if let Op::Advance { ms } = op {
                let target = sim.now + Duration::from_millis(*ms);
                while sim.now < target {
                    let step = target.min(
                        sim.sides.iter().filter_map(|s| s.conn.poll_timeout()).min().unwrap_or(target),
                    ).max(sim.now);
                    sim.advance_to(step)?;
                    sim.flush(usize::MAX)?;
                    if step == target { break; }
                }
            } else {
                sim.apply(op)?;
                sim.flush(usize::MAX)?;
            }
        }
        prop_assert!(sim.closes.is_empty(), "a healthy link was closed: {:?}", sim.closes);
        // The client's bytes now vanish; the server hears nothing from here on.
        let last_heard = sim.last_rx[1];
        let end = sim.now + Duration::from_millis(silence_ms);
        sim.black_hole[1] = true;
        loop {
            let next = sim.sides.iter().filter_map(|s| s.conn.poll_timeout()).min();
            let Some(t) = next.filter(|t| *t <= end) else { break };
            sim.advance_to(t)?;
            sim.flush(usize::MAX)?;
        }
        sim.advance_to(end)?;
        let server_closed = sim.sides[1].conn.close_reason().cloned();
        if end >= last_heard + ka.timeout {
            prop_assert_eq!(
                server_closed,
                Some(CloseReason::KeepAliveTimeout { idle: ka.timeout })
            );
        } else {
            prop_assert_eq!(server_closed, None);
        }
        prop_assert!(!sim.sides[1].conn.is_closed() || sim.sides[1].outstanding.is_empty());
    }

    /// A corrupted byte in flight closes the receiver with a protocol reason (never a panic, never
    /// a frame with wrong content delivered as valid).
    #[test]
    fn corruption_closes_with_a_protocol_reason(
        len in 0usize..40,
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let t0 = Instant::now();
        let mut c = conn(Role::Client, Generation::Gen3, t0);
        let mut s = conn(Role::Server, Generation::Gen3, t0);
        let content = vec![7u8; len];
        c.send(300, 5, &content).unwrap();
        c.send(300, 6, &content).unwrap();
        let mut wire = c.poll_transmit().unwrap().to_vec();
        let i = at.index(wire.len() / 2); // inside the first frame
        wire[i] ^= flip;
        s.handle_input(t0, &wire);
        s.handle_eof();
        let ev = events(&mut s);
        for e in &ev {
            if let Event::Message(f) = e {
                // Only a flip of the (unchecked) flags byte, or of the type/id, can still decode.
                prop_assert_eq!(&f.content[..], &content[..]);
            }
        }
        match ev.last() {
            Some(Event::Closed(CloseReason::Protocol(_) | CloseReason::ReservedType { .. } | CloseReason::PeerClosed)) => {}
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

#[test]
fn huge_timeouts_do_not_overflow_the_clock() {
    let t0 = Instant::now();
    let mut cfg = ConnectionConfig::new(Role::Client, Generation::Gen3);
    cfg.keepalive = Some(KeepAlive::new(Duration::MAX, Duration::MAX));
    let mut c = Connection::new(cfg, t0);
    let id = c.request(t0, 200, b"", Duration::MAX).unwrap();
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(t0 + 1000 * SEC);
    assert_eq!(c.poll_event(), None);
    c.close();
    assert_eq!(c.poll_event(), Some(Event::Abandoned { request_id: id }));
}

#[test]
fn frames_survive_one_byte_chunks() {
    let t0 = Instant::now();
    let mut c = conn(Role::Client, Generation::Gen1, t0);
    let mut s = conn(Role::Server, Generation::Gen1, t0);
    let id = c.request(t0, 300, b"one byte at a time", SEC).unwrap();
    let wire = c.poll_transmit().unwrap();
    for b in wire.iter() {
        s.handle_input(t0, &[*b]);
    }
    let Some(Event::Message(Frame { request_id, .. })) = s.poll_event() else {
        panic!("no frame")
    };
    assert_eq!(request_id, id);
}
