//! Server and client settings.

use std::time::Duration;

pub use veltix_proto::Generation;

use crate::{Error, Result};

/// Default `max_message_size`: 10 MiB (header + content), as in Python Veltix.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = veltix_proto::DEFAULT_MAX_MESSAGE_SIZE;

/// How a connection trades latency against system calls (the seed's
/// `ServerConfig.performance_mode`, given a real effect).
///
/// A send either writes the frame to the socket from the sending thread ("inline": no hand-off,
/// lowest latency, one system call per message) or appends it to the connection's outbound
/// buffer for its writer task, which moves everything queued in one `write` (coalescing: fewer
/// system calls and wake-ups per message under load).
///
/// | Mode | Policy | Effect |
/// |---|---|---|
/// | `High` | inline whenever nothing is queued | lowest latency; bursts cost one syscall per message |
/// | `Balanced` (default) | inline when nothing was queued for 20 µs, else coalesce (the writer yields once to gather concurrent senders) | isolated requests, replies and pings go out at once; bursts and many concurrent senders are batched |
/// | `Low` | always coalesce, waiting 1 ms (or until 64 KiB are queued) before writing | fewest system calls per message; adds milliseconds per hop (the wait rounds up to tokio's timer granularity: a ping round trip measured ~4.3 ms) |
///
/// Measure it with `veltix bench latency --performance-mode high|balanced|low` and
/// `veltix bench burst --performance-mode ...` (see BENCHMARKS.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PerformanceMode {
    /// Economical: coalesce writes for up to 1 ms.
    Low,
    /// The default.
    #[default]
    Balanced,
    /// Lowest latency.
    High,
}

impl std::str::FromStr for PerformanceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(PerformanceMode::Low),
            "balanced" => Ok(PerformanceMode::Balanced),
            "high" => Ok(PerformanceMode::High),
            o => Err(format!(
                "unknown performance mode {o:?} (low, balanced, high)"
            )),
        }
    }
}

/// Settings of a [`Server`](crate::Server). Build with `Default` and struct update.
///
/// ```
/// use std::time::Duration;
/// use veltix::ServerConfig;
/// let cfg = ServerConfig {
///     host: "127.0.0.1".into(),
///     port: 0, // any free port
///     max_connections: Some(100),
///     handshake_timeout: Duration::from_secs(2),
///     ..ServerConfig::default()
/// };
/// assert_eq!(cfg.max_workers, 4);
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on (default `"0.0.0.0"`).
    pub host: String,
    /// Port (default 8080; 0 = any free port, see [`Server::local_addr`](crate::Server::local_addr)).
    pub port: u16,
    /// Bytes read from a socket at a time (default 8192).
    pub buffer_size: usize,
    /// Maximum simultaneous connections, handshaking ones included (default `None`: unlimited).
    /// Gen 3: extra clients get `{"error": "server_full"}`; Gen 1: the server stops accepting
    /// until a slot frees, as Python 1.6.9 does.
    pub max_connections: Option<usize>,
    /// Largest frame accepted or sent, header included (default 10 MiB).
    pub max_message_size: usize,
    /// Total deadline for a connection's handshake (default 5 s).
    pub handshake_timeout: Duration,
    /// Handler pool size (default 4).
    pub max_workers: usize,
    /// Wire generation (default [`Generation::Gen3`]).
    pub generation: Generation,
    /// Gen 3: how many request ids the server allocates from 32768 (default 30000, max 32768).
    pub id_window: u32,
    /// Write coalescing policy.
    pub performance_mode: PerformanceMode,
    /// Per-connection limit of bytes queued for sending; beyond it sends fail with
    /// [`Error::QueueFull`] (default 16 MiB; one message larger than this still goes through
    /// when the queue is empty).
    pub max_queued_bytes: usize,
    /// Per-connection limit of received bytes waiting for handlers; beyond it the server stops
    /// reading from that peer until handlers catch up (TCP backpressure; default 16 MiB).
    pub max_inbound_queue: usize,
    /// How long closing a connection may spend flushing what was queued (default 2 s).
    pub close_timeout: Duration,
    /// Keep-alive: PING an idle peer every `interval`, close it when nothing arrived for
    /// `timeout` (default `None`: off, as in Python).
    pub keepalive: Option<KeepAlive>,
    /// Several servers acting as one through a broker (default `None`: this server alone).
    /// See [`crate::cluster`].
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// TLS on every connection (default `None`: plaintext, as in Python). Certificates and keys
    /// are read and checked by `start()`; see [`ServerTls`](crate::tls::ServerTls).
    pub tls: Option<crate::tls::ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 8080,
            buffer_size: 8192,
            max_connections: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            handshake_timeout: Duration::from_secs(5),
            max_workers: 4,
            generation: Generation::Gen3,
            id_window: veltix_proto::ids::DEFAULT_SERVER_ID_WINDOW,
            performance_mode: PerformanceMode::Balanced,
            max_queued_bytes: 16 * 1024 * 1024,
            max_inbound_queue: 16 * 1024 * 1024,
            close_timeout: Duration::from_secs(2),
            keepalive: None,
            cluster: None,
            tls: None,
        }
    }
}

