//! Server and client settings, and the cluster setting of a server ([`ClusterConfig`], also
//! at `veltix::cluster::ClusterConfig`). This module depends on no other module of the crate
//! but `util` and the error type: the runtime reads its settings, never the reverse.

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

/// Parses `low`, `balanced` or `high` (any case); anything else is [`Error::Config`].
///
/// ```
/// use veltix::{Error, PerformanceMode};
/// assert_eq!("High".parse::<PerformanceMode>()?, PerformanceMode::High);
/// assert!(matches!("fast".parse::<PerformanceMode>(), Err(Error::Config(_))));
/// # Ok::<(), veltix::Error>(())
/// ```
impl std::str::FromStr for PerformanceMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(PerformanceMode::Low),
            "balanced" => Ok(PerformanceMode::Balanced),
            "high" => Ok(PerformanceMode::High),
            o => Err(Error::Config(format!(
                "unknown performance mode {o:?} (low, balanced, high)"
            ))),
        }
    }
}

/// The settings both sides of a link share: embedded as `settings` in [`ServerConfig`] and
/// [`ClientConfig`], checked in one place when the server starts or the client connects.
///
/// Every field has a builder setter of the same name, on `Settings` and on both configs (one
/// definition serves all three); read the values through the fields.
///
/// ```
/// use std::time::Duration;
/// use veltix::config::{Settings, PerformanceMode};
/// use veltix::{ClientConfig, KeepAlive, ServerConfig};
/// let shared = Settings::default()
///     .max_workers(2)
///     .performance_mode(PerformanceMode::High)
///     .keepalive(KeepAlive::new(Duration::from_secs(1), Duration::from_secs(3)));
/// let server = ServerConfig::local().settings(shared);
/// let client = ClientConfig::new("127.0.0.1", 9000).settings(shared).max_workers(8);
/// assert_eq!(server.settings.max_workers, 2);
/// assert_eq!(client.settings.max_workers, 8);
/// assert_eq!(client.settings.buffer_size, 8192);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Bytes read from a socket at a time (default 8192).
    pub buffer_size: usize,
    /// Largest frame accepted or sent, header included (default 10 MiB).
    pub max_message_size: usize,
    /// Total deadline for a connection's handshake (default 5 s).
    pub handshake_timeout: Duration,
    /// A claim on the size of the process-wide handler pool (default 4). Every server and
    /// client of the process shares ONE pool of handler threads, sized to the largest
    /// `max_workers` of the live servers and clients, unless [`crate::set_handler_threads`] or
    /// the `VELTIX_HANDLER_THREADS` environment variable fixes the size
    /// ([`crate::handler_threads`] tells the current one). Async handlers
    /// ([`AsyncServer::route_async`](crate::AsyncServer::route_async)) hold no thread while they
    /// wait and are not limited by it.
    ///
    /// ```
    /// let server = veltix::Server::new(veltix::ServerConfig::local().max_workers(16));
    /// assert!(veltix::handler_threads() >= 1); // 16 unless fixed otherwise
    /// # drop(server);
    /// ```
    pub max_workers: usize,
    /// Wire generation (default [`Generation::Gen3`]).
    pub generation: Generation,
    /// Write coalescing policy (default [`PerformanceMode::Balanced`]).
    pub performance_mode: PerformanceMode,
    /// Per-connection limit of bytes queued for sending; beyond it sends fail with
    /// [`Error::QueueFull`] (default 16 MiB; one message larger than this still goes through
    /// when the queue is empty).
    pub max_queued_bytes: usize,
    /// Per-connection limit of received bytes waiting for handlers; beyond it the connection is
    /// not read until handlers catch up (TCP backpressure; default 16 MiB).
    pub max_inbound_queue: usize,
    /// How long closing a connection may spend flushing what was queued (default 2 s).
    pub close_timeout: Duration,
    /// Keep-alive: PING an idle peer every `interval`, close it when nothing arrived for
    /// `timeout` (default `None`: off, as in Python).
    pub keepalive: Option<KeepAlive>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            buffer_size: 8192,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            handshake_timeout: Duration::from_secs(5),
            max_workers: 4,
            generation: Generation::Gen3,
            performance_mode: PerformanceMode::Balanced,
            max_queued_bytes: 16 * 1024 * 1024,
            max_inbound_queue: 16 * 1024 * 1024,
            close_timeout: Duration::from_secs(2),
            keepalive: None,
        }
    }
}

