//! `veltix bench`: Python Veltix's benchmark scenarios (same definitions and defaults, see
//! `shared/reference/BENCHMARKS.md` §2–3), scenarios Python lacks (reqrep, broadcast, large,
//! memory at 10,000 connections), side by side with the raw-TCP limit (`--against raw`) and with
//! Python Veltix 3.3.0 itself (`--against python`), with JSON export, comparison and SVG plots.
//!
//! Process model: by default the server runs in a child process (`veltix bench
//! --internal-server`, driven over stdin/stdout) and the clients in this one, as in a real
//! deployment; `--in-process` puts both in one process, as Python's bench does. Timestamps taken
//! on both sides use `CLOCK_MONOTONIC`, which is shared by all processes of the machine.

mod loadgen;
mod memory;
mod plot;
mod python;
mod raw;
mod scenarios;
mod server;
mod stats;
mod tlsbench;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value};
use veltix::PerformanceMode;

use server::{ServerOpts, ServerProc};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// C clients × M × 32 B, each client sending from its own thread (Python's stress).
    Stress,
    /// N × 64 B from one client to a counting route (Python's burst).
    Burst,
    /// N sequential `ping_server()` round trips (Python's latency).
    Latency,
    /// Players sending MOVE/SHOOT at a tick rate for a duration (Python's fps).
    Fps,
    /// Server RSS per connection: idle, first 10, 10→50, and at N (default 10,000).
    Memory,
    /// `send_and_wait` throughput and latency with K requests in flight per connection.
    Reqrep,
    /// The server broadcasts N messages to C clients; deliveries per second.
    Broadcast,
    /// 1 MiB messages from one client; MB/s.
    Large,
    /// Sequential connect + handshake + close cycles of one client (1,000); cycles/s and
    /// connect latency. Most telling with `--against tls` (handshakes per second).
    Handshake,
    /// Many connections × many requests in flight (16 × 16) of echo request/response against
    /// `veltix serve --mode echo` in its own process and, in the same run, a raw-TCP echo
    /// server, both driven by the same independent load generator; req/s, ratio, p50/p99.
    Scale,
    /// Every scenario, with its defaults unless overridden.
    All,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Stress => "stress",
            Scenario::Burst => "burst",
            Scenario::Latency => "latency",
            Scenario::Fps => "fps",
            Scenario::Memory => "memory",
            Scenario::Reqrep => "reqrep",
            Scenario::Broadcast => "broadcast",
            Scenario::Large => "large",
            Scenario::Handshake => "handshake",
            Scenario::Scale => "scale",
            Scenario::All => "all",
        }
    }

    fn expand(self) -> Vec<Scenario> {
        use Scenario::*;
        match self {
            All => vec![
                Latency, Burst, Stress, Reqrep, Broadcast, Fps, Large, Memory, Scale,
            ],
            s => vec![s],
        }
    }
}

/// What to measure next to veltix-rs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Against {
    /// The same bytes on plain blocking TCP sockets, no framework logic.
    Raw,
    /// Python Veltix 3.3.0's own benchmark module, pinned to one CPU.
    Python,
    /// veltix-rs over TLS (rustls; a throwaway CA and server certificate made for the run):
    /// the same scenario on a TLS server with TLS clients, next to the plaintext figures.
    Tls,
}

