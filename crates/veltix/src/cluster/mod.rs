//! Several servers acting as one through a broker (Redis): cluster-wide broadcast, send to a
//! client by its cluster-wide id, presence with a TTL, tags across nodes.
//!
//! How it works (the design of Centrifugo, Socket.IO's Redis adapter and Phoenix PubSub):
//! - every node subscribes to two channels, `PREFIX:all` (broadcasts) and `PREFIX:node:ID`
//!   (commands for that node: send to one of its clients, close one);
//! - a cluster broadcast is fanned out locally by the sending node, and published **once** on
//!   `PREFIX:all`; every other node fans it out to its own clients (never one copy per client
//!   through the broker);
//! - every node writes its presence (its clients and their tags) to the key
//!   `PREFIX:presence:ID` with a TTL ([`ClusterConfig::presence_ttl`], 3 s by default), every
//!   [`ClusterConfig::heartbeat_interval`] (1 s) and at once when a client connects, leaves or
//!   changes a tag. A node that dies stops refreshing it: its clients leave the cluster view
//!   within the TTL;
//! - when the broker fails, the node keeps serving its local clients; cluster operations fail at
//!   once with [`Error::ClusterUnavailable`]; a background task reconnects with backoff
//!   (100 ms doubling to 2 s), **resubscribes**, republishes its presence, and cluster delivery
//!   resumes by itself.
//!
//! Delivery across nodes is at most once (Redis pub/sub keeps no backlog: what is published
//! while a node is disconnected is not delivered to it) and keeps each sender's order (one
//! publishing queue and one pipelined connection per node). Every loss the node can see is
//! counted in [`ClusterStats`].
//!
//! Local operations ([`Server::broadcast`](crate::Server::broadcast),
//! [`ClientInfo::send`](crate::ClientInfo::send)) never touch the broker.

mod redis;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use self::redis::RedisBroker;
use crate::stats::{add, throttled, Throttle};
use crate::util::lock;
use crate::{DisconnectCause, Error, Request, Result};

/// A boxed, sendable future (what [`Broker`] methods return, so the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Messages of a subscription: `(channel, payload)`. The stream ends when the subscription's
/// connection is lost.
pub type Subscription = Pin<Box<dyn futures_core::Stream<Item = (String, Bytes)> + Send>>;

/// A broker failure (connection refused or lost, timeout, protocol error).
///
/// ```
/// let e = veltix::cluster::BrokerError("connection refused".into());
/// assert_eq!(e.to_string(), "broker: connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker: {0}")]
pub struct BrokerError(pub String);

/// What a cluster needs from a message broker: pub/sub channels and presence entries that
/// expire. [`RedisBroker`] implements it; another broker (NATS with a KV bucket) would too.
///
/// The broker does not reconnect by itself: after any error the node calls
/// [`Broker::connect`] again (with backoff) and [`Broker::subscribe`]s anew.
///
/// ```
/// use veltix::cluster::{Broker, RedisBroker};
/// fn takes_any(_: &dyn Broker) {}
/// takes_any(&RedisBroker::new("redis://127.0.0.1:6379", "veltix")?);
/// # Ok::<(), veltix::cluster::BrokerError>(())
/// ```
pub trait Broker: Send + Sync + 'static {
    /// (Re)opens the command connection (publish, presence).
    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Opens a subscription to `channels` on its own connection.
    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'_, Result<Subscription, BrokerError>>;
    /// Publishes a batch in order; returns, per message, how many subscribers received it.
    fn publish(&self, batch: Vec<(String, Bytes)>) -> BoxFuture<'_, Result<Vec<u64>, BrokerError>>;
    /// Writes this node's presence entry, expiring after `ttl` unless written again.
    fn set_presence(
        &self,
        node: &str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Removes a node's presence entry.
    fn remove_presence(&self, node: &str) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Every live presence entry.
    fn presence(&self) -> BoxFuture<'_, Result<Vec<Bytes>, BrokerError>>;
    /// One command round trip to the broker (a PUBLISH to `channel`), for benchmarks.
    fn round_trip(&self, channel: &str) -> BoxFuture<'_, Result<Duration, BrokerError>>;
}

