//! One live connection: the outbound buffer and its writer, the reader feeding the decoder, the
//! waiters of `send_and_wait`/ping, and keep-alive. Shared by the server and the client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Buf;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use veltix_proto::{
    check_outgoing, classify, encode_parts, Decoded, Decoder, DecoderConfig, Frame, Generation,
    Handshake, IdAllocator, Inbound, KeepAliveAction, KeepAliveTimer, PendingTable, Rejection,
    PING, PONG,
};

use crate::config::{PerformanceMode, Settings};
use crate::observe::Event;
use crate::pool::SerialQueue;
use crate::stats::{add, finish_throttled, throttled, Counters, Throttle};
use crate::{DisconnectCause, Error, Request, Response, Result};

mod tls;
pub(crate) use tls::{drive_transport, Transport};

use crate::util::lock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    Run,
    /// Stop reading; flush what is queued, then close.
    Close,
    /// Stop everything now.
    Abort,
}

enum Waiter {
    /// A blocking `send_and_wait`/ping: untimed in the table (see `Conn::request_blocking`).
    Sync(std::sync::mpsc::SyncSender<Response>),
    /// An async `send_and_wait`/ping: registered with its deadline; the connection's timer
    /// task (see `timer_loop`) sends it [`AsyncReply::TimedOut`] when the deadline passes.
    Async(oneshot::Sender<AsyncReply>),
    /// Keep-alive PINGs (untimed): the PONG is absorbed.
    Ignore,
}

/// What an async waiter receives.
enum AsyncReply {
    Reply(Response),
    /// Its deadline passed first (the id is already released).
    TimedOut,
}

/// The reply waiters: `veltix_proto`'s table with the cheap integer hasher. Async waiters carry
/// their deadline; blocking waiters and keep-alive PINGs are untimed.
struct Pending {
    waiters: PendingTable<Waiter, std::hash::BuildHasherDefault<crate::handlers::CodeHasher>>,
    ids: IdAllocator,
    closed: bool,
    /// When the timer task will next look at the table (`None`: not before it is woken). A
    /// waiter registered with an earlier deadline wakes it (`Conn::timer`); with uniform
    /// timeouts a new deadline is never earlier, so the hot path costs no wake-up.
    sweep_at: Option<std::time::Instant>,
    /// The timer task of a connection without keep-alive (see [`LazyTimer`]).
    timer: LazyTimer,
}

/// A connection with keep-alive needs its timer task from the start (`supervise` spawns it);
/// one without needs it only for the deadlines of async requests, which most connections never
/// make. So there it is spawned by the first async request (measured: a timer task per
/// connection cost about 1.3 KB per pair of ends in the Python memory benchmark).
enum LazyTimer {
    /// Not driving yet: `supervise` arms it (and spawns at once if a request already waits).
    /// Stays so with keep-alive, whose timer task `supervise` owns.
    NotDriving,
    /// Driving, no timed waiter so far: the first one spawns the task on this runtime.
    Armed(tokio::runtime::Handle),
    /// The task runs; dropping the guard aborts it.
    Running { _task: AbortOnDrop<CloseReason> },
    /// The connection's supervisor ended: never spawned again.
    Ended,
}

/// The receiving side of a connection: shared by the reader task and a blocking
/// `send_and_wait`/ping caller that reads the socket itself while it waits (see
/// `Conn::read_for_waiter`), so a reply reaches the waiting thread without a hop through the
/// I/O thread.
struct Rx {
    /// `None` before `drive` starts and after it ends.
    decoder: Option<Decoder>,
    /// The socket (its write half owns the shared descriptor), for the waiter's reads.
    stream: Option<Arc<OwnedWriteHalf>>,
    /// Frames a waiter decoded that are neither replies nor PINGs, in arrival order: the reader
    /// task queues them for the handlers before decoding anything else.
    backlog: Vec<Frame>,
    /// How the connection ended, when a waiter found out (read error, refused frame).
    end: Option<CloseReason>,
    /// The reader task stopped reading because handlers are behind: waiters must not read.
    paused: bool,
}

/// A waiter stops reading for the reader task once this many frames wait in `Rx::backlog`.
const MAX_BACKLOG: usize = 1024;

/// How many replies the reader task hands to async waiters in one pass before it yields, so
/// that the woken requesters run and their next requests are written before it decodes the
/// rest (see `Reading::before_read`).
///
/// Without it, one read of 64 replies wakes 64 requesters whose 64 next requests leave in one
/// write once all are decoded: client and server then take turns, each idle while the other
/// works on the whole batch. Passes of 16 keep both ends busy: `veltix bench reqrep` (64 in
/// flight, one connection, current-thread runtime) went from a median of 414k to 689k req/s
/// (BENCHMARKS.md, "Replies in passes of 16"). Blocking waiters are OS threads that run at
/// once; they do not count.
const REPLIES_PER_PASS: usize = 16;

/// What one `Conn::decode_buffered` pass left.
struct Pass {
    /// The decoder refused a frame: how the connection must end.
    end: Option<CloseReason>,
    /// The pass stopped at its limit of replies: frames may still be buffered.
    full: bool,
}

struct Outbox {
    buf: BytesMut,
    closing: bool,
    /// The writer task owns the socket's write side right now (a batch is in flight).
    writing: bool,
    /// A sending thread owns the socket's write side right now (an inline write, see `enqueue`).
    inline_active: bool,
    /// The socket, while the connection runs: senders may write to it directly (see `enqueue`).
    stream: Option<Arc<OwnedWriteHalf>>,
    /// `Balanced` mode's burst detector: the latest of when a send last found the link idle,
    /// when an inline write ended and when the writer task last emptied the buffer. Sends that
    /// find data queued do not read the clock: the writer's time covers them.
    last_activity: Option<std::time::Instant>,
    /// A handler batch appended frames without writing or waking the writer (see [`Batch`]).
    held: bool,
    /// Frames in `buf` (for [`Counters::frames_out`], counted when they are taken for writing).
    frames: u64,
}

thread_local! {
    /// The address of the connection whose handler batch is running on this thread with more
    /// of its messages behind the current one (0: none). Compared, never dereferenced.
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A batch of handlers for messages of one connection, run in order on a pool thread. While a
/// handler has more messages of the same batch behind it, what it sends to its own connection
/// is only appended to the outbound buffer: no system call, no wake-up of the writer task. The
/// frames are written together, from this thread, before the batch's last handler runs (and
/// when the batch ends), so pipelined requests are answered with one write instead of one
/// write or one wake-up each. The last handler of a batch (a lone message, or a slow handler
/// that sends progress messages) sends as usual, and so do `send_and_wait` and ping.
pub(crate) struct Batch<'a> {
    conn: &'a Conn,
}

impl Batch<'_> {
    /// Before running the next handler: `more` says whether other messages of the batch follow.
    pub(crate) fn next(&self, more: bool) {
        if more {
            HELD.with(|h| h.set(self.conn as *const Conn as usize));
        } else {
            HELD.with(|h| h.set(0));
            self.conn.release_held();
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.next(false);
    }
}

/// `Balanced` mode writes inline only when the link is idle (nothing queued, nobody writing) and
/// has been for at least this long (see `Outbox::last_activity`): isolated sends (a ping, a
/// request, its reply) skip the hand-off to the writer task, while send loops and many
/// concurrent senders (sends closer together than this) are coalesced by the writer task into
/// few large writes. A loop calling `send` has gaps well under 1 µs; a request/response exchange
/// has gaps of at least a round trip (15 µs and more on loopback).
const BURST_GAP: Duration = Duration::from_micros(5);

/// How long a blocking `send_and_wait`/ping polls for its reply before parking (see
/// `Conn::spin_for_reply`): a little more than a loopback round trip with a veltix peer.
const SPIN: Duration = Duration::from_micros(50);

