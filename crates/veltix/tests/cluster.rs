//! Cluster (issue #16) in one process: three `Server`s joined through a REAL redis-server
//! (started by the test on a free port, without persistence; a missing redis-server fails
//! loudly), with veltix `Client`s spread over them. The same scenarios with `veltix serve`
//! processes and Python Veltix 3.3.0 clients are in crates/veltix-cli/tests/cluster.rs.

mod support;

use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::json;
use support::redis::RedisServer;
use veltix::cluster::{ClusterConfig, ClusterId};
use veltix::{
    AsyncServer, Client, ClientConfig, ClientInfo, Error, Request, Response, Server, ServerConfig,
};

const T: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_millis(1500);
const HEARTBEAT: Duration = Duration::from_millis(300);

fn node(url: &str, id: &str) -> Server {
    let server = Server::new(
        ServerConfig::local().cluster(
            ClusterConfig::redis(url)
                .node_id(id)
                .presence_ttl(TTL)
                .heartbeat_interval(HEARTBEAT),
        ),
    );
    // Chat: every user message goes to every client of the cluster except its sender.
    let tx = server.sender();
    server.on_recv(move |client: &ClientInfo, msg: Response| {
        let out = Request::new(msg.message_type(), msg.content().clone());
        let me: Vec<ClusterId> = client.cluster_id().into_iter().collect();
        match tx.cluster_broadcast(&out, &me) {
            Err(Error::ClusterUnavailable(_)) => {
                tx.broadcast(out, std::slice::from_ref(client)).map(|_| ())
            }
            r => r.map(|_| ()),
        }
    });
    // whoami: a client learns its cluster id.
    server.route(250u16, |c: &ClientInfo, m: Response| {
        let id = c.cluster_id().map(|i| i.to_string()).unwrap_or_default();
        c.send(Request::text(250u16, &id).respond(&m))
    });
    server.start().expect("start");
    assert!(server.wait_cluster_up(T), "node {id} did not join");
    server
}

struct Peer {
    client: Client,
    rx: Receiver<(u16, String)>,
    id: ClusterId,
}

impl Peer {
    fn connect(server: &Server) -> Peer {
        let port = server.local_addr().expect("running").port();
        let client = Client::new(ClientConfig::new("127.0.0.1", port));
        let (tx, rx) = channel();
        client.on_recv(move |m: Response| {
            let _ = tx.send((m.message_type(), m.text().unwrap_or("<bin>").to_string()));
        });
        client.connect().expect("connect");
        let id = client
            .send_and_wait(Request::text(250u16, ""), T)
            .expect("whoami")
            .text()
            .expect("text")
            .parse()
            .expect("a cluster id");
        Peer { client, rx, id }
    }
    fn say(&self, text: &str) {
        self.client.send(Request::text(200u16, text)).expect("send");
    }
    fn next(&self) -> (u16, String) {
        self.rx
            .recv_timeout(T)
            .expect("a message within the deadline")
    }
    fn assert_next_is(&self, text: &str) {
        assert_eq!(self.next().1, text, "at {}", self.id);
    }
}

/// Polls `f` (a condition on the cluster view) until it holds; panics after `T`.
fn eventually<F: FnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "not within {T:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(server: &Server) -> usize {
    server.cluster_client_count().unwrap_or(usize::MAX)
}

fn spread(nodes: &[Server], n: usize) -> Vec<Peer> {
    let peers: Vec<Peer> = (0..n)
        .map(|i| Peer::connect(&nodes[i % nodes.len()]))
        .collect();
    eventually("every client in the view of every node", || {
        nodes.iter().all(|s| count(s) == n)
    });
    peers
}

/// `from` says `tag` once; every other peer must get exactly that next (an exactly-once check
/// when repeated: a duplicate would show up instead of the next marker).
fn chat_round(peers: &[Peer], from: usize, tag: &str) {
    peers[from].say(tag);
    for (i, p) in peers.iter().enumerate() {
        if i != from {
            p.assert_next_is(tag);
        }
    }
}

#[test]
fn chat_reaches_every_node_exactly_once_in_order() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), "a"),
        node(&redis.url(), "b"),
        node(&redis.url(), "c"),
    ];
    let peers = spread(&nodes, 6);
    for i in 0..100 {
        peers[0].say(&format!("m{i}"));
    }
    for p in &peers[1..] {
        for i in 0..100 {
            p.assert_next_is(&format!("m{i}"));
        }
    }
    // No copy came back to the sender, and no duplicate anywhere: the next thing each peer
    // gets is the next round.
    for from in [4, 0] {
        chat_round(&peers, from, &format!("round from {from}"));
    }
    let stats = nodes[1].cluster_stats().expect("cluster stats");
    assert!(stats.up && stats.received >= 101, "{stats:?}");
    assert_eq!(
        stats.malformed + stats.unknown_target + stats.publish_failed,
        0
    );
}

