//! The runtime's error type.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
pub use veltix_proto::HandshakeError;

/// Everything that can fail in a [`Server`](crate::Server) or [`Client`](crate::Client).
///
/// Unlike Python Veltix, failures are never reported as a silent `True`/`None`: a send on a link
/// that is gone (or was never there) and a wait on a connection that drops both fail with
/// [`Error::Disconnected`], the wait at once (not after its timeout), with the
/// [`DisconnectCause`] that ended the link; every other variant means one thing.
///
/// ```
/// use std::time::Duration;
/// use veltix::{DisconnectCause, Error};
/// let e = Error::Timeout(Duration::from_secs(5));
/// assert_eq!(e.to_string(), "no reply within 5s");
/// let e = Error::Disconnected(DisconnectCause::PeerClosed);
/// assert_eq!(e.to_string(), "disconnected: the peer closed the connection");
/// assert!(matches!(e, Error::Disconnected(_)));
/// ```
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error outside a running link: resolving the address, connecting,
    /// during the handshake. (A running link that fails is
    /// [`Error::Disconnected`]`(`[`DisconnectCause::Io`]`)`.)
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused the TCP connection (nothing listens there).
    #[error("connection to {addr} refused")]
    ConnectionRefused {
        /// Server address.
        addr: SocketAddr,
    },
    /// The TCP connection could not be established in time.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// Server address.
        addr: SocketAddr,
        /// The deadline.
        timeout: Duration,
    },
    /// The server is full (`{"error": "server_full"}`); carries the server's reason.
    #[error("server is full ({0})")]
    ServerFull(String),
    /// The server refused us after reading our hello (`{"error": REASON}`), e.g. because the
    /// credentials in our `meta` were refused by its authenticate hook; carries the reason.
    #[error("server rejected the connection: {0}")]
    Rejected(String),
    /// A TLS certificate, key or CA file is missing, unreadable, not PEM, or the key does not
    /// match the certificate; reported by `start()` / `connect()`.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The TLS handshake failed (certificate not trusted, wrong name, expired, no client
    /// certificate, the peer does not speak TLS...).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The handshake did not complete within `handshake_timeout`.
    #[error("handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake failed (incompatible version, wrong generation, malformed message...).
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
    /// No reply (or PONG) arrived within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The link is gone, or was never there: nothing can be sent on it and no reply will come
    /// on it. Returned by every send on a closed (or closing) connection, by a wait whose
    /// connection drops (at once, not after its timeout), by a client that is not connected and
    /// by a [`ServerSender`](crate::ServerSender) whose server is gone. The cause is the first
    /// thing that ended the connection (see [`DisconnectCause`]).
    #[error("disconnected: {0}")]
    Disconnected(DisconnectCause),
    /// The peer does not read and its outbound queue is full.
    #[error("outbound queue full ({queued} bytes queued, limit {limit})")]
    QueueFull {
        /// Bytes waiting to be written.
        queued: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The message is larger than `max_message_size`.
    #[error("message of {len} bytes exceeds max_message_size {limit}")]
    MessageTooLarge {
        /// Frame length (header + content).
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Data is not in the form asked for: a message's content for `text()` (not UTF-8) or
    /// `json()` (not that JSON), a string parsed as a [`ClusterId`](crate::cluster::ClusterId).
    #[error("invalid content: {0}")]
    InvalidContent(String),
    /// JSON serialization failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// A message the protocol cannot carry, refused before sending: reserved type code, request
    /// id out of range or already awaited, ids exhausted...
    #[error(transparent)]
    Protocol(veltix_proto::Error),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server is already running.
    #[error("server is already running")]
    AlreadyRunning,
    /// A cluster operation could not be done now: the broker is down or slow, or the node's
    /// publishing queue is full. Local operations still work. Counted in
    /// [`ClusterStats::refused`](crate::cluster::ClusterStats::refused).
    #[error("cluster unavailable: {0}")]
    ClusterUnavailable(String),
    /// The target client (`NODE:LOCAL`) is not in the cluster: its node is gone (dead, or not
    /// connected to the broker) or it is not connected to its node any more.
    #[error("cluster client {0} is gone")]
    ClusterClientGone(String),
    /// A cluster operation on a server without a cluster setting.
    #[error("this server is not part of a cluster (ServerConfig::cluster is None)")]
    NoCluster,
}

/// Why a link is gone: the payload of [`Error::Disconnected`].
///
/// A connection records the **first** thing that ended it (a local close, the peer's close, an
/// I/O error, a protocol violation, a keep-alive timeout, the server stopping); every later send
/// or wait on it reports that cause, whatever happened after. Cheap to copy and compare.
/// `#[non_exhaustive]`: match with a wildcard arm.
///
/// ```
/// use veltix::{DisconnectCause, Error};
/// fn retry_later(e: &Error) -> bool {
///     matches!(
///         e,
///         Error::Disconnected(
///             DisconnectCause::NotConnected
///                 | DisconnectCause::PeerClosed
///                 | DisconnectCause::Io(_)
///                 | DisconnectCause::KeepAliveTimeout
///         )
///     )
/// }
/// assert!(retry_later(&Error::Disconnected(DisconnectCause::PeerClosed)));
/// assert!(!retry_later(&Error::Disconnected(DisconnectCause::ClosedLocally)));
/// let io = DisconnectCause::Io(std::io::ErrorKind::ConnectionReset);
/// assert_eq!(io.to_string(), "I/O error: connection reset");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectCause {
    /// There is no connection: the client never connected, is reconnecting, or gave up
    /// reconnecting.
    NotConnected,
    /// We closed it: `close_client`, `disconnect`, dropping the client, a cluster close.
    ClosedLocally,
    /// The server was stopped (`close_all`, dropped): its connections, and a
    /// [`ServerSender`](crate::ServerSender) whose server is gone.
    ServerStopped,
    /// The peer closed the connection (end of stream).
    PeerClosed,
    /// Reading or writing the socket failed (a reset, a broken pipe...).
    Io(std::io::ErrorKind),
    /// The peer sent a frame we refuse (bad magic, CRC mismatch, oversize, reserved type,
    /// truncated), counted in [`Stats::rejected`](crate::Stats::rejected).
    ProtocolViolation,
    /// Keep-alive received nothing from the peer within its timeout.
    KeepAliveTimeout,
}

impl std::fmt::Display for DisconnectCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectCause::NotConnected => f.write_str("not connected"),
            DisconnectCause::ClosedLocally => f.write_str("the connection was closed locally"),
            DisconnectCause::ServerStopped => f.write_str("the server was stopped"),
            DisconnectCause::PeerClosed => f.write_str("the peer closed the connection"),
            DisconnectCause::Io(kind) => write!(f, "I/O error: {kind}"),
            DisconnectCause::ProtocolViolation => f.write_str("the peer violated the protocol"),
            DisconnectCause::KeepAliveTimeout => {
                f.write_str("keep-alive: nothing received from the peer in time")
            }
        }
    }
}

impl From<veltix_proto::Error> for Error {
    fn from(e: veltix_proto::Error) -> Self {
        match e {
            veltix_proto::Error::Handshake(h) => Error::from(h),
            // `veltix_proto::check_outgoing` refusing a send.
            veltix_proto::Error::FrameTooLarge { len, limit } => {
                Error::MessageTooLarge { len, limit }
            }
            other => Error::Protocol(other),
        }
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::ServerFull(reason) => Error::ServerFull(reason),
            HandshakeError::Rejected(reason) => Error::Rejected(reason),
            other => Error::Handshake(other),
        }
    }
}

/// `Result` with [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