impl Settings {
    /// The defaults (the same as `Settings::default()`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks every value; what `start()` and `connect()` report as [`Error::Config`].
    ///
    /// ```
    /// let bad = veltix::config::Settings::new().max_workers(0);
    /// assert!(matches!(bad.validate(), Err(veltix::Error::Config(_))));
    /// ```
    pub fn validate(&self) -> Result<()> {
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
}

use crate::util::setters;

/// Writes the by-value builder setters of the shared settings once, for [`Settings`] and for
/// each config that embeds it as `settings` (the `Option` ones take the value and set `Some`).
macro_rules! settings_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $wrap:path;)*) => {
        setters!(Settings { $($(#[$doc])* $name: $ty => $wrap;)* });
        settings_setters!(@embedded ServerConfig, $($(#[$doc])* $name: $ty;)*);
        settings_setters!(@embedded ClientConfig, $($(#[$doc])* $name: $ty;)*);
    };
    (@embedded $cfg:ident, $($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl $cfg {
            /// Replaces all the shared settings at once.
            pub fn settings(mut self, settings: Settings) -> Self {
                self.settings = settings;
                self
            }
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self {
                self.settings = self.settings.$name(value);
                self
            })*
        }
    };
}

settings_setters! {
    /// Sets [`Settings::buffer_size`].
    buffer_size: usize => std::convert::identity;
    /// Sets [`Settings::max_message_size`].
    max_message_size: usize => std::convert::identity;
    /// Sets [`Settings::handshake_timeout`].
    handshake_timeout: Duration => std::convert::identity;
    /// Sets [`Settings::max_workers`].
    max_workers: usize => std::convert::identity;
    /// Sets [`Settings::generation`].
    generation: Generation => std::convert::identity;
    /// Sets [`Settings::performance_mode`].
    performance_mode: PerformanceMode => std::convert::identity;
    /// Sets [`Settings::max_queued_bytes`].
    max_queued_bytes: usize => std::convert::identity;
    /// Sets [`Settings::max_inbound_queue`].
    max_inbound_queue: usize => std::convert::identity;
    /// Sets [`Settings::close_timeout`].
    close_timeout: Duration => std::convert::identity;
    /// Turns keep-alive on with these timings ([`Settings::keepalive`]; off by default).
    keepalive: KeepAlive => Some;
}

/// Settings of a [`Server`](crate::Server): build with [`ServerConfig::new`] (or
/// [`ServerConfig::local`]) and the setters; read through the fields.
///
/// ```
/// use std::time::Duration;
/// use veltix::ServerConfig;
/// let cfg = ServerConfig::new()
///     .host("127.0.0.1")
///     .port(0) // any free port
///     .max_connections(100)
///     .handshake_timeout(Duration::from_secs(2));
/// assert_eq!(cfg.max_connections, Some(100));
/// assert_eq!(cfg.settings.max_workers, 4);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on (default `"0.0.0.0"`).
    pub host: String,
    /// Port (default 8080; 0 = any free port, see [`Server::local_addr`](crate::Server::local_addr)).
    pub port: u16,
    /// Maximum simultaneous connections, handshaking ones included (default `None`: unlimited).
    /// Gen 3: extra clients get `{"error": "server_full"}`; Gen 1: the server stops accepting
    /// until a slot frees, as Python 1.6.9 does.
    pub max_connections: Option<usize>,
    /// Gen 3: how many request ids the server allocates from 32768 (default 30000, max 32768).
    pub id_window: u32,
    /// What both sides share: buffer and message sizes, timeouts, workers, generation...
    pub settings: Settings,
    /// Several servers acting as one through a broker (default `None`: this server alone).
    /// See [`crate::cluster`].
    pub cluster: Option<ClusterConfig>,
    /// TLS on every connection (default `None`: plaintext, as in Python). Certificates and keys
    /// are read and checked by `start()`; see [`ServerTls`](crate::tls::ServerTls).
    pub tls: Option<crate::tls::ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 8080,
            max_connections: None,
            id_window: veltix_proto::ids::DEFAULT_SERVER_ID_WINDOW,
            settings: Settings::default(),
            cluster: None,
            tls: None,
        }
    }
}

impl ServerConfig {
    /// The defaults: all interfaces, port 8080 (the same as `ServerConfig::default()`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A loopback config on a free port: handy in tests and examples.
    ///
    /// ```
    /// let cfg = veltix::ServerConfig::local();
    /// assert_eq!((cfg.host.as_str(), cfg.port), ("127.0.0.1", 0));
    /// ```
    pub fn local() -> Self {
        Self::new().host("127.0.0.1").port(0)
    }

    /// Sets [`ServerConfig::host`].
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.settings.validate()?;
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

setters!(ServerConfig {
    /// Sets [`ServerConfig::port`] (0 = any free port).
    port: u16 => std::convert::identity;
    /// Limits simultaneous connections ([`ServerConfig::max_connections`]; unlimited by default).
    max_connections: usize => Some;
    /// Sets [`ServerConfig::id_window`].
    id_window: u32 => std::convert::identity;
    /// Joins a cluster ([`ServerConfig::cluster`]).
    cluster: ClusterConfig => Some;
    /// Serves TLS ([`ServerConfig::tls`]).
    tls: crate::tls::ServerTls => Some;
});

/// Keep-alive settings (both sides): PING after `interval` without traffic, and close the link
/// when nothing at all was received for `timeout`. Python peers answer PING automatically.
///
/// ```
/// use std::time::Duration;
/// let k = veltix::KeepAlive::default();
/// assert_eq!((k.interval, k.timeout), (Duration::from_secs(5), Duration::from_secs(15)));
/// let fast = veltix::KeepAlive::new(Duration::from_millis(100), Duration::from_millis(300));
/// assert_eq!(fast.timeout, Duration::from_millis(300));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeepAlive {
    /// Idle time after which a PING is sent.
    pub interval: Duration,
    /// Silence after which the link is declared dead and closed.
    pub timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive::new(Duration::from_secs(5), Duration::from_secs(15))
    }
}

impl KeepAlive {
    /// PING after `interval` of silence, give up after `timeout` (checked when the server starts
    /// or the client connects: `interval > 0`, `timeout >= interval`).
    pub const fn new(interval: Duration, timeout: Duration) -> Self {
        KeepAlive { interval, timeout }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.interval.is_zero() || self.timeout < self.interval {
            return Err(Error::Config(
                "keepalive needs interval > 0 and timeout >= interval".into(),
            ));
        }
        Ok(())
    }
}

/// Settings of a [`Client`](crate::Client): build with [`ClientConfig::new`] and the setters;
/// read through the fields.
///
/// ```
/// use std::time::Duration;
/// use veltix::{ClientConfig, KeepAlive};
/// let cfg = ClientConfig::new("127.0.0.1", 9000)
///     .max_workers(2)
///     .keepalive(KeepAlive::new(Duration::from_secs(1), Duration::from_secs(3)));
/// assert_eq!(cfg.host, "127.0.0.1");
/// assert_eq!(cfg.settings.max_workers, 2);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Server host name or address (default `"127.0.0.1"`).
    pub host: String,
    /// Server port (default 8080).
    pub port: u16,
    /// TCP connect deadline (default 5 s, like Python which uses the handshake timeout).
    pub connect_timeout: Duration,
    /// What both sides share: buffer and message sizes, timeouts, workers, generation...
    pub settings: Settings,
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
            .field("connect_timeout", &self.connect_timeout)
            .field("settings", &self.settings)
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
            connect_timeout: Duration::from_secs(5),
            settings: Settings::default(),
            reconnect: crate::ReconnectPolicy::default(),
            tls: None,
            meta: serde_json::Map::new(),
        }
    }
}

impl ClientConfig {
    /// A config for `host:port`, everything else default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self::default().host(host).port(port)
    }

    /// Sets [`ClientConfig::host`].
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
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
        self.settings.validate()?;
        if self.connect_timeout.is_zero() {
            return Err(Error::Config("connect_timeout must be > 0".into()));
        }
        self.reconnect.validate()
    }
}

