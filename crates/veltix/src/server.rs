//! The Veltix server: accept loop, handshakes, per-connection tasks, handlers, tags, broadcast.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};
use veltix_proto::handshake::server_full_message;
use veltix_proto::{encode_parts, Generation, IdAllocator};

use crate::cluster::LocalClients;
use crate::conn::{self, CloseReason, Conn};
use crate::handlers::{HandlerSet, Registry};
use crate::observe::Event;
use crate::pool::{guarded, Claim, Runner, SerialQueue};
use crate::stats::{add, finish_throttled, throttled, Counters, Stats, Throttle};
use crate::util::lock;
use crate::{
    DisconnectCause, Error, HandlerResult, Request, Response, Result, ServerConfig, TypeCode,
};

mod cluster_ops;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// A route or `on_recv` handler of a server.
pub(crate) type ServerRoute = Arc<dyn Fn(&ClientInfo, Response) + Send + Sync>;
type ClientCallback = Arc<dyn Fn(&ClientInfo) + Send + Sync>;

type Handlers = Registry<ServerRoute, ClientCallback, ClientCallback>;

struct ClientEntry {
    id: u64,
    addr: SocketAddr,
    handshake_done: AtomicBool,
    tags: Mutex<HashMap<String, Value>>,
    conn: Arc<Conn>,
    /// Cluster: this node's id, and the signal that makes it republish its presence.
    cluster: Option<(Arc<str>, Arc<Notify>)>,
    /// Set once the TLS handshake is done (TLS servers only).
    tls: std::sync::OnceLock<crate::tls::TlsInfo>,
}

/// A connected client, as the server sees it: address, a stable id, tags, and a handle to send
/// to it. Cheap to clone; every clone sees the same tags. Equality is by connection id.
///
/// ```no_run
/// use veltix::{ClientInfo, MessageType, Request, Response, Server, ServerConfig};
/// const JOIN: MessageType = MessageType::new(200, "join");
/// let server = Server::new(ServerConfig::local());
/// server.route(&JOIN, |client: &ClientInfo, msg: Response| {
///     client.set_tag("room", msg.text().unwrap_or("lobby"));
///     client.send(Request::text(&JOIN, "welcome").respond(&msg))
/// });
/// ```
#[derive(Clone)]
pub struct ClientInfo {
    inner: Arc<ClientEntry>,
}

impl PartialEq for ClientInfo {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}
impl Eq for ClientInfo {}
impl std::hash::Hash for ClientInfo {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.id.hash(state);
    }
}
impl std::fmt::Debug for ClientInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientInfo(ip={}, port={}, id={})",
            self.ip(),
            self.port(),
            self.id()
        )
    }
}

impl ClientInfo {
    /// Process-wide unique connection id (stable for the connection's life).
    pub fn id(&self) -> u64 {
        self.inner.id
    }
    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }
    /// The peer's IP.
    pub fn ip(&self) -> IpAddr {
        self.inner.addr.ip()
    }
    /// The peer's port.
    pub fn port(&self) -> u16 {
        self.inner.addr.port()
    }
    /// True once the handshake succeeded.
    pub fn handshake_done(&self) -> bool {
        self.inner.handshake_done.load(Ordering::Acquire)
    }
    /// True while the connection is open.
    pub fn is_connected(&self) -> bool {
        self.inner.conn.is_open()
    }

    /// The TLS session of this client (`None` on a plaintext server): protocol, cipher suite
    /// and, under mutual TLS, the verified certificate's subject.
    ///
    /// ```no_run
    /// # fn f(client: &veltix::ClientInfo) {
    /// let who = client
    ///     .tls()
    ///     .and_then(|t| t.peer_certificate.as_ref())
    ///     .map(|c| c.subject.clone());
    /// println!("{who:?}"); // Some("CN=sensor-17, O=Acme")
    /// # }
    /// ```
    pub fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        self.inner.tls.get()
    }

    /// Sends a message to this client (an id from the server range is assigned if the request
    /// has none). Fails with [`Error::Disconnected`] if the connection is closed (or closing).
    pub fn send(&self, request: impl Borrow<Request>) -> Result<()> {
        self.inner.conn.send(request.borrow()).map(|_| ())
    }

    /// [`ClientInfo::send`] from a borrowed payload: `content` is encoded straight into the
    /// connection's outbound buffer, no [`Request`] (and no copy of the payload) is made.
    /// `request_id: None` assigns a server-range id.
    ///
    /// ```no_run
    /// # fn f(client: &veltix::ClientInfo) -> veltix::Result<()> {
    /// let frame_of_state = [0u8; 32];
    /// client.send_slice(300u16, None, &frame_of_state)?;
    /// # Ok(()) }
    /// ```
    pub fn send_slice(
        &self,
        message_type: impl crate::TypeCode,
        request_id: Option<u32>,
        content: &[u8],
    ) -> Result<()> {
        self.inner
            .conn
            .send_slice(message_type.type_code(), request_id, content)
            .map(|_| ())
    }

    /// Sends and blocks until the client answers with the same request id.
    pub fn send_and_wait(
        &self,
        request: impl Borrow<Request>,
        timeout: Duration,
    ) -> Result<Response> {
        crate::blocking::request(&self.inner.conn, request.borrow(), timeout)
    }

    /// Round-trip time of a PING to this client.
    pub fn ping(&self, timeout: Duration) -> Result<Duration> {
        crate::blocking::ping(&self.inner.conn, timeout)
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.inner.conn
    }

    fn tags(&self) -> std::sync::MutexGuard<'_, HashMap<String, Value>> {
        lock(&self.inner.tags)
    }

    /// Tells the cluster (if any) that this client's tags changed.
    fn tags_changed(&self) {
        if let Some((_, changed)) = &self.inner.cluster {
            changed.notify_one();
        }
    }

    /// This client's cluster-wide id (`None` when the server has no cluster setting).
    ///
    /// ```no_run
    /// # fn f(client: &veltix::ClientInfo) {
    /// if let Some(id) = client.cluster_id() {
    ///     println!("reach me anywhere as {id}");
    /// }
    /// # }
    /// ```
    pub fn cluster_id(&self) -> Option<crate::cluster::ClusterId> {
        self.inner
            .cluster
            .as_ref()
            .map(|(node, _)| crate::cluster::ClusterId::new(node, self.inner.id))
    }

    /// Adds a tag; `false` (and no change) if it already exists.
    ///
    /// ```
    /// # fn f(client: &veltix::ClientInfo) {
    /// client.add_tag("admin", true);
    /// client.add_tag("room", "lobby");
    /// assert!(client.has_all_tags(&["admin", "room"]));
    /// assert_eq!(client.get_tag("room"), Some(serde_json::json!("lobby")));
    /// # }
    /// ```
    pub fn add_tag(&self, name: &str, value: impl Into<Value>) -> bool {
        let mut t = self.tags();
        if t.contains_key(name) {
            return false;
        }
        t.insert(name.to_string(), value.into());
        drop(t);
        self.tags_changed();
        true
    }
    /// Creates or overwrites a tag.
    pub fn set_tag(&self, name: &str, value: impl Into<Value>) {
        self.tags().insert(name.to_string(), value.into());
        self.tags_changed();
    }
    /// Is the tag present?
    pub fn has_tag(&self, name: &str) -> bool {
        self.tags().contains_key(name)
    }
    /// Are all these tags present? (True for an empty list.)
    pub fn has_all_tags(&self, names: &[&str]) -> bool {
        let t = self.tags();
        names.iter().all(|n| t.contains_key(*n))
    }
    /// Is at least one of these tags present? (False for an empty list.)
    pub fn has_any_tags(&self, names: &[&str]) -> bool {
        let t = self.tags();
        names.iter().any(|n| t.contains_key(*n))
    }
    /// A tag's value.
    pub fn get_tag(&self, name: &str) -> Option<Value> {
        self.tags().get(name).cloned()
    }
    /// Removes a tag; `false` if it was absent.
    pub fn remove_tag(&self, name: &str) -> bool {
        let removed = self.tags().remove(name).is_some();
        if removed {
            self.tags_changed();
        }
        removed
    }
    /// Removes every tag.
    pub fn clear_tags(&self) {
        self.tags().clear();
        self.tags_changed();
    }
    /// A copy of all tags.
    pub fn tag_map(&self) -> HashMap<String, Value> {
        self.tags().clone()
    }
}