/// The largest read the reader grows to under sustained input (see `read_loop`).
const MAX_READ: usize = 256 * 1024;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// The peer closed (EOF).
    PeerClosed,
    /// Closed locally (close_client, close_all, disconnect).
    Local,
    /// Read or write error.
    Io(std::io::Error),
    /// The peer sent a frame we refuse.
    Protocol(Rejection),
    /// Keep-alive saw no traffic for its timeout.
    KeepAliveTimeout(Duration),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::Protocol(r) => write!(f, "protocol violation: {r}"),
            CloseReason::KeepAliveTimeout(d) => write!(f, "keep-alive: nothing received for {d:?}"),
        }
    }
}

impl CloseReason {
    /// The public cause this ending records (see [`Conn::cause`]).
    pub(crate) fn cause(&self) -> DisconnectCause {
        match self {
            CloseReason::PeerClosed => DisconnectCause::PeerClosed,
            CloseReason::Local => DisconnectCause::ClosedLocally,
            CloseReason::Io(e) => DisconnectCause::Io(e.kind()),
            CloseReason::Protocol(_) => DisconnectCause::ProtocolViolation,
            CloseReason::KeepAliveTimeout(_) => DisconnectCause::KeepAliveTimeout,
        }
    }
}

/// Shared state of one connection. Cheap to share (`Arc`); all methods are thread-safe and
/// none blocks on the network.
pub(crate) struct Conn {
    pub(crate) peer: SocketAddr,
    pub(crate) settings: Settings,
    out: Mutex<Outbox>,
    out_notify: Notify,
    rx: Mutex<Rx>,
    /// Wakes the reader task when a blocking waiter left frames or an ending in `rx`.
    rx_notify: Notify,
    pending: Mutex<Pending>,
    /// `pending.waiters.len()`, readable without the lock: the reader skips the lock for every
    /// frame while nobody waits for a reply (the common case of plain sends).
    waiting: AtomicUsize,
    /// The reader task yielded after a full pass of replies (see [`REPLIES_PER_PASS`]): the
    /// requesters it woke ran before the writer, so the writer's next wake-up writes at once
    /// instead of yielding for more senders, which would let the next pass join and merge
    /// the passes back into one write.
    passing: AtomicBool,
    /// `out.closing`, readable without the lock (every client send checks it).
    closing: AtomicBool,
    /// The first cause of the connection's end (first writer wins), set before `closing` and
    /// before the waiters are failed: what every later send or wait reports.
    cause: OnceLock<DisconnectCause>,
    /// Wakes the timer task (`timer_loop`) for a deadline earlier than the one it sleeps on.
    timer: Notify,
    stop: watch::Sender<Stop>,
    started: std::time::Instant,
    /// When something was last received, in ns since `started`: stamped lock-free by whoever
    /// reads the socket (the reader task, a blocking waiter); the keep-alive rule itself is
    /// `veltix_proto`'s [`KeepAliveTimer`], run by the timer task on these stamps.
    last_rx_ns: AtomicU64,
    /// The owner's (server's or client's) counters.
    pub(crate) counters: Arc<Counters>,
    /// This connection's repeated events, logged at most once per second each.
    throttles: ConnThrottles,
}

/// The repeated events of one connection that are logged through a [`Throttle`].
#[derive(Debug, Default)]
struct ConnThrottles {
    queue_full: Throttle,
    pongs: Throttle,
    unrouted: Throttle,
    handler_errors: Throttle,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("peer", &self.peer).finish()
    }
}

impl Conn {
    pub(crate) fn new(
        peer: SocketAddr,
        settings: Settings,
        ids: IdAllocator,
        counters: Arc<Counters>,
    ) -> Arc<Conn> {
        Arc::new(Conn {
            peer,
            settings,
            out: Mutex::new(Outbox {
                buf: BytesMut::new(),
                closing: false,
                writing: false,
                inline_active: false,
                stream: None,
                last_activity: None,
                held: false,
                frames: 0,
            }),
            out_notify: Notify::new(),
            rx: Mutex::new(Rx {
                decoder: None,
                stream: None,
                backlog: Vec::new(),
                end: None,
                paused: false,
            }),
            rx_notify: Notify::new(),
            pending: Mutex::new(Pending {
                waiters: PendingTable::with_hasher(Default::default()),
                ids,
                closed: false,
                sweep_at: None,
                timer: LazyTimer::NotDriving,
            }),
            waiting: AtomicUsize::new(0),
            passing: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            cause: OnceLock::new(),
            timer: Notify::new(),
            stop: watch::channel(Stop::Run).0,
            started: std::time::Instant::now(),
            last_rx_ns: AtomicU64::new(0),
            counters,
            throttles: ConnThrottles::default(),
        })
    }

    /// Counts a refused send and logs it (a full queue at most once per second, see
    /// [`Throttle`]); returns the error for the caller.
    fn refused(&self, e: Error) -> Error {
        self.counters.send_refused(&e);
        if let Error::QueueFull { queued, limit } = &e {
            throttled!(
                self.throttles.queue_full,
                self.peer,
                summary: "dropped {count} sends to this peer in {secs} s: outbound queue full",
                "outbound queue full ({queued} bytes queued, limit {limit}): the peer is not \
                 reading; sends to it are dropped (summarised once per second)"
            );
        }
        e
    }

    /// Counts and logs (throttled) a received frame that no handler takes.
    pub(crate) fn unrouted(&self, msg: &Response) {
        add(&self.counters.dropped_unrouted, 1);
        throttled!(
            self.throttles.unrouted,
            self.peer,
            summary: "dropped {count} frames without a handler in {secs} s",
            "no handler for message type {} (id {}, {} bytes): dropped (repeats are summarised \
             once per second)",
            msg.message_type(),
            msg.request_id(),
            msg.content().len()
        );
    }

    /// Logs (throttled) an error returned by a handler of this connection. Refused sends are
    /// not logged again: [`Conn::refused`] logged them where they happened.
    pub(crate) fn handler_failed(&self, which: &dyn std::fmt::Display, e: &crate::HandlerError) {
        if e.is_refused_send() {
            return;
        }
        throttled!(
            self.throttles.handler_errors,
            self.peer,
            summary: "{count} handler errors in {secs} s",
            "{which} failed: {e} (repeats are summarised once per second)"
        );
    }

    /// Logs what the throttles still hold; called once when the connection ends.
    fn finish_throttles(&self) {
        let t = &self.throttles;
        finish_throttled!(t.queue_full, self.peer, summary: "dropped {count} sends to this peer in the last {secs} s: outbound queue full");
        finish_throttled!(t.pongs, self.peer, summary: "dropped {count} PONGs in the last {secs} s: outbound queue full");
        finish_throttled!(t.unrouted, self.peer, summary: "dropped {count} frames without a handler in the last {secs} s");
        finish_throttled!(t.handler_errors, self.peer, summary: "{count} handler errors in the last {secs} s");
    }

    /// True until the connection starts closing.
    pub(crate) fn is_open(&self) -> bool {
        !self.closing.load(Ordering::Acquire)
    }

    /// Records why the connection ends, unless a cause was recorded already (the first wins).
    fn record(&self, cause: DisconnectCause) {
        let _ = self.cause.set(cause);
    }

    /// Why the connection ended (or is ending): the first recorded cause. Only meaningful once it
    /// is closing; `ClosedLocally` if nothing was recorded (not reached: every close records).
    pub(crate) fn cause(&self) -> DisconnectCause {
        self.cause
            .get()
            .copied()
            .unwrap_or(DisconnectCause::ClosedLocally)
    }

    /// The error of a send or wait on this connection once it is closing.
    pub(crate) fn disconnected(&self) -> Error {
        Error::Disconnected(self.cause())
    }