use crate::config::validate_node_id;
pub use crate::config::ClusterConfig;

/// A client's cluster-wide id: the node it is connected to and its id there
/// ([`ClientInfo::id`](crate::ClientInfo::id)). Written `NODE:LOCAL`.
///
/// ```
/// use veltix::cluster::ClusterId;
/// let id: ClusterId = "eu-1:42".parse()?;
/// assert_eq!((id.node(), id.local()), ("eu-1", 42));
/// assert_eq!(id.to_string(), "eu-1:42");
/// assert!("no-colon".parse::<ClusterId>().is_err());
/// # Ok::<(), veltix::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId {
    node: Arc<str>,
    local: u64,
}

impl ClusterId {
    /// A cluster id from its parts.
    pub fn new(node: &str, local: u64) -> Self {
        ClusterId {
            node: node.into(),
            local,
        }
    }
    /// The node's id.
    pub fn node(&self) -> &str {
        &self.node
    }
    /// The client's id on its node.
    pub fn local(&self) -> u64 {
        self.local
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.local)
    }
}

impl FromStr for ClusterId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidContent(format!("{s:?} is not a cluster id (NODE:LOCAL)"));
        let (node, local) = s.trim().rsplit_once(':').ok_or_else(bad)?;
        let local = local.parse().map_err(|_| bad())?;
        validate_node_id(node).map_err(|_| bad())?;
        Ok(ClusterId::new(node, local))
    }
}

impl Serialize for ClusterId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Cluster counters of one node (see [`Server::cluster_stats`](crate::Server::cluster_stats)).
///
/// ```
/// let s = veltix::cluster::ClusterStats::default();
/// assert!(!s.up);
/// assert_eq!(s.published + s.publish_failed, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Connected to the broker and subscribed right now.
    pub up: bool,
    /// Messages published to the broker (broadcasts, sends, closes).
    pub published: u64,
    /// Messages lost because the broker failed while publishing them.
    pub publish_failed: u64,
    /// Cluster operations refused at once: broker down, or the publishing queue full.
    pub refused: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Received messages that could not be decoded (dropped).
    pub malformed: u64,
    /// Sends or closes for a client that is no longer on this node (dropped).
    pub unknown_target: u64,
    /// Received messages this node cannot send (type or size invalid under its own
    /// settings, e.g. a smaller `max_message_size`): dropped. Full client queues are counted
    /// per connection in [`Stats::dropped`](crate::Stats::dropped) instead.
    pub undeliverable: u64,
    /// Broker failures (connect, subscribe, heartbeat, publish).
    pub broker_errors: u64,
    /// Times the node connected and subscribed again after a failure.
    pub reconnects: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_failed: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    unknown_target: AtomicU64,
    undeliverable: AtomicU64,
    broker_errors: AtomicU64,
    reconnects: AtomicU64,
}

/// A client anywhere in the cluster, as last published by its node: id, address, tags (a
/// snapshot), and a handle to send to it or close it through the broker.
///
/// ```no_run
/// use veltix::{Request, Server, ServerConfig};
/// use veltix::cluster::ClusterConfig;
/// let server = Server::new(ServerConfig::local().cluster(ClusterConfig::redis("redis://127.0.0.1:6379")));
/// server.start()?;
/// for client in server.cluster_clients_by_tag("room", Some(&"lobby".into()))? {
///     client.send(Request::text(200u16, "hello from any node"))?;
/// }
/// # Ok::<(), veltix::Error>(())
/// ```
#[derive(Clone)]
pub struct ClusterClient {
    id: ClusterId,
    addr: String,
    tags: HashMap<String, Value>,
    node: Weak<Node>,
}

