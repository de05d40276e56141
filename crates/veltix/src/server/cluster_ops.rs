//! The cluster operations of [`Server`], [`ServerSender`] and [`AsyncServer`]: thin calls into
//! the server's [`Node`] (the server owns its node; the node sees the server only through
//! [`LocalClients`](crate::cluster::LocalClients), so `cluster` never names `server`).

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{AsyncServer, Server, ServerSender, Shared};
use crate::cluster::{ClusterClient, ClusterId, ClusterStats, Node};
use crate::{DisconnectCause, Error, Request, Result};

fn node_of(shared: &Shared) -> Result<Arc<Node>> {
    if shared.config_ref().cluster.is_none() {
        return Err(Error::NoCluster);
    }
    // Configured but not started yet: like a broker that is not connected.
    shared
        .cluster
        .get()
        .cloned()
        .ok_or_else(|| Error::ClusterUnavailable("the server was not started".into()))
}

fn by_tag(all: Vec<ClusterClient>, name: &str, value: Option<&Value>) -> Vec<ClusterClient> {
    all.into_iter()
        .filter(|c| match (c.get_tag(name), value) {
            (Some(_), None) => true,
            (Some(v), Some(want)) => v == want,
            (None, _) => false,
        })
        .collect()
}

impl Server {
    fn node(&self) -> Result<Arc<Node>> {
        self.as_async().node()
    }

    /// This node's id in its cluster (`None` without a cluster setting, or before `start()`).
    ///
    /// ```
    /// use veltix::{Server, ServerConfig};
    /// assert_eq!(Server::new(ServerConfig::local()).node_id(), None);
    /// ```
    pub fn node_id(&self) -> Option<String> {
        self.as_async().node_id()
    }

    /// Broadcasts to every client of every node except those in `except` (cluster ids, see
    /// [`ClientInfo::cluster_id`](crate::ClientInfo::cluster_id)). This node fans out to its
    /// own clients directly; the frame goes once through the broker to every other node, which
    /// fans it out to its clients. Returns how many local clients it was queued to.
    ///
    /// Fails at once, sending nothing, with [`Error::ClusterUnavailable`] while the broker is
    /// down (fall back to [`Server::broadcast`] to keep serving local clients), or
    /// [`Error::NoCluster`] without a cluster setting.
    ///
    /// ```no_run
    /// use veltix::{ClientInfo, Request, Response, Server, ServerConfig};
    /// use veltix::cluster::ClusterConfig;
    /// let server = Server::new(ServerConfig::local().cluster(ClusterConfig::redis("redis://127.0.0.1:6379")));
    /// let tx = server.sender();
    /// server.on_recv(move |client: &ClientInfo, msg: Response| {
    ///     let out = Request::new(msg.message_type(), msg.content().clone());
    ///     let except: Vec<_> = client.cluster_id().into_iter().collect();
    ///     tx.cluster_broadcast(out, &except).map(|_| ())
    /// });
    /// server.start()?;
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_broadcast(
        &self,
        request: impl Borrow<Request>,
        except: &[ClusterId],
    ) -> Result<usize> {
        self.as_async().broadcast_now(request.borrow(), except)
    }

    /// Sends to the client with this cluster id, wherever it is connected; blocks until the
    /// broker took it (at most `op_timeout`). [`Error::ClusterClientGone`] when its node is
    /// gone (or, for a local id, the client is), [`Error::ClusterUnavailable`] when the broker
    /// is down. Delivery is at most once.
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// let id: veltix::cluster::ClusterId = "eu-2:17".parse()?;
    /// server.cluster_send(&id, veltix::Request::text(200u16, "psst"))?;
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_send(&self, target: &ClusterId, request: impl Borrow<Request>) -> Result<()> {
        let node = self.node()?;
        node.clone()
            .block_on(node.send(target.clone(), request.borrow().clone()))
    }

    /// Closes the client with this cluster id, wherever it is connected.
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// server.cluster_close(&"eu-2:17".parse()?)?;
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_close(&self, target: &ClusterId) -> Result<()> {
        let node = self.node()?;
        node.clone().block_on(node.close(target.clone()))
    }