    fn extra(&self) -> u64 {
        match self.settings.generation {
            Generation::Gen3 => 0,
            Generation::Gen1 => crate::rt::monotonic_ms(),
        }
    }

    /// Refuses what the peer would drop ([`veltix_proto::check_outgoing`]).
    fn check_outgoing(&self, message_type: u16, content_len: usize) -> Result<()> {
        let (g, max) = (self.settings.generation, self.settings.max_message_size);
        Ok(check_outgoing(g, max, message_type, content_len)?)
    }

    /// Appends `len` bytes written by `write` to the outbound buffer, unless the connection is
    /// closing or the queue is over its limit (one message larger than the limit still goes
    /// through when the queue is empty). Then writes them from this thread if the link is idle
    /// (see [`Conn::link_idle`]), else wakes the writer task; or does neither while a handler
    /// batch of this connection holds its replies (see [`Batch`]).
    fn enqueue(
        &self,
        len: usize,
        may_inline: bool,
        write: impl FnOnce(&mut BytesMut) -> Result<()>,
    ) -> Result<()> {
        let mut ob = lock(&self.out);
        if ob.closing {
            return Err(self.disconnected());
        }
        let queued = ob.buf.len();
        if queued > 0 && queued + len > self.settings.max_queued_bytes {
            return Err(Error::QueueFull {
                queued,
                limit: self.settings.max_queued_bytes,
            });
        }
        write(&mut ob.buf)?;
        ob.frames += 1;
        if may_inline && self.is_held() {
            ob.held = true;
            return Ok(());
        }
        // The clock is read only when an inline write is possible at all: in a burst the buffer
        // is rarely empty with the writer idle, so most sends skip it (it was 8 % of a 64 B
        // burst's profile when read on every send).
        let idle = may_inline
            && queued == 0
            && !ob.writing
            && !ob.inline_active
            && self.link_idle(&mut ob);
        self.write_or_wake(ob, idle);
        Ok(())
    }

    /// With the outbound buffer locked and non-empty: writes it from this thread when `inline`
    /// and nobody else is writing, else wakes the writer task.
    fn write_or_wake(&self, mut ob: MutexGuard<'_, Outbox>, inline: bool) {
        let inline = match &ob.stream {
            // Nobody writing: claim the socket and write from this thread instead of waking
            // the writer task.
            Some(stream) if inline && !ob.writing && !ob.inline_active => {
                let stream = stream.clone();
                ob.inline_active = true;
                add(&self.counters.frames_out, std::mem::take(&mut ob.frames));
                Some((stream, ob.buf.split()))
            }
            _ => None,
        };
        drop(ob);
        let Some((stream, mut data)) = inline else {
            self.out_notify.notify_one();
            return;
        };
        // The syscall happens outside the lock: other senders keep appending to `buf` meanwhile
        // (and the writer task leaves the socket alone while `inline_active`). A write error is
        // left for the writer task to find.
        if let Ok(n) = stream.try_write(&data) {
            add(&self.counters.bytes_out, n as u64);
            data.advance(n);
        }
        let wake = {
            let mut ob = lock(&self.out);
            ob.inline_active = false;
            self.note_write_end(&mut ob);
            if !data.is_empty() {
                // What the socket did not take goes before what others queued meanwhile.
                data.extend_from_slice(&ob.buf);
                ob.buf = data;
            }
            !ob.buf.is_empty() || ob.closing
        };
        if wake {
            self.out_notify.notify_one();
        }
    }

    /// True while a handler batch of this connection runs on this thread and holds its replies.
    fn is_held(&self) -> bool {
        HELD.with(|h| h.get()) == self as *const Conn as usize
    }

