//! The Veltix client: connect + handshake, routes, request/response, ping, reconnects.

use std::borrow::Borrow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};
use veltix_proto::IdAllocator;

use crate::conn::{self, CloseReason, Conn};
use crate::handlers::{HandlerSet, Registry};
use crate::observe::Event;
use crate::pool::{guarded, Claim, Runner, SerialQueue};
use crate::stats::{add, Counters, Stats};
use crate::util::lock;
use crate::{
    ClientConfig, DisconnectCause, DisconnectReason, DisconnectState, Error, HandlerResult,
    Request, Response, Result, TypeCode,
};

type ClientRoute = Arc<dyn Fn(Response) + Send + Sync>;
type ConnectCallback = Arc<dyn Fn() + Send + Sync>;
type DisconnectCallback = Arc<dyn Fn(&DisconnectState) + Send + Sync>;

type Handlers = Registry<ClientRoute, ConnectCallback, DisconnectCallback>;

enum Job {
    Message(Response),
    Connect,
    Disconnect(DisconnectState),
}

struct Link {
    conn: Arc<Conn>,
    task: JoinHandle<()>,
}

struct State {
    /// `disconnect()` was called: no automatic reconnects, no more events.
    manual: bool,
    /// A reconnect loop is running.
    retrying: bool,
    /// Failed attempts of the current (or last) loop.
    fails: u32,
    /// What sends fail with while there is no link: `NotConnected` (never connected,
    /// reconnecting, gave up), `ClosedLocally` after `disconnect()`, or the cause that ended the
    /// last link when no reconnect follows.
    ended: DisconnectCause,
}

pub(crate) struct Shared {
    config: ClientConfig,
    handlers: Handlers,
    link: Mutex<Option<Link>>,
    state: Mutex<State>,
    cancel: AtomicBool,
    cancel_notify: Notify,
    /// `true` once disconnected for good; watched by `wait_until_closed` (both faces).
    closed: watch::Sender<bool>,
    queue: Arc<SerialQueue<Job>>,
    rt: Handle,
    pub(crate) counters: Arc<Counters>,
}

impl Shared {
    fn run_jobs(&self, jobs: &mut std::collections::VecDeque<Job>) {
        let h = self.handlers.get();
        let mut jobs = Some(jobs);
        h.run_batch(&mut || {
            if let Some(jobs) = jobs.take() {
                self.run_batch(&h, jobs);
            }
        });
    }

    fn run_batch(
        &self,
        h: &HandlerSet<ClientRoute, ConnectCallback, DisconnectCallback>,
        jobs: &mut std::collections::VecDeque<Job>,
    ) {
        // Replies to pipelined messages go out in one write (see `conn::Batch`).
        let conn = self.conn().ok();
        let batch = conn.as_deref().map(Conn::batch);
        while let Some(job) = jobs.pop_front() {
            if crate::pool::deferred() {
                // The previous job was an async handler: the rest waits for its future.
                jobs.push_front(job);
                break;
            }
            if let Some(b) = &batch {
                b.next(!jobs.is_empty());
            }
            match job {
                Job::Message(msg) => match h.handler_for(msg.message_type()) {
                    Some(f) => guarded(|| f(msg)),
                    None => match &conn {
                        Some(c) => c.unrouted(&msg),
                        None => add(&self.counters.dropped_unrouted, 1),
                    },
                },
                Job::Connect => h.on_connect.iter().for_each(|f| guarded(|| f())),
                Job::Disconnect(state) => {
                    h.on_disconnect.iter().for_each(|f| guarded(|| f(&state)));
                    if state.permanent {
                        self.set_closed(true);
                    }
                }
            }
        }
    }

    fn set_closed(&self, closed: bool) {
        self.closed.send_replace(closed);
    }

    fn emit(&self, permanent: bool, attempt: u32, retry_max: u32, reason: DisconnectReason) {
        self.queue.push(
            Job::Disconnect(DisconnectState {
                permanent,
                attempt,
                retry_max,
                reason,
            }),
            0,
        );
    }

    pub(crate) fn rt_handle(&self) -> Handle {
        self.rt.clone()
    }

