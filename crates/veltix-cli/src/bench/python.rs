//! `--against python`: runs Python Veltix 3.3.0's own benchmark module
//! (`python -m veltix.benchmark --only NAME --save FILE`) with the same parameters, pinned to one
//! CPU (its best configuration on a 2-core machine, BENCHMARKS.md §1), with its Rust engine
//! forced (`--engine rust`: the run fails if the compiled engine is missing), in the socket core
//! that is Python's best for that metric (`--python-core best`, see [`best_core`]), and reads
//! its JSON.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::scenarios::Res;
use super::{Metrics, Params, Scenario};

/// The Python interpreter of the project's virtualenv: `--python`, `$VELTIX_PYTHON`, or
/// `target/py/veltix-3.3.0/bin/python` found above the current directory or the executable.
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("VELTIX_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let rel = Path::new("py/veltix-3.3.0/bin/python");
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(|a| a.join("target")));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().map(Path::to_path_buf));
    }
    roots.into_iter().map(|r| r.join(rel)).find(|p| p.is_file())
}

/// Python's name for a scenario, if it has one.
pub fn name(s: Scenario) -> Option<&'static str> {
    match s {
        Scenario::Latency => Some("latency"),
        Scenario::Burst => Some("burst"),
        Scenario::Stress => Some("stress"),
        Scenario::Fps => Some("fps"),
        Scenario::Memory => Some("memory"),
        _ => None,
    }
}

/// Python Veltix's best socket core for scenario `s` on this machine, pinned to one CPU
/// (`shared/reference/BENCHMARKS.md` §1 and §6.5): threading for stress, burst and latency;
/// async for fps (per-tick send work 0.51 ms against 1.74 ms) and memory (42.8 KB per client
/// against 74.0 KB).
pub fn best_core(s: Scenario) -> &'static str {
    match s {
        Scenario::Fps | Scenario::Memory => "async",
        _ => "threading",
    }
}

/// What Python's JSON says about how it ran: engine, version, pinning, core.
pub type Info = serde_json::Value;

/// Runs the Python benchmark for `s` and returns its result fields (plus `delivery_rate` for
/// burst: count ÷ time of the last arrival, without the 50 ms polling).
pub fn run(
    py: &Path,
    s: Scenario,
    p: &Params,
    runs: usize,
    warmup: usize,
    core: &str,
    pin: bool,
) -> Res<(Metrics, String, Info)> {
    let name = name(s).ok_or("Python Veltix has no such benchmark")?;
    let core = if core == "best" { best_core(s) } else { core };
    let save = std::env::temp_dir().join(format!(
        "veltix-bench-py-{}-{name}.json",
        std::process::id()
    ));
    let mut args: Vec<String> = vec![
        "-m".into(),
        "veltix.benchmark".into(),
        "--only".into(),
        name.into(),
        "--socket-core".into(),
        core.into(),
        "--engine".into(),
        "rust".into(),
        "--runs".into(),
        runs.to_string(),
        "--warmup".into(),
        warmup.to_string(),
        "--save".into(),
        save.display().to_string(),
    ];
    match s {
        Scenario::Latency => args.extend(["--latency-iterations".into(), p.count.to_string()]),
        Scenario::Burst => args.extend([
            "--burst-count".into(),
            p.count.to_string(),
            "--burst-payload".into(),
            p.size.to_string(),
        ]),
        Scenario::Stress => args.extend([
            "--stress-clients".into(),
            p.clients.to_string(),
            "--stress-msgs".into(),
            p.messages.to_string(),
        ]),
        Scenario::Fps => args.extend([
            "--fps-players".into(),
            p.clients.to_string(),
            "--fps-tick-rate".into(),
            format!("{}", p.tick_rate.round() as u64),
            "--fps-duration".into(),
            format!("{}", p.duration.as_secs_f64()),
        ]),
        _ => {}
    }
    let taskset = pin && Command::new("taskset").arg("-V").output().is_ok();
    let (mut cmd, how) = if taskset {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(py);
        (c, "taskset -c 0")
    } else {
        let c = Command::new(py);
        if pin {
            args.extend(["--pin".into(), "1".into()]);
            (c, "--pin 1")
        } else {
            (c, "unpinned")
        }
    };
    let out = cmd.args(&args).env("PYTHONUNBUFFERED", "1").output()?;
    if !out.status.success() {
        let tail: String = String::from_utf8_lossy(&out.stderr)
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!("python benchmark failed ({}): {tail}", out.status).into());
    }
    let text = std::fs::read_to_string(&save)?;
    let _ = std::fs::remove_file(&save);
    let v: serde_json::Value = serde_json::from_str(&text)?;
    if v["engine"].as_str() != Some("rust") {
        return Err(format!("Python Veltix did not run its Rust engine: {}", v["engine"]).into());
    }
    let info = serde_json::json!({
        "engine": v["engine"],
        "veltix_version": v["veltix_version"],
        "socket_core": core,
        "affinity": v["harness"]["affinity"],
        "python": v["system"]["python_version"],
    });
    let obj = v["results"][name][0]
        .as_object()
        .ok_or("python benchmark JSON has no result for this scenario")?;
    let mut m = Metrics::default();
    for (k, val) in obj {
        if let Some(x) = val.as_f64() {
            m.push(k, x);
        }
    }
    if s == Scenario::Burst {
        if let (Some(c), Some(d)) = (m.get("count"), m.get("drain_max_ms")) {
            if d > 0.0 {
                m.push("delivery_rate", c / (d / 1e3));
            }
        }
    }
    let desc = format!("{how} python -m veltix.benchmark {}", args[2..].join(" "));
    Ok((m, desc, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_core_is_pythons_best_per_metric() {
        assert_eq!(best_core(Scenario::Fps), "async");
        assert_eq!(best_core(Scenario::Memory), "async");
        assert_eq!(best_core(Scenario::Stress), "threading");
        assert_eq!(best_core(Scenario::Latency), "threading");
        assert_eq!(best_core(Scenario::Burst), "threading");
    }
}