/// Arguments of `veltix bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Scenarios to run, in order (`all` = every one).
    #[arg(required_unless_present_any = ["compare", "internal_server"])]
    scenarios: Vec<Scenario>,
    /// Clients (stress 100, broadcast 100) or players (fps 64).
    #[arg(long, alias = "players")]
    clients: Option<usize>,
    /// Messages per client (stress 100) or broadcasts (broadcast 1000).
    #[arg(long)]
    messages: Option<usize>,
    /// Pings (latency 50,000), messages (burst 10,000; large 100) or requests (reqrep 100,000).
    #[arg(long)]
    count: Option<usize>,
    /// Payload bytes (stress 32, burst 64, reqrep 32, broadcast 64, large 1 MiB).
    #[arg(long)]
    size: Option<usize>,
    /// fps: simulated seconds (5).
    #[arg(long)]
    duration: Option<f64>,
    /// fps: ticks per second (64).
    #[arg(long)]
    tick_rate: Option<f64>,
    /// reqrep: requesters (tasks or threads, see --reqrep-api) doing sequential send_and_wait on
    /// each shared connection (64); scale: requests in flight per connection (16).
    #[arg(long)]
    in_flight: Option<usize>,
    /// reqrep: connections, each shared by --in-flight requesters (1); scale: connections (16).
    #[arg(long)]
    connections: Option<usize>,
    /// scale: `VELTIX_IO_THREADS` of the `veltix serve` process only (default: unset, i.e.
    /// its own default of half the CPUs).
    #[arg(long, value_name = "N")]
    serve_io_threads: Option<usize>,
    /// reqrep: who waits for the replies.
    #[arg(long, value_enum, default_value_t = ReqrepApi::Async)]
    reqrep_api: ReqrepApi,
    /// memory: idle connections to open (10,000).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Measured runs per scenario; every number reported is the median over runs.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Discarded warm-up passes per scenario (Python's default is 1).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Server and clients in this one process (Python's set-up) instead of separate processes.
    #[arg(long)]
    in_process: bool,
    /// Also measure raw TCP and/or Python Veltix (comma-separated: raw,python).
    #[arg(long, value_delimiter = ',')]
    against: Vec<Against>,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Compare two JSON files written by --json (B relative to A) and exit.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<PathBuf>>,
    /// Write SVG plots (latency percentiles, throughput bars) into this directory.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Python interpreter with veltix 3.3.0 (default: target/py/veltix-3.3.0/bin/python).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Python Veltix socket core: threading, async, or best (its best for each metric on 2
    /// cores pinned: threading for stress, burst and latency; async for fps and memory).
    #[arg(long, default_value = "best")]
    python_core: String,
    /// Do not pin Python Veltix to one CPU.
    #[arg(long)]
    python_unpinned: bool,
    /// Seconds to wait for deliveries before giving up on a run.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Server handler threads (max_workers).
    #[arg(long, default_value_t = 4)]
    server_workers: usize,
    /// Client handler threads (max_workers) per client.
    #[arg(long, default_value_t = 4)]
    client_workers: usize,
    /// Write coalescing of both ends: low, balanced, high.
    #[arg(long, default_value = "balanced", value_parser = parse_mode)]
    performance_mode: PerformanceMode,
    /// Run as the bench server process (used by the bench itself).
    #[arg(long, hide = true)]
    internal_server: bool,
    /// The bench server process speaks TLS with this certificate (used by the bench itself).
    #[arg(long, hide = true, requires = "internal_tls_key")]
    internal_tls_cert: Option<PathBuf>,
    /// The key of --internal-tls-cert.
    #[arg(long, hide = true)]
    internal_tls_key: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<PerformanceMode, veltix::Error> {
    s.parse()
}

/// Who waits for the replies in `reqrep`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReqrepApi {
    /// --in-flight tasks per connection awaiting `AsyncClient::send_and_wait` on a
    /// multi-threaded tokio runtime (`#[tokio::main]`'s default).
    Async,
    /// The same tasks on a current-thread tokio runtime.
    AsyncCurrentThread,
    /// --in-flight OS threads per connection blocked in `Client::send_and_wait`.
    Blocking,
}

impl ReqrepApi {
    fn as_str(self) -> &'static str {
        match self {
            ReqrepApi::Async => "async",
            ReqrepApi::AsyncCurrentThread => "async-current-thread",
            ReqrepApi::Blocking => "blocking",
        }
    }
}