    /// The one implementation of `connect` behind both faces.
    pub(crate) async fn connect(self: Arc<Self>) -> Result<()> {
        self.config.validate()?;
        if self.conn().is_ok() {
            return Ok(());
        }
        {
            let mut st = lock(&self.state);
            st.manual = false;
            st.fails = 0;
            st.ended = DisconnectCause::NotConnected;
        }
        self.set_closed(false);
        let n = self.config.reconnect.retries;
        match connect_once(self.clone()).await {
            Ok(()) => Ok(()),
            Err(e @ Error::ServerFull(_)) => {
                self.emit(true, 0, n, DisconnectReason::ServerFull);
                Err(e)
            }
            // Retrying with the same credentials or files cannot help.
            Err(e @ (Error::Rejected(_) | Error::TlsConfig(_))) => {
                self.emit(true, 0, n, failure_reason(&e));
                Err(e)
            }
            Err(e) if n == 0 => {
                self.emit(true, 0, 0, failure_reason(&e));
                Err(e)
            }
            Err(e) => {
                warn!("connect failed: {e}; retrying up to {n} times");
                retry_loop(self, failure_reason(&e), n).await
            }
        }
    }

    /// The one implementation of `disconnect` behind both faces.
    pub(crate) async fn disconnect(self: Arc<Self>) {
        let fails = {
            let mut st = lock(&self.state);
            if st.manual {
                return;
            }
            st.manual = true;
            st.ended = DisconnectCause::ClosedLocally;
            st.fails
        };
        self.cancel.store(true, Ordering::SeqCst);
        self.cancel_notify.notify_waiters();
        let link = lock(&self.link).take();
        if let Some(l) = link {
            l.conn.close_locally();
            let grace = self.config.settings.close_timeout + Duration::from_secs(1);
            let _ = tokio::time::timeout(grace, l.task).await;
        }
        let n = self.config.reconnect.retries;
        self.emit(true, fails, n, DisconnectReason::Manual);
    }

    pub(crate) async fn wait_closed(self: Arc<Self>) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub(crate) fn stats(&self) -> Stats {
        self.counters.snapshot(u64::from(self.conn().is_ok()))
    }

    /// Logs an error a handler returned, throttled per connection (see [`Conn::handler_failed`]).
    pub(crate) fn handler_failed(&self, which: &dyn std::fmt::Display, e: &crate::HandlerError) {
        let conn = lock(&self.link).as_ref().map(|l| l.conn.clone());
        match conn {
            Some(c) => c.handler_failed(which, e),
            // The link is gone: one line per error, bounded by the messages already received.
            None if !e.is_refused_send() => warn!("{which} failed: {e}"),
            None => {}
        }
    }

    /// The live link, or why there is none ([`Error::Disconnected`]).
    pub(crate) fn conn(&self) -> Result<Arc<Conn>> {
        match &*lock(&self.link) {
            Some(l) if l.conn.is_open() => return Ok(l.conn.clone()),
            Some(l) => return Err(l.conn.disconnected()),
            None => {}
        }
        Err(Error::Disconnected(lock(&self.state).ended))
    }
}

fn failure_reason(e: &Error) -> DisconnectReason {
    match e {
        Error::ServerFull(_) => DisconnectReason::ServerFull,
        Error::Handshake(_)
        | Error::HandshakeTimeout(_)
        | Error::Rejected(_)
        | Error::Tls(_)
        | Error::TlsConfig(_) => DisconnectReason::HandshakeFailed,
        _ => DisconnectReason::Error,
    }
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Resolves, connects, handshakes and starts the connection task. (Boxed: the connection task
/// may reconnect, which calls this again.)
fn connect_once(shared: Arc<Shared>) -> BoxFuture<Result<()>> {
    Box::pin(connect_inner(shared))
}

async fn connect_inner(shared: Arc<Shared>) -> Result<()> {
    let cfg = &shared.config;
    // Certificates and keys are read and checked before connecting.
    let tls = match &cfg.tls {
        Some(t) => Some(t.connector(&cfg.host)?),
        None => None,
    };
    let target = format!("{}:{}", cfg.host, cfg.port);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target).await?.collect();
    let addr = *addrs.first().ok_or_else(|| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{target} resolves to no address"),
        ))
    })?;
    let stream = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(Error::ConnectTimeout {
                addr,
                timeout: cfg.connect_timeout,
            })
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Error::ConnectionRefused { addr })
        }
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let hook = &shared.counters.observer;
    hook.emit(|| Event::HandshakeStarted { peer: addr });
    let (transport, leftover, peer_version) =
        match crate::secure::client_handshake(cfg, tls, stream).await {
            Ok(x) => x,
            Err(e) => {
                shared.counters.handshake_failed(&e);
                hook.emit(|| Event::HandshakeFailed {
                    peer: addr,
                    error: &e,
                });
                return Err(e);
            }
        };
    let version = peer_version.as_str();
    hook.emit(|| Event::HandshakeDone {
        peer: addr,
        peer_version: version,
    });
    add(&shared.counters.connections_opened, 1);
    debug!(%addr, peer_version = peer_version.as_str(), tls = cfg.tls.is_some(), "connected");
    let ids = IdAllocator::for_role(cfg.settings.generation, false);
    let conn = Conn::new(addr, shared.config.settings, ids, shared.counters.clone());
    // on_connect runs before any message of this connection, and only sees the client as
    // connected: the link lock is held until the link is stored (a send from on_connect waits
    // for it).
    let mut link = lock(&shared.link);
    shared.queue.push(Job::Connect, 0);
    let task = shared.rt.spawn(
        run_link(shared.clone(), conn.clone(), transport, leftover)
            .instrument(tracing::info_span!("veltix_client", server = %addr)),
    );
    *link = Some(Link { conn, task });
    Ok(())
}