    /// Every client of every live node, sorted by cluster id (one presence query to the
    /// broker). A node's clients are as it last published them: at once on connect, leave and
    /// tag change; a dead node's vanish within `presence_ttl`.
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// for c in server.cluster_clients()? {
    ///     println!("{} at {} tags {:?}", c.id(), c.addr(), c.tags());
    /// }
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_clients(&self) -> Result<Vec<ClusterClient>> {
        let node = self.node()?;
        node.clone().block_on(node.clients())
    }

    /// How many clients the whole cluster has.
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// println!("{} clients in the cluster", server.cluster_client_count()?);
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_client_count(&self) -> Result<usize> {
        self.cluster_clients().map(|c| c.len())
    }

    /// Clients of the whole cluster that have tag `name` (equal to `value` if given).
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// let admins = server.cluster_clients_by_tag("admin", None)?;
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_clients_by_tag(
        &self,
        name: &str,
        value: Option<&Value>,
    ) -> Result<Vec<ClusterClient>> {
        Ok(by_tag(self.cluster_clients()?, name, value))
    }

    /// This node's cluster counters (`None` without a cluster, or before `start()`).
    ///
    /// ```
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// assert!(server.cluster_stats().is_none());
    /// ```
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.as_async().cluster_stats()
    }

    /// Waits until this node is connected to the broker and subscribed; `false` on timeout
    /// (or without a cluster).
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// assert!(server.wait_cluster_up(std::time::Duration::from_secs(5)));
    /// ```
    pub fn wait_cluster_up(&self, timeout: Duration) -> bool {
        match self.node() {
            Ok(n) => n.clone().block_on(n.wait_up(timeout)),
            Err(_) => false,
        }
    }

    /// Leaves the cluster for good: stops heartbeats and subscriptions and removes this node's
    /// presence at once, so its clients leave every node's view without waiting for the TTL
    /// (call it on shutdown, after `close_all`). Cluster operations then fail with
    /// [`Error::ClusterUnavailable`]; the server keeps serving locally.
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// server.close_all();
    /// server.cluster_leave()?;
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_leave(&self) -> Result<()> {
        let node = self.node()?;
        node.clone().block_on(node.leave())
    }

    /// One PUBLISH round trip to the broker, measured by this node (for benchmarks: what a
    /// cross-node send costs at least).
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// println!("{:?}", server.cluster_broker_round_trip()?);
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_broker_round_trip(&self) -> Result<Duration> {
        let node = self.node()?;
        node.clone().block_on(node.broker_round_trip())
    }
}

impl ServerSender {
    fn node(&self) -> Result<Arc<Node>> {
        let shared = self
            .shared
            .upgrade()
            .ok_or(Error::Disconnected(DisconnectCause::ServerStopped))?;
        node_of(&shared)
    }

    /// See [`Server::cluster_broadcast`].
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// let tx = server.sender();
    /// tx.cluster_broadcast(veltix::Request::text(200u16, "tick"), &[])?;
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_broadcast(
        &self,
        request: impl Borrow<Request>,
        except: &[ClusterId],
    ) -> Result<usize> {
        self.node()?.broadcast(request.borrow(), except)
    }

    /// See [`Server::cluster_send`].
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// server.sender().cluster_send(&"eu-2:17".parse()?, veltix::Request::text(200u16, "hi"))?;
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_send(&self, target: &ClusterId, request: impl Borrow<Request>) -> Result<()> {
        let node = self.node()?;
        node.clone()
            .block_on(node.send(target.clone(), request.borrow().clone()))
    }

    /// See [`Server::cluster_clients`].
    ///
    /// ```no_run
    /// # let server = veltix::Server::new(veltix::ServerConfig::local());
    /// let n = server.sender().cluster_clients()?.len();
    /// # Ok::<(), veltix::Error>(())
    /// ```
    pub fn cluster_clients(&self) -> Result<Vec<ClusterClient>> {
        let node = self.node()?;
        node.clone().block_on(node.clients())
    }
}

impl AsyncServer {
    fn node(&self) -> Result<Arc<Node>> {
        node_of(&self.shared)
    }

    /// See [`Server::node_id`].
    ///
    /// ```
    /// assert_eq!(veltix::AsyncServer::new(veltix::ServerConfig::local()).node_id(), None);
    /// ```
    pub fn node_id(&self) -> Option<String> {
        self.shared.cluster.get().map(|n| n.id().to_string())
    }