    /// Starts a handler batch of this connection on this thread (see [`Batch`]).
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch { conn: self }
    }

    /// Writes (or hands to the writer) what a handler batch held back.
    fn release_held(&self) {
        let mut ob = lock(&self.out);
        if !std::mem::take(&mut ob.held) || ob.buf.is_empty() {
            return;
        }
        let inline = self.settings.performance_mode != PerformanceMode::Low;
        self.write_or_wake(ob, inline);
    }

    /// `Balanced` mode's burst detector: the gap to the next send is measured from the end of
    /// the last write (inline or by the writer task), so a send loop whose every write takes
    /// longer than [`BURST_GAP`] is still seen as a burst.
    fn note_write_end(&self, ob: &mut Outbox) {
        if self.settings.performance_mode == PerformanceMode::Balanced {
            ob.last_activity = Some(std::time::Instant::now());
        }
    }

    /// Whether a send to an idle link may write inline: always in `High`, never in `Low`, and in
    /// `Balanced` when `last_activity` (the last idle check or write end) is at least
    /// [`BURST_GAP`] ago. Records this check's time.
    fn link_idle(&self, ob: &mut Outbox) -> bool {
        match self.settings.performance_mode {
            PerformanceMode::High => true,
            PerformanceMode::Low => false,
            PerformanceMode::Balanced => {
                let now = std::time::Instant::now();
                let last = ob.last_activity.replace(now);
                last.is_none_or(|t| now.duration_since(t) >= BURST_GAP)
            }
        }
    }

    /// Encodes a frame straight into the outbound buffer.
    fn push_frame(&self, message_type: u16, id: u32, content: &[u8]) -> Result<()> {
        self.push_frame_with(message_type, id, content, true)
    }

    /// A user's send: written inline only from outside a tokio runtime. On a runtime (the async
    /// face), the writer task is a task switch away on the same thread and coalesces what the
    /// tasks woken together send; inline writes there cost one system call per request
    /// (`veltix bench reqrep`, 64 tasks on one connection).
    fn push_user_frame(&self, message_type: u16, id: u32, content: &[u8]) -> Result<()> {
        let may_inline = tokio::runtime::Handle::try_current().is_err();
        self.push_frame_with(message_type, id, content, may_inline)
    }

    fn push_frame_with(
        &self,
        message_type: u16,
        id: u32,
        content: &[u8],
        may_inline: bool,
    ) -> Result<()> {
        let (g, extra) = (self.settings.generation, self.extra());
        self.enqueue(content.len(), may_inline, |buf| {
            Ok(encode_parts(g, message_type, id, extra, content, buf)?)
        })
    }

    /// Queues already-encoded frame bytes (broadcast encodes once for everyone). Never written
    /// inline: a broadcast to N clients would cost the broadcasting thread N system calls (one
    /// per recipient, measured 20x slower); the recipients' writer tasks do it in parallel.
    pub(crate) fn push_encoded(&self, bytes: &[u8]) -> Result<()> {
        self.enqueue(bytes.len(), false, |buf| {
            buf.extend_from_slice(bytes);
            Ok(())
        })
        .map_err(|e| self.refused(e))
    }

    fn next_id(p: &mut Pending) -> Result<u32> {
        let waiters = &p.waiters;
        Ok(p.ids.next(|id| waiters.contains(id))?)
    }

    /// Sends a request (allocating an id if it has none). Returns the id used.
    pub(crate) fn send(&self, req: &Request) -> Result<u32> {
        self.send_slice(req.message_type(), req.request_id(), req.content())
    }

    /// [`Conn::send`] from borrowed parts: the content is encoded straight into the outbox.
    pub(crate) fn send_slice(
        &self,
        message_type: u16,
        request_id: Option<u32>,
        content: &[u8],
    ) -> Result<u32> {
        self.check_outgoing(message_type, content.len())?;
        let id = match request_id {
            Some(id) => id,
            None => Self::next_id(&mut lock(&self.pending))?,
        };
        self.push_user_frame(message_type, id, content)
            .map_err(|e| self.refused(e))?;
        Ok(id)
    }

    /// Registers a waiter, with its deadline if it has one; wakes the timer task if that
    /// deadline is earlier than the one it sleeps on.
    fn register(
        self: &Arc<Self>,
        explicit: Option<u32>,
        waiter: Waiter,
        deadline: Option<std::time::Instant>,
    ) -> Result<u32> {
        let mut p = lock(&self.pending);
        if p.closed {
            return Err(self.disconnected());
        }
        let id = match explicit {
            Some(id) => id,
            None => Self::next_id(&mut p)?,
        };
        // An explicit id that is already pending: `DuplicatePending`.
        let wake = match deadline {
            None => {
                p.waiters.insert_untimed(id, waiter)?;
                false
            }
            Some(d) => {
                p.waiters.insert(id, d, waiter)?;
                let earlier = p.sweep_at.is_none_or(|s| d < s);
                if earlier {
                    p.sweep_at = Some(d);
                }
                // Whatever `sweep_at` says (it may predate the task), an armed timer is
                // spawned now; a new task reads the table first, so it needs no wake-up.
                let spawned = self.spawn_lazy_timer(&mut p);
                earlier && !spawned
            }
        };
        self.mirror_waiting(&p);
        drop(p);
        if wake {
            self.timer.notify_one();
        }
        Ok(id)
    }

    /// Spawns the lazily started timer task if it is armed (called with the pending lock
    /// held, after a timed waiter was added); returns whether it did.
    fn spawn_lazy_timer(self: &Arc<Self>, p: &mut Pending) -> bool {
        let LazyTimer::Armed(rt) = &p.timer else {
            return false;
        };
        let task = rt.spawn(timer_loop(self.clone()));
        p.timer = LazyTimer::Running {
            _task: AbortOnDrop(task),
        };
        true
    }

    /// Called by `supervise` on a connection without keep-alive: the first timed waiter will
    /// spawn the timer task on this runtime (at once if one already waits).
    fn arm_lazy_timer(self: &Arc<Self>) {
        let mut p = lock(&self.pending);
        if p.closed || !matches!(p.timer, LazyTimer::NotDriving) {
            return;
        }
        p.timer = LazyTimer::Armed(tokio::runtime::Handle::current());
        if p.waiters.next_deadline().is_some() {
            self.spawn_lazy_timer(&mut p);
        }
    }

    /// Called when `supervise` ends: stops a lazily started timer task and never starts one.
    fn end_lazy_timer(&self) {
        let ended = std::mem::replace(&mut lock(&self.pending).timer, LazyTimer::Ended);
        // Aborted outside the lock (dropping the guard aborts the task).
        drop(ended);
    }

    /// Updates `waiting` after a change of `p.waiters` (called with the lock held).
    fn mirror_waiting(&self, p: &Pending) {
        self.waiting.store(p.waiters.len(), Ordering::Release);
    }

    fn unregister(&self, id: u32) {
        let mut p = lock(&self.pending);
        p.waiters.remove(id);
        self.mirror_waiting(&p);
    }

    fn send_registered(
        self: &Arc<Self>,
        req: &Request,
        waiter: Waiter,
        deadline: Option<std::time::Instant>,
    ) -> Result<u32> {
        self.check_outgoing(req.message_type(), req.content().len())?;
        let id = self.register(req.request_id(), waiter, deadline)?;
        if let Err(e) = self.push_user_frame(req.message_type(), id, req.content()) {
            self.unregister(id);
            return Err(self.refused(e));
        }
        // The caller waits for the reply: never hold the request back (see `Batch`).
        self.release_held();
        Ok(id)
    }

    /// Blocking request/response. The waiter is untimed in the table: this thread enforces
    /// its own timeout with `recv_timeout` (a futex wait with a timeout, no tokio timer), and
    /// it must wake up on its own anyway, since it parks outside the runtime; going through the
    /// timer task would add a cross-thread hop to every timeout and nothing to the reply path.
    pub(crate) fn request_blocking(
        self: &Arc<Self>,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let id = self.send_registered(req, Waiter::Sync(tx), None)?;
        if let Some(r) = self.spin_for_reply(&rx) {
            return Ok(r);
        }
        // On a handler thread, a stand-in worker may run other handlers meanwhile.
        match crate::pool::blocking(|| rx.recv_timeout(timeout)) {
            Ok(r) => Ok(r),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.unregister(id);
                Err(Error::Timeout(timeout))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(self.disconnected()),
        }
    }

    /// Waits for a reply by polling for up to [`SPIN`] (reading the socket itself, see
    /// [`Conn::read_for_waiter`]) before the caller parks: a parked thread costs a wake-up (a
    /// futex call and, on a VM, an inter-processor interrupt to an idle vCPU) when the reply
    /// arrives, about as much as the round trip itself on loopback. Only when the caller is the
    /// connection's only waiter (a request/response exchange, where that wake-up is the
    /// latency; with many requests in flight, replies keep the I/O thread busy anyway), only
    /// one thread of the process at a time, never in `Low` mode and never on a handler thread,
    /// so waiters do not burn the CPUs the replies need. Measured with `veltix bench reqrep
    /// --reqrep-api blocking`: letting one of 64 waiters spin cost a third of the throughput.
    ///
    /// Each poll ends with `sched_yield`: a thread the reply depends on may be queued on this
    /// CPU (the handler pool thread of a server in this process, woken by the I/O thread), and
    /// without the yield it waited for the whole spin. Measured with the Python package
    /// (`crates/veltix-py/bench/reqrep_legs.py`, a Python route answering): caller to handler
    /// start went from 52–60 µs (the spin plus ~9 µs) to 9–10 µs, the round trip from 72–90 to
    /// 21–23 µs, pinned to one CPU or not.
    fn spin_for_reply(&self, rx: &std::sync::mpsc::Receiver<Response>) -> Option<Response> {
        static SPINNING: AtomicBool = AtomicBool::new(false);
        if self.settings.performance_mode == PerformanceMode::Low
            || crate::pool::in_worker()
            || self.waiting.load(Ordering::Acquire) > 1
            || SPINNING.swap(true, Ordering::Acquire)
        {
            return None;
        }
        let start = std::time::Instant::now();
        let mut got = None;
        'spin: loop {
            // Read the socket from this thread: the reply is delivered to `rx` right here.
            self.read_for_waiter();
            for _ in 0..16 {
                match rx.try_recv() {
                    Ok(r) => {
                        got = Some(r);
                        break 'spin;
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break 'spin,
                    Err(std::sync::mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
                }
            }
            if start.elapsed() >= SPIN {
                break;
            }
            // Let a runnable thread of this CPU (maybe the one that answers) go first.
            std::thread::yield_now();
        }
        SPINNING.store(false, Ordering::Release);
        got
    }

    /// Async request/response. Dropping the future releases the id. No timer per request: the
    /// waiter is registered with its deadline and the connection's timer task (`timer_loop`)
    /// answers it with [`AsyncReply::TimedOut`] (measured: a `tokio::time::timeout` per request
    /// cost 10 % of `veltix bench reqrep`). A timeout beyond the clock never fires.
    pub(crate) async fn request(
        self: &Arc<Self>,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response> {
        let (tx, rx) = oneshot::channel();
        let deadline = std::time::Instant::now().checked_add(timeout);
        let id = self.send_registered(req, Waiter::Async(tx), deadline)?;
        struct Release<'a>(&'a Conn, u32, bool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    self.0.unregister(self.1);
                }
            }
        }
        let mut guard = Release(self, id, false);
        let r = rx.await;
        // Answered either way: the reply and the timeout both took the waiter out of the table.
        guard.2 = r.is_ok();
        match r {
            Ok(AsyncReply::Reply(resp)) => Ok(resp),
            Ok(AsyncReply::TimedOut) => Err(Error::Timeout(timeout)),
            Err(_) => Err(self.disconnected()),
        }
    }

    /// Blocking ping: round-trip time measured locally.
    pub(crate) fn ping_blocking(self: &Arc<Self>, timeout: Duration) -> Result<Duration> {
        let t0 = std::time::Instant::now();
        self.request_blocking(&Request::new(PING, bytes::Bytes::new()), timeout)?;
        Ok(t0.elapsed())
    }

    /// Async ping.
    pub(crate) async fn ping(self: &Arc<Self>, timeout: Duration) -> Result<Duration> {
        let t0 = std::time::Instant::now();
        self.request(&Request::new(PING, bytes::Bytes::new()), timeout)
            .await?;
        Ok(t0.elapsed())
    }

    /// Takes the waiter of a received frame's id out of the table, if there is one.
    fn take_waiter(&self, id: u32) -> Option<Waiter> {
        // A waiter is registered before its request is written, so before its reply can be
        // read: if the count is 0 here, nobody waits for this frame.
        if self.waiting.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut p = lock(&self.pending);
        if p.waiters.is_empty() {
            return None;
        }
        let w = p.waiters.remove(id);
        self.mirror_waiting(&p);
        w
    }

    /// Applies [`veltix_proto::classify`] to a received frame: PINGs answered, replies handed to
    /// their waiters; gives back the frames for the handlers. Reserved codes and stray PONGs go
    /// to the handlers too, which drop them as unrouted (counted, logged, link kept), as Python
    /// Veltix drops them; `veltix_proto::Connection` closes on the first instead.
    /// `woken` counts the replies handed to async waiters.
    fn route_frame(&self, f: Frame, woken: &mut usize) -> Option<Frame> {
        match classify(
            self.settings.generation,
            f.message_type,
            f.request_id,
            |id| self.take_waiter(id),
        ) {
            Inbound::Ping => {
                let (peer, request_id) = (self.peer, f.request_id);
                let hook = &self.counters.observer;
                hook.emit(|| Event::PingReceived { peer, request_id });
                match self.push_frame(PONG.code(), f.request_id, &[]) {
                    Ok(()) => hook.emit(|| Event::PongSent { peer, request_id }),
                    Err(e) => self.pong_dropped(&e),
                }
                None
            }
            Inbound::Reply(Waiter::Ignore) => None,
            Inbound::Reply(Waiter::Sync(tx)) => {
                let _ = tx.try_send(Response::from_frame(f));
                None
            }
            Inbound::Reply(Waiter::Async(tx)) => {
                *woken += 1;
                let _ = tx.send(AsyncReply::Reply(Response::from_frame(f)));
                None
            }
            Inbound::Reserved | Inbound::StrayPong | Inbound::Message => Some(f),
        }
    }

    /// Counts and logs (throttled) a PONG that could not be queued.
    fn pong_dropped(&self, e: &Error) {
        if !matches!(e, Error::QueueFull { .. }) {
            return; // Closing: nothing is sent any more anyway.
        }
        add(&self.counters.dropped_pongs, 1);
        throttled!(
            self.throttles.pongs,
            self.peer,
            summary: "dropped {count} PONGs in {secs} s: outbound queue full",
            "PONG dropped: {e}; the peer sends PINGs but does not read (summarised once per second)"
        );
    }

    /// Decodes the buffered frames: PINGs answered, replies handed to their waiters, frames
    /// for the handlers given to `sink` in order; stops early once `max_replies` replies went
    /// to async waiters (see [`REPLIES_PER_PASS`]).
    fn decode_buffered(
        &self,
        decoder: &mut Decoder,
        max_replies: usize,
        mut sink: impl FnMut(Frame),
    ) -> Pass {
        let mut frames = 0;
        let mut end = None;
        let mut woken = 0;
        while woken < max_replies {
            let Some(d) = decoder.decode() else { break };
            match d {
                Decoded::Frame(f) => {
                    frames += 1;
                    if self.waiting.load(Ordering::Acquire) > 0 {
                        // Counted before a waiter can see its reply: stats read right after a
                        // round trip include it.
                        add(&self.counters.frames_in, std::mem::take(&mut frames));
                    }
                    if let Some(f) = self.route_frame(f, &mut woken) {
                        sink(f);
                    }
                }
                Decoded::Rejected(r) => {
                    self.counters.rejection(&r);
                    let peer = self.peer;
                    self.counters
                        .observer
                        .emit(|| Event::ProtocolViolation { peer, reason: &r });
                    self.record(DisconnectCause::ProtocolViolation);
                    end = Some(CloseReason::Protocol(r));
                    break;
                }
            }
        }
        add(&self.counters.frames_in, frames);
        Pass {
            full: end.is_none() && woken >= max_replies,
            end,
        }
    }

    /// A blocking waiter's read: one non-blocking `recv` into the shared decoder, unless the
    /// reader task is reading right now (it then delivers the reply itself), is paused by
    /// backpressure, or has frames of ours still to queue. Frames for the handlers go to the
    /// backlog, in order, and the reader task is woken to queue them.
    fn read_for_waiter(&self) {
        let mut guard = match self.rx.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::WouldBlock) => return,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let rx = &mut *guard;
        if rx.paused || rx.end.is_some() || rx.backlog.len() >= MAX_BACKLOG {
            return;
        }
        let (Some(decoder), Some(stream)) = (rx.decoder.as_mut(), rx.stream.as_ref()) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        let n = match rustix::net::recv(
            (**stream).as_ref(),
            &mut buf[..],
            rustix::net::RecvFlags::DONTWAIT,
        ) {
            // End of stream: the reader task reads it too (it stays readable) and ends.
            Ok((0, _)) => return,
            Ok((n, _)) => n,
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => return,
            Err(e) => {
                let e = std::io::Error::from(e);
                self.record(DisconnectCause::Io(e.kind()));
                rx.end = Some(CloseReason::Io(e));
                self.rx_notify.notify_one();
                return;
            }
        };
        decoder.feed(&buf[..n]);
        add(&self.counters.bytes_in, n as u64);
        self.touch();
        let backlog = &mut rx.backlog;
        // Its replies go to blocking waiters, which the pass limit does not count.
        if let Some(end) = self
            .decode_buffered(decoder, usize::MAX, |f| backlog.push(f))
            .end
        {
            rx.end = Some(end);
        }
        if !rx.backlog.is_empty() || rx.end.is_some() {
            self.rx_notify.notify_one();
        }
    }

    /// Fails every waiter with `Disconnected` (with the recorded cause) and refuses new ones.
    pub(crate) fn fail_pending(&self) {
        let mut p = lock(&self.pending);
        p.closed = true;
        p.waiters.clear();
        self.mirror_waiting(&p);
    }

    /// Closes the connection from this side (`close_client`, `disconnect`...): records
    /// `ClosedLocally` (unless it already ended) and flushes what is queued (see
    /// [`Conn::close_with`]).
    pub(crate) fn close_locally(&self) {
        self.close_with(DisconnectCause::ClosedLocally, false);
    }

    /// Starts closing: records `cause` unless an earlier one was (first writer wins), then no
    /// more sends; the writer flushes what is queued (bounded by `close_timeout`) unless `abort`.
    pub(crate) fn close_with(&self, cause: DisconnectCause, abort: bool) {
        self.record(cause);
        lock(&self.out).closing = true;
        self.closing.store(true, Ordering::Release);
        self.out_notify.notify_one();
        let want = if abort { Stop::Abort } else { Stop::Close };
        self.stop.send_if_modified(|s| {
            if *s < want {
                *s = want;
                true
            } else {
                false
            }
        });
    }

    /// Stamps a receive (see `last_rx_ns`). A plain store, as cheap as it was: two readers
    /// racing may leave the older of two stamps nanoseconds apart, which keep-alive ignores.
    fn touch(&self) {
        let ns = self.started.elapsed().as_nanos() as u64;
        self.last_rx_ns.store(ns, Ordering::Relaxed);
    }

    /// When something was last received (or the connection started driving).
    fn last_rx(&self) -> std::time::Instant {
        self.started + Duration::from_nanos(self.last_rx_ns.load(Ordering::Relaxed))
    }

    /// Expires the async waiters due at `now` (each is told its request timed out) and
    /// returns when the timer task must look again: the earlier of the next request deadline
    /// and `keepalive` (recorded as `sweep_at`, see [`Conn::register`]).
    fn expire_requests(
        &self,
        now: std::time::Instant,
        keepalive: Option<std::time::Instant>,
    ) -> Option<std::time::Instant> {
        let (expired, next) = {
            let mut p = lock(&self.pending);
            let expired = p.waiters.expire(now);
            if !expired.is_empty() {
                self.mirror_waiting(&p);
            }
            let next = veltix_proto::earliest(p.waiters.next_deadline(), keepalive);
            p.sweep_at = next;
            (expired, next)
        };
        for (_, w) in expired {
            if let Waiter::Async(tx) = w {
                let _ = tx.send(AsyncReply::TimedOut);
            }
        }
        next
    }

    fn keepalive_ping(&self) {
        let mut p = lock(&self.pending);
        if p.closed {
            return;
        }
        let Ok(id) = Self::next_id(&mut p) else {
            return;
        };
        // A fresh id: it cannot be pending.
        if p.waiters.insert_untimed(id, Waiter::Ignore).is_err() {
            return;
        }
        self.mirror_waiting(&p);
        drop(p);
        if self.push_frame(PING.code(), id, &[]).is_err() {
            self.unregister(id);
        }
    }
}