async fn run_link(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    transport: conn::Transport,
    leftover: Vec<u8>,
) {
    let reason = conn::drive_transport(
        conn.clone(),
        transport,
        leftover,
        shared.queue.clone(),
        Job::Message,
    )
    .await;
    conn.fail_pending();
    let n = shared.config.reconnect.retries;
    let current = {
        let mut link = lock(&shared.link);
        let ours = link.as_ref().is_some_and(|l| Arc::ptr_eq(&l.conn, &conn));
        if ours {
            *link = None;
        }
        ours
    };
    // A link that was taken out (a reconnect attempt cancelled after it connected) or replaced
    // ends without reconnecting.
    if !current {
        return;
    }
    {
        let mut st = lock(&shared.state);
        if st.manual {
            return;
        }
        // Sends while reconnecting fail with `NotConnected`, else with what ended the link.
        st.ended = if n == 0 {
            conn.cause()
        } else {
            DisconnectCause::NotConnected
        };
    }
    let why = match &reason {
        CloseReason::KeepAliveTimeout(_) => DisconnectReason::KeepAliveTimeout,
        _ => DisconnectReason::ServerClosed,
    };
    warn!("connection lost: {reason}");
    if n == 0 {
        shared.emit(true, 0, 0, why);
    } else {
        let _ = retry_loop(shared, why, n).await;
    }
}

/// A running reconnect loop (`State::retrying`), ended on drop.
struct Retrying<'a>(&'a Shared);

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).retrying = false;
    }
}

/// Python's reconnect sequence: `(false, 0)`, then per failed attempt `(false, k)`, and
/// `(true, fails)` when giving up. The first attempt is immediate, later ones follow the policy's
/// delay. Returns the last error if every attempt failed.
async fn retry_loop(shared: Arc<Shared>, reason: DisconnectReason, n: u32) -> Result<()> {
    {
        let mut st = lock(&shared.state);
        if st.retrying {
            warn!("a reconnect loop is already running");
            return Err(Error::Disconnected(DisconnectCause::NotConnected));
        }
        st.retrying = true;
        st.fails = 0;
        st.ended = DisconnectCause::NotConnected;
    }
    // Clears `retrying` however the loop ends (returned, or its future dropped: a cancelled
    // `AsyncClient::connect`, a runtime shutdown), so a later loop is not refused.
    let retrying = Retrying(&shared);
    shared.cancel.store(false, Ordering::SeqCst);
    shared.emit(false, 0, n, reason);
    let mut last = Error::Disconnected(DisconnectCause::NotConnected);
    let mut last_reason = reason;
    let mut fails = 0;
    for k in 1..=n {
        if shared.cancel.load(Ordering::SeqCst) || lock(&shared.state).manual {
            break;
        }
        info!(attempt = k, of = n, "reconnecting");
        match connect_once(shared.clone()).await {
            Ok(()) => {
                if shared.cancel.load(Ordering::SeqCst) || lock(&shared.state).manual {
                    // Cancelled while connecting: close again. The link is taken out first,
                    // so that its end does not start another reconnect loop (run_link only
                    // reconnects a link that is still the current one).
                    let cancelled = lock(&shared.link).take();
                    if let Some(l) = cancelled {
                        l.conn.close_locally();
                        let peer = l.conn.peer;
                        shared
                            .counters
                            .observer
                            .emit(|| Event::ReconnectCancelled { peer, attempt: k });
                    }
                    break;
                }
                lock(&shared.state).fails = 0;
                drop(retrying);
                info!(attempt = k, "reconnected");
                return Ok(());
            }
            Err(e) => {
                fails = k;
                lock(&shared.state).fails = k;
                last_reason = failure_reason(&e);
                warn!(attempt = k, of = n, "reconnect failed: {e}");
                last = e;
                shared.emit(false, k, n, last_reason);
                if k == n {
                    break;
                }
                let delay = shared.config.reconnect.delay(k, fastrand::f64());
                let cancelled = shared.cancel_notify.notified();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancelled => {}
                }
            }
        }
    }
    drop(retrying);
    let manual = lock(&shared.state).manual;
    if !manual {
        shared.emit(true, fails, n, last_reason);
    }
    Err(last)
}