/// Work for the pool, queued per connection (the runner knows the client).
enum Job {
    Message(Response),
    Connect,
    Disconnect(Lifecycle),
}

struct Running {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

pub(crate) struct Shared {
    config: ServerConfig,
    handlers: Handlers,
    clients: Mutex<HashMap<u64, ClientInfo>>,
    count: AtomicUsize,
    rt: Handle,
    running: Mutex<Option<Running>>,
    /// Last bound address, reused by `restart()` so clients find the server again.
    last_addr: Mutex<Option<SocketAddr>>,
    /// `true` after close_all(); watched by `wait_until_closed` (both faces).
    closed: watch::Sender<bool>,
    /// Signalled whenever a connection ends (gen 1 accept throttling, close_all draining).
    conn_ended: Notify,
    /// Connections that completed the handshake and whose on_disconnect has not run yet.
    lifecycles: AtomicUsize,
    /// Signalled when an on_disconnect job finished.
    handlers_done: Notify,
    broadcast_ids: Mutex<IdAllocator>,
    /// The authenticate hook, if any (read once per connection).
    auth: Mutex<Option<crate::auth::Authenticator>>,
    pub(crate) counters: Arc<Counters>,
    /// Server-wide repeated events (a loop of connections is many peers, one event).
    throttles: ServerThrottles,
    /// Cluster membership, created by the first `start()` when `config.cluster` is set.
    pub(crate) cluster: OnceLock<Arc<crate::cluster::Node>>,
}

/// Server-wide events logged in full per second before they are only summarised: enough for
/// a handful of misbehaving peers to each get their own line (with address and reason), few
/// enough that a loop of hostile connections costs a bounded number of lines.
const SERVER_LOG_BURST: u32 = 20;

/// The server-wide events that are logged through a [`Throttle`].
#[derive(Debug)]
struct ServerThrottles {
    refused_full: Throttle,
    handshake_failed: Throttle,
    abnormal_close: Throttle,
    accept_failed: Throttle,
}

impl Default for ServerThrottles {
    fn default() -> Self {
        ServerThrottles {
            refused_full: Throttle::with_burst(SERVER_LOG_BURST),
            handshake_failed: Throttle::with_burst(SERVER_LOG_BURST),
            abnormal_close: Throttle::with_burst(SERVER_LOG_BURST),
            accept_failed: Throttle::default(),
        }
    }
}

impl ServerThrottles {
    /// Logs what the throttles still hold (at `close_all`).
    fn finish(&self, addr: &dyn std::fmt::Display) {
        finish_throttled!(self.refused_full, addr, summary: "refused {count} connections in the last {secs} s: server full");
        finish_throttled!(self.handshake_failed, addr, summary: "{count} handshakes failed in the last {secs} s");
        finish_throttled!(self.abnormal_close, addr, summary: "{count} connections ended abnormally in the last {secs} s");
        finish_throttled!(self.accept_failed, addr, summary: "accept failed {count} times in the last {secs} s");
    }
}

impl Shared {
    pub(crate) fn stats(&self) -> Stats {
        self.counters
            .snapshot(self.count.load(Ordering::Relaxed) as u64)
    }

    fn is_full(&self) -> bool {
        self.config
            .max_connections
            .is_some_and(|m| self.count.load(Ordering::Acquire) >= m)
    }

    pub(crate) fn config_ref(&self) -> &ServerConfig {
        &self.config
    }

    pub(crate) fn rt_handle(&self) -> Handle {
        self.rt.clone()
    }

    /// Tells the cluster (if any) that the client list changed.
    fn clients_changed(&self) {
        if let Some(node) = self.cluster.get() {
            node.changed().notify_one();
        }
    }

    /// Checks that `req` can be sent by this server (type and size), as `broadcast` does.
    pub(crate) fn check_outgoing(&self, req: &Request) -> Result<()> {
        let s = &self.config.settings;
        let (t, len) = (req.message_type(), req.content().len());
        Ok(veltix_proto::check_outgoing(
            s.generation,
            s.max_message_size,
            t,
            len,
        )?)
    }