/// Runs a handshake over `stream` (plain TCP or TLS) until it is done, or until a
/// [`Handshake::server_with_verdict`] waits for its verdict (call again after it to send the
/// answer); returns the bytes read past its end (they belong to the frame decoder).
pub(crate) async fn run_handshake<S>(stream: &mut S, hs: &mut Handshake) -> Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = [0u8; 4096];
    loop {
        flush_handshake(stream, hs).await?;
        if hs.is_done() || hs.awaiting_verdict() {
            return Ok(Vec::new());
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(Error::Handshake(veltix_proto::HandshakeError::Eof));
        }
        let used = hs.feed(&buf[..n])?;
        if used < n {
            // Done with bytes to spare: flush our last message, hand the rest over.
            flush_handshake(stream, hs).await?;
            return Ok(buf[used..n].to_vec());
        }
    }
}

/// Writes what the handshake has to send (a TLS stream needs the flush; TCP ignores it).
pub(crate) async fn flush_handshake<S>(stream: &mut S, hs: &mut Handshake) -> Result<()>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let mut wrote = false;
    while let Some(b) = hs.poll_transmit() {
        stream.write_all(&b).await?;
        wrote = true;
    }
    if wrote {
        stream.flush().await?;
    }
    Ok(())
}

/// Drives a connection until it ends: reader, writer and keep-alive. Frames that are neither
/// PINGs nor awaited replies are wrapped by `wrap` and queued on `queue` in arrival order.
pub(crate) async fn drive<J: Send + 'static>(
    conn: Arc<Conn>,
    stream: TcpStream,
    leftover: Vec<u8>,
    queue: Arc<SerialQueue<J>>,
    wrap: impl Fn(Response) -> J + Send,
) -> CloseReason {
    // The read half is polled through `AsyncRead`, which notes a short read as "drained" and so
    // saves the `EAGAIN` read per message that `try_read` needs; senders share the write half.
    let (mut read_half, write_half) = stream.into_split();
    let stream = Arc::new(write_half);
    lock(&conn.out).stream = Some(stream.clone());
    {
        let mut rx = lock(&conn.rx);
        rx.decoder = Some(conn.decoder(&leftover));
        rx.stream = Some(stream.clone());
    }
    conn.touch();
    let (reason, linger_until) = supervise(
        &conn,
        read_loop(Reading::new(&conn, &queue, wrap), &mut read_half),
        write_loop(&conn, &stream),
    )
    .await;
    if let Some(deadline) = linger_until {
        linger((*stream).as_ref(), deadline).await;
    }
    conn.finish_throttles();
    // Release the socket: dropping the last handle closes it.
    lock(&conn.out).stream = None;
    {
        let mut rx = lock(&conn.rx);
        rx.decoder = None;
        rx.stream = None;
        rx.backlog.clear();
    }
    reason
}