#[test]
fn send_by_cluster_id_tags_and_close_across_nodes() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), "a"),
        node(&redis.url(), "b"),
        node(&redis.url(), "c"),
    ];
    let peers = spread(&nodes, 6);
    // peers[1] is on node b; send to it from node c, and to a local client of c.
    assert_eq!(peers[1].id.node(), "b");
    nodes[2]
        .cluster_send(&peers[1].id, Request::text(201u16, "psst"))
        .expect("cluster_send");
    assert_eq!(peers[1].next(), (201, "psst".into()));
    nodes[2]
        .cluster_send(&peers[2].id, Request::text(201u16, "local"))
        .expect("local cluster_send");
    assert_eq!(peers[2].next(), (201, "local".into()));
    // A client id that never existed on a live node: its node drops and counts it.
    let ghost = ClusterId::new("b", 999_999);
    nodes[0]
        .cluster_send(&ghost, Request::text(201u16, "x"))
        .expect("node b took it");
    eventually("node b counted a message for an unknown client", || {
        nodes[1]
            .cluster_stats()
            .is_some_and(|s| s.unknown_target == 1)
    });
    // A node that does not exist: typed error.
    let nowhere = ClusterId::new("zz", 1);
    assert!(matches!(
        nodes[0].cluster_send(&nowhere, Request::text(201u16, "x")),
        Err(Error::ClusterClientGone(_))
    ));

    // Tags: set on node b, seen from node a; the handle sends through the broker.
    let on_b = nodes[1]
        .clients()
        .into_iter()
        .find(|c| c.cluster_id().as_ref() == Some(&peers[1].id))
        .expect("peer 1 on node b");
    on_b.set_tag("room", "blue");
    eventually("the tag reached node a", || {
        nodes[0]
            .cluster_clients_by_tag("room", Some(&json!("blue")))
            .is_ok_and(|v| v.len() == 1)
    });
    let blue = nodes[0]
        .cluster_clients_by_tag("room", Some(&json!("blue")))
        .expect("by tag");
    assert_eq!(blue[0].id(), &peers[1].id);
    assert_eq!(blue[0].get_tag("room"), Some(&json!("blue")));
    blue[0]
        .send(Request::text(201u16, "blue only"))
        .expect("handle send");
    assert_eq!(peers[1].next(), (201, "blue only".into()));
    on_b.remove_tag("room");
    eventually("the tag removal reached node c", || {
        nodes[2]
            .cluster_clients_by_tag("room", None)
            .is_ok_and(|v| v.is_empty())
    });

    // Close through a handle from another node.
    let target = nodes[2]
        .cluster_clients()
        .expect("clients")
        .into_iter()
        .find(|c| c.id() == &peers[3].id)
        .expect("peer 3");
    target.close().expect("close");
    eventually("peer 3 disconnected and left the view", || {
        !peers[3].client.is_connected() && nodes.iter().all(|n| count(n) == 5)
    });
    // Only the one message for the ghost went astray.
    let astray: u64 = nodes
        .iter()
        .filter_map(|n| n.cluster_stats())
        .map(|s| s.unknown_target)
        .sum();
    assert_eq!(astray, 1);
}

#[test]
fn a_dead_node_leaves_the_view_within_the_ttl_and_the_rest_keeps_working() {
    let redis = RedisServer::start();
    let mut nodes = vec![
        node(&redis.url(), "a"),
        node(&redis.url(), "b"),
        node(&redis.url(), "c"),
    ];
    let peers = spread(&nodes, 6);
    let c_peer = peers
        .iter()
        .position(|p| p.id.node() == "c")
        .expect("a peer on c");
    // The node dies without a word (its presence entry stays until the TTL).
    let dead = nodes.pop().expect("node c");
    let died = Instant::now();
    drop(dead);
    eventually("node c's clients left the view", || {
        nodes.iter().all(|n| count(n) == 4)
    });
    let gone_after = died.elapsed();
    eprintln!("node c's clients left the view {gone_after:?} after it died (TTL {TTL:?})");
    assert!(
        gone_after <= TTL + Duration::from_secs(2),
        "took {gone_after:?} (ttl {TTL:?})"
    );
    assert!(matches!(
        nodes[0].cluster_send(&peers[c_peer].id, Request::text(201u16, "x")),
        Err(Error::ClusterClientGone(_))
    ));
    let alive: Vec<Peer> = peers.into_iter().filter(|p| p.id.node() != "c").collect();
    chat_round(&alive, 0, "still here");
    chat_round(&alive, 3, "and here");
}