    /// See [`Server::cluster_stats`].
    ///
    /// ```
    /// let server = veltix::AsyncServer::new(veltix::ServerConfig::local());
    /// assert!(server.cluster_stats().is_none());
    /// ```
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.shared.cluster.get().map(|n| n.stats())
    }

    /// The cluster broadcast both faces make (it never waits: the frame is queued).
    fn broadcast_now(&self, request: &Request, except: &[ClusterId]) -> Result<usize> {
        self.node()?.broadcast(request, except)
    }

    /// See [`Server::cluster_leave`].
    ///
    /// ```no_run
    /// # async fn f(server: veltix::AsyncServer) -> veltix::Result<()> {
    /// server.close_all().await;
    /// server.cluster_leave().await?;
    /// # Ok(()) }
    /// ```
    pub async fn cluster_leave(&self) -> Result<()> {
        self.node()?.leave().await
    }

    /// See [`Server::cluster_broker_round_trip`].
    ///
    /// ```no_run
    /// # async fn f(server: veltix::AsyncServer) -> veltix::Result<()> {
    /// println!("{:?}", server.cluster_broker_round_trip().await?);
    /// # Ok(()) }
    /// ```
    pub async fn cluster_broker_round_trip(&self) -> Result<Duration> {
        self.node()?.broker_round_trip().await
    }

    /// See [`Server::cluster_broadcast`] (it does not wait: the frame is queued).
    ///
    /// ```no_run
    /// # async fn f(server: veltix::AsyncServer) -> veltix::Result<()> {
    /// server.cluster_broadcast(veltix::Request::text(200u16, "tick"), &[]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cluster_broadcast(
        &self,
        request: impl Borrow<Request>,
        except: &[ClusterId],
    ) -> Result<usize> {
        self.broadcast_now(request.borrow(), except)
    }

    /// See [`Server::cluster_send`].
    ///
    /// ```no_run
    /// # async fn f(server: veltix::AsyncServer) -> veltix::Result<()> {
    /// server.cluster_send(&"eu-2:17".parse()?, veltix::Request::text(200u16, "hi")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cluster_send(
        &self,
        target: &ClusterId,
        request: impl Borrow<Request>,
    ) -> Result<()> {
        self.node()?
            .send(target.clone(), request.borrow().clone())
            .await
    }

    /// See [`Server::cluster_close`].
    ///
    /// ```no_run
    /// # async fn f(server: veltix::AsyncServer) -> veltix::Result<()> {
    /// server.cluster_close(&"eu-2:17".parse()?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cluster_close(&self, target: &ClusterId) -> Result<()> {
        self.node()?.close(target.clone()).await
    }

    /// See [`Server::cluster_clients`].
    ///
    /// ```no_run
    /// # async fn f(server: veltix::AsyncServer) -> veltix::Result<()> {
    /// let all = server.cluster_clients().await?;
    /// # Ok(()) }
    /// ```
    pub async fn cluster_clients(&self) -> Result<Vec<ClusterClient>> {
        self.node()?.clients().await
    }

    /// See [`Server::cluster_client_count`].
    ///
    /// ```no_run
    /// # async fn f(server: veltix::AsyncServer) -> veltix::Result<()> {
    /// let n = server.cluster_client_count().await?;
    /// # Ok(()) }
    /// ```
    pub async fn cluster_client_count(&self) -> Result<usize> {
        Ok(self.cluster_clients().await?.len())
    }

    /// See [`Server::cluster_clients_by_tag`].
    ///
    /// ```no_run
    /// # async fn f(server: veltix::AsyncServer) -> veltix::Result<()> {
    /// let lobby = server.cluster_clients_by_tag("room", Some(&"lobby".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cluster_clients_by_tag(
        &self,
        name: &str,
        value: Option<&Value>,
    ) -> Result<Vec<ClusterClient>> {
        Ok(by_tag(self.cluster_clients().await?, name, value))
    }

    /// See [`Server::wait_cluster_up`].
    ///
    /// ```no_run
    /// # async fn f(server: veltix::AsyncServer) {
    /// assert!(server.wait_cluster_up(std::time::Duration::from_secs(5)).await);
    /// # }
    /// ```
    pub async fn wait_cluster_up(&self, timeout: Duration) -> bool {
        match self.node() {
            Ok(n) => n.wait_up(timeout).await,
            Err(_) => false,
        }
    }
}