impl Shared {
    /// A client core that is not connected yet; its I/O runs on `rt`.
    fn new(config: ClientConfig, rt: Handle) -> Arc<Shared> {
        let limit = config.settings.max_inbound_queue;
        Arc::new_cyclic(|weak: &Weak<Shared>| {
            let weak = weak.clone();
            let runner: Runner<Job> = Arc::new(move |jobs| match weak.upgrade() {
                Some(s) => s.run_jobs(jobs),
                None => jobs.clear(),
            });
            Shared {
                handlers: Registry::new(),
                link: Mutex::new(None),
                state: Mutex::new(State {
                    manual: false,
                    retrying: false,
                    fails: 0,
                    ended: DisconnectCause::NotConnected,
                }),
                cancel: AtomicBool::new(false),
                cancel_notify: Notify::new(),
                closed: watch::channel(true).0,
                queue: SerialQueue::new(runner, limit),
                rt,
                counters: Arc::default(),
                config,
            }
        })
    }

    /// The one implementation of `send` behind both faces and [`ClientSender`]: never waits for
    /// the network (from a thread outside the runtime, an isolated send to an idle link is
    /// written inline, see `Conn::send`).
    pub(crate) fn send(&self, req: &Request) -> Result<()> {
        self.send_slice(req.message_type(), req.request_id(), req.content())
    }

    /// [`Shared::send`] from borrowed parts (see [`Client::send_slice`]).
    pub(crate) fn send_slice(
        &self,
        message_type: u16,
        request_id: Option<u32>,
        content: &[u8],
    ) -> Result<()> {
        self.conn()?
            .send_slice(message_type, request_id, content)
            .map(|_| ())
    }
}

/// The async face of a Veltix client, and its owner: it holds the client's core and its claim on
/// the handler pool, implements every operation, and closes the link when dropped. Create it
/// inside a tokio runtime: its I/O runs there. The blocking [`Client`] wraps one.
pub struct AsyncClient {
    pub(crate) shared: Arc<Shared>,
    /// This client's claim on the process-wide handler pool's size, released when the client
    /// is dropped (its connections may still be finishing).
    pub(crate) _claim: Claim,
}

/// The operations of the async face that need the core's state: [`AsyncClient`] owns the core
/// (and the blocking [`Client`] wraps an `AsyncClient`), so this is their one implementation.
/// The rest of `AsyncClient` (async handlers, streams, the futures) is in [`asynch`](crate::asynch).
impl AsyncClient {
    /// A client on the current tokio runtime (or the shared one outside any runtime).
    pub fn new(config: ClientConfig) -> Self {
        AsyncClient::with_handle(config, crate::rt::current_or_shared())
    }

    /// Connects and handshakes (running the reconnect policy on failure, see [`Client::connect`]).
    /// The future does not borrow the client.
    pub fn connect(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.shared.clone().connect()
    }

    /// A client whose I/O runs on the given tokio runtime (see [`Client::with_handle`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() {
    /// let rt = tokio::runtime::Handle::current();
    /// let client = veltix::AsyncClient::with_handle(veltix::ClientConfig::new("127.0.0.1", 9), rt);
    /// assert!(!client.is_connected());
    /// # }
    /// ```
    pub fn with_handle(config: ClientConfig, rt: Handle) -> AsyncClient {
        let claim = Claim::new(config.settings.max_workers);
        AsyncClient {
            shared: Shared::new(config, rt),
            _claim: claim,
        }
    }

