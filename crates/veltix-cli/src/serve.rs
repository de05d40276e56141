//! `veltix serve`: an echo, chat or sink server until SIGINT/SIGTERM.
//!
//! Output contract (stdout):
//! - once bound: `listening on HOST:PORT` (the real port with `--port 0`), flushed at once;
//! - every `--stats-interval` seconds, and once on stop: `stats: {JSON}`, the server's
//!   [`veltix::Stats`] plus `log_lines_dropped` (lines stderr did not take in time);
//! - sink mode, on stop: `received N messages (B bytes) in T s: R msg/s`;
//! - with `--cluster`: `cluster node NAME up` once connected to the broker (or
//!   `cluster node NAME not connected yet` after 10 s; it keeps trying), and the stats JSON has a
//!   `cluster` object ([`veltix::cluster::ClusterStats`]).
//!
//! With `--cluster redis://HOST:PORT`, several `veltix serve` processes act as one: in chat mode
//! a message from a client on any node reaches the clients of every node except its sender
//! (while the broker is down, those of its own node only). Chat mode then also answers these
//! commands (the reply carries the request's id):
//! - type 250 `whoami`: replies with the sender's cluster id (`NODE:LOCAL`);
//! - type 251 `tag`, content `{"name": N, "value": V}`: sets the sender's tag, replies `ok`;
//! - type 252 `to`, content `NODE:LOCAL\nPAYLOAD`: sends PAYLOAD (type 252) to that client on
//!   whatever node, replies `ok` or `error: ...`;
//! - type 253 `who`, content empty or `{"name": N, "value": V}` (value optional): replies with a
//!   JSON array of the cluster ids of every client in the cluster (with that tag).
//!
//! This module also holds the small argument parsers shared by `send` and `ping`.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::info;
use veltix::cluster::{ClusterConfig, ClusterId};
use veltix::{
    ClientInfo, Error, Generation, PerformanceMode, Request, Response, Server, ServerConfig,
    ServerSender,
};

use crate::logging::Logging;

/// First message type code that belongs to users (`0..=199` are the protocol's).
const FIRST_USER_CODE: u16 = veltix::proto::types::FIRST_USER_CODE;

/// How long, after closing every client, sink mode waits for handlers to finish counting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server does with user messages (type code >= 200).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Send every message back to its sender (same type, content and request id).
    Echo,
    /// Broadcast every message (same type and content) to all other clients.
    Chat,
    /// Count messages and bytes; print the totals on stop.
    Sink,
}

/// Arguments of `veltix serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed on the `listening on` line).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// What to do with user messages.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    pub mode: Mode,
    /// Maximum simultaneous connections (default: unlimited). Extra Gen 3 clients are told the
    /// server is full.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Largest frame accepted or sent, header included (default 10 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Deadline for a connection's handshake, in seconds (default 5).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub handshake_timeout: Option<Duration>,
    /// Handler threads (default 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub workers: Option<u64>,
    /// Wire generation: gen3 (Python Veltix 2.x/3.x) or gen1 (Python Veltix 1.6.x).
    #[arg(long, value_name = "GEN", default_value = "gen3")]
    pub wire: Generation,
    /// Write coalescing: low, balanced (default) or high.
    #[arg(long, value_name = "MODE")]
    pub performance_mode: Option<PerformanceMode>,
    /// Print a `stats: {JSON}` line on stdout every SECS seconds (and always once on stop).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub stats_interval: Option<Duration>,
    /// On stop, how long queued data may take to reach each client before it is dropped (a
    /// client that does not read cannot hold the exit longer).
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "0.5")]
    pub close_timeout: Duration,
    /// Join a cluster through this Redis (`redis://HOST:PORT`): chat reaches every node.
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// This node's id in the cluster (default: `node-` and 8 random hex digits).
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub node_id: Option<String>,
    /// How long this node's presence lives without a heartbeat (default 3 s).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, requires = "cluster")]
    pub presence_ttl: Option<Duration>,
    /// How often this node refreshes its presence (default 1 s; below the TTL).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, requires = "cluster")]
    pub heartbeat: Option<Duration>,
    #[command(flatten)]
    pub security: crate::secure::ServeArgs,
}

