//! # veltix: TCP without the boilerplate, in Rust
//!
//! Framed, CRC-checked TCP links with a version handshake, message-type routing,
//! request/response correlation ([`Client::send_and_wait`]), built-in ping, client tags and
//! broadcast, reconnects with backoff, keep-alive, and a handler pool, **wire-compatible with
//! Python Veltix** 3.x (the default, [`Generation::Gen3`]) and 1.6.x ([`Generation::Gen1`]).
//!
//! The API is synchronous and thread-friendly (no async required): I/O runs on a shared tokio
//! runtime in the background (half the CPUs as threads; the `VELTIX_IO_THREADS` environment
//! variable overrides, [`Server::with_handle`]/[`Client::with_handle`] use your runtime),
//! handlers on ONE process-wide pool of worker threads shared by every server and client (sized
//! to the largest `max_workers`, see [`set_handler_threads`]); async handlers
//! ([`AsyncServer::route_async`]) run as tasks on the runtime and hold no thread while they wait.
//!
//! ```
//! use std::time::Duration;
//! use veltix::{Client, ClientConfig, MessageType, Request, Server, ServerConfig};
//!
//! const ECHO: MessageType = MessageType::new(200, "echo");
//!
//! let server = Server::new(ServerConfig::local());
//! server.route(&ECHO, |client, msg| client.send(Request::new(&ECHO, msg.content().clone()).respond(&msg)));
//! let addr = server.start()?;
//!
//! let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()));
//! client.connect()?;
//! let reply = client.send_and_wait(Request::text(&ECHO, "hello"), Duration::from_secs(5))?;
//! assert_eq!(reply.text()?, "hello");
//! # Ok::<(), veltix::Error>(())
//! ```
//!
//! ## Layout
//! The modules form layers, each depending only on those below it (no module cycles;
//! `scripts/modgraph.py`, run by the test command, prints the graph and fails on a cycle):
//! the leaves (`util`, `error`, `message`, `config`, `tls`, `auth`, `reconnect`, `stats`,
//! `observe`, `pool`, `rt`, `handlers`, which name no module above them) -> the connection (`conn`, `secure`, `blocking`) ->
//! [`cluster`] -> the cores and both faces ([`server`], [`client`]) -> [`asynch`]. The cluster
//! sits below the server: the server owns its node and offers the cluster operations; the node
//! reaches the server's clients only through a small trait (`cluster::LocalClients`).
//! - [`server`]: the server core (accept loop, per-connection task), [`ClientInfo`] (tags,
//!   per-client send), [`ServerSender`], [`AsyncServer`] and [`Server`]. `AsyncServer` is the
//!   implementation: it owns the core (`server::Shared`), its claim on the handler pool and the
//!   `Drop` that stops the server, and has every operation and future (`start`, `close_all`,
//!   `send_and_wait`, `on_event`...); `Server`, the blocking face, owns an `AsyncServer` and
//!   delegates to it. `server::cluster_ops` (private) has the cluster operations of both faces
//!   and of `ServerSender`, thin calls into the node.
//! - [`client`]: the client core (connect, the reconnect loop), [`ClientSender`],
//!   [`AsyncClient`] (the implementation, as on the server side) and [`Client`], the blocking
//!   face wrapping an `AsyncClient`.
//! - [`asynch`]: what only the async face has: async handlers (`route_async`,
//!   `on_recv_async`, `authenticate_async`) and [`Incoming`] streams, as `impl AsyncServer` /
//!   `impl AsyncClient` blocks; it re-exports both types (`veltix::asynch::AsyncServer`) and
//!   says when to use which face.
//! - [`cluster`]: several servers as one through Redis (docs/cluster.md): [`cluster::ClusterId`],
//!   [`cluster::ClusterClient`], [`cluster::ClusterStats`], the broker, and the node (`Node`,
//!   owned by its server's core) with its publisher and supervisor tasks. It names no server
//!   type: what it needs of its server is `cluster::LocalClients`, implemented by
//!   `server::Shared`.
//! - [`observe`]: [`observe::Event`] and the observer slot of a server or client (`Hook`),
//!   depending only on `error`; the faces' `on_event` methods are in `server` and `client`.
//! - `blocking` (private): how the blocking face waits, in one place: `block_on` (an async
//!   face's future, on its runtime, from any thread) and the fast path of a blocking request
//!   (the lone waiter reads its own reply), used by `Server`, `Client`, `ClientInfo`,
//!   `ClientSender` and the cluster calls.
//! - `conn` (private): one connection: outbound buffer and writer, reader and decoder, waiters
//!   (a [`proto::PendingTable`]), and one timer task; one reader core and one supervisor of
//!   reader, writer and timer task for both transports. Shared by both sides. It keeps its own
//!   concurrency design (senders write inline, a blocking waiter reads its own reply from the
//!   socket, handler batches hold their replies) but none of the protocol rules: those are
//!   `veltix-proto`'s sans-I/O pieces, called where the data is. Every send goes through
//!   [`proto::check_outgoing`]; every decoded frame (by the reader task or a waiter thread)
//!   through [`proto::classify`], whose waiter lookup is a lock-free count and then the pending
//!   table (PINGs are answered, replies handed over; reserved codes and stray PONGs go to the
//!   handlers, which drop them as unrouted, as Python does). The timer task runs a
//!   [`proto::KeepAliveTimer`] on the receive stamps the readers leave in an atomic, and expires
//!   the deadlines of async `send_and_wait`/ping waiters stored in the pending table (one timer
//!   per connection, not one per request): it sleeps until the earlier of the two, and a
//!   waiter with an earlier deadline wakes it. Blocking waits keep their own `recv_timeout`.
//!   With keep-alive the timer task starts with the connection; without it (the default), the
//!   first async request with a deadline starts it, and most connections never need one.
//! - `pool` (private): the process-wide handler pool ([`set_handler_threads`],
//!   [`handler_threads`], [`wrap_handler_runs`]): a lock-free task channel, one ordered queue per
//!   connection, runs of queued tasks per worker; async handlers' futures are chained per
//!   connection on the runtime. `rt` (private): the shared I/O runtime, the clock. `util`
//!   (private): the lock helper and the setters macro, depending on no other module.
//! - [`config`]: [`ServerConfig`], [`ClientConfig`] (built with setters, `#[non_exhaustive]`),
//!   the [`Settings`] both embed (one definition, one validation), [`PerformanceMode`],
//!   [`KeepAlive`], and [`cluster::ClusterConfig`]; it depends only on `util`, `error`,
//!   `reconnect` and `tls`.
//! - [`reconnect`]: [`ReconnectPolicy`], [`DisconnectState`].
//! - [`message`]: [`Request`], [`Response`].
//! - [`tls`]: [`tls::ServerTls`], [`tls::ClientTls`], [`tls::TlsInfo`]: TLS 1.2/1.3 with
//!   rustls, mutual TLS. `conn::tls` (private) drives a TLS connection.
//! - [`auth`]: [`auth::AuthRequest`], [`auth::AuthDecision`], [`auth::token_list`]: the
//!   authenticate hook of the handshake. `secure` (private) runs TLS, handshake and hook.
//! - [`stats`]: [`Stats`] (counters of traffic, drops and refusals) and the log throttle.
//! - [`proto`]: the sans-I/O protocol crate (`veltix-proto`), re-exported.
//! - `error` (private, re-exported): [`Error`](enum@Error), and [`DisconnectCause`], the one
//!   reason a link is gone ([`Error::Disconnected`]), recorded by `conn` when a connection ends.
//!
//! ## Guarantees (and where we differ from Python Veltix)
//! - Messages of one connection are handled in arrival order; different connections in
//!   parallel. PINGs are answered inline; replies to `send_and_wait` are matched per connection.
//! - Every send returns a `Result`; a wait fails with [`Error::Disconnected`] as soon as its
//!   connection drops. A link that is gone is always [`Error::Disconnected`], carrying the first
//!   [`DisconnectCause`] that ended it (peer closed, closed locally, keep-alive...).
//! - A peer that fails the handshake, sends a corrupt frame, or exceeds `max_message_size` is
//!   logged with its address and the reason, and disconnected; other connections are unaffected.
//! - Outbound queues are bounded (`max_queued_bytes`): a peer that stops reading makes sends to it
//!   fail with [`Error::QueueFull`] instead of growing memory. Inbound queues are bounded
//!   (`max_inbound_queue`): when handlers fall behind, the connection stops being read (TCP
//!   backpressure), nothing is dropped.
//!
//! ## Logging
//! The library logs through [`tracing`] and installs no subscriber: keep your own. Its log
//! volume is bounded whatever a peer does: an event that repeats (sends dropped because a peer
//! does not read, PONGs dropped, frames without a handler, handler errors, refused connections,
//! failed handshakes, protocol violations) is logged in full when it starts, then summarised
//! with a count at most once per second while it lasts, and once more when its connection
//! closes. Every such event is also counted in [`Server::stats`] / [`Client::stats`]. Logging
//! never blocks I/O threads only if your subscriber's writer does not block: use a
//! non-blocking writer (e.g. `tracing-appender`'s, as the `veltix` CLI does) when logs go to a
//! pipe.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod asynch;
pub mod auth;
mod blocking;
pub mod client;
pub mod cluster;
pub mod config;
mod conn;
mod error;
mod handlers;
pub mod message;
pub mod observe;
mod pool;
pub mod reconnect;
mod rt;
mod secure;
pub mod server;
pub mod stats;
pub mod tls;
mod util;

