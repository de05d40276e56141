//! The async face: [`AsyncServer`] and [`AsyncClient`] for programs that already run tokio.
//!
//! One implementation, two faces, as mini-redis does: the async types are the implementation.
//! An `AsyncServer`/`AsyncClient` owns the core (connections, pool claim, protocol) and does
//! every operation; dropping it stops the server / disconnects the client. The blocking
//! [`Server`]/[`Client`] own one and wrap it ([`Server::as_async`], [`Client::as_async`],
//! `From` both ways): their calls are the async face's, and those that wait block the calling
//! thread on the async face's future (or take the fast path of a blocking request, kept in
//! one private piece, `blocking`). Nothing here blocks the executor: `send_and_wait`, `ping`,
//! `connect`, `disconnect`, `close_all` are futures, and dropping a `send_and_wait` future
//! releases its request id at once.
//!
//! The types live next to the core they own, with their operations and futures
//! ([`AsyncServer`] in [`server`](crate::server), [`AsyncClient`] in [`client`](crate::client),
//! re-exported here); this module adds what only the async face has: async handlers
//! (`route_async`, `on_recv_async`, `authenticate_async`) and the [`Incoming`] streams. It
//! depends on `server` and `client`, never the reverse.
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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::sync::mpsc;

pub use crate::client::AsyncClient;
pub use crate::server::AsyncServer;
#[cfg(doc)]
use crate::{Client, Server};
use crate::{ClientInfo, HandlerResult, Response, TypeCode};

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

impl AsyncServer {
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
        let route = server_async(self.shared.rt_handle(), handler, move |f| {
            f(&format_args!("async handler for type {code}"))
        });
        self.route(code, route);
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
        let route = server_async(self.shared.rt_handle(), handler, |f| {
            f(&"async on_recv handler")
        });
        self.on_recv(route);
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
        self.set_authenticator(crate::auth::Authenticator::from_async(hook));
        self
    }

    /// Messages without a route as a stream of `(client, message)` (replaces `on_recv`).
    /// `capacity` bounds how many wait for the consumer.
    pub fn incoming(&self, capacity: usize) -> Incoming<(ClientInfo, Response)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let rt = self.shared.rt_handle();
        self.on_recv(move |c: &ClientInfo, m: Response| {
            forward(&rt, &tx, (c.clone(), m));
        });
        Incoming { rx }
    }
}

impl AsyncClient {
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
        self.route(code, route);
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
        self.on_recv(route);
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
        let rt = self.shared.rt_handle();
        let weak = Arc::downgrade(&self.shared);
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

    /// Messages without a route as a stream (replaces `on_recv`).
    pub fn incoming(&self, capacity: usize) -> Incoming<Response> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let rt = self.shared.rt_handle();
        self.on_recv(move |m: Response| forward(&rt, &tx, m));
        Incoming { rx }
    }
}