#[test]
fn a_node_that_leaves_is_out_of_the_view_at_once() {
    let redis = RedisServer::start();
    let nodes = [node(&redis.url(), "a"), node(&redis.url(), "b")];
    let peers = spread(&nodes, 4);
    nodes[1].close_all();
    nodes[1].cluster_leave().expect("leave");
    // Its presence was deleted before cluster_leave returned: no TTL to wait for.
    let ids: Vec<ClusterId> = nodes[0]
        .cluster_clients()
        .expect("clients")
        .iter()
        .map(|c| c.id().clone())
        .collect();
    assert_eq!(ids, vec![peers[0].id.clone(), peers[2].id.clone()]);
    assert!(matches!(
        nodes[1].cluster_broadcast(Request::text(200u16, "x"), &[]),
        Err(Error::ClusterUnavailable(_))
    ));
    // Its subscription closed with its tasks (Redis notices the closed socket by itself).
    eventually("a send to a client of the left node fails", || {
        matches!(
            nodes[0].cluster_send(&peers[1].id, Request::text(201u16, "x")),
            Err(Error::ClusterClientGone(_))
        )
    });
}

#[test]
fn broker_outage_local_keeps_working_cluster_fails_fast_then_resumes() {
    let mut redis = RedisServer::start();
    let nodes = [node(&redis.url(), "a"), node(&redis.url(), "b")];
    let peers = spread(&nodes, 4); // a, b, a, b
    chat_round(&peers, 0, "before");

    redis.kill();
    eventually("both nodes noticed the outage", || {
        nodes
            .iter()
            .all(|n| n.cluster_stats().is_some_and(|s| !s.up))
    });
    let t0 = Instant::now();
    assert!(matches!(
        nodes[0].cluster_broadcast(Request::text(200u16, "x"), &[]),
        Err(Error::ClusterUnavailable(_))
    ));
    assert!(matches!(
        nodes[0].cluster_send(&peers[1].id, Request::text(200u16, "x")),
        Err(Error::ClusterUnavailable(_))
    ));
    assert!(matches!(
        nodes[0].cluster_clients(),
        Err(Error::ClusterUnavailable(_))
    ));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // Local chat goes on (node a's handler falls back to a local broadcast).
    let local = [&peers[0], &peers[2]];
    for i in 0..20 {
        local[0].say(&format!("local {i}"));
    }
    for i in 0..20 {
        local[1].assert_next_is(&format!("local {i}"));
    }
    assert!(nodes[0].cluster_stats().expect("stats").refused >= 20);

    redis.restart();
    for n in &nodes {
        assert!(n.wait_cluster_up(T), "a node did not come back");
    }
    eventually("presence republished", || {
        nodes.iter().all(|n| count(n) == 4)
    });
    // Cross-node chat resumed by itself, exactly once.
    chat_round(&peers, 0, "after");
    chat_round(&peers, 1, "after from b");
    for n in &nodes {
        let s = n.cluster_stats().expect("stats");
        assert!(s.reconnects >= 1 && s.broker_errors >= 1, "{s:?}");
    }
}

#[test]
fn async_face_and_errors() {
    let redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let b = AsyncServer::new(
        ServerConfig::local().cluster(ClusterConfig::redis(redis.url()).node_id("b")),
    );
    b.start().expect("start b");
    let peer = Peer::connect(&a);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        assert!(b.wait_cluster_up(T).await);
        let deadline = Instant::now() + T;
        while b.cluster_client_count().await.unwrap_or(0) != 1 {
            assert!(Instant::now() < deadline, "b never saw a's client");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let all = b.cluster_clients().await.expect("clients");
        assert_eq!(all[0].id(), &peer.id);
        b.cluster_send(&peer.id, Request::text(201u16, "async"))
            .await
            .expect("send");
        assert_eq!(
            b.cluster_broadcast(Request::text(201u16, "to all"), &[])
                .await
                .expect("broadcast"),
            0
        );
    });
    assert_eq!(peer.next(), (201, "async".into()));
    assert_eq!(peer.next(), (201, "to all".into()));

    // Without a cluster setting, and with a bad one.
    let alone = Server::new(ServerConfig::local());
    assert!(matches!(
        alone.cluster_broadcast(Request::text(200u16, "x"), &[]),
        Err(Error::NoCluster)
    ));
    assert!(alone.node_id().is_none() && alone.cluster_stats().is_none());
    let bad = Server::new(ServerConfig::local().cluster(ClusterConfig::redis("http://nope")));
    assert!(matches!(bad.start(), Err(Error::Config(_))));
}
