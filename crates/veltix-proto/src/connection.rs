//! A sans-I/O Veltix connection (after the handshake), in the style of `quinn-proto`.
//!
//! [`Connection`] owns everything about one established link that does not need a socket or a
//! clock: the frame decoder, the reply waiters (a [`PendingTable`] whose deadlines come from the
//! `now` the caller passes in), PING answering, keep-alive, the size and type checks, and why the
//! connection closed. The caller moves bytes and time in and out:
//!
//! - received bytes go to [`Connection::handle_input`], the end of the stream to
//!   [`Connection::handle_eof`];
//! - [`Connection::poll_transmit`] gives the bytes to write;
//! - [`Connection::poll_event`] gives [`Event`]s: frames for the handlers, replies matched to
//!   their requests, requests that timed out, and the [`CloseReason`];
//! - [`Connection::poll_timeout`] says when to call [`Connection::handle_timeout`] next.
//!
//! Its rules are the shared pieces the `veltix` runtime's engine calls too:
//! [`check_outgoing`] for every send, [`classify`] for
//! every received frame, and a [`KeepAliveTimer`] for keep-alive.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::decoder::{Decoded, Decoder, DecoderConfig, Rejection};
use crate::frame::{encode_parts, Frame, Generation};
use crate::handshake::Role;
use crate::ids::{IdAllocator, PendingTable};
pub use crate::keepalive::KeepAlive;
use crate::keepalive::{KeepAliveAction, KeepAliveTimer};
use crate::rules::{check_outgoing, classify, Inbound};
use crate::types::{TypeSet, PING, PONG};
use crate::Error;

/// Settings of a [`Connection`].
///
/// ```
/// use std::time::Duration;
/// use veltix_proto::{ConnectionConfig, Generation, KeepAlive, Role};
/// let mut cfg = ConnectionConfig::new(Role::Client, Generation::Gen3);
/// cfg.keepalive = Some(KeepAlive::new(Duration::from_secs(5), Duration::from_secs(15)));
/// assert_eq!(cfg.max_message_size, 10 * 1024 * 1024);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Which end we are (decides the Gen 3 request id range).
    pub role: Role,
    /// The wire generation.
    pub generation: Generation,
    /// Largest frame, header included, accepted and sent.
    pub max_message_size: usize,
    /// Type codes accepted on receive (`None`: all); see [`DecoderConfig::known_types`].
    pub known_types: Option<TypeSet>,
    /// Keep-alive policy (`None`: off).
    pub keepalive: Option<KeepAlive>,
}

impl ConnectionConfig {
    /// Python-like defaults: 10 MiB frames, every type accepted, no keep-alive.
    pub fn new(role: Role, generation: Generation) -> Self {
        ConnectionConfig {
            role,
            generation,
            max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
            known_types: None,
            keepalive: None,
        }
    }
}

/// Why a [`Connection`] closed.
///
/// ```
/// use std::time::Duration;
/// use veltix_proto::CloseReason;
/// let r = CloseReason::KeepAliveTimeout { idle: Duration::from_secs(15) };
/// assert_eq!(r.to_string(), "the peer sent nothing for 15s (keep-alive timeout)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Connection::close`] was called.
    Local,
    /// The peer ended the stream between two frames.
    PeerClosed,
    /// The peer sent a frame the decoder refused (bad magic, oversize, CRC, unknown type,
    /// or the stream ended inside a frame).
    Protocol(Rejection),
    /// The peer sent a reserved type code (`0..=199`) that is not a system type of the
    /// generation.
    ReservedType {
        /// The code.
        message_type: u16,
        /// The frame's request id.
        request_id: u32,
    },
    /// Nothing was received for the keep-alive timeout.
    KeepAliveTimeout {
        /// How long the peer was silent.
        idle: Duration,
    },
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Local => f.write_str("the connection was closed locally"),
            CloseReason::PeerClosed => f.write_str("the peer closed the connection"),
            CloseReason::Protocol(r) => write!(f, "the peer violated the protocol: {r}"),
            CloseReason::ReservedType {
                message_type,
                request_id,
            } => write!(
                f,
                "the peer sent reserved message type {message_type} (request id {request_id})"
            ),
            CloseReason::KeepAliveTimeout { idle } => {
                write!(f, "the peer sent nothing for {idle:?} (keep-alive timeout)")
            }
        }
    }
}