/// Resolved parameters of one scenario.
#[derive(Clone, Debug)]
pub struct Params {
    pub clients: usize,
    pub messages: usize,
    pub count: usize,
    pub size: usize,
    pub duration: Duration,
    pub tick_rate: f64,
    pub in_flight: usize,
    pub connections: usize,
    pub timeout: Duration,
    pub mode: PerformanceMode,
    pub client_workers: usize,
    /// scale: handler threads of `veltix serve` (`--server-workers`).
    pub server_workers: usize,
    /// scale: `VELTIX_IO_THREADS` for the `veltix serve` process.
    pub serve_io_threads: Option<usize>,
    /// reqrep: who waits for the replies.
    pub reqrep_api: ReqrepApi,
    /// TLS for the clients (`--against tls` runs).
    pub tls: Option<veltix::tls::ClientTls>,
    /// The same trust for the memory scenario's raw TLS connections.
    pub raw_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Params {
    fn resolve(a: &Args, s: Scenario) -> Params {
        use Scenario::*;
        let clients = a.clients.unwrap_or(match s {
            Fps => 64,
            _ => 100,
        });
        let messages = a.messages.unwrap_or(match s {
            Broadcast => 1000,
            _ => 100,
        });
        let count = a.count.unwrap_or(match s {
            Latency => 50_000,
            Handshake => 1_000,
            Reqrep => 100_000,
            Scale => 500_000,
            Large => 100,
            _ => 10_000,
        });
        let size = a.size.unwrap_or(match s {
            Burst | Broadcast => 64,
            Large => 1024 * 1024,
            _ => 32,
        });
        Params {
            clients,
            messages,
            count,
            size,
            duration: Duration::from_secs_f64(a.duration.unwrap_or(5.0).max(0.0)),
            tick_rate: a.tick_rate.unwrap_or(64.0).max(0.1),
            in_flight: a.in_flight.unwrap_or(match s {
                Scale => 16,
                _ => 64,
            }),
            connections: match s {
                Memory => a.idle_connections.unwrap_or(10_000),
                Scale => a.connections.unwrap_or(16),
                _ => a.connections.unwrap_or(1),
            },
            server_workers: a.server_workers.max(1),
            serve_io_threads: a.serve_io_threads.filter(|&n| n > 0),
            timeout: Duration::from_secs_f64(a.timeout.max(0.1)),
            mode: a.performance_mode,
            client_workers: a.client_workers.max(1),
            reqrep_api: a.reqrep_api,
            tls: None,
            raw_tls: None,
        }
    }

    /// The parameters that matter for `s`.
    fn to_json(&self, s: Scenario) -> Value {
        use Scenario::*;
        match s {
            Latency => json!({"count": self.count}),
            Burst => json!({"count": self.count, "size": self.size}),
            Stress => {
                json!({"clients": self.clients, "messages": self.messages, "size": self.size})
            }
            Reqrep => {
                json!({"count": self.count, "size": self.size, "in_flight": self.in_flight, "connections": self.connections, "api": self.reqrep_api.as_str()})
            }
            Broadcast => {
                json!({"clients": self.clients, "messages": self.messages, "size": self.size})
            }
            Fps => {
                json!({"players": self.clients, "tick_rate": self.tick_rate, "duration_s": self.duration.as_secs_f64()})
            }
            Large => json!({"count": self.count, "size": self.size}),
            Handshake => json!({"count": self.count}),
            Scale => {
                json!({"count": self.count, "size": self.size, "in_flight": self.in_flight, "connections": self.connections, "serve_io_threads": self.serve_io_threads})
            }
            Memory => json!({"idle_connections": self.connections}),
            All => json!({}),
        }
    }
}

/// Named numbers, in a fixed order.
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub Vec<(String, f64)>);

impl Metrics {
    pub fn push(&mut self, k: &str, v: f64) {
        if let Some(e) = self.0.iter_mut().find(|e| e.0 == k) {
            e.1 = v;
        } else {
            self.0.push((k.to_string(), v));
        }
    }

    pub fn get(&self, k: &str) -> Option<f64> {
        self.0.iter().find(|e| e.0 == k).map(|e| e.1)
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.0 {
            m.insert(k.clone(), num(*v));
        }
        Value::Object(m)
    }

    /// Field-wise median of several runs (the keys of the first run).
    fn median_of(runs: &[Metrics]) -> Metrics {
        let mut out = Metrics::default();
        if let Some(first) = runs.first() {
            for (k, _) in &first.0 {
                let vals: Vec<f64> = runs.iter().filter_map(|r| r.get(k)).collect();
                out.push(k, stats::median(&vals));
            }
        }
        out
    }
}