    /// The configuration.
    ///
    /// ```
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// assert_eq!(client.config().port, 9);
    /// ```
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.shared.conn().is_ok()
    }

    /// Counters since the client was created, across reconnects (see [`Client::stats`]).
    ///
    /// ```
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// assert_eq!(client.stats().frames_in, 0);
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The server's address while connected.
    ///
    /// ```
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// assert_eq!(client.server_addr(), None);
    /// ```
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.shared.conn().ok().map(|c| c.peer)
    }

    /// A synchronous handler (see [`Client::route`]).
    pub fn route<F, R>(&self, message_type: impl TypeCode, handler: F) -> &Self
    where
        F: Fn(Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        let code = message_type.type_code();
        let weak = Arc::downgrade(&self.shared);
        let f: ClientRoute = Arc::new(move |m| {
            if let Err(e) = handler(m).into_handler_result() {
                if let Some(s) = weak.upgrade() {
                    s.handler_failed(&format_args!("handler for type {code}"), &e);
                }
            }
        });
        self.shared.handlers.set_route(code, f);
        self
    }

    /// Removes the handler of a type; `true` if there was one.
    ///
    /// ```
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// client.route(200u16, |_| ());
    /// assert!(client.unroute(200u16));
    /// ```
    pub fn unroute(&self, message_type: impl TypeCode) -> bool {
        self.shared.handlers.remove_route(message_type.type_code())
    }

    /// Fallback handler (see [`Client::on_recv`]).
    pub fn on_recv<F, R>(&self, handler: F) -> &Self
    where
        F: Fn(Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        let weak = Arc::downgrade(&self.shared);
        let f: ClientRoute = Arc::new(move |m| {
            if let Err(e) = handler(m).into_handler_result() {
                if let Some(s) = weak.upgrade() {
                    s.handler_failed(&"on_recv handler", &e);
                }
            }
        });
        self.shared.handlers.set_on_recv(f);
        self
    }

    /// See [`Client::on_connect`].
    pub fn on_connect(&self, f: impl Fn() + Send + Sync + 'static) -> &Self {
        self.shared.handlers.add_on_connect(Arc::new(f));
        self
    }

    /// See [`Client::on_disconnect`].
    pub fn on_disconnect(&self, f: impl Fn(&DisconnectState) + Send + Sync + 'static) -> &Self {
        self.shared.handlers.add_on_disconnect(Arc::new(f));
        self
    }

    /// Wraps every batch of synchronous handler calls (see [`Client::around_handlers`]).
    ///
    /// ```
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// client.around_handlers(|batch| batch());
    /// ```
    pub fn around_handlers(&self, f: impl Fn(&mut dyn FnMut()) + Send + Sync + 'static) -> &Self {
        self.shared.handlers.set_around(Arc::new(f));
        self
    }

    /// Sets the observer of this client's connection events; the same as
    /// [`Client::on_event`] (the observer runs inline on I/O threads).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")] async fn main() {
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 1));
    /// client.on_event(|e| eprintln!("{e:?}"));
    /// # }
    /// ```
    pub fn on_event(&self, f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> &Self {
        self.shared.counters.observer.replace(Arc::new(f));
        self
    }

    /// A cloneable handle that sends from any thread or task (see [`ClientSender`]).
    ///
    /// ```
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// let tx = client.sender();
    /// assert!(tx.send(veltix::Request::text(200u16, "hi")).is_err()); // not connected
    /// ```
    pub fn sender(&self) -> ClientSender {
        ClientSender {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// See [`Client::stop_retry`].
    pub fn stop_retry(&self) {
        self.shared.cancel.store(true, Ordering::SeqCst);
        self.shared.cancel_notify.notify_waiters();
    }

    /// Starts a reconnect loop in the background with `max` attempts (default: the configured
    /// `reconnect.retries`) and returns at once (see [`Client::retry`]). Attempts are reported to
    /// [`on_disconnect`](Self::on_disconnect), success to [`on_connect`](Self::on_connect);
    /// [`stop_retry`](Self::stop_retry) cancels the loop. Ignored while connected, while a loop
    /// is running, or with no attempts to make.
    ///
    /// ```
    /// use veltix::{AsyncClient, AsyncServer, ClientConfig, ServerConfig};
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> veltix::Result<()> {
    /// let server = AsyncServer::new(ServerConfig::local());
    /// let addr = server.start()?;
    /// let client = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()));
    /// let (tx, mut connected) = tokio::sync::mpsc::unbounded_channel();
    /// client.on_connect(move || {
    ///     let _ = tx.send(());
    /// });
    /// client.retry(Some(5)); // connects in the background
    /// connected.recv().await;
    /// assert!(client.is_connected());
    /// # Ok(())
    /// # }
    /// ```
    pub fn retry(&self, max: Option<u32>) {
        let n = max.unwrap_or(self.shared.config.reconnect.retries);
        if n == 0 {
            warn!("retry: no attempts configured");
            return;
        }
        if self.is_connected() {
            return;
        }
        lock(&self.shared.state).manual = false;
        self.shared.set_closed(false);
        let shared = self.shared.clone();
        self.shared.rt.spawn(async move {
            let _ = retry_loop(shared, DisconnectReason::Error, n).await;
        });
    }

    /// Sends a message (never waits for the network).
    pub async fn send(&self, request: impl Borrow<Request>) -> Result<()> {
        self.shared.send(request.borrow())
    }

    /// Request/response. Cancellation-safe: dropping the future releases the id.
    pub async fn send_and_wait(
        &self,
        request: impl Borrow<Request>,
        timeout: Duration,
    ) -> Result<Response> {
        let conn = self.shared.conn()?;
        conn.request(request.borrow(), timeout).await
    }

    /// Round-trip time of a PING to the server.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration> {
        let conn = self.shared.conn()?;
        conn.ping(timeout).await
    }

    /// Closes (flushing what was queued) and cancels reconnects (see [`Client::disconnect`]).
    /// The future does not borrow the client.
    pub fn disconnect(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.clone().disconnect()
    }

    /// Resolves once disconnected for good (the future does not borrow the client).
    pub fn wait_until_closed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.clone().wait_closed()
    }
}

/// Dropping the client (either face: the blocking one owns an `AsyncClient`) closes the link and
/// cancels reconnects, without waiting.
impl Drop for AsyncClient {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.manual = true;
            st.ended = DisconnectCause::ClosedLocally;
        }
        self.shared.cancel.store(true, Ordering::SeqCst);
        self.shared.cancel_notify.notify_waiters();
        if let Some(l) = lock(&self.shared.link).take() {
            l.conn.close_locally();
        }
    }
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field(
                "server",
                &format!("{}:{}", self.shared.config.host, self.shared.config.port),
            )
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// A Veltix client.
///
/// The blocking face of an [`AsyncClient`], which it owns ([`as_async`](Self::as_async)): every
/// operation is the async face's, and the calls that wait block the calling thread until the
/// async face's future is done (or take the blocking fast path of a request, see
/// [`send_and_wait`](Self::send_and_wait)).
///
/// ```no_run
/// use std::time::Duration;
/// use veltix::{Client, ClientConfig, MessageType, Request};
/// const CHAT: MessageType = MessageType::new(200, "chat");
///
/// let client = Client::new(ClientConfig::new("127.0.0.1", 8080));
/// client.route(&CHAT, |msg| println!("chat: {}", msg.text().unwrap_or("?")));
/// client.on_disconnect(|state| println!("disconnected: {state:?}"));
/// client.connect()?;
/// client.send(Request::text(&CHAT, "hello"))?;
/// let rtt = client.ping_server(Duration::from_secs(2))?;
/// println!("rtt {rtt:?}");
/// client.disconnect();
/// # Ok::<(), veltix::Error>(())
/// ```
pub struct Client {
    inner: AsyncClient,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cfg = self.config();
        f.debug_struct("Client")
            .field("server", &format!("{}:{}", cfg.host, cfg.port))
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// The blocking face of an async client (for code that mixes both; see [`Server`'s
/// `From<AsyncServer>`](crate::Server#impl-From<AsyncServer>-for-Server) for the caveat).
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
/// let client = veltix::Client::from(client);
/// assert!(!client.as_async().is_connected());
/// # }
/// ```
impl From<AsyncClient> for Client {
    fn from(inner: AsyncClient) -> Client {
        Client { inner }
    }
}

/// The async face of a blocking client (the same client: routes, link and counters are kept).
///
/// ```
/// let client = veltix::Client::new(veltix::ClientConfig::new("127.0.0.1", 9));
/// let client = veltix::AsyncClient::from(client);
/// assert!(!client.is_connected());
/// ```
impl From<Client> for AsyncClient {
    fn from(client: Client) -> AsyncClient {
        client.inner
    }
}

impl Client {
    /// A client that is not connected yet (see [`Client::connect`]).
    pub fn new(config: ClientConfig) -> Client {
        Self::with_handle(config, crate::rt::handle())
    }