pub use asynch::Incoming;
pub use client::{AsyncClient, Client, ClientSender};
pub use config::{ClientConfig, Generation, KeepAlive, PerformanceMode, ServerConfig, Settings};
pub use error::{DisconnectCause, Error, HandshakeError, Result};
pub use message::{Request, Response, TypeCode};
pub use pool::{handler_threads, set_handler_threads, wrap_handler_runs, DEFAULT_HANDLER_THREADS};
pub use reconnect::{Backoff, DisconnectReason, DisconnectState, ReconnectPolicy};
pub use server::{AsyncServer, ClientInfo, Server, ServerSender};
pub use stats::Stats;
pub use veltix_proto as proto;
pub use veltix_proto::{MessageType, TypeRegistry, PING, PONG};

/// What a handler may return: `()` or a `Result` whose error is logged with the peer's address
/// (at most once per second per connection, then as a summary with a count).
///
/// ```
/// use veltix::HandlerResult;
/// assert!(().into_result().is_ok());
/// assert!(Err::<(), _>("boom").into_result().is_err());
/// ```
pub trait HandlerResult {
    /// Converts to a result; the error is only displayed.
    fn into_result(self) -> std::result::Result<(), Box<dyn std::fmt::Display>>;

    /// Converts to a result whose error says whether it is a refused send (already counted
    /// and logged where it was refused). The default wraps [`HandlerResult::into_result`].
    ///
    /// ```
    /// use veltix::{Error, HandlerResult};
    /// let full: Result<(), Error> = Err(Error::QueueFull { queued: 9, limit: 8 });
    /// assert!(full.into_handler_result().unwrap_err().is_refused_send());
    /// assert!(!Err::<(), _>("boom").into_handler_result().unwrap_err().is_refused_send());
    /// ```
    fn into_handler_result(self) -> std::result::Result<(), HandlerError>
    where
        Self: Sized,
    {
        self.into_result().map_err(|message| HandlerError {
            message,
            refused_send: false,
        })
    }
}