    /// The one implementation of `close_all` behind both faces.
    pub(crate) async fn close_all(self: Arc<Self>) {
        let running = lock(&self.running).take();
        if let Some(r) = &running {
            self.throttles.finish(&r.addr);
        }
        if let Some(r) = running {
            r.accept.abort();
            // Wait until the task is gone and its listener closed, so `restart()` can rebind.
            let _ = r.accept.await;
        }
        let grace = self.config.settings.close_timeout + Duration::from_secs(1);
        let all: Vec<ClientInfo> = lock(&self.clients).values().cloned().collect();
        for c in &all {
            c.conn().close_with(DisconnectCause::ServerStopped, false);
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let ended = self.conn_ended.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                warn!(
                    "close_all: {} connections still closing after {grace:?}",
                    self.count.load(Ordering::Acquire)
                );
                break;
            }
        }
        // Then wait for the handlers: every closed client's messages and on_disconnect have run
        // when close_all returns. Not from inside a handler: its own connection's queue
        // cannot advance until it returns.
        if !crate::pool::in_worker() {
            loop {
                let done = self.handlers_done.notified();
                if self.lifecycles.load(Ordering::Acquire) == 0 {
                    break;
                }
                if tokio::time::timeout_at(deadline, done).await.is_err() {
                    warn!("close_all: handlers still running after {grace:?}");
                    break;
                }
            }
        }
        self.closed.send_replace(true);
    }

    pub(crate) async fn wait_closed(self: Arc<Self>) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    fn run_job(
        &self,
        h: &HandlerSet<ServerRoute, ClientCallback, ClientCallback>,
        client: &ClientInfo,
        job: Job,
    ) {
        match job {
            Job::Message(msg) => match h.handler_for(msg.message_type()) {
                Some(f) => guarded(|| f(client, msg)),
                None => client.conn().unrouted(&msg),
            },
            Job::Connect => h.on_connect.iter().for_each(|f| guarded(|| f(client))),
            Job::Disconnect(done) => {
                h.on_disconnect.iter().for_each(|f| guarded(|| f(client)));
                drop(done);
            }
        }
    }
}

impl Shared {
    /// A server core that is not listening yet; its I/O runs on `rt`.
    fn new(config: ServerConfig, rt: Handle) -> Arc<Shared> {
        let broadcast_ids = Mutex::new(IdAllocator::for_server(
            config.settings.generation,
            config.id_window,
        ));
        Arc::new(Shared {
            handlers: Registry::new(),
            clients: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            rt,
            running: Mutex::new(None),
            last_addr: Mutex::new(None),
            closed: watch::channel(false).0,
            conn_ended: Notify::new(),
            lifecycles: AtomicUsize::new(0),
            handlers_done: Notify::new(),
            broadcast_ids,
            auth: Mutex::new(None),
            counters: Arc::default(),
            throttles: ServerThrottles::default(),
            cluster: OnceLock::new(),
            config,
        })
    }

    /// The one implementation of `start` behind both faces (and `restart`).
    fn start(self: &Arc<Self>) -> Result<SocketAddr> {
        self.config.validate()?;
        // Certificates and keys are read and checked now: a bad file fails `start()`.
        let acceptor = match &self.config.tls {
            Some(t) => Some(t.acceptor()?),
            None => None,
        };
        let mut running = lock(&self.running);
        if running.is_some() {
            return Err(Error::AlreadyRunning);
        }
        let cfg = &self.config;
        let want = match *lock(&self.last_addr) {
            Some(a) => a.to_string(),
            None => format!("{}:{}", cfg.host, cfg.port),
        };
        let bind_err = |source| Error::Bind {
            addr: want.clone(),
            source,
        };
        let target = std::net::ToSocketAddrs::to_socket_addrs(&want)
            .map_err(bind_err)?
            .next()
            .ok_or_else(|| {
                bind_err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the host resolves to no address",
                ))
            })?;
        let listener = {
            let _guard = self.rt.enter();
            listen(target).map_err(bind_err)?
        };
        let addr = listener.local_addr()?;
        if let Some(c) = &cfg.cluster {
            if self.cluster.get().is_none() {
                // The node sees this core as its `LocalClients`, weakly.
                let me: Weak<Shared> = Arc::downgrade(self);
                let node = crate::cluster::Node::new(c, me, self.rt.clone())?;
                let _ = self.cluster.set(Arc::new(node));
            }
            if let Some(node) = self.cluster.get() {
                let _guard = self.rt.enter();
                node.start();
            }
        }
        *lock(&self.last_addr) = Some(addr);
        self.closed.send_replace(false);
        let weak = Arc::downgrade(self);
        let accept = self.rt.spawn(
            accept_loop(weak, listener, acceptor)
                .instrument(tracing::info_span!("veltix_server", %addr)),
        );
        info!(%addr, generation = %cfg.settings.generation, tls = cfg.tls.is_some(), "veltix server listening");
        *running = Some(Running { addr, accept });
        Ok(addr)
    }

    /// The one implementation of `restart` behind both faces.
    pub(crate) async fn restart(self: Arc<Self>) -> Result<SocketAddr> {
        self.clone().close_all().await;
        self.start()
    }
}

/// The async face of a Veltix server, and its owner: it holds the server's core and its claim on
/// the handler pool, implements every operation, and stops the server when dropped. Create it
/// inside a tokio runtime: its I/O runs there. The blocking [`Server`] wraps one.
pub struct AsyncServer {
    pub(crate) shared: Arc<Shared>,
    /// This server's claim on the process-wide handler pool's size, released when the server
    /// is dropped (its connections may still be finishing).
    pub(crate) _claim: Claim,
}

/// The operations of the async face that need the core's state: [`AsyncServer`] owns the core
/// (and the blocking [`Server`] wraps an `AsyncServer`), so this is their one implementation.
/// The rest of `AsyncServer` (async handlers, streams, the futures) is in [`asynch`](crate::asynch).
impl AsyncServer {
    /// A server on the current tokio runtime (or the shared one outside any runtime).
    pub fn new(config: ServerConfig) -> Self {
        AsyncServer::with_handle(config, crate::rt::current_or_shared())
    }

    /// A server whose I/O runs on the given tokio runtime (see [`Server::with_handle`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() {
    /// let rt = tokio::runtime::Handle::current();
    /// let server = veltix::AsyncServer::with_handle(veltix::ServerConfig::local(), rt);
    /// assert!(!server.is_running());
    /// # }
    /// ```
    pub fn with_handle(config: ServerConfig, rt: Handle) -> AsyncServer {
        let claim = Claim::new(config.settings.max_workers);
        AsyncServer {
            shared: Shared::new(config, rt),
            _claim: claim,
        }
    }