fn num(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        let r = (v * 1e6).round() / 1e6;
        serde_json::Number::from_f64(if r == 0.0 && v != 0.0 { v } else { r })
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// What one run of a scenario produced.
pub struct Outcome {
    pub metrics: Metrics,
    /// Latency samples in ms (latency, reqrep), for percentiles and plots.
    pub samples_ms: Vec<f64>,
    /// Anything the reader should know (e.g. a reduced size).
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn new(metrics: Metrics) -> Outcome {
        Outcome {
            metrics,
            samples_ms: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Everything measured for one scenario.
pub struct Report {
    pub name: Scenario,
    pub params: Value,
    pub runs: Vec<Metrics>,
    pub result: Metrics,
    pub samples_ms: Vec<f64>,
    pub raw: Option<Metrics>,
    pub raw_samples: Vec<f64>,
    pub python: Option<Metrics>,
    pub python_cmd: Option<String>,
    /// Python's engine, version, core and CPU affinity, from its JSON.
    pub python_info: Option<Value>,
    /// The same scenario over TLS (`--against tls`).
    pub tls: Option<Metrics>,
    pub notes: Vec<String>,
}

/// A headline number and where to find it in each measurement.
pub struct Cmp {
    pub label: &'static str,
    pub ours: &'static str,
    pub raw: Option<&'static str>,
    pub py: Option<&'static str>,
    pub higher: bool,
    pub unit: &'static str,
}

const fn cmp(
    label: &'static str,
    ours: &'static str,
    raw: Option<&'static str>,
    py: Option<&'static str>,
    higher: bool,
    unit: &'static str,
) -> Cmp {
    Cmp {
        label,
        ours,
        raw,
        py,
        higher,
        unit,
    }
}

/// The headline comparisons of a scenario.
pub fn comparisons(s: Scenario) -> &'static [Cmp] {
    use Scenario::*;
    const LAT: &[Cmp] = &[
        cmp(
            "p50 round trip",
            "p50_ms",
            Some("p50_ms"),
            Some("p50_ms"),
            false,
            "ms",
        ),
        cmp(
            "p99 round trip",
            "p99_ms",
            Some("p99_ms"),
            Some("p99_ms"),
            false,
            "ms",
        ),
        cmp(
            "sequential pings",
            "throughput",
            Some("throughput"),
            Some("throughput"),
            true,
            "/s",
        ),
    ];
    const BURST: &[Cmp] = &[
        cmp(
            "delivered to handler",
            "delivery_rate",
            Some("throughput"),
            Some("delivery_rate"),
            true,
            "msg/s",
        ),
        cmp(
            "send rate",
            "send_throughput",
            None,
            Some("send_throughput"),
            true,
            "msg/s",
        ),
        cmp(
            "recv, Python's 50 ms poll",
            "recv_throughput",
            None,
            Some("recv_throughput"),
            true,
            "msg/s",
        ),
    ];
    const STRESS: &[Cmp] = &[
        // Python exports only its polled rate (`received ÷ (now − t0)` after a 50 ms poll), so
        // the exact rate has no Python figure; the polled row compares polled with polled.
        cmp(
            "received / elapsed",
            "throughput",
            Some("throughput"),
            None,
            true,
            "msg/s",
        ),
        cmp(
            "same, Python's 50 ms poll",
            "throughput_polled",
            None,
            Some("throughput"),
            true,
            "msg/s",
        ),
    ];
    const REQREP: &[Cmp] = &[
        cmp(
            "send_and_wait",
            "throughput",
            Some("throughput"),
            None,
            true,
            "req/s",
        ),
        cmp("p50 latency", "p50_ms", None, None, false, "ms"),
        cmp("p99 latency", "p99_ms", None, None, false, "ms"),
    ];
    const SCALE: &[Cmp] = &[
        cmp(
            "echo requests",
            "throughput",
            Some("throughput"),
            None,
            true,
            "req/s",
        ),
        cmp("p50 latency", "p50_ms", Some("p50_ms"), None, false, "ms"),
        cmp("p99 latency", "p99_ms", Some("p99_ms"), None, false, "ms"),
    ];
    const BCAST: &[Cmp] = &[cmp(
        "deliveries",
        "deliveries_per_s",
        Some("deliveries_per_s"),
        None,
        true,
        "/s",
    )];
    const FPS: &[Cmp] = &[
        cmp(
            "tick send work avg",
            "tick_avg_ms",
            None,
            Some("tick_avg_ms"),
            false,
            "ms",
        ),
        cmp(
            "tick send work max",
            "tick_max_ms",
            None,
            Some("tick_max_ms"),
            false,
            "ms",
        ),
        cmp(
            "delivered",
            "success_rate",
            None,
            Some("success_rate"),
            true,
            "%",
        ),
    ];
    const LARGE: &[Cmp] = &[cmp(
        "1 MiB messages",
        "mb_per_s",
        Some("mb_per_s"),
        None,
        true,
        "MiB/s",
    )];
    const HANDSHAKE: &[Cmp] = &[
        cmp(
            "connect+handshake+close",
            "throughput",
            None,
            None,
            true,
            "/s",
        ),
        cmp("p50 connect", "p50_ms", None, None, false, "ms"),
        cmp("p99 connect", "p99_ms", None, None, false, "ms"),
    ];
    const MEM: &[Cmp] = &[
        cmp(
            "RSS per conn at N",
            "per_conn_kb_at_n",
            None,
            None,
            false,
            "KiB",
        ),
        cmp(
            "RSS per client, first 10",
            "client_cost_avg_kb",
            None,
            Some("client_cost_avg_kb"),
            false,
            "KiB",
        ),
        cmp(
            "RSS per client, 10→50",
            "cost_10_50_kb",
            None,
            None,
            false,
            "KiB",
        ),
    ];
    match s {
        Latency => LAT,
        Burst => BURST,
        Stress => STRESS,
        Reqrep => REQREP,
        Scale => SCALE,
        Broadcast => BCAST,
        Fps => FPS,
        Large => LARGE,
        Handshake => HANDSHAKE,
        Memory => MEM,
        All => &[],
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress(len: u64, msg: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:24} [{bar:40.cyan/blue}] {pos}/{len} {elapsed}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.to_string());
    pb
}

/// 1234567 → "1.23M", 0.0312 → "0.0312".
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

pub fn run(args: Args) -> Res<()> {
    let opts = ServerOpts {
        workers: args.server_workers.max(1),
        mode: args.performance_mode,
        tls: args
            .internal_tls_cert
            .clone()
            .zip(args.internal_tls_key.clone()),
    };
    if args.internal_server {
        return server::child_main(&opts);
    }
    if let Some(files) = &args.compare {
        return compare(&files[0], &files[1]);
    }
    let mut list: Vec<Scenario> = Vec::new();
    for s in args.scenarios.iter().flat_map(|s| s.expand()) {
        if !list.contains(&s) {
            list.push(s);
        }
    }
    if list.is_empty() {
        return Err("no scenario given".into());
    }
    let want_raw = args.against.contains(&Against::Raw);
    let py = if args.against.contains(&Against::Python) {
        Some(python::find(args.python.as_deref()).ok_or(
            "--against python: Python Veltix 3.3.0 not found (run scripts/setup-python.sh or pass --python PATH)",
        )?)
    } else {
        None
    };
    // --against tls: one throwaway CA and server certificate for the whole run.
    let tls = if args.against.contains(&Against::Tls) {
        Some(tlsbench::TlsSetup::new()?)
    } else {
        None
    };
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for (i, s) in list.iter().copied().enumerate() {
        match run_scenario(&args, s, &opts, want_raw, py.as_deref(), tls.as_ref()) {
            Ok(mut r) => {
                if s == Scenario::Memory && args.in_process && (i > 0 || args.runs > 1) {
                    r.notes.push(
                        "in-process memory after other scenarios or runs: freed heap and cached thread stacks are reused, so per-client figures are understated; only a first run of `veltix bench memory --in-process` alone is reliable"
                            .into(),
                    );
                }
                print_details(&r);
                reports.push(r);
            }
            Err(e) => {
                eprintln!("veltix bench {}: failed: {e}", s.as_str());
                failed.push(format!("{}: {e}", s.as_str()));
            }
        }
    }
    print_summary(&reports);
    if let Some(path) = &args.json {
        let v = to_json(&args, &reports);
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")?;
        eprintln!("results written to {}", path.display());
    }
    if let Some(dir) = &args.plot {
        for f in plot::write_all(dir, &reports)? {
            eprintln!("plot written to {}", f.display());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} scenario(s) failed: {}", failed.len(), failed.join("; ")).into())
    }
}

/// Runs one scenario: warm-up, measured runs, raw baseline, Python; returns its report.
fn run_scenario(
    args: &Args,
    s: Scenario,
    opts: &ServerOpts,
    want_raw: bool,
    py: Option<&Path>,
    tls: Option<&tlsbench::TlsSetup>,
) -> Res<Report> {
    let runs = args.runs.max(1);
    let p = Params::resolve(args, s);
    eprintln!(
        "veltix bench {}: {} ({}), {} run(s)",
        s.as_str(),
        p.to_json(s),
        if args.in_process {
            "in-process"
        } else {
            "server in its own process"
        },
        runs
    );
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut raw_runs = Vec::new();
    let mut raw_samples = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut srv: Option<ServerProc> = None;
    for i in 0..(args.warmup + runs) {
        // Memory needs a fresh server process per run (its baseline is the idle server).
        if srv.is_none() || s == Scenario::Memory {
            drop(srv.take());
            srv = Some(ServerProc::spawn(args.in_process, opts)?);
        }
        let sp = srv.as_mut().ok_or("no server")?;
        if s == Scenario::Memory && i < args.warmup {
            continue;
        }
        let out = run_one(s, &p, sp)?;
        if i >= args.warmup {
            for n in &out.notes {
                if !notes.contains(n) {
                    notes.push(n.clone());
                }
            }
            outcomes.push(out);
            // scale is a comparison with raw TCP by definition: always side by side.
            if want_raw || s == Scenario::Scale {
                match run_raw(s, &p, sp) {
                    Some(Ok((m, samples))) => {
                        raw_runs.push(m);
                        raw_samples.extend(samples);
                    }
                    Some(Err(e)) => notes.push(format!("raw TCP run failed: {e}")),
                    None => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(srv);
    let mut tls_res = None;
    if let Some(t) = tls {
        eprintln!("veltix bench {}: running over TLS...", s.as_str());
        let topts = ServerOpts {
            tls: Some(t.server_files()),
            ..opts.clone()
        };
        let tp = Params {
            tls: Some(t.client()),
            raw_tls: Some(t.rustls_client()?),
            ..p.clone()
        };
        let mut tls_runs = Vec::new();
        let mut srv: Option<ServerProc> = None;
        for i in 0..(args.warmup + runs) {
            if srv.is_none() || s == Scenario::Memory {
                drop(srv.take());
                srv = Some(ServerProc::spawn(args.in_process, &topts)?);
            }
            let sp = srv.as_mut().ok_or("no server")?;
            if s == Scenario::Memory && i < args.warmup {
                continue;
            }
            let out = run_one(s, &tp, sp)?;
            if i >= args.warmup {
                tls_runs.push(out.metrics);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(srv);
        tls_res = Some(Metrics::median_of(&tls_runs));
    }
    let mut python_res = None;
    let mut python_cmd = None;
    let mut python_info = None;
    if let (Some(py), Some(_)) = (py, python::name(s)) {
        eprintln!(
            "veltix bench {}: running Python Veltix 3.3.0...",
            s.as_str()
        );
        match python::run(
            py,
            s,
            &p,
            runs,
            args.warmup,
            &args.python_core,
            !args.python_unpinned,
        ) {
            Ok((m, cmd, info)) => {
                python_res = Some(m);
                python_cmd = Some(cmd);
                python_info = Some(info);
            }
            Err(e) => notes.push(format!("Python run failed: {e}")),
        }
        if s == Scenario::Memory && !args.in_process {
            notes.push("Python's memory figures are per client *and* server in one process; ours here are the server process only (use --in-process for Python's definition)".into());
        }
    }
    let metrics: Vec<Metrics> = outcomes.iter().map(|o| o.metrics.clone()).collect();
    let samples_ms: Vec<f64> = outcomes.into_iter().flat_map(|o| o.samples_ms).collect();
    let mut result = Metrics::median_of(&metrics);
    let mut raw = (!raw_runs.is_empty()).then(|| Metrics::median_of(&raw_runs));
    if pool_percentiles(&mut result, &samples_ms) && runs > 1 {
        notes.push(POOLED_NOTE.into());
    }
    if let Some(r) = raw.as_mut() {
        pool_percentiles(r, &raw_samples);
    }
    Ok(Report {
        name: s,
        params: p.to_json(s),
        result,
        runs: metrics,
        samples_ms,
        raw,
        raw_samples,
        python: python_res,
        python_cmd,
        python_info,
        tls: tls_res,
        notes,
    })
}

/// The latency fields that are computed over all samples of all runs pooled together.
const POOLED: [&str; 9] = [
    "avg_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "min_ms", "max_ms", "stdev_ms",
];

const POOLED_NOTE: &str = "latency avg/percentiles/min/max/stdev pooled over the samples of all runs (Python Veltix's definition); the median of the per-run values is kept as <name>_median_of_runs; jitter and throughput are medians of per-run values";

/// Replaces the per-run medians of the [`POOLED`] latency fields by the same statistics over
/// all samples pooled (Python's definition: `benchmark/models.py` pools latency samples across
/// runs), keeping the median of the per-run values as `<name>_median_of_runs`. Returns whether
/// there were samples and fields to pool.
fn pool_percentiles(m: &mut Metrics, samples_ms: &[f64]) -> bool {
    if samples_ms.is_empty() || m.get("p50_ms").is_none() {
        return false;
    }
    let mut pooled = Metrics::default();
    stats::latency_summary(samples_ms, &mut pooled);
    for k in POOLED {
        if let (Some(per_run), Some(all)) = (m.get(k), pooled.get(k)) {
            m.push(&format!("{k}_median_of_runs"), per_run);
            m.push(k, all);
        }
    }
    true
}

fn run_one(s: Scenario, p: &Params, srv: &mut ServerProc) -> Res<Outcome> {
    match s {
        Scenario::Latency => scenarios::latency(p, srv),
        Scenario::Burst => scenarios::burst(p, srv),
        Scenario::Stress => scenarios::stress(p, srv),
        Scenario::Reqrep => scenarios::reqrep(p, srv),
        Scenario::Broadcast => scenarios::broadcast(p, srv),
        Scenario::Fps => scenarios::fps(p, srv),
        Scenario::Large => scenarios::large(p, srv),
        Scenario::Handshake => scenarios::handshake(p, srv),
        Scenario::Memory => memory::run(p, srv),
        Scenario::Scale => loadgen::run_veltix(
            p,
            p.server_workers,
            &format!("{:?}", p.mode).to_lowercase(),
            p.serve_io_threads,
        )
        .map_err(|e| -> Box<dyn std::error::Error> { e }),
        Scenario::All => Err("`all` is not a single scenario".into()),
    }
}

type Ratios = (
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

type RawOut = Result<(Metrics, Vec<f64>), String>;

fn run_raw(s: Scenario, p: &Params, srv: &ServerProc) -> Option<RawOut> {
    let port = srv.raw_port;
    let plain = |r: Result<Metrics, Box<dyn std::error::Error + Send + Sync>>| {
        r.map(|m| (m, Vec::new())).map_err(|e| e.to_string())
    };
    Some(match s {
        Scenario::Latency => raw::latency(port, p.count)
            .map(|(s, m)| (m, s))
            .map_err(|e| e.to_string()),
        Scenario::Burst => plain(raw::blast(port, 1, p.count as u64, p.size, false)),
        Scenario::Large => plain(raw::blast(port, 1, p.count as u64, p.size, false)),
        Scenario::Stress => plain(raw::blast(port, p.clients, p.messages as u64, p.size, true)),
        Scenario::Reqrep => plain(raw::reqrep(
            port,
            p.connections.max(1),
            p.in_flight.max(1),
            p.count as u64,
            p.size,
        )),
        Scenario::Broadcast => plain(raw::broadcast(port, p.clients, p.messages as u64, p.size)),
        Scenario::Scale => loadgen::run_raw(p, srv).map_err(|e| e.to_string()),
        _ => return None,
    })
}

/// (ours, raw, fraction of raw, python, speedup over Python) for one comparison; both > 1 mean "veltix-rs better".
fn ratios(r: &Report, c: &Cmp) -> Ratios {
    let ours = r.result.get(c.ours);
    let raw = c.raw.and_then(|k| r.raw.as_ref()?.get(k));
    let py = c.py.and_then(|k| r.python.as_ref()?.get(k));
    // Python's memory figures cover a client and the server in one process: only comparable
    // with --in-process.
    let comparable = !(r.name == Scenario::Memory && r.result.get("separate_process") == Some(1.0));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some(if c.higher { a / b } else { b / a }),
        _ => None,
    };
    let vs_py = if comparable { ratio(ours, py) } else { None };
    (ours, raw, ratio(ours, raw), py, vs_py)
}

fn print_details(r: &Report) {
    println!();
    println!("== {} {}", r.name.as_str(), r.params);
    let cols = 3;
    let items: Vec<String> = r
        .result
        .0
        .iter()
        .map(|(k, v)| format!("{k:<24} {:>12}", fmt_num(*v)))
        .collect();
    for row in items.chunks(cols) {
        println!("   {}", row.join("   "));
    }
    if let Some(raw) = &r.raw {
        let s: Vec<String> = raw
            .0
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt_num(*v)))
            .collect();
        println!("   raw TCP: {}", s.join(", "));
    }
    if let Some(cmd) = &r.python_cmd {
        println!("   python: {cmd}");
    }
    if let Some(tls) = &r.tls {
        let s: Vec<String> = tls
            .0
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt_num(*v)))
            .collect();
        println!("   TLS: {}", s.join(", "));
    }
    for n in &r.notes {
        println!("   note: {n}");
    }
}

fn print_summary(reports: &[Report]) {
    let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "-".into());
    let ratio = |v: Option<f64>| v.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into());
    println!();
    println!(
        "{:<10} {:<28} {:>7} {:>12} {:>12} {:>8} {:>12} {:>9}",
        "scenario", "metric", "unit", "veltix-rs", "raw TCP", "of raw", "python", "vs python"
    );
    println!("{}", "-".repeat(106));
    for r in reports {
        for c in comparisons(r.name) {
            let (ours, raw, fr, py, fp) = ratios(r, c);
            println!(
                "{:<10} {:<28} {:>7} {:>12} {:>12} {:>8} {:>12} {:>9}",
                r.name.as_str(),
                c.label,
                c.unit,
                opt(ours),
                opt(raw),
                ratio(fr),
                opt(py),
                ratio(fp)
            );
        }
    }
    println!("(\"of raw\" and \"vs python\": > 1 is better for veltix-rs; lower-is-better metrics are inverted)");
    if reports.iter().any(|r| r.tls.is_some()) {
        println!();
        println!(
            "{:<10} {:<28} {:>7} {:>12} {:>12} {:>12}",
            "scenario", "metric", "unit", "plaintext", "TLS", "TLS/plain"
        );
        println!("{}", "-".repeat(86));
        for r in reports {
            for c in comparisons(r.name) {
                let (plain, tls, frac) = tls_ratio(r, c);
                println!(
                    "{:<10} {:<28} {:>7} {:>12} {:>12} {:>12}",
                    r.name.as_str(),
                    c.label,
                    c.unit,
                    opt(plain),
                    opt(tls),
                    ratio(frac)
                );
            }
        }
        println!("(\"TLS/plain\": TLS as a fraction of plaintext, 1.00x = no cost; lower-is-better metrics are inverted)");
    }
}

/// (plaintext, TLS, TLS as a fraction of plaintext) for one comparison.
fn tls_ratio(r: &Report, c: &Cmp) -> (Option<f64>, Option<f64>, Option<f64>) {
    let plain = r.result.get(c.ours);
    let tls = r.tls.as_ref().and_then(|t| t.get(c.ours));
    let frac = match (plain, tls) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some(if c.higher { b / a } else { a / b }),
        _ => None,
    };
    (plain, tls, frac)
}

fn machine_info() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string());
    let mem_kb = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        });
    let load: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "mem_total_kb": mem_kb,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "load_avg": load,
    })
}