    /// A client whose I/O runs on the given tokio runtime.
    pub fn with_handle(config: ClientConfig, rt: Handle) -> Client {
        Client {
            inner: AsyncClient::with_handle(config, rt),
        }
    }

    /// The async face of this client: the same client, for `.await`ing its operations and
    /// registering async handlers.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() {
    /// let client = veltix::Client::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// client.as_async().disconnect().await;
    /// assert!(!client.is_connected());
    /// # }
    /// ```
    pub fn as_async(&self) -> &AsyncClient {
        &self.inner
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        self.inner.config()
    }

    /// Connects and completes the handshake. When it returns `Ok`, sending is safe.
    ///
    /// On failure with `reconnect.retries > 0`, it runs the reconnect loop before returning (as
    /// Python does) and returns `Ok` if an attempt succeeded. A full server is not retried here.
    /// Errors: [`Error::ConnectionRefused`], [`Error::ConnectTimeout`], [`Error::ServerFull`],
    /// [`Error::Handshake`] (e.g. incompatible version), [`Error::HandshakeTimeout`],
    /// [`Error::Rejected`] (the server's authenticate hook said no; not retried),
    /// [`Error::Tls`] (certificate check or TLS handshake failed),
    /// [`Error::TlsConfig`] (a bad certificate, key or CA file; not retried).
    pub fn connect(&self) -> Result<()> {
        crate::blocking::block_on(&self.inner.shared.rt, self.inner.connect())
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Counters since the client was created, across reconnects: traffic, drops and handshake
    /// failures (see [`Stats`]). Cheap: a few atomic loads.
    ///
    /// ```
    /// use veltix::{Client, ClientConfig};
    /// let client = Client::new(ClientConfig::new("127.0.0.1", 9));
    /// let stats = client.stats();
    /// assert_eq!((stats.connections, stats.frames_out), (0, 0));
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The server's address while connected.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.inner.server_addr()
    }

