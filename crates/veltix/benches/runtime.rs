//! Runtime micro-benchmarks: the hot paths of `veltix` over loopback TCP, through the public API
//! only, with default configs (`PerformanceMode::Balanced`, Gen 3).
//!
//! Every server binds `127.0.0.1:0`; servers are started and clients connected before
//! measuring, so only the operation itself is timed. Messages carry 64 B of content.
//!
//! * `send/64B`: [`Client::send`] to an in-process [`Server`] whose route counts messages.
//!   Each sample sends N messages (retrying on [`Error::QueueFull`]) and then waits, without
//!   sleeping, until the server's handler has counted all N: the time is end-to-end delivered
//!   throughput (per message; throughput in elements).
//! * `send_and_wait/blocking_64B`: one [`Client::send_and_wait`] round trip to an echo server.
//! * `send_and_wait/async_64_in_flight`: an [`AsyncClient`] on a current-thread tokio runtime
//!   with 64 concurrent `send_and_wait` requests (64 spawned tasks, all joined) per iteration;
//!   throughput is 64 elements per iteration.
//! * `ping/blocking`: one [`Client::ping_server`] round trip (answered inline by the server).
//! * `broadcast/64B_to_10_clients`: [`Server::broadcast`] to 10 connected clients, each
//!   counting what it receives; each sample broadcasts N times and waits until all 10 × N
//!   deliveries are counted (time per broadcast; throughput in deliveries).
//! * `request_build/{new_64B,text_64B,json_struct}`: building a [`Request`] from a fresh
//!   `Vec<u8>`, from a `&str`, and from a small `#[derive(Serialize)]` struct (Python-compatible
//!   JSON encoding). No network.
//!
//! Run with `cargo bench -p veltix --bench runtime` (under 30 s of measuring on 2 cores); pass
//! criterion options after `--`, e.g. `cargo bench -p veltix --bench runtime -- send_and_wait`
//! or `-- --measurement-time 10` for longer runs. `cargo test -p veltix --release --bench
//! runtime` runs each benchmark once as a smoke test (well under a second).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Serialize;
use veltix::{
    AsyncClient, Client, ClientConfig, Error, MessageType, Request, Server, ServerConfig,
};

const DATA: MessageType = MessageType::new(200, "data");
const ECHO: MessageType = MessageType::new(201, "echo");
const PAYLOAD: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a sample may wait for its deliveries before the bench gives up.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);
const BROADCAST_CLIENTS: usize = 10;
const IN_FLIGHT: usize = 64;

fn payload() -> Vec<u8> {
    (0..PAYLOAD).map(|i| (i * 31 + 7) as u8).collect()
}

/// Counts deliveries in handlers and wakes the measuring thread once a target is reached.
///
/// The count is cumulative; [`Counter::expect`] sets the next target before anything is sent,
/// the handler that reaches it unparks the waiter, and [`Counter::wait`] parks until then.
struct Counter {
    count: AtomicU64,
    target: AtomicU64,
    waiter: Mutex<Option<Thread>>,
}

impl Counter {
    fn new() -> Arc<Counter> {
        Arc::new(Counter {
            count: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            waiter: Mutex::new(None),
        })
    }

    /// Called by handlers, once per delivered message.
    fn hit(&self) {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.target.load(Ordering::SeqCst) {
            if let Some(t) = self.waiter.lock().expect("waiter lock").as_ref() {
                t.unpark();
            }
        }
    }

    /// Announces `more` deliveries (call before sending); returns the count to wait for.
    fn expect(&self, more: u64) -> u64 {
        *self.waiter.lock().expect("waiter lock") = Some(thread::current());
        let goal = self.count.load(Ordering::SeqCst) + more;
        self.target.store(goal, Ordering::SeqCst);
        goal
    }

    /// Lowers the target (some deliveries will not happen); returns the new goal.
    fn retarget(&self, goal: u64) -> u64 {
        self.target.store(goal, Ordering::SeqCst);
        goal
    }

    /// Parks until the count reaches `goal`.
    fn wait(&self, goal: u64) {
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        loop {
            let n = self.count.load(Ordering::SeqCst);
            if n >= goal {
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "only {n} of {goal} messages delivered within {DELIVERY_DEADLINE:?}"
            );
            thread::park_timeout(deadline - now);
        }
    }
}

/// A server on a free loopback port.
fn start(server: &Server) -> SocketAddr {
    server.start().expect("start the server on 127.0.0.1:0")
}

fn connect(addr: SocketAddr) -> Client {
    let client = Client::new(ClientConfig::new("127.0.0.1", addr.port()));
    client.connect().expect("connect to the in-process server");
    client
}

fn echo_server() -> (Server, SocketAddr) {
    let server = Server::new(ServerConfig::local());
    server.route(&ECHO, |client, msg| {
        client.send(Request::new(&ECHO, msg.content().clone()).respond(&msg))
    });
    let addr = start(&server);
    (server, addr)
}