fn to_json(args: &Args, reports: &[Report]) -> Value {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let scenarios: Vec<Value> = reports
        .iter()
        .map(|r| {
            let cmps: Vec<Value> = comparisons(r.name)
                .iter()
                .map(|c| {
                    let (ours, raw, fr, py, fp) = ratios(r, c);
                    let o = |v: Option<f64>| v.map(num).unwrap_or(Value::Null);
                    let (_, tls, tls_frac) = tls_ratio(r, c);
                    json!({
                        "metric": c.ours, "label": c.label, "unit": c.unit, "higher_is_better": c.higher,
                        "veltix_rs": o(ours), "raw": o(raw), "fraction_of_raw": o(fr),
                        "python": o(py), "vs_python": o(fp),
                        "tls": o(tls), "tls_fraction_of_plaintext": o(tls_frac),
                    })
                })
                .collect();
            json!({
                "name": r.name.as_str(),
                "params": r.params,
                "results": r.result.to_json(),
                "runs": r.runs.iter().map(Metrics::to_json).collect::<Vec<_>>(),
                "raw": r.raw.as_ref().map(Metrics::to_json),
                "python": r.python.as_ref().map(Metrics::to_json),
                "python_command": r.python_cmd,
                "python_info": r.python_info,
                "tls": r.tls.as_ref().map(Metrics::to_json),
                "comparisons": cmps,
                "notes": r.notes,
            })
        })
        .collect();
    json!({
        "tool": "veltix bench",
        "veltix_rs_version": env!("CARGO_PKG_VERSION"),
        "timestamp_unix": ts,
        "machine": machine_info(),
        "settings": {
            "process_model": if args.in_process { "in-process" } else { "separate" },
            "runs": args.runs.max(1),
            "warmup": args.warmup,
            "performance_mode": format!("{:?}", args.performance_mode).to_lowercase(),
            "server_workers": args.server_workers,
            "client_workers": args.client_workers,
            "against": args.against.iter().map(|a| format!("{a:?}").to_lowercase()).collect::<Vec<_>>(),
            "python_core": args.python_core,
            "python_pinned": !args.python_unpinned,
        },
        "scenarios": scenarios,
    })
}