impl ServerConfig {
    /// A loopback config on a free port: handy in tests and examples.
    pub fn local() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.common().validate()?;
        if self.max_connections == Some(0) {
            return Err(Error::Config(
                "max_connections must be >= 1 (None = unlimited)".into(),
            ));
        }
        if self.id_window == 0 {
            return Err(Error::Config("id_window must be >= 1".into()));
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        Ok(())
    }
}

/// Keep-alive settings (both sides): PING after `interval` without traffic, and close the link
/// when nothing at all was received for `timeout`. Python peers answer PING automatically.
///
/// ```
/// use std::time::Duration;
/// let k = veltix::KeepAlive::default();
/// assert_eq!((k.interval, k.timeout), (Duration::from_secs(5), Duration::from_secs(15)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// Idle time after which a PING is sent.
    pub interval: Duration,
    /// Silence after which the link is declared dead and closed.
    pub timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

impl KeepAlive {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.interval.is_zero() || self.timeout < self.interval {
            return Err(Error::Config(
                "keepalive needs interval > 0 and timeout >= interval".into(),
            ));
        }
        Ok(())
    }
}

/// The settings both sides share, checked and turned into per-connection settings in one place.
pub(crate) struct Common {
    buffer_size: usize,
    max_message_size: usize,
    max_workers: usize,
    handshake_timeout: Duration,
    generation: Generation,
    max_queued_bytes: usize,
    performance_mode: PerformanceMode,
    close_timeout: Duration,
    keepalive: Option<KeepAlive>,
}

macro_rules! common_of {
    ($cfg:expr) => {
        Common {
            buffer_size: $cfg.buffer_size,
            max_message_size: $cfg.max_message_size,
            max_workers: $cfg.max_workers,
            handshake_timeout: $cfg.handshake_timeout,
            generation: $cfg.generation,
            max_queued_bytes: $cfg.max_queued_bytes,
            performance_mode: $cfg.performance_mode,
            close_timeout: $cfg.close_timeout,
            keepalive: $cfg.keepalive,
        }
    };
}

impl ServerConfig {
    pub(crate) fn common(&self) -> Common {
        common_of!(self)
    }
}

impl ClientConfig {
    pub(crate) fn common(&self) -> Common {
        common_of!(self)
    }
}

impl Common {
    fn validate(&self) -> Result<()> {
        if self.buffer_size == 0 {
            return Err(Error::Config("buffer_size must be > 0".into()));
        }
        if self.max_message_size < self.generation.header_len() {
            return Err(Error::Config(format!(
                "max_message_size must be >= {} (the header)",
                self.generation.header_len()
            )));
        }
        if self.max_workers == 0 {
            return Err(Error::Config("max_workers must be >= 1".into()));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::Config("handshake_timeout must be > 0".into()));
        }
        if let Some(k) = &self.keepalive {
            k.validate()?;
        }
        Ok(())
    }

    pub(crate) fn conn_settings(&self) -> crate::conn::ConnSettings {
        crate::conn::ConnSettings {
            generation: self.generation,
            max_message_size: self.max_message_size,
            max_queued_bytes: self.max_queued_bytes,
            buffer_size: self.buffer_size,
            mode: self.performance_mode,
            close_timeout: self.close_timeout,
            keepalive: self.keepalive,
        }
    }
}