impl Conn {
    /// The frame decoder of this connection, fed with what the handshake read past its end.
    fn decoder(&self, leftover: &[u8]) -> Decoder {
        let mut decoder = Decoder::new(DecoderConfig {
            max_message_size: self.settings.max_message_size,
            ..DecoderConfig::new(self.settings.generation)
        });
        decoder.feed(leftover);
        decoder
    }
}

/// Runs a connection's reader and writer (and its keep-alive) until the connection ends, for
/// either transport: the first to end decides the close, the others are given
/// `close_timeout` to flush. Returns the reason and, for a local close whose queued data was
/// flushed, the deadline until which the driver lingers (see [`linger`]).
async fn supervise(
    conn: &Arc<Conn>,
    reader: impl std::future::Future<Output = CloseReason>,
    writer: impl std::future::Future<Output = WriteEnd>,
) -> (CloseReason, Option<Instant>) {
    // The timer is a task of its own: as a branch of this `select!` it would be polled (a lock
    // of its `Notify`) on every wake-up of the reader and the writer, i.e. on every read and
    // write; a `JoinHandle` costs an atomic load. Without keep-alive it is spawned by the first
    // async request with a deadline, if any (see `LazyTimer`).
    let mut timer = match conn.settings.keepalive {
        Some(_) => Some(AbortOnDrop(tokio::spawn(timer_loop(conn.clone())))),
        None => {
            conn.arm_lazy_timer();
            None
        }
    };
    let keepalive = async {
        match &mut timer {
            Some(t) => match (&mut t.0).await {
                Ok(r) => r,
                // Not reached (the task is aborted only by this guard, and does not panic).
                Err(_) => std::future::pending().await,
            },
            // Without keep-alive the timer never closes the connection.
            None => std::future::pending().await,
        }
    };
    tokio::pin!(reader, writer, keepalive);
    let end = tokio::select! {
        r = &mut reader => {
            conn.close_with(r.cause(), matches!(r, CloseReason::Io(_)));
            let deadline = Instant::now() + conn.settings.close_timeout;
            let mut linger = None;
            match tokio::time::timeout_at(deadline, &mut writer).await {
                Err(_) => tracing::warn!(peer = %conn.peer, "could not flush queued data within {:?}; dropped", conn.settings.close_timeout),
                Ok(WriteEnd::Flushed) if matches!(r, CloseReason::Local) => linger = Some(deadline),
                Ok(_) => {}
            }
            (r, linger)
        }
        r = &mut keepalive => {
            add(&conn.counters.keepalive_timeouts, 1);
            conn.close_with(r.cause(), false);
            let _ = tokio::time::timeout(conn.settings.close_timeout, &mut writer).await;
            (r, None)
        }
        w = &mut writer => {
            // The writer ends first when it flushed a local close before the reader noticed
            // it, or when writing failed or was aborted.
            let deadline = Instant::now() + conn.settings.close_timeout;
            match w {
                WriteEnd::Flushed => {
                    let r = (&mut reader).await;
                    let linger = matches!(r, CloseReason::Local).then_some(deadline);
                    (r, linger)
                }
                WriteEnd::Aborted => {
                    conn.close_with(DisconnectCause::ClosedLocally, true);
                    let _ = (&mut reader).await;
                    (CloseReason::Local, None)
                }
                WriteEnd::Failed(e) => {
                    conn.close_with(DisconnectCause::Io(e.kind()), true);
                    let _ = (&mut reader).await;
                    (CloseReason::Io(e), None)
                }
            }
        }
    };
    conn.end_lazy_timer();
    end
}