impl fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterClient")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("tags", &self.tags)
            .finish()
    }
}

impl ClusterClient {
    /// Its cluster-wide id.
    pub fn id(&self) -> &ClusterId {
        &self.id
    }
    /// Its address, as its node sees it.
    pub fn addr(&self) -> &str {
        &self.addr
    }
    /// Its tags when its node last published them.
    pub fn tags(&self) -> &HashMap<String, Value> {
        &self.tags
    }
    /// One tag's value.
    pub fn get_tag(&self, name: &str) -> Option<&Value> {
        self.tags.get(name)
    }
    fn node(&self) -> Result<Arc<Node>> {
        self.node
            .upgrade()
            .ok_or(Error::Disconnected(DisconnectCause::ServerStopped))
    }
    /// Sends to it wherever it is connected (blocks until the broker took it, at most
    /// `op_timeout`). See [`Server::cluster_send`](crate::Server::cluster_send).
    pub fn send(&self, request: impl std::borrow::Borrow<Request>) -> Result<()> {
        let node = self.node()?;
        node.clone()
            .block_on(node.send(self.id.clone(), request.borrow().clone()))
    }
    /// [`ClusterClient::send`] for async code.
    pub async fn send_async(&self, request: impl std::borrow::Borrow<Request>) -> Result<()> {
        self.node()?
            .send(self.id.clone(), request.borrow().clone())
            .await
    }
    /// Closes its connection, wherever it is.
    pub fn close(&self) -> Result<()> {
        let node = self.node()?;
        node.clone().block_on(node.close(self.id.clone()))
    }
    /// [`ClusterClient::close`] for async code.
    pub async fn close_async(&self) -> Result<()> {
        self.node()?.close(self.id.clone()).await
    }
}

// ----- wire format of the messages between nodes -----

const MAGIC: &[u8; 3] = b"VXC";
const KIND_BROADCAST: u8 = 1;
const KIND_SEND: u8 = 2;
const KIND_CLOSE: u8 = 3;

/// A message between nodes. Layout: `VXC`, kind u8, origin (u8 length + bytes), type u16,
/// request id (u8 flag + u32), then for a broadcast the except list (u16 count, each u8 length
/// + `NODE:LOCAL`), for a send or close the target's local id (u64); the content is the rest.
#[derive(Debug, PartialEq)]
struct Envelope {
    kind: u8,
    origin: String,
    message_type: u16,
    request_id: Option<u32>,
    except: Vec<ClusterId>,
    target: u64,
    content: Bytes,
}

impl Envelope {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(32 + self.origin.len() + self.content.len());
        b.put_slice(MAGIC);
        b.put_u8(self.kind);
        put_str(&mut b, &self.origin);
        b.put_u16(self.message_type);
        match self.request_id {
            Some(id) => {
                b.put_u8(1);
                b.put_u32(id);
            }
            None => {
                b.put_u8(0);
                b.put_u32(0);
            }
        }
        if self.kind == KIND_BROADCAST {
            b.put_u16(u16::try_from(self.except.len()).unwrap_or(u16::MAX));
            for id in self.except.iter().take(usize::from(u16::MAX)) {
                put_str(&mut b, &id.to_string());
            }
        } else {
            b.put_u64(self.target);
        }
        b.put_slice(&self.content);
        b.freeze()
    }

    fn decode(payload: &Bytes) -> Option<Envelope> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        if r.take(3)? != MAGIC {
            return None;
        }
        let kind = r.u8()?;
        let origin = r.string()?;
        let message_type = r.u16()?;
        let has_id = r.u8()?;
        let id = r.u32()?;
        let request_id = (has_id == 1).then_some(id);
        let mut except = Vec::new();
        let mut target = 0;
        match kind {
            KIND_BROADCAST => {
                let n = r.u16()?;
                for _ in 0..n {
                    except.push(r.string()?.parse().ok()?);
                }
            }
            KIND_SEND | KIND_CLOSE => target = r.u64()?,
            _ => return None,
        }
        let content = payload.slice(r.pos..);
        Some(Envelope {
            kind,
            origin,
            message_type,
            request_id,
            except,
            target,
            content,
        })
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(255)];
    b.put_u8(bytes.len() as u8);
    b.put_slice(bytes);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::from(self.u8()?);
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// A node's presence entry (JSON).
#[derive(Serialize, Deserialize)]
struct Presence {
    node: String,
    clients: Vec<PresentClient>,
}