/// Chat-mode commands with `--cluster` (see the module doc).
const WHOAMI: u16 = 250;
const TAG: u16 = 251;
const TO: u16 = 252;
const WHO: u16 = 253;

/// How long `serve` waits for the broker before printing that the node is not connected yet.
const CLUSTER_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Chat with a cluster: commands, else a cluster broadcast (a local one while the broker is
/// down, counted in the cluster stats as refused).
fn cluster_chat(tx: &ServerSender, client: &ClientInfo, msg: &Response) -> Result<(), Error> {
    let reply = |text: &str| client.send(Request::text(msg.message_type(), text).respond(msg));
    match msg.message_type() {
        WHOAMI => {
            let id = client
                .cluster_id()
                .map(|i| i.to_string())
                .unwrap_or_default();
            reply(&id)
        }
        TAG => {
            let v: serde_json::Value = msg.json()?;
            let name = v["name"]
                .as_str()
                .ok_or_else(|| Error::InvalidContent("tag needs a string \"name\"".into()))?;
            client.set_tag(name, v["value"].clone());
            reply("ok")
        }
        TO => {
            let content = msg.content();
            let split = content
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(content.len());
            let target = std::str::from_utf8(&content[..split])
                .map_err(|_| Error::InvalidContent("target is not UTF-8".into()))
                .and_then(|s| s.parse::<ClusterId>());
            let r = target.and_then(|t| {
                let payload = content.slice((split + 1).min(content.len())..);
                tx.cluster_send(&t, Request::new(TO, payload))
            });
            match r {
                Ok(()) => reply("ok"),
                Err(e) => reply(&format!("error: {e}")),
            }
        }
        WHO => {
            let filter: Option<serde_json::Value> = if msg.content().is_empty() {
                None
            } else {
                Some(msg.json()?)
            };
            let all = match tx.cluster_clients() {
                Ok(all) => all,
                Err(e) => return reply(&format!("error: {e}")),
            };
            let ids: Vec<String> = all
                .iter()
                .filter(|c| match &filter {
                    None => true,
                    Some(f) => match (f["name"].as_str(), f.get("value")) {
                        (Some(n), None) => c.get_tag(n).is_some(),
                        (Some(n), Some(v)) => c.get_tag(n) == Some(v),
                        (None, _) => false,
                    },
                })
                .map(|c| c.id().to_string())
                .collect();
            client.send(Request::json(WHO, &ids)?.respond(msg))
        }
        _ => {
            let out = Request::new(msg.message_type(), msg.content().clone());
            let me: Vec<ClusterId> = client.cluster_id().into_iter().collect();
            match tx.cluster_broadcast(&out, &me) {
                Ok(_) => Ok(()),
                Err(Error::ClusterUnavailable(_)) => {
                    tx.broadcast(out, std::slice::from_ref(client)).map(|_| ())
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Parses a number of seconds (`0.5`, `2`); finite and not negative.
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v)
        .map_err(|_| format!("{s:?} is not a valid duration (seconds >= 0)"))
}

/// Parses a timeout in seconds: like [`parse_secs`], but it must be greater than zero.
pub(crate) fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d.is_zero() {
        return Err("a timeout must be greater than 0".into());
    }
    Ok(d)
}

/// Sink mode's counters, updated by the handler threads.
struct SinkStats {
    base: Instant,
    messages: AtomicU64,
    bytes: AtomicU64,
    /// Nanoseconds since `base` of the first and last message (`u64::MAX`/0 while none).
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

impl SinkStats {
    fn new() -> Self {
        SinkStats {
            base: Instant::now(),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
        }
    }

    fn record(&self, len: usize) {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.first_ns.fetch_min(now, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
    }

    /// `received N messages (B bytes) in T s: R msg/s`, T from the first to the last message.
    fn summary(&self) -> String {
        let n = self.messages.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let first = self.first_ns.load(Ordering::Relaxed);
        let last = self.last_ns.load(Ordering::Relaxed);
        let secs = if n == 0 {
            0.0
        } else {
            last.saturating_sub(first) as f64 / 1e9
        };
        let rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
        format!("received {n} messages ({bytes} bytes) in {secs:.3} s: {rate:.0} msg/s")
    }
}

/// Tag set (under [`Drain`]'s lock) once a client's `on_disconnect` has run.
const DRAINED_TAG: &str = "veltix-cli.drained";

/// Clients whose `on_disconnect` has not run yet. `on_disconnect` runs after a client's last
/// message was handled, so once this is empty (after `close_all`), every message that was read
/// has been counted. The runtime offers no "wait until the handlers are idle", hence this.
#[derive(Default)]
struct Drain {
    pending: Mutex<HashSet<u64>>,
    changed: Condvar,
}

impl Drain {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connected(&self, client: &ClientInfo) {
        self.lock().insert(client.id());
    }

    fn disconnected(&self, client: &ClientInfo) {
        let mut pending = self.lock();
        client.set_tag(DRAINED_TAG, true);
        pending.remove(&client.id());
        self.changed.notify_all();
    }

    /// Adds the connected clients whose `on_connect` may not have run yet (handlers lag).
    fn track(&self, clients: &[ClientInfo]) {
        let mut pending = self.lock();
        for c in clients {
            if !c.has_tag(DRAINED_TAG) {
                pending.insert(c.id());
            }
        }
    }

    /// Waits until every tracked client's `on_disconnect` ran; `false` on timeout.
    fn wait(&self, timeout: Duration) -> bool {
        let pending = self.lock();
        let (pending, _) = self
            .changed
            .wait_timeout_while(pending, timeout, |p| !p.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        pending.is_empty()
    }
}

/// The reply to an echoed message: same type, content and request id.
fn echo_of(msg: &Response) -> Request {
    Request::new(msg.message_type(), msg.content().clone()).respond(msg)
}

/// Runs `veltix serve` until SIGINT or SIGTERM.
pub fn run(args: Args, logging: &Logging) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ServerConfig::default()
        .host(args.host.clone())
        .port(args.port)
        .generation(args.wire)
        .close_timeout(args.close_timeout);
    config.max_connections = args.max_connections.map(usize::try_from).transpose()?;
    if let Some(v) = args.max_message_size {
        config.settings.max_message_size = v;
    }
    if let Some(v) = args.handshake_timeout {
        config.settings.handshake_timeout = v;
    }
    if let Some(v) = args.workers {
        config.settings.max_workers = usize::try_from(v)?;
    }
    if let Some(v) = args.performance_mode {
        config.settings.performance_mode = v;
    }
    args.security.configure(&mut config);
    if let Some(url) = &args.cluster {
        let mut c = ClusterConfig::redis(url.clone());
        c.node_id = args.node_id.clone();
        if let Some(v) = args.presence_ttl {
            c.presence_ttl = v;
        }
        if let Some(v) = args.heartbeat {
            c.heartbeat_interval = v;
        }
        config.cluster = Some(c);
    }

    // Signal handlers first: a SIGTERM arriving right after the `listening on` line must not
    // kill the process with the default action.
    let signals = Signals::new()?;

    let server = Server::new(config);
    args.security.install(&server)?;
    let stats = Arc::new(SinkStats::new());
    let drain = Arc::new(Drain::default());
    match args.mode {
        Mode::Echo => {
            server.on_recv(|client: &ClientInfo, msg: Response| {
                if msg.message_type() < FIRST_USER_CODE {
                    return Ok(());
                }
                client.send(echo_of(&msg))
            });
        }
        Mode::Chat if args.cluster.is_some() => {
            let tx = server.sender();
            server.on_recv(move |client: &ClientInfo, msg: Response| {
                if msg.message_type() < FIRST_USER_CODE {
                    return Ok(());
                }
                cluster_chat(&tx, client, &msg)
            });
        }
        Mode::Chat => {
            let tx = server.sender();
            server.on_recv(move |client: &ClientInfo, msg: Response| {
                if msg.message_type() < FIRST_USER_CODE {
                    return Ok(());
                }
                let out = Request::new(msg.message_type(), msg.content().clone());
                tx.broadcast(out, std::slice::from_ref(client)).map(|_| ())
            });
        }
        Mode::Sink => {
            let s = stats.clone();
            server.on_recv(move |_: &ClientInfo, msg: Response| {
                if msg.message_type() >= FIRST_USER_CODE {
                    s.record(msg.content().len());
                }
            });
            let d = drain.clone();
            server.on_connect(move |c| d.connected(c));
            let d = drain.clone();
            server.on_disconnect(move |c| d.disconnected(c));
        }
    }

    let addr = server.start()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    info!(%addr, mode = ?args.mode, wire = %args.wire, "serving");
    if let Some(node) = server.node_id() {
        let up = server.wait_cluster_up(CLUSTER_UP_TIMEOUT);
        let mut out = std::io::stdout().lock();
        if up {
            writeln!(out, "cluster node {node} up")?;
        } else {
            writeln!(out, "cluster node {node} not connected yet")?;
        }
        out.flush()?;
    }

    let print_stats = || -> std::io::Result<()> {
        let mut json = serde_json::to_value(server.stats()).map_err(std::io::Error::other)?;
        json["log_lines_dropped"] = logging.dropped_lines().into();
        if let Some(c) = server.cluster_stats() {
            json["cluster"] = serde_json::to_value(c).map_err(std::io::Error::other)?;
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "stats: {json}")?;
        out.flush()
    };
    let which = signals.wait(args.stats_interval, &print_stats)?;
    info!("{which} received: closing every client");
    if args.mode == Mode::Sink {
        drain.track(&server.clients());
    }
    server.close_all();
    if server.node_id().is_some() {
        // Gone from the cluster view at once rather than after the presence TTL.
        if let Err(e) = server.cluster_leave() {
            tracing::warn!("leaving the cluster: {e}");
        }
    }
    print_stats()?;

    if args.mode == Mode::Sink {
        if !drain.wait(DRAIN_TIMEOUT) {
            tracing::warn!("some handlers were still running after {DRAIN_TIMEOUT:?}");
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", stats.summary())?;
        out.flush()?;
    }
    Ok(())
}

/// SIGINT/SIGTERM, registered on a small current-thread runtime used only for waiting.
struct Signals {
    rt: tokio::runtime::Runtime,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let _guard = rt.enter();
            let int = signal(SignalKind::interrupt())?;
            let term = signal(SignalKind::terminate())?;
            Ok(Signals { rt, int, term })
        }
        #[cfg(not(unix))]
        Ok(Signals { rt })
    }

    /// Blocks until a signal arrives, calling `tick` every `interval` meanwhile; returns the
    /// signal's name.
    fn wait(
        self,
        interval: Option<Duration>,
        tick: &dyn Fn() -> std::io::Result<()>,
    ) -> std::io::Result<&'static str> {
        let ticks = async {
            let Some(every) = interval else {
                return std::future::pending().await;
            };
            let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                timer.tick().await;
                tick()?;
            }
        };
        #[cfg(unix)]
        {
            let Signals {
                rt,
                mut int,
                mut term,
            } = self;
            rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => Ok("SIGINT"),
                    _ = term.recv() => Ok("SIGTERM"),
                    r = ticks => r,
                }
            })
        }
        #[cfg(not(unix))]
        {
            self.rt.block_on(async {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r.map(|_| "Ctrl-C"),
                    r = ticks => r,
                }
            })
        }
    }
}