/// The reader's side of a connection, shared by the plaintext and TLS read loops: what is
/// decoded goes to the handlers' queue in batches, reads go straight into the decoder's buffer
/// and their size adapts to the traffic.
struct Reading<'a, J: Send + 'static, W> {
    conn: &'a Conn,
    queue: &'a Arc<SerialQueue<J>>,
    wrap: W,
    batch: Vec<(J, usize)>,
    stop: watch::Receiver<Stop>,
    buffer_size: usize,
    /// Read size: `buffer_size` at first and after quiet periods; doubled (up to MAX_READ)
    /// while reads fill it, so a sustained stream costs one system call per up to 256 KiB
    /// instead of one per 8 KiB (measured: the reader was the bottleneck of a 64 B burst at
    /// 8 KiB reads).
    read_size: usize,
    /// The last read left the socket empty (or nothing was read yet): the next wait may be long.
    drained: bool,
}

impl<'a, J: Send + 'static, W: Fn(Response) -> J> Reading<'a, J, W> {
    fn new(conn: &'a Conn, queue: &'a Arc<SerialQueue<J>>, wrap: W) -> Self {
        let buffer_size = conn.settings.buffer_size.max(1);
        Reading {
            conn,
            queue,
            wrap,
            batch: Vec::new(),
            stop: conn.stop.subscribe(),
            buffer_size,
            read_size: buffer_size,
            drained: true,
        }
    }

    /// Before each read: frames a waiter left, then frames already buffered (e.g. after the
    /// handshake), go to the handlers, in passes of at most [`REPLIES_PER_PASS`] replies with
    /// a yield in between; then, while handlers are behind, no reading (backpressure). `Some`
    /// when the connection ended meanwhile.
    async fn before_read(&mut self) -> Option<CloseReason> {
        let conn = self.conn;
        loop {
            let pass = self.decode_pass();
            if !self.batch.is_empty() {
                self.queue.push_many(self.batch.drain(..));
            }
            if pass.end.is_some() {
                return pass.end;
            }
            if !pass.full {
                break;
            }
            // The woken requesters run (and queue their next requests for the writer) before
            // the rest of the replies is decoded.
            conn.passing.store(true, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
        if self.queue.over_limit() {
            lock(&conn.rx).paused = true;
            while self.queue.over_limit() {
                tokio::select! {
                    _ = self.queue.space.notified() => {}
                    _ = self.stop.wait_for(|s| *s != Stop::Run) => return Some(CloseReason::Local),
                }
            }
            lock(&conn.rx).paused = false;
        }
        if self.drained {
            // About to wait: an idle connection keeps no read buffer between messages. (Not
            // dropped while reads fill it: a fresh buffer per read faulted in new pages.)
            if let Some(d) = lock(&conn.rx).decoder.as_mut() {
                if d.buffered() == 0 {
                    *d.buffer_mut() = BytesMut::new();
                }
            }
        }
        None
    }

    /// One pass over what is buffered: the frames a waiter left, then decoded ones, to
    /// `self.batch`.
    fn decode_pass(&mut self) -> Pass {
        let conn = self.conn;
        let wrap = &self.wrap;
        let batch = &mut self.batch;
        let mut job = |f: Frame| {
            let weight = f.content.len() + 64;
            batch.push((wrap(Response::from_frame(f)), weight));
        };
        let mut guard = lock(&conn.rx);
        let rx = &mut *guard;
        for f in rx.backlog.drain(..) {
            job(f);
        }
        match (rx.end.take(), rx.decoder.as_mut()) {
            (None, Some(decoder)) => conn.decode_buffered(decoder, REPLIES_PER_PASS, job),
            (end, _) => Pass { end, full: false },
        }
    }

    /// After a read of `n` bytes into `room`: adapts the next read's size.
    fn read_done(&mut self, n: usize, room: usize) {
        self.conn.touch();
        self.drained = n < room;
        if n >= room {
            self.read_size = (self.read_size * 2).min(MAX_READ.max(self.buffer_size));
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(self.buffer_size);
        }
    }

    /// The peer closed its side: a frame cut short is a protocol violation, else a clean close.
    fn end_of_stream(&self) -> CloseReason {
        let conn = self.conn;
        let rejected = lock(&conn.rx).decoder.as_mut().and_then(Decoder::finish);
        match rejected {
            Some(r) => {
                conn.counters.rejection(&r);
                let peer = conn.peer;
                conn.counters
                    .observer
                    .emit(|| Event::ProtocolViolation { peer, reason: &r });
                CloseReason::Protocol(r)
            }
            None => CloseReason::PeerClosed,
        }
    }
}

/// Polls one read of up to `read_size` bytes into the decoder's buffer of `conn` (for either
/// transport's read loop): `Ok(None)` at the end of the stream, else the bytes read and the
/// room there was.
fn poll_read_into<R: tokio::io::AsyncRead + Unpin>(
    conn: &Conn,
    read_size: usize,
    rd: &mut R,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<Option<(usize, usize)>>> {
    use std::task::Poll;
    let mut rx = lock(&conn.rx);
    let Some(decoder) = rx.decoder.as_mut() else {
        return Poll::Ready(Ok(None));
    };
    decoder.buffer_mut().reserve(read_size);
    let room = decoder.buffer_mut().capacity() - decoder.buffer_mut().len();
    let mut read = std::pin::pin!(rd.read_buf(decoder.buffer_mut()));
    match std::future::Future::poll(read.as_mut(), cx) {
        Poll::Ready(Ok(0)) => Poll::Ready(Ok(None)),
        Poll::Ready(Ok(n)) => {
            decoder.note_received(n);
            // Plaintext bytes (what the frames carry), for either transport.
            add(&conn.counters.bytes_in, n as u64);
            Poll::Ready(Ok(Some((n, room))))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

async fn read_loop<J: Send + 'static, W: Fn(Response) -> J>(
    mut r: Reading<'_, J, W>,
    stream: &mut OwnedReadHalf,
) -> CloseReason {
    let conn = r.conn;
    loop {
        if let Some(end) = r.before_read().await {
            return end;
        }
        let ready = tokio::select! {
            biased;
            _ = r.stop.wait_for(|s| *s != Stop::Run) => return CloseReason::Local,
            _ = conn.rx_notify.notified() => continue,
            ready = stream.readable() => ready,
        };
        if let Err(e) = ready {
            return CloseReason::Io(e);
        }
        // Readable, so the read completes at once (`None`: a spurious wake-up, or a waiter
        // took the bytes first; back to waiting).
        let read = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match poll_read_into(conn, r.read_size, stream, cx) {
                std::task::Poll::Ready(read) => Some(read),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        match read {
            None => {}
            Some(Ok(None)) => return r.end_of_stream(),
            Some(Ok(Some((n, room)))) => r.read_done(n, room),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Some(Err(e)) => return CloseReason::Io(e),
        }
    }
}

/// A local close after the flush: send FIN, then read and discard until the peer closes too (or
/// the deadline). Releasing a socket with unread input makes the kernel send RST instead of FIN,
/// and an RST destroys what the peer had not yet read of the data we just flushed.
async fn linger(stream: &TcpStream, deadline: Instant) {
    let _ = rustix::net::shutdown(stream, rustix::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout_at(deadline, async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// How the writer task ended.
enum WriteEnd {
    /// The connection was closing and everything queued was written.
    Flushed,
    /// Told to stop without flushing.
    Aborted,
    /// Writing failed.
    Failed(std::io::Error),
}

/// The writer found nothing to write: drops a large idle buffer, waits for a send, then lets a
/// burst gather as the performance mode says. `Err` when the connection is aborted meanwhile.
/// Shared by the plaintext and the TLS writer.
async fn await_output(
    conn: &Conn,
    spare: &mut BytesMut,
    stop: &mut watch::Receiver<Stop>,
) -> std::result::Result<(), ()> {
    if spare.capacity() > 16 * 1024 {
        // Going idle: an idle connection keeps no large buffer. (Kept while busy: a fresh
        // allocation per write faulted in new pages, 10% of a burst's sender.)
        *spare = BytesMut::new();
    }
    tokio::select! {
        _ = conn.out_notify.notified() => {}
        _ = stop.wait_for(|s| *s == Stop::Abort) => return Err(()),
    }
    // Woken by a burst or by concurrent senders: let more frames join this write (unless the
    // senders were requesters released by a pass of the reader: see `Conn::passing`).
    if conn.passing.swap(false, Ordering::Relaxed) {
        return Ok(());
    }
    match conn.settings.performance_mode {
        PerformanceMode::High => {}
        PerformanceMode::Balanced => tokio::task::yield_now().await,
        PerformanceMode::Low => {
            if lock(&conn.out).buf.len() < 64 * 1024 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    Ok(())
}

async fn write_loop(conn: &Conn, stream: &OwnedWriteHalf) -> WriteEnd {
    let mut stop = conn.stop.subscribe();
    let mut spare = BytesMut::new();
    let mut wrote = false;
    loop {
        let frames;
        let (closing, inline_active) = {
            let mut ob = lock(&conn.out);
            if std::mem::take(&mut wrote) {
                conn.note_write_end(&mut ob);
            }
            if ob.buf.is_empty() || ob.inline_active {
                // Nothing to do, or a sender is writing inline (it wakes us when it is done).
                ob.writing = false;
                frames = 0;
            } else {
                std::mem::swap(&mut ob.buf, &mut spare);
                ob.writing = true;
                frames = std::mem::take(&mut ob.frames);
            }
            (ob.closing, ob.inline_active)
        };
        if spare.is_empty() {
            if closing && !inline_active {
                return WriteEnd::Flushed;
            }
            if await_output(conn, &mut spare, &mut stop).await.is_err() {
                return WriteEnd::Aborted;
            }
            continue;
        }
        while !spare.is_empty() {
            let ready = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s == Stop::Abort) => return WriteEnd::Aborted,
                r = stream.writable() => r,
            };
            if let Err(e) = ready {
                return WriteEnd::Failed(e);
            }
            match stream.try_write(&spare) {
                Ok(n) => {
                    add(&conn.counters.bytes_out, n as u64);
                    spare.advance(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return WriteEnd::Failed(e),
            }
        }
        wrote = true;
        add(&conn.counters.frames_out, frames);
        spare.clear();
    }
}

/// Aborts a task when dropped (the connection's timer task ends with its `supervise`).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The connection's one timer: keep-alive (`veltix_proto`'s [`KeepAliveTimer`] fed with the
/// receive stamps) and the deadlines of the async requests in the pending table. Sleeps until
/// the earlier of the two (or until woken for an earlier request deadline); returns only when
/// keep-alive gives up on the peer.
async fn timer_loop(conn: Arc<Conn>) -> CloseReason {
    let mut keepalive = conn.settings.keepalive.map(|ka| {
        let policy = veltix_proto::KeepAlive::new(ka.interval, ka.timeout);
        KeepAliveTimer::new(policy, conn.last_rx())
    });
    loop {
        let now = std::time::Instant::now();
        if let Some(ka) = &mut keepalive {
            let rx = conn.last_rx();
            if rx > ka.last_receive() {
                ka.on_receive(rx);
            }
            match ka.poll(now) {
                KeepAliveAction::Nothing => {}
                KeepAliveAction::Ping => conn.keepalive_ping(),
                KeepAliveAction::Close { idle } => return CloseReason::KeepAliveTimeout(idle),
            }
        }
        let next = conn.expire_requests(now, keepalive.as_ref().and_then(|k| k.next_deadline()));
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(Instant::from_std(at)) => {}
                    _ = conn.timer.notified() => {}
                }
            }
            None => conn.timer.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veltix_proto::{Frame, Generation, IdAllocator};

    fn conn() -> Arc<Conn> {
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        let ids = IdAllocator::for_role(Generation::Gen3, false);
        Conn::new(
            peer,
            Settings::default(),
            ids,
            Arc::new(Counters::default()),
        )
    }

    fn feed(decoder: &mut Decoder, message_type: u16, id: u32) {
        let bytes = Frame::new(message_type, id, vec![7u8; 5])
            .encode(Generation::Gen3)
            .expect("a small frame encodes");
        decoder.feed(&bytes);
    }

    /// 40 async replies, one blocking reply and handler frames in between: passes of 16 wake
    /// exactly 16 async waiters each (the blocking one does not count), in order, and every
    /// handler frame comes out once, in order, across the passes.
    #[test]
    fn a_pass_wakes_at_most_its_limit_of_async_waiters() {
        let conn = conn();
        let mut decoder = conn.decoder(&[]);
        let mut asyncs = Vec::new();
        for _ in 0..40 {
            let (tx, rx) = oneshot::channel();
            let id = conn
                .register(None, Waiter::Async(tx), None)
                .expect("registered");
            asyncs.push(rx);
            feed(&mut decoder, 404, id);
            if id % 10 == 3 {
                feed(&mut decoder, 405, 60_000 + id);
            }
        }
        let (stx, srx) = std::sync::mpsc::sync_channel(1);
        let sync_id = conn
            .register(None, Waiter::Sync(stx), None)
            .expect("registered");
        feed(&mut decoder, 404, sync_id);
        feed(&mut decoder, 405, 61_000);

        let answered = |asyncs: &mut Vec<oneshot::Receiver<AsyncReply>>| {
            asyncs
                .iter_mut()
                .map(|rx| rx.try_recv().is_ok())
                .filter(|ok| *ok)
                .count()
        };
        let mut handled = Vec::new();
        let pass = conn.decode_buffered(&mut decoder, 16, |f| handled.push(f.request_id));
        assert!(pass.full && pass.end.is_none());
        assert_eq!(answered(&mut asyncs), 16);
        let pass = conn.decode_buffered(&mut decoder, 16, |f| handled.push(f.request_id));
        assert!(pass.full);
        assert_eq!(answered(&mut asyncs), 16);
        assert!(
            srx.try_recv().is_err(),
            "the blocking reply is after the async ones"
        );
        let pass = conn.decode_buffered(&mut decoder, 16, |f| handled.push(f.request_id));
        assert!(
            !pass.full && pass.end.is_none(),
            "8 left: the pass ends with the buffer"
        );
        assert_eq!(answered(&mut asyncs), 8);
        assert!(srx.try_recv().is_ok(), "the blocking waiter got its reply");
        assert_eq!(handled, vec![60_003, 60_013, 60_023, 60_033, 61_000]);
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(conn.waiting.load(Ordering::Acquire), 0);
    }

    /// A refused frame ends the pass with the reason, whatever the limit.
    #[test]
    fn a_pass_reports_a_refused_frame() {
        let conn = conn();
        let mut decoder = conn.decoder(&[]);
        decoder.feed(b"not a frame at all, and long enough to be judged");
        let pass = conn.decode_buffered(&mut decoder, 16, |_| {});
        assert!(!pass.full);
        assert!(matches!(pass.end, Some(CloseReason::Protocol(_))));
    }
}
