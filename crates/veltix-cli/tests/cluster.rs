//! Issue #16 end to end: three `veltix serve --cluster` processes joined through a REAL
//! redis-server (started here on a free port without persistence, killed and restarted on the
//! same port), with REAL Python Veltix 3.3.0 clients spread over them. A missing redis-server
//! or Python venv fails loudly (`scripts/install-redis.sh`, `scripts/setup-python.sh`).

#[path = "../../veltix/tests/support/python.rs"]
mod python;
#[path = "../../veltix/tests/support/redis.rs"]
mod redis_server;
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use python::{payload, PyPeer, PyVersion};
use redis_server::RedisServer;
use serde_json::{json, Value};
use support::{Lines, T};

const TTL_SECS: &str = "1.5";
const TTL: Duration = Duration::from_millis(1500);
const CHAT: u64 = 200;
const WHOAMI: u64 = 250;
const TAG: u64 = 251;
const TO: u64 = 252;
const WHO: u64 = 253;

/// `veltix serve --mode chat --cluster URL --node-id ID`; killed (SIGKILL) on drop.
struct Node {
    child: Child,
    port: u16,
    stdout: Arc<Lines>,
    _stderr: Arc<Lines>,
}

impl Node {
    fn start(url: &str, id: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_veltix"))
            .args(["--log", "info", "serve", "--mode", "chat", "--port", "0"])
            .args(["--cluster", url, "--node-id", id])
            .args(["--presence-ttl", TTL_SECS, "--heartbeat", "0.3"])
            .args(["--stats-interval", "0.2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn veltix serve");
        let stdout = Lines::collect(child.stdout.take().expect("stdout"));
        let stderr = Lines::collect(child.stderr.take().expect("stderr"));
        let line = stdout.wait(0, "`listening on`", |l| l.starts_with("listening on "));
        let addr: std::net::SocketAddr = line["listening on ".len()..].parse().expect("address");
        let up = format!("cluster node {id} up");
        stdout.wait(0, &up, |l| l == up);
        Node {
            child,
            port: addr.port(),
            stdout,
            _stderr: stderr,
        }
    }

    /// Waits for a `stats:` line (after line `from`) whose cluster part satisfies `f`.
    fn wait_cluster_stats(&self, from: usize, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let line = self.stdout.wait(from, what, |l| {
            l.strip_prefix("stats: ")
                .and_then(|j| serde_json::from_str::<Value>(j).ok())
                .is_some_and(|v| f(&v["cluster"]))
        });
        serde_json::from_str(&line["stats: ".len()..]).expect("stats JSON")
    }

    /// SIGTERM, then waits (bounded) for the exit.
    fn terminate(&mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM");
        let t0 = Instant::now();
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(t0.elapsed() < T, "veltix serve did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Peer {
    py: PyPeer,
    id: String,
}

fn reply_text(reply: &Value) -> String {
    let hex = reply["hex"].as_str().expect("a small reply");
    String::from_utf8(payload::from_hex(hex)).expect("UTF-8 reply")
}

impl Peer {
    fn connect(node: &Node) -> Peer {
        // One callback thread: Python then hands messages to the test in arrival order.
        let py = PyPeer::client(PyVersion::V3_3_0, node.port, &["--workers", "1"]);
        let mut p = Peer {
            py,
            id: String::new(),
        };
        p.id = p.ask(WHOAMI, payload::text(""));
        assert!(p.id.contains(':'), "whoami gave {:?}", p.id);
        p
    }
    fn ask(&self, message_type: u64, body: Value) -> String {
        let r = self.py.cmd_ok(json!({
            "cmd": "send_and_wait", "type": message_type, "payload": body, "timeout": 10
        }));
        reply_text(&r)
    }
    fn who(&self, filter: Option<Value>) -> Vec<String> {
        let body = filter.map_or(payload::text(""), payload::json_value);
        let text = self.ask(WHO, body);
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("who replied {text:?}"))
    }
    fn say(&self, text: &str) {
        self.py
            .cmd_ok(json!({"cmd": "send", "type": CHAT, "payload": payload::text(text)}));
    }
    /// How many times this peer received `text` (type 200) so far.
    fn got(&self, text: &str) -> usize {
        let hex = payload::to_hex(text.as_bytes());
        self.py
            .events_named("recv")
            .iter()
            .filter(|e| e["type"] == CHAT && e["hex"] == hex.as_str())
            .count()
    }
    fn wait_for(&self, message_type: u64, text: &str) {
        let hex = payload::to_hex(text.as_bytes());
        self.py.wait_event(
            |e| e["event"] == "recv" && e["type"] == message_type && e["hex"] == hex.as_str(),
            T,
        );
    }
}

/// Polls a cluster view query until `f` holds (the view changes by heartbeats).
fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < T, "not within {T:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// `from` says `text`; every other peer in `peers` receives it, then each has it exactly once
/// and the sender never.
fn chat_exactly_once(peers: &[&Peer], from: usize, text: &str) {
    peers[from].say(text);
    for (i, p) in peers.iter().enumerate() {
        if i != from {
            p.wait_for(CHAT, text);
        }
    }
    // A marker from another peer, received by everyone after `text` (per-sender order on
    // each node's link), bounds the wait for a duplicate.
    let marker = format!("{text} / marker");
    let other = (from + 1) % peers.len();
    peers[other].say(&marker);
    for (i, p) in peers.iter().enumerate() {
        if i != other {
            p.wait_for(CHAT, &marker);
        }
        let want = usize::from(i != from);
        assert_eq!(
            p.got(text),
            want,
            "{} got {text:?} {} times",
            p.id,
            p.got(text)
        );
    }
}

#[test]
fn three_cli_nodes_with_python_clients_act_as_one() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let mut nodes = [
        Node::start(&url, "n1"),
        Node::start(&url, "n2"),
        Node::start(&url, "n3"),
    ];
    // Two Python clients per node: peers[i] is on node i % 3.
    let peers: Vec<Peer> = (0..6).map(|i| Peer::connect(&nodes[i % 3])).collect();
    for (i, p) in peers.iter().enumerate() {
        assert!(p.id.starts_with(&format!("n{}:", i % 3 + 1)), "{}", p.id);
    }
    eventually("every node sees 6 clients", || {
        (0..3).all(|i| peers[i].who(None).len() == 6)
    });
    let all: Vec<&Peer> = peers.iter().collect();

    // Chat reaches all exactly once, in order.
    for i in 0..20 {
        peers[0].say(&format!("burst {i}"));
    }
    for p in &peers[1..] {
        for i in 0..20 {
            p.wait_for(CHAT, &format!("burst {i}"));
        }
        let order: Vec<String> =
            p.py.events_named("recv")
                .iter()
                .filter(|e| e["type"] == CHAT)
                .filter_map(|e| e["hex"].as_str().map(payload::from_hex))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .collect();
        let want: Vec<String> = (0..20).map(|i| format!("burst {i}")).collect();
        assert_eq!(order, want, "order at {}", p.id);
    }
    chat_exactly_once(&all, 4, "hello from n2");

    // Send by cluster id: peer 0 (n1) to peer 5 (n3).
    let r = peers[0].ask(TO, payload::text(&format!("{}\nfor you only", peers[5].id)));
    assert_eq!(r, "ok");
    peers[5].wait_for(TO, "for you only");
    for p in &peers[1..5] {
        let hex = payload::to_hex(b"for you only");
        assert!(
            p.py.events_named("recv")
                .iter()
                .all(|e| e["hex"] != hex.as_str()),
            "{} got a direct message for {}",
            p.id,
            peers[5].id
        );
    }

    // Tags across nodes: peer 2 (n3) joins room red; peer 1 (n2) sees it.
    assert_eq!(
        peers[2].ask(
            TAG,
            payload::json_value(json!({"name": "room", "value": "red"}))
        ),
        "ok"
    );
    let red = Some(json!({"name": "room", "value": "red"}));
    eventually("n2 sees peer 2 in room red", || {
        peers[1].who(red.clone()) == vec![peers[2].id.clone()]
    });
    assert!(peers[1]
        .who(Some(json!({"name": "room", "value": "blue"})))
        .is_empty());

    // kill -9 of node n3: its clients (peers 2 and 5) leave the view within the TTL.
    nodes[2].kill9();
    let killed = Instant::now();
    eventually("n3's clients left the view", || {
        peers[0].who(None).len() == 4
    });
    let gone = killed.elapsed();
    eprintln!("n3's clients left the view {gone:?} after kill -9 (TTL {TTL:?})");
    assert!(
        gone <= TTL + Duration::from_secs(2),
        "took {gone:?}, TTL {TTL:?}"
    );
    let r = peers[0].ask(TO, payload::text(&format!("{}\nghost", peers[5].id)));
    assert!(r.starts_with("error: cluster client n3:"), "{r}");
    let alive: Vec<&Peer> = [0, 1, 3, 4].iter().map(|&i| &peers[i]).collect();
    chat_exactly_once(&alive, 1, "n3 is gone");

    // Redis killed: local chat never stops; cross-node resumes after the restart, no dups.
    let marks: Vec<usize> = nodes[..2].iter().map(|n| n.stdout.len()).collect();
    redis.kill();
    for (n, &from) in nodes[..2].iter().zip(&marks) {
        n.wait_cluster_stats(from, "cluster down", |c| c["up"] == false);
    }
    // peers 0 and 3 are both on n1.
    for i in 0..10 {
        peers[0].say(&format!("during outage {i}"));
    }
    for i in 0..10 {
        peers[3].wait_for(CHAT, &format!("during outage {i}"));
    }
    let marks: Vec<usize> = nodes[..2].iter().map(|n| n.stdout.len()).collect();
    redis.restart();
    let restarted = Instant::now();
    for (i, (n, &from)) in nodes[..2].iter().zip(&marks).enumerate() {
        let s = n.wait_cluster_stats(from, "cluster up again", |c| {
            c["up"] == true && c["reconnects"].as_u64() >= Some(1)
        });
        if i == 0 {
            // n1's 10 outage messages were refused by the cluster (and served locally).
            assert!(s["cluster"]["refused"].as_u64() >= Some(10), "{s}");
        }
    }
    let back = restarted.elapsed();
    eprintln!("cluster up on n1 and n2 {back:?} after the Redis restart");
    assert!(
        back < Duration::from_secs(10),
        "cluster back after {back:?}"
    );
    chat_exactly_once(&alive, 0, "after the outage");
    chat_exactly_once(&alive, 3, "after the outage, from n2"); // alive[3] is peers[4]
                                                               // What n1 said during the outage stayed on n1: never delivered to n2 later.
                                                               // SIGTERM of n2: it leaves the cluster before exiting, so its clients are out of the view
                                                               // as soon as it is gone (no TTL to wait for).
    nodes[1].terminate();
    let left: Vec<String> = peers[0].who(None);
    assert_eq!(left, vec![peers[0].id.clone(), peers[3].id.clone()]);

    for i in 0..10 {
        let text = format!("during outage {i}");
        assert_eq!(peers[3].got(&text), 1, "{text:?} at n1");
        for p in [&peers[1], &peers[4]] {
            assert_eq!(p.got(&text), 0, "{text:?} at {}", p.id);
        }
    }
}
