//! `veltix bench`: every scenario at a tiny size through the built binary, with `--json`, and
//! sanity checks on what it wrote (exact delivery counts, positive rates, ordered percentiles).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "veltix-bench-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn run(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veltix"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run veltix");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "veltix bench {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Runs a scenario with `--json` and returns its one scenario object (and the whole file).
fn bench(args: &[&str]) -> (Value, Value) {
    let dir = tmp(args[0]);
    let json = dir.join("out.json");
    let json_s = json.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--warmup", "0", "--json", &json_s]);
    let (stdout, _) = run(&all);
    assert!(stdout.contains("veltix-rs"), "no summary table:\n{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
        .expect("valid json");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(v["tool"], "veltix bench");
    assert!(
        v["machine"]["cpus"].as_u64().unwrap_or(0) >= 1,
        "machine info: {}",
        v["machine"]
    );
    let s = v["scenarios"][0].clone();
    assert_eq!(s["name"], args[0]);
    (s, v)
}

fn f(v: &Value, k: &str) -> f64 {
    v["results"][k]
        .as_f64()
        .unwrap_or_else(|| panic!("missing numeric results.{k} in {}", v["results"]))
}

fn positive(v: &Value, keys: &[&str]) {
    for k in keys {
        assert!(f(v, k) > 0.0, "{k} should be > 0: {}", v["results"]);
    }
}

fn ordered(v: &Value, keys: &[&str]) {
    for w in keys.windows(2) {
        assert!(
            f(v, w[0]) <= f(v, w[1]),
            "{} > {}: {}",
            w[0],
            w[1],
            v["results"]
        );
    }
}

#[test]
fn latency_with_raw_baseline_and_plot() {
    let dir = tmp("plot");
    let plot = dir.display().to_string();
    let (s, _) = bench(&[
        "latency",
        "--count",
        "200",
        "--against",
        "raw",
        "--plot",
        &plot,
    ]);
    assert_eq!(s["params"]["count"], 200);
    assert_eq!(f(&s, "count"), 200.0);
    assert_eq!(f(&s, "failures"), 0.0);
    positive(&s, &["throughput", "p50_ms"]);
    ordered(&s, &["min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"]);
    let raw = &s["raw"];
    assert!(raw["p50_ms"].as_f64().unwrap_or(0.0) > 0.0, "raw: {raw}");
    assert!(raw["p50_ms"].as_f64() <= raw["p99_ms"].as_f64());
    let c = &s["comparisons"][0];
    assert_eq!(c["metric"], "p50_ms");
    assert!(
        c["fraction_of_raw"].as_f64().unwrap_or(0.0) > 0.0,
        "comparison: {c}"
    );
    let svg = std::fs::read_to_string(dir.join("latency-latency.svg")).expect("latency plot");
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let bars = std::fs::read_to_string(dir.join("throughput.svg")).expect("throughput plot");
    assert!(bars.contains("<rect"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn burst_delivers_every_message() {
    let (s, _) = bench(&["burst", "--count", "2000", "--against", "raw"]);
    assert_eq!(f(&s, "count"), 2000.0);
    assert_eq!(f(&s, "received"), 2000.0);
    assert_eq!(f(&s, "success_rate"), 100.0);
    assert_eq!(f(&s, "payload_bytes"), 64.0);
    positive(
        &s,
        &[
            "send_throughput",
            "delivery_rate",
            "recv_throughput",
            "drain_max_ms",
        ],
    );
    ordered(
        &s,
        &[
            "drain_p50_ms",
            "drain_p95_ms",
            "drain_p99_ms",
            "drain_max_ms",
        ],
    );
    // Python's polled figure can only be lower than the real delivery rate.
    assert!(f(&s, "recv_throughput") <= f(&s, "delivery_rate") * 1.0001);
    assert!(s["raw"]["throughput"].as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn stress_counts_exactly() {
    let (s, _) = bench(&[
        "stress",
        "--clients",
        "5",
        "--messages",
        "50",
        "--runs",
        "2",
        "--against",
        "raw",
    ]);
    assert_eq!(f(&s, "total_sent"), 250.0);
    assert_eq!(f(&s, "total_recv"), 250.0);
    assert_eq!(s["runs"].as_array().map(Vec::len), Some(2));
    positive(
        &s,
        &["throughput", "per_client_tps_avg", "time_to_first_recv_ms"],
    );
    assert!(s["raw"]["throughput"].as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn reqrep_in_flight() {
    let (s, _) = bench(&[
        "reqrep",
        "--count",
        "500",
        "--in-flight",
        "4",
        "--against",
        "raw",
    ]);
    assert_eq!(f(&s, "requests"), 500.0);
    assert_eq!(f(&s, "ok"), 500.0);
    assert_eq!(f(&s, "in_flight"), 4.0);
    positive(&s, &["throughput"]);
    ordered(&s, &["min_ms", "p50_ms", "p99_ms", "max_ms"]);
    assert!(s["raw"]["throughput"].as_f64().unwrap_or(0.0) > 0.0);
    // Across several connections, in one process (Python's process model).
    let (s, _) = bench(&[
        "reqrep",
        "--count",
        "400",
        "--in-flight",
        "2",
        "--connections",
        "2",
        "--in-process",
    ]);
    assert_eq!(f(&s, "ok"), 400.0);
    assert_eq!(f(&s, "connections"), 2.0);
}

#[test]
fn scale_runs_veltix_serve_and_raw_tcp_side_by_side() {
    let (s, _) = bench(&[
        "scale",
        "--count",
        "2000",
        "--connections",
        "4",
        "--in-flight",
        "4",
        "--runs",
        "2",
    ]);
    assert_eq!(s["params"]["connections"], 4);
    assert_eq!(s["params"]["in_flight"], 4);
    // Every request answered, on both servers, by the same load generator.
    assert_eq!(f(&s, "replies"), 2000.0);
    assert_eq!(
        s["raw"]["replies"].as_f64(),
        Some(2000.0),
        "raw: {}",
        s["raw"]
    );
    positive(&s, &["throughput", "p50_ms", "p99_ms"]);
    ordered(&s, &["min_ms", "p50_ms", "p99_ms", "max_ms"]);
    // Percentiles pooled over both runs, the per-run median kept beside them.
    positive(&s, &["p50_ms_median_of_runs", "p99_ms_median_of_runs"]);
    let c = &s["comparisons"][0];
    assert_eq!(c["metric"], "throughput");
    assert!(c["raw"].as_f64().unwrap_or(0.0) > 0.0, "comparison: {c}");
    assert!(
        c["fraction_of_raw"].as_f64().unwrap_or(0.0) > 0.0,
        "comparison: {c}"
    );
}

#[test]
fn broadcast_reaches_every_client() {
    let (s, _) = bench(&[
        "broadcast",
        "--clients",
        "3",
        "--messages",
        "100",
        "--against",
        "raw",
    ]);
    assert_eq!(f(&s, "deliveries_expected"), 300.0);
    assert_eq!(f(&s, "deliveries"), 300.0);
    assert_eq!(f(&s, "queued"), 300.0);
    positive(&s, &["deliveries_per_s", "broadcast_calls_per_s"]);
    assert!(s["raw"]["deliveries_per_s"].as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn fps_ticks() {
    let (s, _) = bench(&["fps", "--players", "4", "--duration", "0.5"]);
    let sent = f(&s, "total_sent");
    assert!(sent >= 4.0, "{}", s["results"]);
    assert_eq!(f(&s, "total_recv"), sent);
    assert_eq!(f(&s, "errors"), 0.0);
    positive(&s, &["actual_tick_rate", "msg_per_sec", "tick_avg_ms"]);
    ordered(&s, &["tick_min_ms", "tick_avg_ms", "tick_max_ms"]);
}

#[test]
fn large_messages() {
    let (s, _) = bench(&[
        "large",
        "--count",
        "5",
        "--size",
        "262144",
        "--against",
        "raw",
    ]);
    assert_eq!(f(&s, "received"), 5.0);
    positive(&s, &["mb_per_s"]);
    assert!(s["raw"]["mb_per_s"].as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn memory_per_connection() {
    let (s, _) = bench(&["memory", "--idle-connections", "50"]);
    assert_eq!(f(&s, "connections"), 50.0);
    assert_eq!(f(&s, "connected"), 50.0);
    assert_eq!(f(&s, "separate_process"), 1.0);
    positive(
        &s,
        &["baseline_kb", "ram_50_clients_kb", "per_conn_kb_at_n"],
    );
    // Sanity: a connection costs something, and not megabytes.
    assert!(f(&s, "per_conn_kb_at_n") < 1024.0, "{}", s["results"]);
}

#[test]
fn compare_two_files() {
    let dir = tmp("compare");
    let a = dir.join("a.json");
    let b = dir.join("b.json");
    for p in [&a, &b] {
        run(&[
            "latency",
            "--count",
            "100",
            "--warmup",
            "0",
            "--json",
            &p.display().to_string(),
        ]);
    }
    let (stdout, _) = run(&[
        "--compare",
        &a.display().to_string(),
        &b.display().to_string(),
    ]);
    assert!(
        stdout.contains("p50_ms") && stdout.contains("B/A"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py/veltix-3.3.0/bin/python");
    p.is_file().then_some(p)
}

#[test]
fn latency_against_python() {
    let Some(py) = python() else {
        eprintln!("skipped: Python Veltix 3.3.0 not installed (scripts/setup-python.sh)");
        return;
    };
    let py = py.display().to_string();
    let (s, _) = bench(&[
        "latency",
        "--count",
        "300",
        "--against",
        "python",
        "--python",
        &py,
    ]);
    let p = &s["python"];
    assert_eq!(p["count"].as_f64(), Some(300.0), "python results: {p}");
    assert!(p["p50_ms"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(s["python_command"]
        .as_str()
        .unwrap_or("")
        .contains("--latency-iterations 300"));
    // Python's engine is forced to its Rust one and recorded; latency runs its best core.
    assert!(s["python_command"]
        .as_str()
        .unwrap_or("")
        .contains("--engine rust"));
    assert_eq!(s["python_info"]["engine"], "rust", "{}", s["python_info"]);
    assert_eq!(s["python_info"]["socket_core"], "threading");
    let c = &s["comparisons"][0];
    assert!(
        c["vs_python"].as_f64().unwrap_or(0.0) > 0.0,
        "comparison: {c}"
    );
}

#[test]
fn against_tls_runs_the_same_scenario_over_tls() {
    let (s, v) = bench(&["burst", "--count", "2000", "--against", "tls"]);
    assert_eq!(f(&s, "received"), 2000.0);
    assert_eq!(s["tls"]["received"].as_f64(), Some(2000.0), "{}", s["tls"]);
    assert_eq!(s["tls"]["success_rate"].as_f64(), Some(100.0));
    let cmp = &s["comparisons"][0];
    assert!(cmp["tls"].as_f64().is_some_and(|x| x > 0.0), "{cmp}");
    assert!(cmp["tls_fraction_of_plaintext"]
        .as_f64()
        .is_some_and(|x| x > 0.0));
    assert_eq!(v["settings"]["against"][0], "tls");
    let (s, _) = bench(&["handshake", "--count", "50", "--against", "tls"]);
    assert_eq!(f(&s, "count"), 50.0);
    assert_eq!(f(&s, "failures"), 0.0);
    assert_eq!(s["tls"]["count"].as_f64(), Some(50.0));
    assert_eq!(s["tls"]["failures"].as_f64(), Some(0.0));
    positive(&s, &["throughput", "p50_ms"]);
    // Memory per TLS connection: raw TLS connections held open.
    let (s, _) = bench(&["memory", "--idle-connections", "60", "--against", "tls"]);
    assert_eq!(s["tls"]["connections"].as_f64(), Some(60.0), "{}", s["tls"]);
}