    /// The configuration.
    ///
    /// ```
    /// let server = veltix::AsyncServer::new(veltix::ServerConfig::local());
    /// assert_eq!(server.config().host, "127.0.0.1");
    /// ```
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Binds and starts accepting; returns the bound address (see [`Server::start`]).
    pub fn start(&self) -> Result<SocketAddr> {
        self.shared.start()
    }

    /// The bound address while running.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.shared.running).as_ref().map(|r| r.addr)
    }

    /// True while listening: after [`start`](Self::start), until [`close_all`](Self::close_all)
    /// (see [`Server::is_running`]).
    ///
    /// ```
    /// use veltix::{AsyncServer, ServerConfig};
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> veltix::Result<()> {
    /// let server = AsyncServer::new(ServerConfig::local());
    /// assert!(!server.is_running());
    /// server.start()?;
    /// assert!(server.is_running());
    /// server.close_all().await;
    /// assert!(!server.is_running());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_running(&self) -> bool {
        lock(&self.shared.running).is_some()
    }

    /// True when `max_connections` is reached (see [`Server::is_full`]): further clients are
    /// turned away with [`Error::ServerFull`].
    ///
    /// ```
    /// use veltix::{AsyncClient, AsyncServer, ClientConfig, Error, ServerConfig};
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> veltix::Result<()> {
    /// let server = AsyncServer::new(ServerConfig::local().max_connections(1));
    /// let addr = server.start()?;
    /// assert!(!server.is_full());
    /// let first = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()));
    /// first.connect().await?;
    /// assert!(server.is_full());
    /// let second = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()));
    /// assert!(matches!(second.connect().await, Err(Error::ServerFull(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_full(&self) -> bool {
        self.shared.is_full()
    }

    /// Counters since the server was created (see [`Server::stats`]).
    ///
    /// ```
    /// let server = veltix::AsyncServer::new(veltix::ServerConfig::local());
    /// assert_eq!(server.stats().connections, 0);
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// A synchronous handler (see [`Server::route`]).
    pub fn route<F, R>(&self, message_type: impl TypeCode, handler: F) -> &Self
    where
        F: Fn(&ClientInfo, Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        let code = message_type.type_code();
        let f: ServerRoute = Arc::new(move |c: &ClientInfo, m: Response| {
            if let Err(e) = handler(c, m).into_handler_result() {
                c.conn()
                    .handler_failed(&format_args!("handler for type {code}"), &e);
            }
        });
        self.shared.handlers.set_route(code, f);
        self
    }

    /// Removes the handler of a type; `true` if there was one.
    ///
    /// ```
    /// let server = veltix::AsyncServer::new(veltix::ServerConfig::local());
    /// server.route(200u16, |_, _| ());
    /// assert!(server.unroute(200u16));
    /// assert!(!server.unroute(200u16));
    /// ```
    pub fn unroute(&self, message_type: impl TypeCode) -> bool {
        self.shared.handlers.remove_route(message_type.type_code())
    }

    /// A synchronous authenticate hook (runs on tokio's blocking pool; see
    /// [`Server::authenticate`]).
    pub fn authenticate(
        &self,
        hook: impl Fn(&crate::auth::AuthRequest) -> crate::auth::AuthDecision + Send + Sync + 'static,
    ) -> &Self {
        self.set_authenticator(crate::auth::Authenticator::sync(hook));
        self
    }

    pub(crate) fn set_authenticator(&self, a: crate::auth::Authenticator) {
        *lock(&self.shared.auth) = Some(a);
    }

    /// See [`Server::auth_failures`].
    pub fn auth_failures(&self) -> u64 {
        self.stats().handshake_failures.auth
    }

    /// See [`Server::tls_failures`].
    pub fn tls_failures(&self) -> u64 {
        self.stats().handshake_failures.tls
    }

    /// Fallback handler for messages without a route (see [`Server::on_recv`]).
    pub fn on_recv<F, R>(&self, handler: F) -> &Self
    where
        F: Fn(&ClientInfo, Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        let f: ServerRoute = Arc::new(move |c: &ClientInfo, m: Response| {
            if let Err(e) = handler(c, m).into_handler_result() {
                c.conn().handler_failed(&"on_recv handler", &e);
            }
        });
        self.shared.handlers.set_on_recv(f);
        self
    }

    /// See [`Server::on_connect`].
    pub fn on_connect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) -> &Self {
        self.shared.handlers.add_on_connect(Arc::new(f));
        self
    }

    /// See [`Server::on_disconnect`].
    pub fn on_disconnect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) -> &Self {
        self.shared.handlers.add_on_disconnect(Arc::new(f));
        self
    }

    /// Wraps every batch of synchronous handler calls (see [`Server::around_handlers`]).
    ///
    /// ```
    /// let server = veltix::AsyncServer::new(veltix::ServerConfig::local());
    /// server.around_handlers(|batch| batch());
    /// ```
    pub fn around_handlers(&self, f: impl Fn(&mut dyn FnMut()) + Send + Sync + 'static) -> &Self {
        self.shared.handlers.set_around(Arc::new(f));
        self
    }

    /// Sets the observer of this server's connection events; the same as
    /// [`Server::on_event`] (the observer runs inline on I/O threads).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread")] async fn main() {
    /// let server = veltix::AsyncServer::new(veltix::ServerConfig::local());
    /// server.on_event(|e| eprintln!("{e:?}"));
    /// # }
    /// ```
    pub fn on_event(&self, f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> &Self {
        self.shared.counters.observer.replace(Arc::new(f));
        self
    }

    /// A cheap, cloneable handle that sends and broadcasts from any thread or task (see
    /// [`ServerSender`]).
    ///
    /// ```
    /// let server = veltix::AsyncServer::new(veltix::ServerConfig::local());
    /// let tx = server.sender();
    /// assert!(tx.clients().is_empty());
    /// ```
    pub fn sender(&self) -> ServerSender {
        ServerSender {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Connected clients.
    pub fn clients(&self) -> Vec<ClientInfo> {
        clients(&self.shared)
    }

    /// See [`Server::get_clients_by_tag`].
    pub fn get_clients_by_tag(&self, name: &str, value: Option<&Value>) -> Vec<ClientInfo> {
        self.clients()
            .into_iter()
            .filter(|c| match (c.get_tag(name), value) {
                (Some(_), None) => true,
                (Some(v), Some(want)) => &v == want,
                (None, _) => false,
            })
            .collect()
    }

    /// See [`Server::close_client`].
    pub fn close_client(&self, client: &ClientInfo) -> bool {
        let known = lock(&self.shared.clients).contains_key(&client.id());
        if known && client.is_connected() {
            client.conn().close_locally();
            true
        } else {
            false
        }
    }

    /// Sends to one client (never waits for the network).
    pub async fn send(&self, request: impl Borrow<Request>, client: &ClientInfo) -> Result<()> {
        client.send(request)
    }

    /// Broadcasts (see [`Server::broadcast`]).
    pub async fn broadcast(
        &self,
        request: impl Borrow<Request>,
        except: &[ClientInfo],
    ) -> Result<usize> {
        broadcast(&self.shared, request.borrow(), except)
    }

    /// Request/response with one client. Cancellation-safe: dropping the future releases the id.
    pub async fn send_and_wait(
        &self,
        request: impl Borrow<Request>,
        client: &ClientInfo,
        timeout: Duration,
    ) -> Result<Response> {
        client.conn().request(request.borrow(), timeout).await
    }

    /// Round-trip time of a PING to a client. The future borrows neither the server nor the
    /// client (it can be spawned).
    ///
    /// ```
    /// use std::time::Duration;
    /// use veltix::{AsyncClient, AsyncServer, ClientConfig, ServerConfig};
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> veltix::Result<()> {
    /// let server = AsyncServer::new(ServerConfig::local());
    /// let (tx, mut joined) = tokio::sync::mpsc::unbounded_channel();
    /// server.on_connect(move |c| {
    ///     let _ = tx.send(c.clone());
    /// });
    /// let addr = server.start()?;
    /// let client = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()));
    /// client.connect().await?;
    /// let c = joined.recv().await.expect("connected");
    /// let rtt = tokio::spawn(server.ping_client(&c, Duration::from_secs(5))).await.expect("task")?;
    /// assert!(rtt < Duration::from_secs(5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn ping_client(
        &self,
        client: &ClientInfo,
        timeout: Duration,
    ) -> impl Future<Output = Result<Duration>> + Send + 'static {
        let conn = client.conn().clone();
        async move { conn.ping(timeout).await }
    }

    /// Graceful shutdown: resolves when every connection is closed (queued data flushed,
    /// bounded by `close_timeout`; see [`Server::close_all`]). The future does not borrow the
    /// server.
    pub fn close_all(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.clone().close_all()
    }

    /// `close_all` then `start` on the same address (the future does not borrow the server).
    pub fn restart(&self) -> impl Future<Output = Result<SocketAddr>> + Send + 'static {
        self.shared.clone().restart()
    }

    /// Resolves once `close_all` was called (the future does not borrow the server).
    pub fn wait_until_closed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.clone().wait_closed()
    }
}