    /// Registers the handler for a message type (replacing any previous one). Routes and all
    /// callbacks survive reconnects.
    pub fn route<F, R>(&self, message_type: impl TypeCode, handler: F) -> &Self
    where
        F: Fn(Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.inner.route(message_type, handler);
        self
    }

    /// Removes the handler of a type; `true` if there was one.
    pub fn unroute(&self, message_type: impl TypeCode) -> bool {
        self.inner.unroute(message_type)
    }

    /// The fallback handler for messages without a route.
    pub fn on_recv<F, R>(&self, handler: F) -> &Self
    where
        F: Fn(Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.inner.on_recv(handler);
        self
    }

    /// Adds a callback run after every successful (re)connect, before that connection's
    /// messages are handled.
    pub fn on_connect(&self, f: impl Fn() + Send + Sync + 'static) -> &Self {
        self.inner.on_connect(f);
        self
    }

    /// Adds a callback receiving every [`DisconnectState`] notification.
    pub fn on_disconnect(&self, f: impl Fn(&DisconnectState) + Send + Sync + 'static) -> &Self {
        self.inner.on_disconnect(f);
        self
    }

    /// Wraps every batch of handler calls (see [`Server::around_handlers`](crate::Server::around_handlers)).
    ///
    /// ```
    /// let client = veltix::Client::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// client.around_handlers(|batch| batch());
    /// ```
    pub fn around_handlers(&self, f: impl Fn(&mut dyn FnMut()) + Send + Sync + 'static) -> &Self {
        self.inner.around_handlers(f);
        self
    }

