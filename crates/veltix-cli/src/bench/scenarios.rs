//! The client side of each scenario, through veltix's public API. Definitions follow Python
//! Veltix 3.3.0's benchmark (`shared/reference/BENCHMARKS.md` §3) unless said otherwise.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use veltix::{AsyncClient, Client, ClientConfig, Error, Request};

use super::server::{Counter, ServerProc, BCAST, ECHO, MOVE, SHOOT};
use super::stats::{latency_summary, mean, now_ns, stdev};
use super::{progress, Metrics, Outcome, Params, ReqrepApi};

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub fn client_config(p: &Params, port: u16) -> ClientConfig {
    let mut config = ClientConfig::new("127.0.0.1", port)
        .performance_mode(p.mode)
        .max_workers(p.client_workers);
    config.tls = p.tls.clone();
    config
}

/// One client connects (TCP, TLS when configured, Veltix handshake) and disconnects `count`
/// times in a row; the connect latency of each cycle and the cycles per second.
pub fn handshake(p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    let client = Client::new(client_config(p, srv.port));
    let n = p.count;
    let pb = progress(n as u64, "handshake");
    let mut samples = Vec::with_capacity(n);
    let mut failures = 0u64;
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        match client.connect() {
            Ok(()) => {
                samples.push(t.elapsed().as_secs_f64() * 1e3);
                client.disconnect();
            }
            Err(_) => failures += 1,
        }
        if i % 64 == 0 {
            pb.set_position(i as u64);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let mut m = Metrics::default();
    m.push("count", samples.len() as f64);
    m.push("failures", failures as f64);
    latency_summary(&samples, &mut m);
    m.push("throughput", samples.len() as f64 / wall);
    Ok(Outcome {
        metrics: m,
        samples_ms: samples,
        notes: Vec::new(),
    })
}

fn connect(p: &Params, port: u16) -> Res<Client> {
    let c = Client::new(client_config(p, port));
    c.connect()?;
    Ok(c)
}

/// Sends, retrying while the outbound queue is full (backpressure); returns the retries.
fn send_retry(send: impl Fn(&Request) -> veltix::Result<()>, req: &Request) -> veltix::Result<u64> {
    let mut retries = 0;
    loop {
        match send(req) {
            Ok(()) => return Ok(retries),
            Err(Error::QueueFull { .. }) => {
                retries += 1;
                if retries % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                } else {
                    std::thread::yield_now();
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Python's "poll every 50 ms after the send loop" elapsed time, given when the last message
/// was handled: what `recv_throughput` (burst) and `throughput` (stress) divide by in Python.
fn polled_elapsed(t0: u64, send_done: u64, last: u64) -> f64 {
    let base = secs(send_done.saturating_sub(t0));
    if last <= send_done {
        return base;
    }
    let k = (secs(last - send_done) / 0.05).ceil();
    base + k * 0.05
}

/// Sequential `ping_server()` round trips (Python's latency bench).
pub fn latency(p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    let client = connect(p, srv.port)?;
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..20 {
        let _ = client.ping_server(Duration::from_secs(2));
    }
    let n = p.count;
    let pb = progress(n as u64, "latency");
    let mut samples = Vec::with_capacity(n);
    let mut failures = 0u64;
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        match client.ping_server(Duration::from_secs(2)) {
            Ok(_) => samples.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => failures += 1,
        }
        if i % 512 == 0 {
            pb.set_position(i as u64);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    client.disconnect();
    let mut m = Metrics::default();
    m.push("count", samples.len() as f64);
    m.push("failures", failures as f64);
    latency_summary(&samples, &mut m);
    m.push("throughput", samples.len() as f64 / wall);
    Ok(Outcome {
        metrics: m,
        samples_ms: samples,
        notes: Vec::new(),
    })
}

/// One client sends `count` × `size` B back to back to a counting route (Python's burst).
pub fn burst(p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    let client = connect(p, srv.port)?;
    std::thread::sleep(Duration::from_millis(200));
    let n = p.count as u64;
    srv.arm(n)?;
    let req = Request::new(MOVE, vec![b'X'; p.size]);
    let mut retries = 0;
    let t0 = now_ns();
    for _ in 0..n {
        retries += send_retry(|r| client.send(r), &req)?;
    }
    let send_done = now_ns();
    let c = srv.wait(p.timeout)?;
    client.disconnect();
    let last = if c.last_ns > 0 { c.last_ns } else { now_ns() };
    let delivery = secs(last.saturating_sub(t0)).max(1e-9);
    let polled = polled_elapsed(t0, send_done, last);
    let send_s = secs(send_done - t0).max(1e-9);
    let ms = |ts: u64| {
        if ts > 0 {
            (ts.saturating_sub(t0)) as f64 / 1e6
        } else {
            0.0
        }
    };
    let mib = (c.count * p.size as u64) as f64 / (1024.0 * 1024.0);
    let mut m = Metrics::default();
    m.push("count", n as f64);
    m.push("payload_bytes", p.size as f64);
    m.push("received", c.count as f64);
    m.push("success_rate", 100.0 * c.count as f64 / n.max(1) as f64);
    m.push("send_throughput", n as f64 / send_s);
    m.push("delivery_rate", c.count as f64 / delivery);
    m.push("recv_throughput", c.count as f64 / polled);
    m.push("data_mbps", mib / polled);
    m.push("delivery_mbps", mib / delivery);
    m.push("duration_s", polled);
    m.push("send_duration_s", send_s);
    m.push("drain_p50_ms", ms(c.mark_ns[0]));
    m.push("drain_p95_ms", ms(c.mark_ns[1]));
    m.push("drain_p99_ms", ms(c.mark_ns[2]));
    m.push("drain_max_ms", ms(c.last_ns));
    m.push(
        "recv_gap_avg_ms",
        if c.count > 1 && c.last_ns > c.first_ns {
            (c.last_ns - c.first_ns) as f64 / 1e6 / (c.count - 1) as f64
        } else {
            0.0
        },
    );
    m.push("send_retries", retries as f64);
    Ok(Outcome::new(m))
}

/// `clients` clients each send `messages` × `size` B from their own thread, all sharing one
/// request (Python's stress). t0 is taken before the sender threads are started, as in Python.
pub fn stress(p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    let pb = progress(p.clients as u64, "stress: connecting");
    let mut clients = Vec::with_capacity(p.clients);
    for _ in 0..p.clients {
        clients.push(Arc::new(connect(p, srv.port)?));
        pb.inc(1);
        std::thread::sleep(Duration::from_millis(3));
    }
    pb.finish_and_clear();
    std::thread::sleep(Duration::from_millis(500));
    let per = p.messages as u64;
    let total = per * p.clients as u64;
    srv.arm(total)?;
    let req = Arc::new(Request::new(MOVE, vec![0u8; p.size]));
    let t0 = now_ns();
    let handles: Vec<_> = clients
        .iter()
        .map(|c| {
            let c = c.clone();
            let req = req.clone();
            std::thread::spawn(move || -> (f64, u64, u64) {
                let t = Instant::now();
                let (mut errors, mut retries) = (0, 0);
                for _ in 0..per {
                    match send_retry(|r| c.send(r), &req) {
                        Ok(k) => retries += k,
                        Err(_) => errors += 1,
                    }
                }
                (t.elapsed().as_secs_f64(), errors, retries)
            })
        })
        .collect();
    let spawned = now_ns();
    let mut times = Vec::new();
    let (mut errors, mut retries) = (0, 0);
    for h in handles {
        let (t, e, r) = h.join().map_err(|_| "a stress sender panicked")?;
        times.push(t);
        errors += e;
        retries += r;
    }
    let sends_done = now_ns();
    let c = srv.wait(p.timeout)?;
    for cl in &clients {
        cl.disconnect();
    }
    let last = if c.last_ns > 0 { c.last_ns } else { now_ns() };
    let elapsed = secs(last.saturating_sub(t0)).max(1e-9);
    let tps: Vec<f64> = times.iter().map(|t| per as f64 / t.max(1e-9)).collect();
    let mut m = Metrics::default();
    m.push("num_clients", p.clients as f64);
    m.push("msgs_per_client", per as f64);
    m.push("total_sent", (total - errors) as f64);
    m.push("total_recv", c.count as f64);
    m.push("success_rate", 100.0 * c.count as f64 / total.max(1) as f64);
    m.push("throughput", c.count as f64 / elapsed);
    m.push(
        "throughput_polled",
        c.count as f64 / polled_elapsed(t0, sends_done, last),
    );
    m.push("duration_s", elapsed);
    m.push("spawn_s", secs(spawned - t0));
    m.push("send_phase_s", secs(sends_done - t0));
    m.push("drain_time_s", secs(last.saturating_sub(sends_done)));
    m.push(
        "time_to_first_recv_ms",
        if c.first_ns > 0 {
            c.first_ns.saturating_sub(t0) as f64 / 1e6
        } else {
            0.0
        },
    );
    m.push("per_client_tps_avg", mean(&tps));
    m.push(
        "per_client_tps_min",
        tps.iter().copied().fold(f64::INFINITY, f64::min),
    );
    m.push(
        "per_client_tps_max",
        tps.iter().copied().fold(0.0, f64::max),
    );
    m.push("per_client_tps_stdev", stdev(&tps));
    m.push("send_errors", errors as f64);
    m.push("send_retries", retries as f64);
    Ok(Outcome::new(m))
}

/// `send_and_wait` with `in_flight` requesters per connection, each doing sequential requests on
/// one shared client, over `connections` clients; `count` requests in all. The requesters are
/// tasks awaiting `AsyncClient::send_and_wait` on one tokio runtime (`--reqrep-api async`, the
/// default) or OS threads blocked in `Client::send_and_wait` (`--reqrep-api blocking`).
pub fn reqrep(p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    let conns = p.connections.max(1);
    let k = p.in_flight.max(1);
    let requesters = conns * k;
    let per = (p.count / requesters).max(1);
    let total = per * requesters;
    let pb = progress(total as u64, "reqrep");
    let payload = veltix::proto::Frame::new(0, 0, vec![0u8; p.size]).content;
    let (samples, failures, wall) = match p.reqrep_api {
        ReqrepApi::Blocking => reqrep_blocking(p, srv.port, conns, k, per, payload, &pb)?,
        _ => reqrep_async(p, srv.port, conns, k, per, payload, &pb)?,
    };
    pb.finish_and_clear();
    let mut m = Metrics::default();
    m.push("requests", total as f64);
    m.push("connections", conns as f64);
    m.push("in_flight", k as f64);
    m.push("ok", samples.len() as f64);
    m.push("failures", failures as f64);
    m.push("throughput", samples.len() as f64 / wall);
    latency_summary(&samples, &mut m);
    Ok(Outcome {
        metrics: m,
        samples_ms: samples,
        notes: Vec::new(),
    })
}

/// (latency samples in ms, failures, wall seconds)
type ReqrepRun = (Vec<f64>, u64, f64);

/// What one requester saw: the latency of each answered request and the failures.
struct Tally {
    samples_ms: Vec<f64>,
    failures: u64,
}

impl Tally {
    fn with_capacity(n: usize) -> Tally {
        Tally {
            samples_ms: Vec::with_capacity(n),
            failures: 0,
        }
    }

    /// Records request `j`, started at `t`, and advances the progress bar every 256 requests.
    fn record<T, E>(&mut self, j: usize, t: Instant, r: Result<T, E>, pb: &indicatif::ProgressBar) {
        match r {
            Ok(_) => self.samples_ms.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => self.failures += 1,
        }
        if j % 256 == 255 {
            pb.inc(256);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.samples_ms.extend(other.samples_ms);
        self.failures += other.failures;
    }
}

fn reqrep_blocking(
    p: &Params,
    port: u16,
    conns: usize,
    k: usize,
    per: usize,
    payload: bytes::Bytes,
    pb: &indicatif::ProgressBar,
) -> Res<ReqrepRun> {
    let threads = conns * k;
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(Arc::new(connect(p, port)?));
    }
    std::thread::sleep(Duration::from_millis(200));
    let gate = Arc::new(Barrier::new(threads + 1));
    let timeout = p.timeout;
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let c = clients[i % conns].clone();
        let gate = gate.clone();
        let pb = pb.clone();
        let payload = payload.clone();
        handles.push(std::thread::spawn(move || {
            let mut tally = Tally::with_capacity(per);
            gate.wait();
            for j in 0..per {
                let t = Instant::now();
                let r = c.send_and_wait(Request::new(ECHO, payload.clone()), timeout);
                tally.record(j, t, r, &pb);
            }
            tally
        }));
    }
    let t0 = Instant::now();
    gate.wait();
    let mut all = Tally::with_capacity(threads * per);
    for h in handles {
        all.merge(h.join().map_err(|_| "a reqrep thread panicked")?);
    }
    let wall = t0.elapsed().as_secs_f64();
    for c in &clients {
        c.disconnect();
    }
    Ok((all.samples_ms, all.failures, wall))
}

fn reqrep_async(
    p: &Params,
    port: u16,
    conns: usize,
    k: usize,
    per: usize,
    payload: bytes::Bytes,
    pb: &indicatif::ProgressBar,
) -> Res<ReqrepRun> {
    // What a tokio user has: `#[tokio::main]`'s multi-threaded runtime with one worker per CPU,
    // or a current-thread runtime. The clients' connections run on it too.
    let rt = match p.reqrep_api {
        ReqrepApi::AsyncCurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    let timeout = p.timeout;
    rt.block_on(async move {
        let mut clients = Vec::with_capacity(conns);
        for _ in 0..conns {
            let c = AsyncClient::new(client_config(p, port));
            c.connect().await?;
            clients.push(Arc::new(c));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let gate = Arc::new(tokio::sync::Barrier::new(conns * k + 1));
        let mut tasks = Vec::with_capacity(conns * k);
        for i in 0..conns * k {
            let c = clients[i % conns].clone();
            let (gate, pb, payload) = (gate.clone(), pb.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::with_capacity(per);
                gate.wait().await;
                for j in 0..per {
                    let t = Instant::now();
                    let r = c
                        .send_and_wait(Request::new(ECHO, payload.clone()), timeout)
                        .await;
                    tally.record(j, t, r, &pb);
                }
                tally
            }));
        }
        let t0 = Instant::now();
        gate.wait().await;
        let mut all = Tally::with_capacity(conns * k * per);
        for t in tasks {
            all.merge(t.await.map_err(|_| "a reqrep task panicked")?);
        }
        let wall = t0.elapsed().as_secs_f64();
        for c in &clients {
            c.disconnect().await;
        }
        Ok((all.samples_ms, all.failures, wall))
    })
}

/// The server broadcasts `messages` × `size` B to `clients` clients; every client counts in a
/// route. deliveries/s = deliveries ÷ (last delivery handled − first broadcast call).
pub fn broadcast(p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    let counter = Arc::new(Counter::default());
    let pb = progress(p.clients as u64, "broadcast: connecting");
    let mut clients = Vec::with_capacity(p.clients);
    for _ in 0..p.clients {
        let c = Client::new(client_config(p, srv.port));
        let k = counter.clone();
        c.route(BCAST, move |_| k.hit());
        c.connect()?;
        clients.push(c);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let seen = srv.wait_clients(p.clients, Duration::from_secs(10))?;
    if seen < p.clients {
        return Err(format!("only {seen} of {} clients connected", p.clients).into());
    }
    std::thread::sleep(Duration::from_millis(200));
    let n = p.messages as u64;
    let expected = n * p.clients as u64;
    counter.arm(expected);
    let [t0, t1, queued, failed] = srv.broadcast(n, p.size)?;
    let c = counter.wait(p.timeout);
    for cl in &clients {
        cl.disconnect();
    }
    let last = if c.last_ns > 0 { c.last_ns } else { now_ns() };
    let elapsed = secs(last.saturating_sub(t0)).max(1e-9);
    let mut m = Metrics::default();
    m.push("clients", p.clients as f64);
    m.push("messages", n as f64);
    m.push("size", p.size as f64);
    m.push("deliveries_expected", expected as f64);
    m.push("deliveries", c.count as f64);
    m.push("queued", queued as f64);
    m.push("failed_broadcasts", failed as f64);
    m.push("deliveries_per_s", c.count as f64 / elapsed);
    m.push(
        "broadcast_calls_per_s",
        n as f64 / secs(t1.saturating_sub(t0)).max(1e-9),
    );
    m.push("duration_s", elapsed);
    Ok(Outcome::new(m))
}

/// Python's fps simulation: `players` clients, one thread sending MOVE (32 B) for each player
/// and SHOOT (16 B) for about 10 % of them every tick, for `duration` seconds.
pub fn fps(p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    let pb = progress(p.clients as u64, "fps: connecting");
    let mut clients = Vec::with_capacity(p.clients);
    for _ in 0..p.clients {
        clients.push(connect(p, srv.port)?);
        pb.inc(1);
        std::thread::sleep(Duration::from_millis(5));
    }
    pb.finish_and_clear();
    std::thread::sleep(Duration::from_millis(500));
    srv.arm(u64::MAX)?;
    let moves: Vec<Request> = clients
        .iter()
        .map(|_| Request::new(MOVE, vec![0u8; 32]))
        .collect();
    let shoots: Vec<Request> = clients
        .iter()
        .map(|_| Request::new(SHOOT, vec![0u8; 16]))
        .collect();
    let interval = 1.0 / p.tick_rate;
    let budget_ms = interval * 1e3;
    let (mut sent, mut shoot_sent, mut errors, mut overruns) = (0u64, 0u64, 0u64, 0u64);
    let mut ticks: Vec<f64> = Vec::new();
    let pb = progress((p.duration.as_secs_f64() * 10.0) as u64, "fps");
    let t0 = Instant::now();
    while t0.elapsed() < p.duration {
        let tick = Instant::now();
        for (i, c) in clients.iter().enumerate() {
            match c.send(&moves[i]) {
                Ok(()) => sent += 1,
                Err(_) => errors += 1,
            }
            let decile = (now_ns() / 100_000_000) % 10;
            if (i as u64) % 10 == decile {
                match c.send(&shoots[i]) {
                    Ok(()) => {
                        sent += 1;
                        shoot_sent += 1;
                    }
                    Err(_) => errors += 1,
                }
            }
        }
        let took = tick.elapsed().as_secs_f64();
        ticks.push(took * 1e3);
        if took * 1e3 > budget_ms {
            overruns += 1;
        }
        pb.set_position((t0.elapsed().as_secs_f64() * 10.0) as u64);
        if interval > took {
            std::thread::sleep(Duration::from_secs_f64(interval - took));
        }
    }
    let actual = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    std::thread::sleep(Duration::from_millis(500));
    srv.set_target(sent)?;
    let c = srv.wait(p.timeout)?;
    for cl in &clients {
        cl.disconnect();
    }
    let per_tick_sends = sent as f64 / ticks.len().max(1) as f64;
    let mut m = Metrics::default();
    m.push("players", p.clients as f64);
    m.push("tick_rate", p.tick_rate);
    m.push("actual_tick_rate", ticks.len() as f64 / actual);
    m.push("duration_s", actual);
    m.push("total_sent", sent as f64);
    m.push("shoot_sent", shoot_sent as f64);
    m.push("total_recv", c.count as f64);
    m.push("msg_per_sec", sent as f64 / actual);
    m.push("success_rate", 100.0 * c.count as f64 / sent.max(1) as f64);
    m.push("errors", errors as f64);
    m.push("tick_avg_ms", mean(&ticks));
    m.push(
        "tick_min_ms",
        ticks.iter().copied().fold(f64::INFINITY, f64::min),
    );
    m.push("tick_max_ms", ticks.iter().copied().fold(0.0, f64::max));
    m.push("tick_stdev_ms", stdev(&ticks));
    m.push(
        "tick_budget_pct",
        100.0 * (1.0 - overruns as f64 / ticks.len().max(1) as f64),
    );
    m.push("overrun_ticks", overruns as f64);
    m.push("send_us_avg", mean(&ticks) * 1e3 / per_tick_sends.max(1.0));
    Ok(Outcome::new(m))
}

/// One client sends `count` messages of `size` bytes (1 MiB by default) to a counting route.
pub fn large(p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    let client = connect(p, srv.port)?;
    std::thread::sleep(Duration::from_millis(200));
    let n = p.count as u64;
    srv.arm(n)?;
    let req = Request::new(MOVE, vec![0x5au8; p.size]);
    let pb = progress(n, "large");
    let mut retries = 0;
    let t0 = now_ns();
    for _ in 0..n {
        retries += send_retry(|r| client.send(r), &req)?;
        pb.inc(1);
    }
    let send_done = now_ns();
    let c = srv.wait(p.timeout)?;
    pb.finish_and_clear();
    client.disconnect();
    let last = if c.last_ns > 0 { c.last_ns } else { now_ns() };
    let elapsed = secs(last.saturating_sub(t0)).max(1e-9);
    let mib = (c.count * p.size as u64) as f64 / (1024.0 * 1024.0);
    let mut m = Metrics::default();
    m.push("count", n as f64);
    m.push("size_bytes", p.size as f64);
    m.push("received", c.count as f64);
    m.push("mb_per_s", mib / elapsed);
    m.push("msgs_per_s", c.count as f64 / elapsed);
    m.push("send_duration_s", secs(send_done - t0));
    m.push("duration_s", elapsed);
    m.push("send_retries", retries as f64);
    Ok(Outcome::new(m))
}