/// Dropping the server (either face: the blocking one owns an `AsyncServer`) stops accepting and
/// closes every connection, without waiting.
impl Drop for AsyncServer {
    fn drop(&mut self) {
        if let Some(node) = self.shared.cluster.get() {
            node.stop();
        }
        if let Some(r) = lock(&self.shared.running).take() {
            r.accept.abort();
        }
        for c in lock(&self.shared.clients).values() {
            c.conn().close_with(DisconnectCause::ServerStopped, false);
        }
    }
}

impl std::fmt::Debug for AsyncServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncServer")
            .field("addr", &self.local_addr())
            .field("clients", &self.shared.count.load(Ordering::Relaxed))
            .finish()
    }
}

/// A Veltix server. Handlers run on the process-wide handler pool (this server claims
/// `max_workers` threads of it, see [`set_handler_threads`](crate::set_handler_threads));
/// messages of one connection are handled in arrival order, different connections in parallel.
///
/// The blocking face of an [`AsyncServer`], which it owns ([`as_async`](Self::as_async)): every
/// operation is the async face's, and the calls that wait block the calling thread until the
/// async face's future is done (or take the blocking fast path of a request, see
/// [`send_and_wait`](Self::send_and_wait)).
///
/// ```
/// use std::time::Duration;
/// use veltix::{Client, ClientConfig, MessageType, Request, Server, ServerConfig};
///
/// const ECHO: MessageType = MessageType::new(200, "echo");
/// let server = Server::new(ServerConfig::local());
/// server.route(&ECHO, |client, msg| client.send(Request::new(&ECHO, msg.content().clone()).respond(&msg)));
/// let addr = server.start()?;
///
/// let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()));
/// client.connect()?;
/// let reply = client.send_and_wait(Request::text(&ECHO, "hi"), Duration::from_secs(5))?;
/// assert_eq!(reply.text()?, "hi");
/// client.disconnect();
/// server.close_all();
/// # Ok::<(), veltix::Error>(())
/// ```
pub struct Server {
    inner: AsyncServer,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.local_addr())
            .field("clients", &self.inner.shared.count.load(Ordering::Relaxed))
            .finish()
    }
}

/// The blocking face of an async server (for code that mixes both). Its calls that wait
/// should not be made from the tasks of the runtime the server runs on: on a current-thread
/// runtime they panic (see [`Server::close_all`]); on a multi-threaded one they work, but block
/// that worker thread while they wait (`tokio::task::block_in_place`). Use the async face
/// there, the blocking one from other threads.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let server = veltix::Server::from(veltix::AsyncServer::new(veltix::ServerConfig::local()));
/// assert!(!server.as_async().is_running());
/// # }
/// ```
impl From<AsyncServer> for Server {
    fn from(inner: AsyncServer) -> Server {
        Server { inner }
    }
}

/// The async face of a blocking server (the same server: routes, clients and counters are kept).
///
/// ```
/// let server = veltix::Server::new(veltix::ServerConfig::local());
/// let server = veltix::AsyncServer::from(server);
/// assert!(!server.is_running());
/// ```
impl From<Server> for AsyncServer {
    fn from(server: Server) -> AsyncServer {
        server.inner
    }
}

impl Server {
    /// A server that is not listening yet (see [`Server::start`]).
    pub fn new(config: ServerConfig) -> Server {
        Self::with_handle(config, crate::rt::handle())
    }

    /// A server whose I/O runs on the given tokio runtime.
    pub fn with_handle(config: ServerConfig, rt: Handle) -> Server {
        Server {
            inner: AsyncServer::with_handle(config, rt),
        }
    }

    /// The async face of this server: the same server, for `.await`ing its operations and
    /// registering async handlers.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> veltix::Result<()> {
    /// let server = veltix::Server::new(veltix::ServerConfig::local());
    /// server.start()?;
    /// server.as_async().close_all().await;
    /// assert!(!server.is_running());
    /// # Ok(())
    /// # }
    /// ```
    pub fn as_async(&self) -> &AsyncServer {
        &self.inner
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        self.inner.config()
    }