/// What a [`Connection`] reports, in order, through [`Connection::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A frame for the handlers (no request of ours waits for its id).
    Message(Frame),
    /// The reply to one of our requests (or the PONG answering [`Connection::ping`]).
    Reply {
        /// The id [`Connection::request`] returned.
        request_id: u32,
        /// The reply.
        frame: Frame,
    },
    /// No reply arrived before the request's deadline.
    TimedOut {
        /// The id [`Connection::request`] returned.
        request_id: u32,
    },
    /// The connection closed before the request got its reply.
    Abandoned {
        /// The id [`Connection::request`] returned.
        request_id: u32,
    },
    /// The connection closed; the last event.
    Closed(CloseReason),
}

/// Counters of a [`Connection`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Valid frames received.
    pub frames_in: u64,
    /// PINGs answered.
    pub pings_answered: u64,
    /// Keep-alive PINGs sent.
    pub keepalive_pings: u64,
    /// PONGs (or replies) that matched no request: dropped.
    pub stray_pongs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    Request,
    KeepAlive,
}

/// One established Veltix connection, without I/O.
///
/// ```
/// use std::time::{Duration, Instant};
/// use veltix_proto::{Connection, ConnectionConfig, Event, Generation, Role};
/// let t0 = Instant::now();
/// let mut client = Connection::new(ConnectionConfig::new(Role::Client, Generation::Gen3), t0);
/// let mut server = Connection::new(ConnectionConfig::new(Role::Server, Generation::Gen3), t0);
///
/// let id = client.request(t0, 200, &b"hello"[..], Duration::from_secs(5))?;
/// let wire = client.poll_transmit().unwrap();
/// server.handle_input(t0, &wire);
/// let Some(Event::Message(req)) = server.poll_event() else { panic!() };
/// server.send(201, req.request_id, &b"world"[..])?; // a reply carries the request's id
/// client.handle_input(t0, &server.poll_transmit().unwrap());
/// match client.poll_event() {
///     Some(Event::Reply { request_id, frame }) => {
///         assert_eq!(request_id, id);
///         assert_eq!(&frame.content[..], b"world");
///     }
///     other => panic!("{other:?}"),
/// }
///
/// // A PING is answered without the caller's help; an unanswered request times out.
/// let ping = client.ping(t0, Duration::from_secs(1))?;
/// server.handle_input(t0, &client.poll_transmit().unwrap());
/// assert_eq!(server.poll_event(), None);
/// client.handle_input(t0, &server.poll_transmit().unwrap()); // the PONG
/// assert!(matches!(client.poll_event(), Some(Event::Reply { request_id, .. }) if request_id == ping));
/// let lost = client.request(t0, 200, &b"?"[..], Duration::from_secs(5))?;
/// assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(5)));
/// client.handle_timeout(t0 + Duration::from_secs(5));
/// assert_eq!(client.poll_event(), Some(Event::TimedOut { request_id: lost }));
/// # Ok::<(), veltix_proto::Error>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    decoder: Decoder,
    pending: PendingTable<Waiter>,
    ids: IdAllocator,
    out: BytesMut,
    events: VecDeque<Event>,
    started: Instant,
    /// The latest `now` the caller passed in.
    clock: Instant,
    /// `Some` when keep-alive is on.
    keepalive: Option<KeepAliveTimer>,
    closed: Option<CloseReason>,
    stats: ConnectionStats,
}

impl Connection {
    /// A connection whose handshake completed at `now`, with the request ids
    /// [`IdAllocator::for_role`] gives its role and generation.
    pub fn new(config: ConnectionConfig, now: Instant) -> Self {
        let ids = IdAllocator::for_role(config.generation, config.role == Role::Server);
        Self::with_ids(config, ids, now)
    }