#[derive(Serialize, Deserialize)]
struct PresentClient {
    id: u64,
    addr: String,
    #[serde(default)]
    tags: HashMap<String, Value>,
}

// ----- the node -----

struct Outgoing {
    channel: Arc<str>,
    payload: Bytes,
    reply: Option<oneshot::Sender<std::result::Result<u64, BrokerError>>>,
}

/// Most messages published in one pipeline.
const MAX_BATCH: usize = 512;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Shortest time between two presence writes caused by client changes.
const CHANGE_GAP: Duration = Duration::from_millis(20);

/// Log throttles of a node's repeated events.
#[derive(Default)]
struct Throttles {
    broker: Throttle,
    malformed: Throttle,
    unknown_target: Throttle,
    undeliverable: Throttle,
}

/// What a node needs from its server: its local clients. The server's core implements it
/// (`server::Shared`) and the node holds it weakly, so the cluster never names the server: the
/// server owns the node, and its cluster operations are thin calls into it (server -> cluster).
pub(crate) trait LocalClients: Send + Sync {
    /// Checks that `req` can be sent by this server (type and size under its settings).
    fn check_outgoing(&self, req: &Request) -> Result<()>;
    /// Sends `req` (encoded once) to every connected client whose id is not in `except`;
    /// how many it was queued to.
    fn broadcast_except(&self, req: &Request, except: &[u64]) -> Result<usize>;
    /// Sends `req` to the connected client `id`; `None` when there is no such client.
    fn send_to(&self, id: u64, req: Request) -> Option<Result<()>>;
    /// Closes the connected client `id` (flushing what was queued); `false` when there is none.
    fn close(&self, id: u64) -> bool;
    /// The connected clients (handshake done): id, address and tags, for the presence entry.
    fn presence(&self) -> Vec<(u64, SocketAddr, HashMap<String, Value>)>;
}

/// This server's membership of a cluster: its broker, background tasks and counters.
pub(crate) struct Node {
    id: Arc<str>,
    config: ClusterConfig,
    broker: Arc<dyn Broker>,
    server: Weak<dyn LocalClients>,
    rt: Handle,
    all_channel: Arc<str>,
    up: watch::Sender<bool>,
    /// Signalled when a client connects, leaves or changes a tag: republish presence now.
    changed: Arc<Notify>,
    out: mpsc::Sender<Outgoing>,
    out_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    started: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    counters: Counters,
    throttles: Throttles,
}

impl Node {
    pub(crate) fn new(
        config: &ClusterConfig,
        server: Weak<dyn LocalClients>,
        rt: Handle,
    ) -> Result<Self> {
        config.validate()?;
        let id: Arc<str> = match &config.node_id {
            Some(id) => id.as_str().into(),
            None => format!("node-{:08x}", fastrand::u32(..)).into(),
        };
        let broker = RedisBroker::new(&config.url, &config.prefix)
            .map_err(|e| Error::Config(e.to_string()))?;
        let (out, out_rx) = mpsc::channel(config.max_pending);
        Ok(Node {
            all_channel: format!("{}:all", config.prefix).into(),
            id,
            config: config.clone(),
            broker: Arc::new(broker),
            server,
            rt,
            up: watch::channel(false).0,
            changed: Arc::new(Notify::new()),
            out,
            out_rx: Mutex::new(Some(out_rx)),
            started: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            counters: Counters::default(),
            throttles: Throttles::default(),
        })
    }

    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub(crate) fn changed(&self) -> &Arc<Notify> {
        &self.changed
    }

    fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.config.prefix)
    }

    /// Starts the background tasks (once).
    pub(crate) fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            // Already running: clients changed (restart), republish.
            self.changed.notify_one();
            return;
        }
        let mut tasks = lock(&self.tasks);
        if let Some(rx) = lock(&self.out_rx).take() {
            tasks.push(self.rt.spawn(self.clone().publisher(rx)));
        }
        tasks.push(self.rt.spawn(self.clone().supervise()));
    }

    /// Stops the background tasks (the presence entry expires by its TTL).
    pub(crate) fn stop(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        self.up.send_replace(false);
    }

    pub(crate) fn stats(&self) -> ClusterStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStats {
            up: *self.up.borrow(),
            published: l(&c.published),
            publish_failed: l(&c.publish_failed),
            refused: l(&c.refused),
            received: l(&c.received),
            malformed: l(&c.malformed),
            unknown_target: l(&c.unknown_target),
            undeliverable: l(&c.undeliverable),
            broker_errors: l(&c.broker_errors),
            reconnects: l(&c.reconnects),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Waits until the node is connected and subscribed; `false` after `timeout`.
    pub(crate) async fn wait_up(self: Arc<Self>, timeout: Duration) -> bool {
        let mut rx = self.up.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|u| *u))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub(crate) fn block_on<F>(self: Arc<Self>, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        crate::blocking::block_on(&self.rt, fut)
    }

    fn unavailable(&self, why: &str) -> Error {
        add(&self.counters.refused, 1);
        Error::ClusterUnavailable(why.to_string())
    }

    fn check_up(&self) -> Result<()> {
        if self.is_up() {
            Ok(())
        } else {
            Err(self.unavailable("not connected to the broker"))
        }
    }

    fn broker_error(&self, what: &str, e: &BrokerError) {
        add(&self.counters.broker_errors, 1);
        throttled!(
            self.throttles.broker,
            self.config.url,
            summary: "{count} cluster broker errors in {secs} s",
            "cluster {what}: {e}"
        );
    }

    fn enqueue(
        &self,
        channel: Arc<str>,
        payload: Bytes,
        reply: Option<oneshot::Sender<std::result::Result<u64, BrokerError>>>,
    ) -> Result<()> {
        self.check_up()?;
        self.out
            .try_send(Outgoing {
                channel,
                payload,
                reply,
            })
            .map_err(|_| self.unavailable("the cluster publishing queue is full"))
    }

    fn check_request(&self, req: &Request) -> Result<Arc<dyn LocalClients>> {
        let shared = self
            .server
            .upgrade()
            .ok_or(Error::Disconnected(DisconnectCause::ServerStopped))?;
        shared.check_outgoing(req)?;
        Ok(shared)
    }

    /// Fans out locally, then publishes once for every other node.
    pub(crate) fn broadcast(&self, req: &Request, except: &[ClusterId]) -> Result<usize> {
        let shared = self.check_request(req)?;
        self.check_up()?;
        let env = Envelope {
            kind: KIND_BROADCAST,
            origin: self.id.to_string(),
            message_type: req.message_type(),
            request_id: req.request_id(),
            except: except
                .iter()
                .filter(|c| *c.node != *self.id)
                .cloned()
                .collect(),
            target: 0,
            content: req.content().clone(),
        };
        self.enqueue(self.all_channel.clone(), env.encode(), None)?;
        let local: Vec<u64> = except
            .iter()
            .filter(|c| *c.node == *self.id)
            .map(|c| c.local)
            .collect();
        shared.broadcast_except(req, &local)
    }

    /// Publishes a node-targeted message and waits until the broker took it.
    async fn targeted(&self, kind: u8, target: &ClusterId, req: Option<&Request>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let env = Envelope {
            kind,
            origin: self.id.to_string(),
            message_type: req.map_or(0, |r| r.message_type()),
            request_id: req.and_then(|r| r.request_id()),
            except: Vec::new(),
            target: target.local,
            content: req.map(|r| r.content().clone()).unwrap_or_default(),
        };
        self.enqueue(
            self.node_channel(target.node()).into(),
            env.encode(),
            Some(tx),
        )?;
        match tokio::time::timeout(self.config.op_timeout, rx).await {
            Ok(Ok(Ok(0))) => Err(Error::ClusterClientGone(target.to_string())),
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Error::ClusterUnavailable(e.0)),
            Ok(Err(_)) => Err(self.unavailable("the cluster publisher stopped")),
            Err(_) => Err(self.unavailable("the broker did not answer in time")),
        }
    }

    /// Sends to a client anywhere: directly if it is local, else through its node's channel.
    /// `Ok` means its node received it (a client that left that node meanwhile is counted
    /// there as `unknown_target`).
    pub(crate) async fn send(self: Arc<Self>, target: ClusterId, req: Request) -> Result<()> {
        if *target.node == *self.id {
            return self
                .server
                .upgrade()
                .and_then(|s| s.send_to(target.local, req))
                .ok_or_else(|| Error::ClusterClientGone(target.to_string()))?;
        }
        self.check_request(&req)?;
        self.targeted(KIND_SEND, &target, Some(&req)).await
    }

    /// Closes a client anywhere.
    pub(crate) async fn close(self: Arc<Self>, target: ClusterId) -> Result<()> {
        if *target.node == *self.id {
            let closed = self.server.upgrade().is_some_and(|s| s.close(target.local));
            return if closed {
                Ok(())
            } else {
                Err(Error::ClusterClientGone(target.to_string()))
            };
        }
        self.targeted(KIND_CLOSE, &target, None).await
    }

    /// Every client of every live node, from the presence entries.
    pub(crate) async fn clients(self: Arc<Self>) -> Result<Vec<ClusterClient>> {
        self.check_up()?;
        let entries =
            match tokio::time::timeout(self.config.op_timeout, self.broker.presence()).await {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => {
                    self.broker_error("presence query", &e);
                    return Err(Error::ClusterUnavailable(e.0));
                }
                Err(_) => return Err(self.unavailable("the broker did not answer in time")),
            };
        let weak = Arc::downgrade(&self);
        let mut out = Vec::new();
        for raw in entries {
            let Ok(p) = serde_json::from_slice::<Presence>(&raw) else {
                self.malformed("presence entry");
                continue;
            };
            let node: Arc<str> = p.node.into();
            out.extend(p.clients.into_iter().map(|c| ClusterClient {
                id: ClusterId {
                    node: node.clone(),
                    local: c.id,
                },
                addr: c.addr,
                tags: c.tags,
                node: weak.clone(),
            }));
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn malformed(&self, what: &str) {
        add(&self.counters.malformed, 1);
        throttled!(
            self.throttles.malformed,
            self.config.url,
            summary: "{count} malformed cluster messages in {secs} s",
            "malformed cluster {what}: dropped"
        );
    }

    fn undeliverable(&self, origin: &str, e: &Error) {
        add(&self.counters.undeliverable, 1);
        throttled!(
            self.throttles.undeliverable,
            origin,
            summary: "{count} cluster messages undeliverable on this node in {secs} s",
            "cluster message from node {origin} cannot be sent here: {e}; dropped"
        );
    }

    /// Leaves the cluster: stops the background tasks and removes this node's presence at
    /// once (bounded by `op_timeout`), so its clients leave the view without waiting for the
    /// TTL.
    pub(crate) async fn leave(self: Arc<Self>) -> Result<()> {
        self.stop();
        match tokio::time::timeout(
            self.config.op_timeout,
            self.broker.remove_presence(&self.id),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::ClusterUnavailable(e.0)),
            Err(_) => Err(Error::ClusterUnavailable(
                "the broker did not answer in time".into(),
            )),
        }
    }

    /// One command round trip to the broker.
    pub(crate) async fn broker_round_trip(self: Arc<Self>) -> Result<Duration> {
        let ch = format!("{}:bench", self.config.prefix);
        self.broker
            .round_trip(&ch)
            .await
            .map_err(|e| Error::ClusterUnavailable(e.0))
    }

    async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>) {
        let mut batch: Vec<Outgoing> = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let msgs = batch
                .iter()
                .map(|o| (o.channel.to_string(), o.payload.clone()))
                .collect();
            match self.broker.publish(msgs).await {
                Ok(counts) => {
                    add(&self.counters.published, batch.len() as u64);
                    for (i, o) in batch.drain(..).enumerate() {
                        if let Some(r) = o.reply {
                            let _ = r.send(Ok(counts.get(i).copied().unwrap_or(0)));
                        }
                    }
                }
                Err(e) => {
                    add(&self.counters.publish_failed, batch.len() as u64);
                    self.broker_error("publish", &e);
                    // Fail fast until the supervisor reconnected.
                    self.up.send_replace(false);
                    for o in batch.drain(..) {
                        if let Some(r) = o.reply {
                            let _ = r.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }

    async fn supervise(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        let mut sessions = 0u64;
        loop {
            let started = tokio::time::Instant::now();
            if let Err(e) = self.session(&mut sessions).await {
                self.broker_error("broker connection", &e);
            }
            self.up.send_replace(false);
            if started.elapsed() > BACKOFF_MAX * 2 {
                backoff = BACKOFF_MIN;
            }
            let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 4));
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connected period: connect, subscribe, publish presence, then serve messages and
    /// heartbeats until something fails.
    async fn session(&self, sessions: &mut u64) -> std::result::Result<(), BrokerError> {
        self.broker.connect().await?;
        let mut sub = self
            .broker
            .subscribe(vec![
                self.all_channel.to_string(),
                self.node_channel(&self.id),
            ])
            .await?;
        self.heartbeat().await?;
        *sessions += 1;
        if *sessions > 1 {
            add(&self.counters.reconnects, 1);
            info!(node = %self.id, "cluster: reconnected to the broker and resubscribed");
        } else {
            info!(node = %self.id, "cluster: connected to the broker");
        }
        self.up.send_replace(true);
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_beat = tokio::time::Instant::now();
        // A change (connect, leave, tag) is published at most CHANGE_GAP after the previous
        // heartbeat: a connect storm costs a bounded number of presence writes, not one each.
        let mut dirty_at: Option<tokio::time::Instant> = None;
        loop {
            let flush = async {
                match dirty_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = sub.next() => match m {
                    Some((channel, payload)) => self.dispatch(&channel, &payload),
                    None => {
                        warn!(node = %self.id, "cluster: broker subscription lost; reconnecting");
                        return Err(BrokerError("subscription connection lost".into()));
                    }
                },
                _ = tick.tick() => {
                    self.heartbeat().await?;
                    last_beat = tokio::time::Instant::now();
                    dirty_at = None;
                }
                _ = self.changed.notified(), if dirty_at.is_none() => {
                    dirty_at = Some((last_beat + CHANGE_GAP).max(tokio::time::Instant::now()));
                }
                _ = flush => {
                    self.heartbeat().await?;
                    last_beat = tokio::time::Instant::now();
                    dirty_at = None;
                }
            }
        }
    }

    fn presence_json(&self) -> Bytes {
        let clients = self
            .server
            .upgrade()
            .map(|s| s.presence())
            .unwrap_or_default();
        let p = Presence {
            node: self.id.to_string(),
            clients: clients
                .into_iter()
                .map(|(id, addr, tags)| PresentClient {
                    id,
                    addr: addr.to_string(),
                    tags,
                })
                .collect(),
        };
        serde_json::to_vec(&p).map(Bytes::from).unwrap_or_default()
    }

    async fn heartbeat(&self) -> std::result::Result<(), BrokerError> {
        let value = self.presence_json();
        tokio::time::timeout(
            self.config.op_timeout,
            self.broker
                .set_presence(&self.id, value, self.config.presence_ttl),
        )
        .await
        .map_err(|_| BrokerError("heartbeat timed out".into()))?
    }

    fn dispatch(&self, channel: &str, payload: &Bytes) {
        let Some(env) = Envelope::decode(payload) else {
            self.malformed("message");
            return;
        };
        if env.origin == *self.id && channel == &*self.all_channel {
            return; // our own broadcast: already fanned out locally
        }
        add(&self.counters.received, 1);
        let Some(shared) = self.server.upgrade() else {
            return;
        };
        let mut req = Request::new(env.message_type, env.content);
        if let Some(id) = env.request_id {
            req = req.with_request_id(id);
        }
        match env.kind {
            KIND_BROADCAST => {
                let local: Vec<u64> = env
                    .except
                    .iter()
                    .filter(|c| *c.node == *self.id)
                    .map(|c| c.local)
                    .collect();
                // Refusals (full queues) are counted per connection.
                if let Err(e) = shared.broadcast_except(&req, &local) {
                    self.undeliverable(&env.origin, &e);
                }
            }
            KIND_SEND => match shared.send_to(env.target, req) {
                Some(Ok(()) | Err(Error::QueueFull { .. } | Error::Disconnected(_))) => {}
                Some(Err(e)) => self.undeliverable(&env.origin, &e),
                None => self.unknown_target(&env.origin, env.target),
            },
            KIND_CLOSE => {
                if !shared.close(env.target) {
                    self.unknown_target(&env.origin, env.target);
                }
            }
            _ => self.malformed("message kind"),
        }
    }

    /// A send or close for a client that is not on this node (any more): dropped.
    fn unknown_target(&self, origin: &str, target: u64) {
        add(&self.counters.unknown_target, 1);
        throttled!(
            self.throttles.unknown_target,
            origin,
            summary: "{count} cluster messages for clients gone from this node in {secs} s",
            "cluster message for client {target} which is not on this node: dropped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_rejects_garbage() {
        let env = Envelope {
            kind: KIND_BROADCAST,
            origin: "a".into(),
            message_type: 200,
            request_id: Some(7),
            except: vec![ClusterId::new("b", 3), ClusterId::new("a:x", 9)],
            target: 0,
            content: Bytes::from_static(b"hello"),
        };
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes), Some(env));
        for n in 0..bytes.len() - 5 {
            assert_eq!(Envelope::decode(&bytes.slice(..n)), None, "prefix {n}");
        }
        assert_eq!(Envelope::decode(&Bytes::from_static(b"garbage")), None);
        let send = Envelope {
            kind: KIND_SEND,
            origin: "n".into(),
            message_type: 201,
            request_id: None,
            except: vec![],
            target: u64::MAX,
            content: Bytes::new(),
        };
        assert_eq!(Envelope::decode(&send.encode()), Some(send));
    }

    #[test]
    fn config_is_validated() {
        let ok = ClusterConfig::redis("redis://127.0.0.1:1");
        assert!(ok.validate().is_ok());
        let bad_ttl = ClusterConfig {
            heartbeat_interval: Duration::from_secs(3),
            ..ok.clone()
        };
        assert!(bad_ttl.validate().is_err());
        let bad_id = ClusterConfig {
            node_id: Some("a b".into()),
            ..ok.clone()
        };
        assert!(bad_id.validate().is_err());
        let bad_url = ClusterConfig::redis("http://x");
        assert!(bad_url.validate().is_err());
    }
}