    /// Binds and starts accepting in the background; returns the bound address (with port 0,
    /// the real port). Errors: invalid config, bind failure, already running.
    pub fn start(&self) -> Result<SocketAddr> {
        self.inner.start()
    }

    /// The bound address while running.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr()
    }

    /// True while listening.
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// Registers the handler for a message type (replacing any previous one). It runs on the
    /// worker pool with the sending client; it may return `()` or a `Result` (errors are logged
    /// with the peer's address).
    pub fn route<F, R>(&self, message_type: impl TypeCode, handler: F) -> &Self
    where
        F: Fn(&ClientInfo, Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.inner.route(message_type, handler);
        self
    }

    /// Removes the handler of a type; `true` if there was one.
    pub fn unroute(&self, message_type: impl TypeCode) -> bool {
        self.inner.unroute(message_type)
    }

    /// Sets the authenticate hook (replacing any previous one): every client that completes
    /// the protocol handshake is shown to it with its address, its hello's `meta` and its TLS
    /// session, and is let in (with the tags the hook chose) or refused with
    /// `{"error": REASON}`. It runs on tokio's blocking pool within `handshake_timeout`;
    /// see [`auth`](crate::auth) for an example and the details.
    pub fn authenticate(
        &self,
        hook: impl Fn(&crate::auth::AuthRequest) -> crate::auth::AuthDecision + Send + Sync + 'static,
    ) -> &Self {
        self.inner.authenticate(hook);
        self
    }

    /// How many clients the authenticate hook refused (or did not answer in time for, or
    /// panicked on) since the server was created.
    pub fn auth_failures(&self) -> u64 {
        self.inner.auth_failures()
    }

    /// How many TLS handshakes failed or timed out since the server was created.
    ///
    /// ```
    /// let server = veltix::Server::new(veltix::ServerConfig::local());
    /// assert_eq!((server.auth_failures(), server.tls_failures()), (0, 0));
    /// ```
    pub fn tls_failures(&self) -> u64 {
        self.inner.tls_failures()
    }

    /// The fallback handler for messages whose type has no route (replaces the previous one).
    pub fn on_recv<F, R>(&self, handler: F) -> &Self
    where
        F: Fn(&ClientInfo, Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.inner.on_recv(handler);
        self
    }

    /// Adds a callback run (on the pool, before any message of that client) after a client's
    /// handshake succeeds.
    pub fn on_connect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) -> &Self {
        self.inner.on_connect(f);
        self
    }

    /// Adds a callback run once per client that was connected (after its last message).
    /// Unlike Python, clients that never completed the handshake do not trigger it.
    pub fn on_disconnect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) -> &Self {
        self.inner.on_disconnect(f);
        self
    }

    /// Wraps every batch of handler calls: `f` receives the batch (up to 64 consecutive
    /// messages of one connection, with its connect or disconnect callbacks) and must call it
    /// once, on the worker thread it was given. Per-batch set-up (taking a lock, attaching an
    /// interpreter: the Python binding holds the GIL for a whole batch this way) is then paid
    /// once per batch instead of once per message. Replaces any previous wrapper. If `f` does not
    /// call the batch, it runs after `f` returns.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// let server = veltix::Server::new(veltix::ServerConfig::local());
    /// let batches = Arc::new(AtomicUsize::new(0));
    /// let b = batches.clone();
    /// server.around_handlers(move |batch| {
    ///     b.fetch_add(1, Ordering::Relaxed);
    ///     batch();
    /// });
    /// ```
    pub fn around_handlers(&self, f: impl Fn(&mut dyn FnMut()) + Send + Sync + 'static) -> &Self {
        self.inner.around_handlers(f);
        self
    }

    /// Sets the observer of this server's connection events ([`Event`]), replacing any previous
    /// one. It runs inline on I/O threads: keep it short and non-blocking. Kept across
    /// `restart()`. See [`crate::observe`].
    ///
    /// ```
    /// let server = veltix::Server::new(veltix::ServerConfig::local());
    /// server.on_event(|e| eprintln!("{e:?}"));
    /// ```
    pub fn on_event(&self, f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> &Self {
        self.as_async().on_event(f);
        self
    }

    /// Sends to one client.
    pub fn send(&self, request: impl Borrow<Request>, client: &ClientInfo) -> Result<()> {
        client.send(request)
    }

    /// Sends to every connected client except `except`; the frame is encoded once. Returns
    /// how many clients it was queued to (clients whose queue is full are skipped and logged).
    pub fn broadcast(&self, request: impl Borrow<Request>, except: &[ClientInfo]) -> Result<usize> {
        broadcast(&self.inner.shared, request.borrow(), except)
    }

    /// Sends and blocks until the client answers with the same request id (any type).
    /// Fails with [`Error::Timeout`], or [`Error::Disconnected`] as soon as that client drops.
    /// Only that client's replies count (Python matches replies from any client).
    pub fn send_and_wait(
        &self,
        request: impl Borrow<Request>,
        client: &ClientInfo,
        timeout: Duration,
    ) -> Result<Response> {
        client.send_and_wait(request, timeout)
    }

    /// PINGs a client; returns the round-trip time measured locally.
    pub fn ping_client(&self, client: &ClientInfo, timeout: Duration) -> Result<Duration> {
        client.ping(timeout)
    }

    /// PINGs a client without blocking; `callback` receives the result on the I/O runtime's
    /// blocking pool.
    pub fn ping_client_async(
        &self,
        client: &ClientInfo,
        callback: impl FnOnce(Result<Duration>) + Send + 'static,
        timeout: Duration,
    ) {
        let ping = self.inner.ping_client(client, timeout);
        self.inner.shared.rt.spawn(async move {
            let r = ping.await;
            tokio::task::spawn_blocking(move || callback(r));
        });
    }

    /// A cheap, cloneable handle that sends and broadcasts from any thread.
    pub fn sender(&self) -> ServerSender {
        self.inner.sender()
    }

    /// Connected clients (handshake done), in no particular order.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.inner.clients()
    }

    /// Clients that have tag `name`; with `Some(value)`, only those whose tag equals it.
    pub fn get_clients_by_tag(&self, name: &str, value: Option<&Value>) -> Vec<ClientInfo> {
        self.inner.get_clients_by_tag(name, value)
    }

    /// True when `max_connections` is reached.
    pub fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    /// Counters since the server was created: traffic, drops, refusals and handshake failures
    /// (see [`Stats`]). Cheap: a few atomic loads.
    ///
    /// ```
    /// use veltix::{Client, ClientConfig, Request, Server, ServerConfig};
    /// let server = Server::new(ServerConfig::local());
    /// server.on_recv(|client, msg| client.send(Request::new(200u16, msg.content().clone()).respond(&msg)));
    /// let addr = server.start()?;
    /// let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()));
    /// client.connect()?;
    /// client.send_and_wait(Request::text(200u16, "hi"), std::time::Duration::from_secs(5))?;
    /// let stats = server.stats();
    /// assert_eq!((stats.connections, stats.frames_in, stats.frames_out), (1, 1, 1));
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Closes one client (flushing what was queued to it); `false` if it was not connected.
    pub fn close_client(&self, client: &ClientInfo) -> bool {
        self.inner.close_client(client)
    }

    /// Stops accepting, closes every client (flushing what was already queued to each, bounded
    /// by `close_timeout`), and waits until all connections are gone and their handlers and
    /// `on_disconnect` callbacks have run (not when called from a handler). Routes and callbacks are
    /// kept; `start()` or `restart()` serve again. Idempotent.
    ///
    /// # Panics
    /// Like every blocking call that waits for the runtime, on the thread of a current-thread
    /// tokio runtime that runs this server's I/O (it would deadlock): use the async face there.
    pub fn close_all(&self) {
        crate::blocking::block_on(&self.inner.shared.rt, self.inner.close_all());
    }

    /// `close_all()` then `start()` on the same address; routes and callbacks are kept.
    pub fn restart(&self) -> Result<SocketAddr> {
        crate::blocking::block_on(&self.inner.shared.rt, self.inner.restart())
    }

    /// Blocks until `close_all()` is called (from another thread or a handler).
    pub fn wait_until_closed(&self) {
        crate::blocking::block_on(&self.inner.shared.rt, self.inner.wait_until_closed());
    }
}

