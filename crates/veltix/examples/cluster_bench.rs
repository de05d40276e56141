//! Cluster benchmark (issue #16): cross-node broadcast deliveries/s with 3 nodes x 100 clients
//! beside one node x 300 clients, and cross-node send latency beside Redis's own PUBLISH round
//! trip, measured in the same run. Starts its own redis-server (Debian's package, on a free
//! loopback port, no persistence) and prints one JSON object on stdout.
//!
//! ```text
//! cargo run --release -p veltix --example cluster_bench > docs/bench/cluster.json
//! ```
//!
//! Everything (servers, clients, Redis) shares this machine; the clients are veltix `Client`s
//! in this process, so their decoding competes with the servers for the CPUs.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veltix::cluster::{ClusterConfig, ClusterId};
use veltix::{Client, ClientConfig, ClientInfo, Request, Response, Server, ServerConfig};

const CLIENTS_PER_NODE: usize = 100;
const NODES: usize = 3;
const BROADCASTS: u64 = 2_000;
const PAYLOAD: usize = 64;
const SENDS: usize = 2_000;
const DEADLINE: Duration = Duration::from_secs(120);

struct Redis(Child, u16);

impl Redis {
    fn start() -> Redis {
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or(0);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("redis-server: {e} (run scripts/install-redis.sh)"));
            let mut r = Redis(child, port);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return r;
                }
                if let Ok(Some(_)) = r.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = r.0.kill();
        }
        panic!("redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(cluster: Option<(&str, String)>) -> Server {
    let mut config = ServerConfig::local();
    config.cluster = cluster.map(|(id, url)| ClusterConfig::redis(url).node_id(id));
    let s = Server::new(config);
    s.route(250u16, |c: &ClientInfo, m: Response| {
        let id = c.cluster_id().map(|i| i.to_string()).unwrap_or_default();
        c.send(Request::text(250u16, &id).respond(&m))
    });
    s.start().expect("start");
    s
}

fn clients(server: &Server, n: usize, counter: &Arc<AtomicU64>) -> Vec<Client> {
    let port = server.local_addr().expect("running").port();
    (0..n)
        .map(|_| {
            let c = Client::new(ClientConfig::new("127.0.0.1", port).max_workers(1));
            let k = counter.clone();
            c.on_recv(move |_m: Response| {
                k.fetch_add(1, Ordering::Relaxed);
            });
            c.connect().expect("connect");
            c
        })
        .collect()
}

fn wait_count(counter: &AtomicU64, want: u64) -> Duration {
    let t0 = Instant::now();
    while counter.load(Ordering::Relaxed) < want {
        assert!(
            t0.elapsed() < DEADLINE,
            "{} of {want} deliveries",
            counter.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    t0.elapsed()
}

/// Sends `BROADCASTS` messages with `f`, returns deliveries/s until all `want` arrived.
fn rate(counter: &Arc<AtomicU64>, per_msg: u64, f: impl Fn(&Request)) -> f64 {
    counter.store(0, Ordering::Relaxed);
    let req = Request::new(200u16, vec![7u8; PAYLOAD]);
    let t0 = Instant::now();
    for _ in 0..BROADCASTS {
        f(&req);
    }
    wait_count(counter, BROADCASTS * per_msg);
    (BROADCASTS * per_msg) as f64 / t0.elapsed().as_secs_f64()
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

fn main() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let total = (NODES * CLIENTS_PER_NODE) as u64;

    // One node, 300 clients, local broadcast.
    let single_count = Arc::new(AtomicU64::new(0));
    let single = server(None);
    let single_clients = clients(&single, NODES * CLIENTS_PER_NODE, &single_count);
    let single_rate = rate(&single_count, total, |r| {
        single.broadcast(r, &[]).expect("broadcast");
    });
    drop(single_clients);
    single.close_all();

    // Three nodes, 100 clients each, cluster broadcast from node a.
    let count = Arc::new(AtomicU64::new(0));
    let nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|id| server(Some((id, url.clone()))))
        .collect();
    for n in &nodes {
        assert!(n.wait_cluster_up(Duration::from_secs(10)));
    }
    let _cs: Vec<Vec<Client>> = nodes
        .iter()
        .map(|n| clients(n, CLIENTS_PER_NODE, &count))
        .collect();
    let t0 = Instant::now();
    while nodes[0].cluster_client_count().unwrap_or(0) != NODES * CLIENTS_PER_NODE {
        assert!(t0.elapsed() < DEADLINE, "presence did not converge");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cluster_rate = rate(&count, total, |r| {
        // Bounded retry when the publishing queue is full (counted as refused).
        loop {
            match nodes[0].cluster_broadcast(r, &[]) {
                Ok(_) => break,
                Err(veltix::Error::ClusterUnavailable(_)) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    });

    // Cross-node send latency: node a to one client of node b, one at a time.
    let lat_count = Arc::new(AtomicU64::new(0));
    let target_client = clients(&nodes[1], 1, &lat_count).remove(0);
    let id: ClusterId = target_client
        .send_and_wait(Request::text(250u16, ""), Duration::from_secs(5))
        .expect("whoami")
        .text()
        .expect("text")
        .parse()
        .expect("id");
    let mut send_lat = Vec::with_capacity(SENDS);
    let mut rtt = Vec::with_capacity(SENDS);
    let req = Request::new(201u16, vec![1u8; PAYLOAD]);
    for i in 0..SENDS as u64 {
        let t0 = Instant::now();
        nodes[0].cluster_send(&id, &req).expect("cluster_send");
        while lat_count.load(Ordering::Relaxed) <= i {
            assert!(t0.elapsed() < DEADLINE);
            std::hint::spin_loop();
        }
        send_lat.push(t0.elapsed());
        rtt.push(nodes[0].cluster_broker_round_trip().expect("round trip"));
    }
    let stats = nodes[0].cluster_stats().expect("stats");
    let out = serde_json::json!({
        "machine": "2 vCPUs, servers + 301 veltix clients + redis-server on one host",
        "payload_bytes": PAYLOAD,
        "broadcasts": BROADCASTS,
        "single_node_300_clients_deliveries_per_s": single_rate.round(),
        "cluster_3x100_clients_deliveries_per_s": cluster_rate.round(),
        "cross_node_send_us": {"p50": pct(&mut send_lat, 0.5), "p99": pct(&mut send_lat, 0.99), "n": SENDS},
        "redis_publish_round_trip_us": {"p50": pct(&mut rtt, 0.5), "p99": pct(&mut rtt, 0.99), "n": SENDS},
        "sender_node_refused": stats.refused,
        "sender_node_published": stats.published,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    drop(target_client);
    drop(nodes);
    drop(redis);
}