setters!(ClientConfig {
    /// Sets [`ClientConfig::port`].
    port: u16 => std::convert::identity;
    /// Sets [`ClientConfig::connect_timeout`].
    connect_timeout: Duration => std::convert::identity;
    /// Sets [`ClientConfig::reconnect`].
    reconnect: crate::ReconnectPolicy => std::convert::identity;
    /// Connects with TLS ([`ClientConfig::tls`]).
    tls: crate::tls::ClientTls => Some;
    /// Replaces the hello's `meta` object ([`ClientConfig::meta`]).
    meta: serde_json::Map<String, serde_json::Value> => std::convert::identity;
});

/// The cluster setting of a [`ServerConfig`](crate::ServerConfig).
///
/// ```
/// use std::time::Duration;
/// use veltix::cluster::ClusterConfig;
/// use veltix::ServerConfig;
/// let config = ServerConfig::local()
///     .cluster(ClusterConfig::redis("redis://127.0.0.1:6379").node_id("eu-1"));
/// let cluster = config.cluster.as_ref().unwrap();
/// assert_eq!(cluster.presence_ttl, Duration::from_secs(3));
/// assert_eq!(cluster.heartbeat_interval, Duration::from_secs(1));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Broker URL: `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// This node's id (unique in the cluster; no whitespace, at most 100 bytes). `None`:
    /// `node-` and 8 random hex digits.
    pub node_id: Option<String>,
    /// Prefix of every channel and key, so several clusters can share one Redis.
    pub prefix: String,
    /// How long a node's presence lives without a heartbeat: a dead node's clients leave the
    /// cluster view at most this long after its last heartbeat. Default 3 s.
    pub presence_ttl: Duration,
    /// How often the node refreshes its presence. Must be shorter than `presence_ttl`.
    /// Default 1 s.
    pub heartbeat_interval: Duration,
    /// Deadline of a cluster operation that waits for the broker (send, list, close).
    /// Default 2 s.
    pub op_timeout: Duration,
    /// Cluster messages waiting to be published; beyond, cluster operations fail with
    /// [`Error::ClusterUnavailable`] (counted). Default 65,536.
    pub max_pending: usize,
}