/// A cloneable handle to a server for sending from any thread (the seed's `get_sender()`).
/// It does not keep the server alive: once the server is dropped, sends fail with
/// [`Error::Disconnected`]`(`[`DisconnectCause::ServerStopped`]`)`.
///
/// ```no_run
/// # use veltix::{Request, Server, ServerConfig};
/// let server = Server::new(ServerConfig::local());
/// let tx = server.sender();
/// std::thread::spawn(move || {
///     let _ = tx.broadcast(Request::text(200u16, "tick"), &[]);
/// });
/// ```
#[derive(Clone)]
pub struct ServerSender {
    pub(crate) shared: Weak<Shared>,
}

impl ServerSender {
    fn shared(&self) -> Result<Arc<Shared>> {
        self.shared
            .upgrade()
            .ok_or(Error::Disconnected(DisconnectCause::ServerStopped))
    }
    /// Sends to one client.
    pub fn send(&self, request: impl Borrow<Request>, client: &ClientInfo) -> Result<()> {
        self.shared()?;
        client.send(request)
    }
    /// Broadcasts, see [`Server::broadcast`].
    pub fn broadcast(&self, request: impl Borrow<Request>, except: &[ClientInfo]) -> Result<usize> {
        broadcast(&*self.shared()?, request.borrow(), except)
    }
    /// Connected clients.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.shared
            .upgrade()
            .map(|s| clients(&s))
            .unwrap_or_default()
    }
}

fn clients(shared: &Shared) -> Vec<ClientInfo> {
    lock(&shared.clients)
        .values()
        .filter(|c| c.handshake_done())
        .cloned()
        .collect()
}

pub(crate) fn broadcast(shared: &Shared, req: &Request, except: &[ClientInfo]) -> Result<usize> {
    broadcast_where(shared, req, |c| except.contains(c))
}

/// A connected client by its id.
fn client_by_id(shared: &Shared, id: u64) -> Option<ClientInfo> {
    lock(&shared.clients)
        .get(&id)
        .filter(|c| c.handshake_done())
        .cloned()
}

/// What this server's cluster node uses of it: its connected clients.
impl LocalClients for Shared {
    fn check_outgoing(&self, req: &Request) -> Result<()> {
        Shared::check_outgoing(self, req)
    }

    fn broadcast_except(&self, req: &Request, except: &[u64]) -> Result<usize> {
        broadcast_where(self, req, |c| except.contains(&c.id()))
    }

    fn send_to(&self, id: u64, req: Request) -> Option<Result<()>> {
        client_by_id(self, id).map(|c| c.send(req))
    }

    fn close(&self, id: u64) -> bool {
        client_by_id(self, id)
            .map(|c| c.conn().close_locally())
            .is_some()
    }

    fn presence(&self) -> Vec<(u64, SocketAddr, HashMap<String, Value>)> {
        clients(self)
            .iter()
            .map(|c| (c.id(), c.addr(), c.tag_map()))
            .collect()
    }
}

/// Local broadcast to every connected client for which `skip` is false (encoded once).
fn broadcast_where(
    shared: &Shared,
    req: &Request,
    skip: impl Fn(&ClientInfo) -> bool,
) -> Result<usize> {
    shared.check_outgoing(req)?;
    let g = shared.config.settings.generation;
    let len = g.header_len() + req.content().len();
    let id = match req.request_id() {
        Some(id) => id,
        None => lock(&shared.broadcast_ids).next(|_| false)?,
    };
    let extra = match g {
        Generation::Gen3 => 0,
        Generation::Gen1 => crate::rt::monotonic_ms(),
    };
    let mut buf = BytesMut::with_capacity(len);
    encode_parts(g, req.message_type(), id, extra, req.content(), &mut buf)?;
    let mut sent = 0;
    for c in clients(shared) {
        if skip(&c) {
            continue;
        }
        // A refusal (full queue, closing) is counted and logged by the connection.
        if c.conn().push_encoded(&buf).is_ok() {
            sent += 1;
        }
    }
    Ok(sent)
}