    /// A connection with a caller-chosen id allocator (e.g. [`IdAllocator::random_seeded`]
    /// for reproducible Gen 1 tests, or a server's configured id window).
    pub fn with_ids(config: ConnectionConfig, ids: IdAllocator, now: Instant) -> Self {
        let decoder = Decoder::new(DecoderConfig {
            generation: config.generation,
            max_message_size: config.max_message_size,
            known_types: config.known_types.clone(),
        });
        let keepalive = config.keepalive.map(|ka| KeepAliveTimer::new(ka, now));
        Connection {
            config,
            decoder,
            pending: PendingTable::new(),
            ids,
            out: BytesMut::new(),
            events: VecDeque::new(),
            started: now,
            clock: now,
            keepalive,
            closed: None,
            stats: ConnectionStats::default(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// The decoder's counters (bytes in, rejections...).
    pub fn decoder_stats(&self) -> &crate::DecoderStats {
        self.decoder.stats()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    /// True once closed (queued bytes may still be waiting in [`poll_transmit`](Self::poll_transmit)).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Number of requests waiting for a reply (keep-alive PINGs included).
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    fn check_open(&self) -> Result<(), Error> {
        match &self.closed {
            Some(r) => Err(Error::ConnectionClosed(r.clone())),
            None => Ok(()),
        }
    }

    /// Refuses what the peer would drop (see [`check_outgoing`]).
    fn check_outgoing(&self, message_type: u16, content_len: usize) -> Result<(), Error> {
        let c = &self.config;
        check_outgoing(c.generation, c.max_message_size, message_type, content_len)
    }

    fn queue(&mut self, message_type: u16, request_id: u32, content: &[u8]) -> Result<(), Error> {
        let extra = match self.config.generation {
            Generation::Gen3 => 0,
            // Gen 1 carries the sender's clock in ms; ours starts at the handshake.
            Generation::Gen1 => self.clock.duration_since(self.started).as_millis() as u64,
        };
        encode_parts(
            self.config.generation,
            message_type,
            request_id,
            extra,
            content,
            &mut self.out,
        )?;
        self.stats.frames_out += 1;
        Ok(())
    }

    /// Queues a frame that expects no reply (a message, or a reply carrying the request's id).
    pub fn send(
        &mut self,
        message_type: u16,
        request_id: u32,
        content: impl AsRef<[u8]>,
    ) -> Result<(), Error> {
        self.check_open()?;
        let content = content.as_ref();
        self.check_outgoing(message_type, content.len())?;
        self.queue(message_type, request_id, content)
    }

    /// Queues a message under a fresh request id (one no request of ours waits for, so the
    /// peer's answer, if any, arrives as an [`Event::Message`]); returns that id.
    ///
    /// ```
    /// use std::time::Instant;
    /// use veltix_proto::{Connection, ConnectionConfig, Generation, Role};
    /// let mut c = Connection::new(ConnectionConfig::new(Role::Server, Generation::Gen3), Instant::now());
    /// assert_eq!(c.send_message(200, b"news")?, 32_768);
    /// assert_eq!(c.send_message(200, b"more")?, 32_769);
    /// # Ok::<(), veltix_proto::Error>(())
    /// ```
    pub fn send_message(
        &mut self,
        message_type: u16,
        content: impl AsRef<[u8]>,
    ) -> Result<u32, Error> {
        self.check_open()?;
        let content = content.as_ref();
        self.check_outgoing(message_type, content.len())?;
        let pending = &self.pending;
        let id = self.ids.next(|id| pending.contains(id))?;
        self.queue(message_type, id, content)?;
        Ok(id)
    }

    /// Queues a request and registers its waiter: exactly one of [`Event::Reply`],
    /// [`Event::TimedOut`] (at `now + timeout`; never if that overflows the clock) or
    /// [`Event::Abandoned`] will follow for the returned id.
    pub fn request(
        &mut self,
        now: Instant,
        message_type: u16,
        content: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<u32, Error> {
        self.check_open()?;
        let content = content.as_ref();
        self.check_outgoing(message_type, content.len())?;
        self.tick(now);
        self.register_and_queue(
            now.checked_add(timeout),
            Waiter::Request,
            message_type,
            content,
        )
    }

    /// Sends a PING; its PONG arrives as the [`Event::Reply`] of the returned id.
    pub fn ping(&mut self, now: Instant, timeout: Duration) -> Result<u32, Error> {
        self.request(now, PING.code(), [], timeout)
    }

    fn tick(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
    }

    fn register_and_queue(
        &mut self,
        deadline: Option<Instant>,
        waiter: Waiter,
        message_type: u16,
        content: &[u8],
    ) -> Result<u32, Error> {
        let pending = &self.pending;
        let id = self.ids.next(|id| pending.contains(id))?;
        match deadline {
            Some(d) => self.pending.insert(id, d, waiter)?,
            None => self.pending.insert_untimed(id, waiter)?,
        }
        if let Err(e) = self.queue(message_type, id, content) {
            self.pending.remove(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Feeds bytes received at `now`. Frames, replies and a possible close come out of
    /// [`poll_event`](Self::poll_event); PONGs to write out of [`poll_transmit`](Self::poll_transmit).
    /// Ignored once closed.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.closed.is_some() || data.is_empty() {
            return;
        }
        self.tick(now);
        if let Some(ka) = &mut self.keepalive {
            ka.on_receive(now);
        }
        self.decoder.feed(data);
        while self.closed.is_none() {
            match self.decoder.decode() {
                None => break,
                Some(Decoded::Rejected(r)) => self.close_with(CloseReason::Protocol(r)),
                Some(Decoded::Frame(f)) => self.route(f),
            }
        }
    }

    fn route(&mut self, f: Frame) {
        self.stats.frames_in += 1;
        let pending = &mut self.pending;
        match classify(self.config.generation, f.message_type, f.request_id, |id| {
            pending.remove(id)
        }) {
            Inbound::Ping => {
                // A system type: always fits, never fails.
                if self.queue(PONG.code(), f.request_id, &[]).is_ok() {
                    self.stats.pings_answered += 1;
                }
            }
            Inbound::Reserved => self.close_with(CloseReason::ReservedType {
                message_type: f.message_type,
                request_id: f.request_id,
            }),
            Inbound::Reply(Waiter::Request) => self.events.push_back(Event::Reply {
                request_id: f.request_id,
                frame: f,
            }),
            Inbound::Reply(Waiter::KeepAlive) => {}
            Inbound::StrayPong => self.stats.stray_pongs += 1,
            Inbound::Message => self.events.push_back(Event::Message(f)),
        }
    }

    /// The peer ended the stream: a partial frame left over is a protocol violation.
    pub fn handle_eof(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let reason = match self.decoder.finish() {
            Some(r) => CloseReason::Protocol(r),
            None => CloseReason::PeerClosed,
        };
        self.close_with(reason);
    }

    /// Closes the connection locally: pending requests are abandoned. Bytes already queued
    /// stay available from [`poll_transmit`](Self::poll_transmit) (flush them, then shut down).
    pub fn close(&mut self) {
        if self.closed.is_none() {
            self.close_with(CloseReason::Local);
        }
    }

    fn close_with(&mut self, reason: CloseReason) {
        let mut abandoned: Vec<(u32, Waiter)> = self.pending.drain().collect();
        abandoned.sort_unstable_by_key(|(id, _)| *id);
        for (id, w) in abandoned {
            if w == Waiter::Request {
                self.events.push_back(Event::Abandoned { request_id: id });
            }
        }
        self.events.push_back(Event::Closed(reason.clone()));
        self.closed = Some(reason);
    }

    /// Runs the timers due at `now`: request deadlines, keep-alive PINGs and the keep-alive
    /// close. Call it at (or after) [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.tick(now);
        for (id, w) in self.pending.expire(now) {
            if w == Waiter::Request {
                self.events.push_back(Event::TimedOut { request_id: id });
            }
        }
        let Some(ka) = &mut self.keepalive else {
            return;
        };
        let (action, deadline) = (ka.poll(now), ka.close_deadline());
        match action {
            KeepAliveAction::Nothing => {}
            KeepAliveAction::Close { idle } => {
                self.close_with(CloseReason::KeepAliveTimeout { idle })
            }
            KeepAliveAction::Ping => {
                if self
                    .register_and_queue(deadline, Waiter::KeepAlive, PING.code(), &[])
                    .is_ok()
                {
                    self.stats.keepalive_pings += 1;
                }
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let keepalive = self
            .keepalive
            .as_ref()
            .and_then(KeepAliveTimer::next_deadline);
        crate::keepalive::earliest(self.pending.next_deadline(), keepalive)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Everything queued for writing, as one buffer; `None` when there is nothing to write.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        Some(self.out.split().freeze())
    }
}
