//! The async face: [`AsyncServer`] and [`AsyncClient`] for programs that already run tokio.
//!
//! Same core as the blocking API (one implementation, two faces, as mini-redis does): the
//! connections, pool and protocol are shared; only the waiting differs. Nothing here blocks the
//! executor: `send_and_wait`, `ping`, `connect`, `disconnect`, `close_all` are futures, and
//! dropping a `send_and_wait` future releases its request id at once.
//!
//! **Which API?** Use the blocking [`Server`]/[`Client`] in ordinary threaded programs (scripts,
//! game loops, tools): no runtime to set up. Use [`AsyncServer`]/[`AsyncClient`] inside an
//! existing tokio program, when handlers themselves await (database calls, other services), or
//! when you prefer pulling messages from a [`Incoming`] stream to callbacks.
//!
//! ```
//! use std::time::Duration;
//! use veltix::{AsyncClient, AsyncServer, ClientConfig, MessageType, Request, ServerConfig};
//!
//! const ECHO: MessageType = MessageType::new(200, "echo");
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> veltix::Result<()> {
//! let server = AsyncServer::new(ServerConfig::local());
//! server.route_async(&ECHO, |client, msg| async move {
//!     client.send(Request::new(&ECHO, msg.content().clone()).respond(&msg))
//! });
//! let addr = server.start()?;
//!
//! let client = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()));
//! client.connect().await?;
//! let reply = client.send_and_wait(Request::text(&ECHO, "hi"), Duration::from_secs(5)).await?;
//! assert_eq!(reply.text()?, "hi");
//! client.disconnect().await;
//! server.close_all().await;
//! # Ok(())
//! # }
//! ```

use std::borrow::Borrow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::Value;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::{
    Client, ClientConfig, ClientInfo, DisconnectState, HandlerResult, Request, Response, Result,
    Server, ServerConfig, TypeCode,
};

fn current_or_shared() -> Handle {
    Handle::try_current().unwrap_or_else(|_| crate::rt::handle())
}

/// Queues `item` for an [`Incoming`] stream; when it is full, the connection's chain awaits the
/// send (its next messages wait: backpressure), on the runtime, holding no handler thread.
fn forward<T: Send + 'static>(rt: &Handle, tx: &mpsc::Sender<T>, item: T) {
    match tx.try_send(item) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(item)) => {
            let tx = tx.clone();
            crate::pool::defer(rt.clone(), async move {
                let _ = tx.send(item).await;
            });
        }
    }
}

/// A synchronous server route that defers `handler`'s future to the connection's chain (see
/// [`AsyncServer::route_async`]); `which` names it in the log when it returns an error.
fn server_async<F, Fut, R>(
    rt: Handle,
    handler: F,
    which: impl Fn(&mut dyn FnMut(&dyn std::fmt::Display)) + Send + Sync + Copy + 'static,
) -> impl Fn(&ClientInfo, Response) + Send + Sync + 'static
where
    F: Fn(ClientInfo, Response) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: HandlerResult + Send + 'static,
{
    move |c: &ClientInfo, m: Response| {
        let fut = {
            let _enter = rt.enter();
            handler(c.clone(), m)
        };
        let c = c.clone();
        crate::pool::defer(rt.clone(), async move {
            if let Err(e) = fut.await.into_handler_result() {
                which(&mut |w| c.conn().handler_failed(w, &e));
            }
        });
    }
}

/// A stream of incoming messages (implements [`futures_core::Stream`]; or call
/// [`Incoming::next`]). Bounded: when the consumer falls behind, the connections stop being read
/// (backpressure), nothing is dropped.
#[derive(Debug)]
pub struct Incoming<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> Incoming<T> {
    /// The next message, or `None` when the server/client is gone.
    pub async fn next(&mut self) -> Option<T> {
        self.rx.recv().await
    }
}

impl<T> futures_core::Stream for Incoming<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

/// The async face of [`Server`]. Create it inside a tokio runtime: its I/O runs there.
pub struct AsyncServer {
    inner: Server,
}

impl AsyncServer {
    /// A server on the current tokio runtime (or the shared one outside any runtime).
    pub fn new(config: ServerConfig) -> Self {
        AsyncServer {
            inner: Server::with_handle(config, current_or_shared()),
        }
    }