/// Accept-queue length. std's `TcpListener::bind` uses 128, which overflows when thousands of
/// clients connect at once (their connect succeeds, then they wait for a hello that never comes
/// until their handshake times out); the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(
    weak: Weak<Shared>,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        // Gen 1 has no rejection message: like Python 1.6.9, stop accepting while full.
        if let Some(shared) = weak.upgrade() {
            if shared.config.settings.generation == Generation::Gen1 {
                loop {
                    let ended = shared.conn_ended.notified();
                    if !shared.is_full() {
                        break;
                    }
                    ended.await;
                }
            }
        }
        let (stream, addr) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                if let Some(shared) = weak.upgrade() {
                    let error = &e;
                    shared
                        .counters
                        .observer
                        .emit(|| Event::AcceptFailed { error });
                    throttled!(
                        shared.throttles.accept_failed,
                        "listener",
                        summary: "accept failed {count} times in {secs} s",
                        "accept failed: {e}; retrying in {backoff:?}"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Some(shared) = weak.upgrade() else { return };
        let _ = stream.set_nodelay(true);
        if shared.is_full() {
            add(&shared.counters.refused_server_full, 1);
            shared.counters.observer.emit(|| Event::ServerFull {
                peer: addr,
                current: shared.count.load(Ordering::Relaxed),
                max: shared.config.max_connections.unwrap_or(usize::MAX),
            });
            throttled!(
                shared.throttles.refused_full,
                addr,
                summary: "refused {count} connections in {secs} s: server full",
                "server full ({} connections): rejected",
                shared.count.load(Ordering::Relaxed)
            );
            tokio::spawn(reject_full(stream));
            continue;
        }
        let slot = Slot::take(&shared);
        let ids =
            IdAllocator::for_server(shared.config.settings.generation, shared.config.id_window);
        let conn = Conn::new(addr, shared.config.settings, ids, shared.counters.clone());
        let client = ClientInfo {
            inner: Arc::new(ClientEntry {
                id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
                addr,
                handshake_done: AtomicBool::new(false),
                tags: Mutex::new(HashMap::new()),
                conn,
                cluster: shared
                    .cluster
                    .get()
                    .map(|n| (n.id().clone(), n.changed().clone())),
                tls: std::sync::OnceLock::new(),
            }),
        };
        lock(&shared.clients).insert(client.id(), client.clone());
        let span = tracing::info_span!("veltix_conn", peer = %addr, id = client.id());
        tokio::spawn(serve(shared, stream, client, slot, acceptor.clone()).instrument(span));
    }
}

async fn reject_full(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let msg = server_full_message();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&msg).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    client: ClientInfo,
    slot: Slot,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    // Ends the connection however this task ends (returned, or dropped by a runtime shutdown).
    let slot = Finish {
        client: client.clone(),
        slot,
    };
    let cfg = &shared.config;
    let side = crate::secure::ServerSide {
        cfg,
        acceptor: acceptor.as_ref(),
        auth: lock(&shared.auth).clone(),
        counters: &shared.counters,
        throttle: &shared.throttles.handshake_failed,
        peer: client.addr(),
    };
    let accepted = match crate::secure::server_handshake(side, stream).await {
        Ok(a) => a,
        Err(crate::secure::Refused::Closed) => return,
        Err(crate::secure::Refused::HookRunning(done)) => {
            // The socket is closed; the slot is held until the hook returns.
            let _ = done.await;
            return;
        }
    };
    if let Some(tls) = accepted.tls {
        let _ = client.inner.tls.set(tls);
    }
    if !accepted.tags.is_empty() {
        client.tags().extend(accepted.tags);
    }
    let (transport, leftover) = (accepted.transport, accepted.leftover);
    client.inner.handshake_done.store(true, Ordering::Release);
    shared.clients_changed();
    add(&shared.counters.connections_opened, 1);
    debug!(
        peer_version = accepted.peer_version.as_str(),
        "handshake done"
    );
    let weak = Arc::downgrade(&shared);
    let me = client.clone();
    let runner: Runner<Job> = Arc::new(move |jobs| {
        if let Some(s) = weak.upgrade() {
            let h = s.handlers.get();
            let mut jobs = Some(jobs);
            h.run_batch(&mut || {
                let Some(jobs) = jobs.take() else { return };
                // Replies to pipelined messages go out in one write (see `conn::Batch`).
                let batch = me.conn().batch();
                while let Some(job) = jobs.pop_front() {
                    batch.next(!jobs.is_empty());
                    s.run_job(&h, &me, job);
                    if crate::pool::deferred() {
                        // An async handler: the rest waits for its future.
                        break;
                    }
                }
            });
        } else {
            jobs.clear();
        }
    });
    let queue = SerialQueue::new(runner, cfg.settings.max_inbound_queue);
    let lifecycle = Lifecycle::start(&shared);
    queue.push(Job::Connect, 0);
    let reason = conn::drive_transport(
        client.conn().clone(),
        transport,
        leftover,
        queue.clone(),
        Job::Message,
    )
    .await;
    match &reason {
        CloseReason::Local | CloseReason::PeerClosed => info!("client disconnected: {reason}"),
        _ => throttled!(
            shared.throttles.abnormal_close,
            client.addr(),
            summary: "{count} connections ended abnormally in {secs} s",
            "client disconnected: {reason}"
        ),
    }
    // Gone from clients() before on_disconnect runs.
    drop(slot);
    queue.push(Job::Disconnect(lifecycle), 0);
}

/// One connection counted in `Shared::count` (and so in `max_connections`): released, and
/// `conn_ended` signalled, when dropped.
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>) -> Slot {
        shared.count.fetch_add(1, Ordering::AcqRel);
        Slot(shared.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.conn_ended.notify_waiters();
    }
}

/// The end of a connection, on drop: closed, its waiters failed, gone from `clients()`, then
/// its slot released.
struct Finish {
    client: ClientInfo,
    slot: Slot,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let (shared, client) = (&self.slot.0, &self.client);
        client
            .conn()
            .close_with(DisconnectCause::ClosedLocally, true);
        client.conn().fail_pending();
        if lock(&shared.clients).remove(&client.id()).is_some() && client.handshake_done() {
            shared.clients_changed();
        }
    }
}

/// A connection that completed the handshake and whose `on_disconnect` has not run yet
/// (`Shared::lifecycles`, awaited by `close_all`); travels in its `Job::Disconnect` and ends
/// when that job ran or was dropped.
struct Lifecycle(Weak<Shared>);

impl Lifecycle {
    fn start(shared: &Arc<Shared>) -> Lifecycle {
        shared.lifecycles.fetch_add(1, Ordering::AcqRel);
        Lifecycle(Arc::downgrade(shared))
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if let Some(s) = self.0.upgrade() {
            s.lifecycles.fetch_sub(1, Ordering::AcqRel);
            s.handlers_done.notify_waiters();
        }
    }
}