/// Settings of a [`Client`](crate::Client).
///
/// ```
/// use veltix::ClientConfig;
/// let cfg = ClientConfig { port: 9000, ..ClientConfig::default() };
/// assert_eq!(cfg.host, "127.0.0.1");
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    /// Server host name or address (default `"127.0.0.1"`).
    pub host: String,
    /// Server port (default 8080).
    pub port: u16,
    /// Bytes read from the socket at a time (default 8192).
    pub buffer_size: usize,
    /// Largest frame accepted or sent, header included (default 10 MiB).
    pub max_message_size: usize,
    /// Total deadline for the handshake (default 5 s).
    pub handshake_timeout: Duration,
    /// TCP connect deadline (default 5 s, like Python which uses the handshake timeout).
    pub connect_timeout: Duration,
    /// Handler pool size (default 4).
    pub max_workers: usize,
    /// Wire generation (default [`Generation::Gen3`]).
    pub generation: Generation,
    /// Write coalescing policy.
    pub performance_mode: PerformanceMode,
    /// Limit of bytes queued for sending (default 16 MiB), see [`ServerConfig::max_queued_bytes`].
    pub max_queued_bytes: usize,
    /// Limit of received bytes waiting for handlers (default 16 MiB).
    pub max_inbound_queue: usize,
    /// How long `disconnect` may spend flushing what was queued (default 2 s).
    pub close_timeout: Duration,
    /// Keep-alive (default `None`).
    pub keepalive: Option<KeepAlive>,
    /// What to do when the connection drops or cannot be made (default: no retry, like Python).
    pub reconnect: crate::ReconnectPolicy,
    /// TLS to the server (default `None`: plaintext). Files are read and checked by
    /// `connect()`; see [`ClientTls`](crate::tls::ClientTls).
    pub tls: Option<crate::tls::ClientTls>,
    /// Gen 3: the `meta` object of our hello, e.g. credentials for the server's authenticate
    /// hook (default empty, as Python sends; see [`ClientConfig::with_token`]).
    pub meta: serde_json::Map<String, serde_json::Value>,
}

/// Everything but the values of `meta`, which may hold credentials: only its keys are shown.
///
/// ```
/// let cfg = veltix::ClientConfig::default().with_token("s3cret");
/// let shown = format!("{cfg:?}");
/// assert!(shown.contains("token") && !shown.contains("s3cret"));
/// ```
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("buffer_size", &self.buffer_size)
            .field("max_message_size", &self.max_message_size)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_workers", &self.max_workers)
            .field("generation", &self.generation)
            .field("performance_mode", &self.performance_mode)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("max_inbound_queue", &self.max_inbound_queue)
            .field("close_timeout", &self.close_timeout)
            .field("keepalive", &self.keepalive)
            .field("reconnect", &self.reconnect)
            .field("tls", &self.tls)
            .field("meta_keys", &self.meta.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            buffer_size: 8192,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_workers: 4,
            generation: Generation::Gen3,
            performance_mode: PerformanceMode::Balanced,
            max_queued_bytes: 16 * 1024 * 1024,
            max_inbound_queue: 16 * 1024 * 1024,
            close_timeout: Duration::from_secs(2),
            keepalive: None,
            reconnect: crate::ReconnectPolicy::default(),
            tls: None,
            meta: serde_json::Map::new(),
        }
    }
}

impl ClientConfig {
    /// A config for `host:port`, everything else default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        ClientConfig {
            host: host.into(),
            port,
            ..Self::default()
        }
    }

    /// Presents `token` to the server: sets `meta["token"]` (what
    /// [`auth::token_list`](crate::auth::token_list) and `veltix serve --auth-token-file` check).
    ///
    /// ```
    /// let cfg = veltix::ClientConfig::new("127.0.0.1", 8080).with_token("s3cret");
    /// assert_eq!(cfg.meta["token"], "s3cret");
    /// ```
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.meta
            .insert("token".into(), serde_json::Value::String(token.into()));
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.common().validate()?;
        if self.connect_timeout.is_zero() {
            return Err(Error::Config("connect_timeout must be > 0".into()));
        }
        self.reconnect.validate()
    }
}