impl ClusterConfig {
    /// Defaults for a Redis at `url`.
    ///
    /// ```
    /// let c = veltix::cluster::ClusterConfig::redis("redis://127.0.0.1:6379");
    /// assert_eq!(c.prefix, "veltix");
    /// ```
    pub fn redis(url: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            node_id: None,
            prefix: "veltix".into(),
            presence_ttl: Duration::from_secs(3),
            heartbeat_interval: Duration::from_secs(1),
            op_timeout: Duration::from_secs(2),
            max_pending: 65_536,
        }
    }

    /// Sets [`ClusterConfig::node_id`].
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// Sets [`ClusterConfig::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.presence_ttl {
            return bad(format!(
                "cluster heartbeat_interval ({:?}) must be > 0 and < presence_ttl ({:?})",
                self.heartbeat_interval, self.presence_ttl
            ));
        }
        if self.op_timeout.is_zero() || self.max_pending == 0 {
            return bad("cluster op_timeout and max_pending must be > 0".into());
        }
        if let Some(id) = &self.node_id {
            validate_node_id(id)?;
        }
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return bad(format!("invalid cluster prefix {:?}", self.prefix));
        }
        // The broker's own parser (what `RedisBroker::new` runs when the node starts).
        redis::Client::open(self.url.as_str())
            .map_err(|e| Error::Config(format!("cluster url {:?}: {e}", self.url)))?;
        Ok(())
    }
}

crate::util::setters!(ClusterConfig {
    /// Sets [`ClusterConfig::presence_ttl`].
    presence_ttl: Duration => std::convert::identity;
    /// Sets [`ClusterConfig::heartbeat_interval`].
    heartbeat_interval: Duration => std::convert::identity;
    /// Sets [`ClusterConfig::op_timeout`].
    op_timeout: Duration => std::convert::identity;
    /// Sets [`ClusterConfig::max_pending`].
    max_pending: usize => std::convert::identity;
});

/// A node id: 1 to 100 bytes, no whitespace.
pub(crate) fn validate_node_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 100 || id.contains(char::is_whitespace) {
        return Err(Error::Config(format!(
            "invalid cluster node id {id:?} (1 to 100 bytes, no whitespace)"
        )));
    }
    Ok(())
}