    /// Sets the observer of this client's connection events ([`Event`]: handshakes of each
    /// (re)connect, PINGs from the server and their PONGs, protocol violations), replacing any
    /// previous one. It runs inline on I/O threads: keep it short and non-blocking. See
    /// [`crate::observe`].
    ///
    /// ```
    /// let client = veltix::Client::new(veltix::ClientConfig::new("127.0.0.1", 8080));
    /// client.on_event(|e| eprintln!("{e:?}"));
    /// ```
    pub fn on_event(&self, f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> &Self {
        self.as_async().on_event(f);
        self
    }

    /// Sends a message (a client-range id is assigned if it has none). Fails fast with
    /// [`Error::Disconnected`] while there is no link: [`DisconnectCause::NotConnected`] before
    /// `connect()` and while reconnecting, else the cause that ended the link.
    pub fn send(&self, request: impl Borrow<Request>) -> Result<()> {
        self.inner.shared.send(request.borrow())
    }

    /// [`Client::send`] from a borrowed payload: `content` is encoded straight into the
    /// connection's outbound buffer, so no [`Request`] (and no copy of the payload) is made.
    /// For callers that hold their bytes elsewhere (a language binding, a reused buffer).
    /// `request_id: None` assigns a client-range id, as `send` does for a request without one.
    ///
    /// ```no_run
    /// let client = veltix::Client::new(veltix::ClientConfig::new("127.0.0.1", 9000));
    /// client.connect()?;
    /// let mut buf = Vec::new();
    /// for i in 0..3u8 {
    ///     buf.clear();
    ///     buf.extend_from_slice(&[i; 16]);
    ///     client.send_slice(200u16, None, &buf)?;
    /// }
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn send_slice(
        &self,
        message_type: impl crate::TypeCode,
        request_id: Option<u32>,
        content: &[u8],
    ) -> Result<()> {
        self.inner
            .shared
            .send_slice(message_type.type_code(), request_id, content)
    }

    /// Sends and blocks until the server answers with the same request id. Fails with
    /// [`Error::Timeout`], or [`Error::Disconnected`] as soon as the link drops.
    pub fn send_and_wait(
        &self,
        request: impl Borrow<Request>,
        timeout: Duration,
    ) -> Result<Response> {
        crate::blocking::request(&self.inner.shared.conn()?, request.borrow(), timeout)
    }

    /// PINGs the server; returns the round-trip time measured locally.
    pub fn ping_server(&self, timeout: Duration) -> Result<Duration> {
        crate::blocking::ping(&self.inner.shared.conn()?, timeout)
    }

    /// A cloneable handle that sends from any thread (and inside handlers).
    pub fn sender(&self) -> ClientSender {
        self.inner.sender()
    }

    /// Cancels a running reconnect loop (its current wait is interrupted).
    pub fn stop_retry(&self) {
        self.inner.stop_retry();
    }

    /// Starts a reconnect loop in the background with `max` attempts (default: the configured
    /// retries). Ignored (with a warning) if one is running or there are no attempts to make.
    pub fn retry(&self, max: Option<u32>) {
        self.inner.retry(max);
    }

    /// Closes the connection (flushing what was queued, bounded by `close_timeout`), cancels
    /// reconnects and fires `on_disconnect` with `permanent: true, reason: Manual`. Blocks until
    /// the connection is closed.
    pub fn disconnect(&self) {
        crate::blocking::block_on(&self.inner.shared.rt, self.inner.disconnect());
    }

    /// Blocks until `disconnect()` is called or the client gives up reconnecting (after the
    /// permanent `on_disconnect` callbacks ran).
    pub fn wait_until_closed(&self) {
        crate::blocking::block_on(&self.inner.shared.rt, self.inner.wait_until_closed());
    }
}

/// A cloneable handle to a client, for sending from other threads or from handlers.
/// It does not keep the client alive.
///
/// ```no_run
/// # use veltix::{Client, ClientConfig, Request};
/// let client = Client::new(ClientConfig::new("127.0.0.1", 8080));
/// let tx = client.sender();
/// client.route(200u16, move |msg| tx.send(Request::text(201u16, "got it").respond(&msg)));
/// ```
#[derive(Clone)]
pub struct ClientSender {
    shared: Weak<Shared>,
}

impl ClientSender {
    fn shared(&self) -> Result<Arc<Shared>> {
        self.shared
            .upgrade()
            .ok_or(Error::Disconnected(DisconnectCause::ClosedLocally))
    }
    /// Sends a message.
    pub fn send(&self, request: impl Borrow<Request>) -> Result<()> {
        self.shared()?.send(request.borrow())
    }
    /// Sends and waits for the reply.
    pub fn send_and_wait(
        &self,
        request: impl Borrow<Request>,
        timeout: Duration,
    ) -> Result<Response> {
        crate::blocking::request(&self.shared()?.conn()?, request.borrow(), timeout)
    }
}