fn compare(a: &Path, b: &Path) -> Res<()> {
    let load = |p: &Path| -> Res<Value> {
        let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(serde_json::from_str(&t).map_err(|e| format!("{}: {e}", p.display()))?)
    };
    let (va, vb) = (load(a)?, load(b)?);
    let empty = Vec::new();
    let sa = va["scenarios"].as_array().unwrap_or(&empty);
    let sb = vb["scenarios"].as_array().unwrap_or(&empty);
    println!("A = {}\nB = {}", a.display(), b.display());
    println!(
        "{:<10} {:<26} {:>12} {:>12} {:>9}",
        "scenario", "metric", "A", "B", "B/A"
    );
    println!("{}", "-".repeat(73));
    let mut matched = 0;
    for x in sa {
        let name = x["name"].as_str().unwrap_or("?");
        let Some(y) = sb.iter().find(|y| y["name"].as_str() == Some(name)) else {
            println!("{name:<10} (only in A)");
            continue;
        };
        matched += 1;
        if x["params"] != y["params"] {
            println!(
                "{name:<10} note: parameters differ: A {} / B {}",
                x["params"], y["params"]
            );
        }
        let Some(ra) = x["results"].as_object() else {
            continue;
        };
        for (k, v) in ra {
            let (Some(av), Some(bv)) = (v.as_f64(), y["results"][k].as_f64()) else {
                continue;
            };
            let r = if av != 0.0 {
                format!("{:.3}", bv / av)
            } else {
                "-".into()
            };
            println!(
                "{name:<10} {k:<26} {:>12} {:>12} {:>9}",
                fmt_num(av),
                fmt_num(bv),
                r
            );
        }
    }
    for y in sb {
        let name = y["name"].as_str().unwrap_or("?");
        if !sa.iter().any(|x| x["name"].as_str() == Some(name)) {
            println!("{name:<10} (only in B)");
        }
    }
    if matched == 0 {
        return Err("no scenario in common".into());
    }
    Ok(())
}