/// Sends, yielding while the outbound queue is full.
fn send_retry(client: &Client, req: &Request) {
    loop {
        match client.send(req) {
            Ok(()) => return,
            Err(Error::QueueFull { .. }) => thread::yield_now(),
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

fn send(c: &mut Criterion) {
    let counter = Counter::new();
    let server = Server::new(ServerConfig::local());
    let hits = counter.clone();
    server.route(&DATA, move |_client, msg| {
        black_box(msg.content().len());
        hits.hit();
    });
    let addr = start(&server);
    let client = connect(addr);
    let req = Request::new(&DATA, payload());

    let mut group = c.benchmark_group("send");
    group.throughput(Throughput::Elements(1));
    group.bench_function("64B", |b| {
        b.iter_custom(|iters| {
            let goal = counter.expect(iters);
            let t0 = Instant::now();
            for _ in 0..iters {
                send_retry(&client, black_box(&req));
            }
            counter.wait(goal);
            t0.elapsed()
        })
    });
    group.finish();
    drop(client);
    drop(server);
}

fn send_and_wait(c: &mut Criterion) {
    let (server, addr) = echo_server();
    let req = Request::new(&ECHO, payload());

    let mut group = c.benchmark_group("send_and_wait");

    let client = connect(addr);
    group.throughput(Throughput::Elements(1));
    group.bench_function("blocking_64B", |b| {
        b.iter(|| {
            let reply = client
                .send_and_wait(black_box(&req), TIMEOUT)
                .expect("echo reply");
            black_box(reply.content().len())
        })
    });
    drop(client);

    // Declared first so it is dropped last, after the client that runs on it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let client = Arc::new(rt.block_on(async {
        // Created inside the runtime: its I/O runs there.
        let client = AsyncClient::new(ClientConfig::new("127.0.0.1", addr.port()));
        client.connect().await.expect("connect the async client");
        client
    }));
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    group.bench_function("async_64_in_flight", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..IN_FLIGHT {
                    let client = client.clone();
                    let req = req.clone();
                    tasks.spawn(async move {
                        client
                            .send_and_wait(black_box(&req), TIMEOUT)
                            .await
                            .map(|reply| reply.content().len())
                    });
                }
                let mut bytes = 0usize;
                while let Some(r) = tasks.join_next().await {
                    bytes += r.expect("request task").expect("echo reply");
                }
                black_box(bytes)
            })
        })
    });
    group.finish();
    drop(client);
    drop(rt);
    drop(server);
}

fn ping(c: &mut Criterion) {
    let (server, addr) = echo_server();
    let client = connect(addr);

    let mut group = c.benchmark_group("ping");
    group.throughput(Throughput::Elements(1));
    group.bench_function("blocking", |b| {
        b.iter(|| black_box(client.ping_server(TIMEOUT).expect("pong")))
    });
    group.finish();
    drop(client);
    drop(server);
}

fn broadcast(c: &mut Criterion) {
    let counter = Counter::new();
    let server = Server::new(ServerConfig::local());
    let addr = start(&server);
    let clients: Vec<Client> = (0..BROADCAST_CLIENTS)
        .map(|_| {
            let client = connect(addr);
            let hits = counter.clone();
            client.route(&DATA, move |msg| {
                black_box(msg.content().len());
                hits.hit();
            });
            client
        })
        .collect();
    // `connect` returns once the client finished its handshake; the server may list it a
    // moment later.
    let deadline = Instant::now() + TIMEOUT;
    while server.clients().len() < BROADCAST_CLIENTS {
        assert!(
            Instant::now() < deadline,
            "the server lists {} of {BROADCAST_CLIENTS} clients",
            server.clients().len()
        );
        thread::sleep(Duration::from_millis(1));
    }
    let req = Request::new(&DATA, payload());

    let mut group = c.benchmark_group("broadcast");
    group.throughput(Throughput::Elements(BROADCAST_CLIENTS as u64));
    group.bench_function("64B_to_10_clients", |b| {
        b.iter_custom(|iters| {
            let wanted = iters * BROADCAST_CLIENTS as u64;
            let mut goal = counter.expect(wanted);
            let t0 = Instant::now();
            let mut queued = 0u64;
            for _ in 0..iters {
                queued += server.broadcast(black_box(&req), &[]).expect("broadcast") as u64;
            }
            if queued < wanted {
                // Clients whose queue was full were skipped: wait for what was queued.
                goal = counter.retarget(goal - (wanted - queued));
            }
            counter.wait(goal);
            t0.elapsed()
        })
    });
    group.finish();
    drop(clients);
    drop(server);
}

#[derive(Serialize)]
struct Chat<'a> {
    user: &'a str,
    room: &'a str,
    text: &'a str,
    seq: u64,
    tags: [&'a str; 2],
}

fn request_build(c: &mut Criterion) {
    let bytes = payload();
    let text = "a 64-byte chat line, ASCII only, for the Request::text benchmark";
    assert_eq!(text.len(), PAYLOAD);
    let chat = Chat {
        user: "alice",
        room: "lobby",
        text: "hello, world",
        seq: 42,
        tags: ["greeting", "public"],
    };
    let json_len = Request::json(&DATA, &chat)
        .expect("encode JSON")
        .content()
        .len();

    let mut group = c.benchmark_group("request_build");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    group.bench_function("new_64B", |b| {
        b.iter(|| Request::new(&DATA, black_box(&bytes[..]).to_vec()))
    });
    group.bench_function("text_64B", |b| {
        b.iter(|| Request::text(&DATA, black_box(text)))
    });
    group.throughput(Throughput::Bytes(json_len as u64));
    group.bench_function("json_struct", |b| {
        b.iter(|| Request::json(&DATA, black_box(&chat)).expect("encode JSON"))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = send, send_and_wait, ping, broadcast, request_build
}
criterion_main!(benches);