/// The error a handler returned, as the runtime logs it (see [`HandlerResult`]).
///
/// ```
/// use veltix::HandlerResult;
/// let e = Err::<(), _>("boom").into_handler_result().unwrap_err();
/// assert_eq!(e.to_string(), "boom");
/// ```
pub struct HandlerError {
    message: Box<dyn std::fmt::Display>,
    refused_send: bool,
}

impl HandlerError {
    /// True for a send the runtime refused: the peer's queue was full ([`Error::QueueFull`]) or
    /// the link is gone ([`Error::Disconnected`]). A refusal by a connection was counted in
    /// [`Stats::dropped`] and logged (throttled) where it happened, a lost link is logged once
    /// when it ends: handler errors like these are not logged again.
    pub fn is_refused_send(&self) -> bool {
        self.refused_send
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.message.fmt(f)
    }
}

impl std::fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HandlerError({})", self.message)
    }
}

impl HandlerResult for () {
    fn into_result(self) -> std::result::Result<(), Box<dyn std::fmt::Display>> {
        Ok(())
    }
}

impl<E: std::fmt::Display + 'static> HandlerResult for std::result::Result<(), E> {
    fn into_result(self) -> std::result::Result<(), Box<dyn std::fmt::Display>> {
        self.map_err(|e| Box::new(e) as Box<dyn std::fmt::Display>)
    }

    fn into_handler_result(self) -> std::result::Result<(), HandlerError> {
        self.map_err(|e| {
            let refused_send = matches!(
                (&e as &dyn std::any::Any).downcast_ref::<Error>(),
                Some(Error::QueueFull { .. } | Error::Disconnected(_))
            );
            HandlerError {
                message: Box::new(e),
                refused_send,
            }
        })
    }
}