    /// The blocking face of the same server (for code that mixes both).
    pub fn as_blocking(&self) -> &Server {
        &self.inner
    }

    /// Binds and starts accepting; returns the bound address.
    pub fn start(&self) -> Result<SocketAddr> {
        self.inner.start()
    }

    /// The bound address while running.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr()
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
        self.inner.is_running()
    }

    /// True when `max_connections` is reached (see [`Server::is_full`]): further clients are
    /// turned away with [`Error::ServerFull`](crate::Error::ServerFull).
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
        self.inner.is_full()
    }

    /// Counters since the server was created (see [`Server::stats`]).
    ///
    /// ```
    /// let server = veltix::AsyncServer::new(veltix::ServerConfig::local());
    /// assert_eq!(server.stats().connections, 0);
    /// ```
    pub fn stats(&self) -> crate::Stats {
        self.inner.stats()
    }

    /// A synchronous handler (see [`Server::route`]).
    pub fn route<F, R>(&self, message_type: impl TypeCode, handler: F) -> &Self
    where
        F: Fn(&ClientInfo, Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.inner.route(message_type, handler);
        self
    }

    /// An async handler. Its future runs as a task on the server's runtime (it holds no handler
    /// thread while it awaits, and any number of connections' futures are in flight at once);
    /// messages of one connection are still handled in arrival order: the next one (sync or
    /// async handler) starts when this future ended. A panic in it is logged and contained.
    ///
    /// ```
    /// use veltix::{AsyncClient, AsyncServer, ClientConfig, Request, ServerConfig};
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> veltix::Result<()> {
    /// let server = AsyncServer::new(ServerConfig::local());
    /// server.route_async(200u16, |client, msg| async move {
    ///     tokio::time::sleep(std::time::Duration::from_millis(10)).await; // e.g. a database call
    ///     client.send(Request::text(200u16, "done").respond(&msg))
    /// });
    /// let addr = server.start()?;
    /// let client = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()));
    /// client.connect().await?;
    /// let reply = client
    ///     .send_and_wait(Request::text(200u16, "go"), std::time::Duration::from_secs(5))
    ///     .await?;
    /// assert_eq!(reply.text()?, "done");
    /// # Ok(())
    /// # }
    /// ```
    pub fn route_async<F, Fut, R>(&self, message_type: impl TypeCode, handler: F) -> &Self
    where
        F: Fn(ClientInfo, Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult + Send + 'static,
    {
        let code = message_type.type_code();
        let route = server_async(self.inner.shared.rt_handle(), handler, move |f| {
            f(&format_args!("async handler for type {code}"))
        });
        self.inner.route(code, route);
        self
    }

    /// An async fallback handler for messages without a route (see
    /// [`route_async`](Self::route_async)).
    ///
    /// ```
    /// let server = veltix::AsyncServer::new(veltix::ServerConfig::local());
    /// server.on_recv_async(|client, msg| async move { client.send(veltix::Request::new(201u16, msg.content().clone())) });
    /// ```
    pub fn on_recv_async<F, Fut, R>(&self, handler: F) -> &Self
    where
        F: Fn(ClientInfo, Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult + Send + 'static,
    {
        let route = server_async(self.inner.shared.rt_handle(), handler, |f| {
            f(&"async on_recv handler")
        });
        self.inner.on_recv(route);
        self
    }

    /// Fallback handler for messages without a route.
    pub fn on_recv<F, R>(&self, handler: F) -> &Self
    where
        F: Fn(&ClientInfo, Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.inner.on_recv(handler);
        self
    }

    /// A synchronous authenticate hook (runs on tokio's blocking pool; see
    /// [`Server::authenticate`]).
    pub fn authenticate(
        &self,
        hook: impl Fn(&crate::auth::AuthRequest) -> crate::auth::AuthDecision + Send + Sync + 'static,
    ) -> &Self {
        self.inner.authenticate(hook);
        self
    }

    /// An async authenticate hook: it runs as a task on the server's runtime and is cancelled
    /// when `handshake_timeout` runs out (see [`auth`](crate::auth)).
    ///
    /// ```
    /// use veltix::auth::AuthDecision;
    /// use veltix::{AsyncClient, AsyncServer, ClientConfig, Error, ServerConfig};
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> veltix::Result<()> {
    /// let server = AsyncServer::new(ServerConfig::local());
    /// server.authenticate_async(|req| async move {
    ///     // e.g. look the token up in a database
    ///     match req.token() {
    ///         Some("s3cret") => AuthDecision::accept(),
    ///         _ => AuthDecision::reject("unauthorized"),
    ///     }
    /// });
    /// let addr = server.start()?;
    /// let client = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()).with_token("nope"));
    /// assert!(matches!(client.connect().await, Err(Error::Rejected(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn authenticate_async<F, Fut>(&self, hook: F) -> &Self
    where
        F: Fn(crate::auth::AuthRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::auth::AuthDecision> + Send + 'static,
    {
        self.inner
            .set_authenticator(crate::auth::Authenticator::from_async(hook));
        self
    }

    /// See [`Server::auth_failures`].
    pub fn auth_failures(&self) -> u64 {
        self.inner.auth_failures()
    }

    /// See [`Server::tls_failures`].
    pub fn tls_failures(&self) -> u64 {
        self.inner.tls_failures()
    }

    /// Messages without a route as a stream of `(client, message)` (replaces `on_recv`).
    /// `capacity` bounds how many wait for the consumer.
    pub fn incoming(&self, capacity: usize) -> Incoming<(ClientInfo, Response)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let rt = self.inner.shared.rt_handle();
        self.inner.on_recv(move |c: &ClientInfo, m: Response| {
            forward(&rt, &tx, (c.clone(), m));
        });
        Incoming { rx }
    }

    /// See [`Server::on_connect`].
    pub fn on_connect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) -> &Self {
        self.inner.on_connect(f);
        self
    }

    /// See [`Server::on_disconnect`].
    pub fn on_disconnect(&self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) -> &Self {
        self.inner.on_disconnect(f);
        self
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
        self.inner.broadcast(request, except)
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

    /// Round-trip time of a PING to a client.
    pub async fn ping_client(&self, client: &ClientInfo, timeout: Duration) -> Result<Duration> {
        client.conn().ping(timeout).await
    }

    /// Connected clients.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.inner.clients()
    }

    /// See [`Server::get_clients_by_tag`].
    pub fn get_clients_by_tag(&self, name: &str, value: Option<&Value>) -> Vec<ClientInfo> {
        self.inner.get_clients_by_tag(name, value)
    }

    /// See [`Server::close_client`].
    pub fn close_client(&self, client: &ClientInfo) -> bool {
        self.inner.close_client(client)
    }

    /// Graceful shutdown: resolves when every connection is closed (queued data flushed,
    /// bounded by `close_timeout`).
    pub async fn close_all(&self) {
        self.inner.shared.clone().close_all().await
    }

    /// `close_all` then `start` on the same address.
    pub async fn restart(&self) -> Result<SocketAddr> {
        self.close_all().await;
        self.start()
    }

    /// Resolves once `close_all` was called.
    pub async fn wait_until_closed(&self) {
        self.inner.shared.clone().wait_closed().await
    }
}

/// The async face of [`Client`]. Create it inside a tokio runtime: its I/O runs there.
pub struct AsyncClient {
    inner: Client,
}

impl AsyncClient {
    /// A client on the current tokio runtime (or the shared one outside any runtime).
    pub fn new(config: ClientConfig) -> Self {
        AsyncClient {
            inner: Client::with_handle(config, current_or_shared()),
        }
    }

    /// The blocking face of the same client.
    pub fn as_blocking(&self) -> &Client {
        &self.inner
    }

    /// Connects and handshakes (running the reconnect policy on failure, see [`Client::connect`]).
    pub async fn connect(&self) -> Result<()> {
        self.inner.shared.clone().connect().await
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Counters since the client was created, across reconnects (see [`Client::stats`]).
    ///
    /// ```
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// assert_eq!(client.stats().frames_in, 0);
    /// ```
    pub fn stats(&self) -> crate::Stats {
        self.inner.stats()
    }

    /// A synchronous handler.
    pub fn route<F, R>(&self, message_type: impl TypeCode, handler: F) -> &Self
    where
        F: Fn(Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.inner.route(message_type, handler);
        self
    }

    /// An async handler: its future runs as a task on the client's runtime; messages are still
    /// handled in arrival order (the next one starts when this future ended). See
    /// [`AsyncServer::route_async`].
    ///
    /// ```
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// client.route_async(200u16, |msg| async move { println!("{:?}", msg.text()) });
    /// ```
    pub fn route_async<F, Fut, R>(&self, message_type: impl TypeCode, handler: F) -> &Self
    where
        F: Fn(Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult + Send + 'static,
    {
        let code = message_type.type_code();
        let route = self.client_async(handler, move |f| {
            f(&format_args!("async handler for type {code}"))
        });
        self.inner.route(code, route);
        self
    }

    /// An async fallback handler (see [`route_async`](Self::route_async)).
    ///
    /// ```
    /// let client = veltix::AsyncClient::new(veltix::ClientConfig::new("127.0.0.1", 9));
    /// client.on_recv_async(|msg| async move { println!("{:?}", msg.text()) });
    /// ```
    pub fn on_recv_async<F, Fut, R>(&self, handler: F) -> &Self
    where
        F: Fn(Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult + Send + 'static,
    {
        let route = self.client_async(handler, |f| f(&"async on_recv handler"));
        self.inner.on_recv(route);
        self
    }

    /// A synchronous route that defers `handler`'s future to the connection's chain.
    fn client_async<F, Fut, R>(
        &self,
        handler: F,
        which: impl Fn(&mut dyn FnMut(&dyn std::fmt::Display)) + Send + Sync + Copy + 'static,
    ) -> impl Fn(Response) + Send + Sync + 'static
    where
        F: Fn(Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult + Send + 'static,
    {
        let rt = self.inner.shared.rt_handle();
        let weak = std::sync::Arc::downgrade(&self.inner.shared);
        move |m: Response| {
            let fut = {
                let _enter = rt.enter();
                handler(m)
            };
            let weak = weak.clone();
            crate::pool::defer(rt.clone(), async move {
                if let Err(e) = fut.await.into_handler_result() {
                    if let Some(s) = weak.upgrade() {
                        which(&mut |w| s.handler_failed(w, &e));
                    }
                }
            });
        }
    }

    /// Fallback handler.
    pub fn on_recv<F, R>(&self, handler: F) -> &Self
    where
        F: Fn(Response) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.inner.on_recv(handler);
        self
    }

    /// Messages without a route as a stream (replaces `on_recv`).
    pub fn incoming(&self, capacity: usize) -> Incoming<Response> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let rt = self.inner.shared.rt_handle();
        self.inner.on_recv(move |m: Response| forward(&rt, &tx, m));
        Incoming { rx }
    }

    /// See [`Client::on_connect`].
    pub fn on_connect(&self, f: impl Fn() + Send + Sync + 'static) -> &Self {
        self.inner.on_connect(f);
        self
    }

    /// See [`Client::on_disconnect`].
    pub fn on_disconnect(&self, f: impl Fn(&DisconnectState) + Send + Sync + 'static) -> &Self {
        self.inner.on_disconnect(f);
        self
    }

    /// Sends a message (never waits for the network).
    pub async fn send(&self, request: impl Borrow<Request>) -> Result<()> {
        self.inner.send(request)
    }

    /// Request/response. Cancellation-safe: dropping the future releases the id.
    pub async fn send_and_wait(
        &self,
        request: impl Borrow<Request>,
        timeout: Duration,
    ) -> Result<Response> {
        let conn = self.inner.shared.conn()?;
        conn.request(request.borrow(), timeout).await
    }

    /// Round-trip time of a PING to the server.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration> {
        let conn = self.inner.shared.conn()?;
        conn.ping(timeout).await
    }

    /// Closes (flushing what was queued) and cancels reconnects.
    pub async fn disconnect(&self) {
        self.inner.shared.clone().disconnect().await
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
        self.inner.retry(max);
    }

    /// See [`Client::stop_retry`].
    pub fn stop_retry(&self) {
        self.inner.stop_retry();
    }

    /// Resolves once disconnected for good.
    pub async fn wait_until_closed(&self) {
        self.inner.shared.clone().wait_closed().await
    }
}
