//! The runtime's error type.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
pub use veltix_proto::HandshakeError;

/// Everything that can fail in a [`Server`](crate::Server) or [`Client`](crate::Client).
///
/// Unlike Python Veltix, failures are never reported as a silent `True`/`None`: a send to a closed
/// connection is [`Error::Closed`], a wait on a connection that drops is [`Error::Disconnected`]
/// at once (not after its timeout), and so on.
///
/// ```
/// use std::time::Duration;
/// let e = veltix::Error::Timeout(Duration::from_secs(5));
/// assert_eq!(e.to_string(), "no reply within 5s");
/// ```
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error.
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
    /// The connection dropped while a reply was awaited.
    #[error("connection closed while waiting for a reply")]
    Disconnected,
    /// The connection is closed (or closing): nothing can be sent on it.
    #[error("connection is closed")]
    Closed,
    /// Not connected (the client never connected, or is reconnecting).
    #[error("not connected")]
    NotConnected,
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
    /// The content is not what was asked for (not UTF-8 for `text()`, not JSON for `json()`).
    #[error("invalid content: {0}")]
    InvalidContent(String),
    /// JSON serialization failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// A protocol-level error (bad request id, reserved type code, ids exhausted...).
    #[error(transparent)]
    Protocol(veltix_proto::Error),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server is not running.
    #[error("server is not running")]
    NotRunning,
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

impl From<veltix_proto::Error> for Error {
    fn from(e: veltix_proto::Error) -> Self {
        match e {
            veltix_proto::Error::Handshake(h) => Error::from(h),
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
