//! `--plot DIR`: hand-written SVG (no dependency). A latency percentile plot per scenario with
//! latency samples (x: percentile on a "nines" scale, y: ms), and one bar chart of every
//! throughput on a log scale, veltix-rs next to raw TCP and Python Veltix.

use std::fmt::Write as _;
use std::path::Path;

use super::stats::percentile;
use super::{comparisons, fmt_num, Report};

const W: f64 = 860.0;
const COLORS: [&str; 3] = ["#1f77b4", "#7f7f7f", "#d62728"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(svg: &mut String, h: f64, title: &str) {
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" font-size="16" text-anchor="middle" font-weight="bold">{}</text>
"##,
        W / 2.0,
        esc(title)
    );
}

/// Writes every plot for `reports` into `dir`; returns the files written.
pub fn write_all(dir: &Path, reports: &[Report]) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for r in reports {
        if r.samples_ms.is_empty() {
            continue;
        }
        let f = dir.join(format!("{}-latency.svg", r.name.as_str()));
        std::fs::write(&f, latency_svg(r))?;
        files.push(f);
    }
    let bars = throughput_bars(reports);
    if !bars.is_empty() {
        let f = dir.join("throughput.svg");
        std::fs::write(&f, throughput_svg(&bars))?;
        files.push(f);
    }
    Ok(files)
}

/// The latency percentile distribution (HdrHistogram style).
pub fn latency_svg(r: &Report) -> String {
    let h = 480.0;
    let (l, rt, t, b) = (70.0, 30.0, 50.0, 70.0);
    let pw = W - l - rt;
    let ph = h - t - b;
    let mut series: Vec<(String, Vec<f64>)> = Vec::new();
    let mut ours = r.samples_ms.clone();
    ours.sort_by(f64::total_cmp);
    series.push(("veltix-rs".into(), ours));
    if !r.raw_samples.is_empty() {
        let mut raw = r.raw_samples.clone();
        raw.sort_by(f64::total_cmp);
        series.push(("raw TCP".into(), raw));
    }
    let n = series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(2);
    // x = -log10(1 - q), up to the last percentile the sample count supports (at most 99.999 %).
    let xmax = (n as f64).log10().clamp(1.0, 5.0);
    let mut ymax = 0.0f64;
    for (_, s) in &series {
        ymax = ymax.max(percentile(s, 100.0 * (1.0 - 10f64.powf(-xmax))));
    }
    let py: Vec<(&str, f64, f64)> = match &r.python {
        Some(p) => [
            ("p50", 50.0, "p50_ms"),
            ("p95", 95.0, "p95_ms"),
            ("p99", 99.0, "p99_ms"),
        ]
        .iter()
        .filter_map(|(lbl, q, k)| p.get(k).map(|v| (*lbl, *q, v)))
        .collect(),
        None => Vec::new(),
    };
    for (_, _, v) in &py {
        ymax = ymax.max(*v);
    }
    let mut ymin = f64::INFINITY;
    for (_, s) in &series {
        ymin = ymin.min(s.first().copied().unwrap_or(f64::INFINITY));
    }
    for (_, _, v) in &py {
        ymin = ymin.min(*v);
    }
    // Log scale: from the fastest sample to the slowest percentile shown, whole decades.
    let lo = ymin.max(1e-4).log10().floor();
    let hi = ymax.max(1e-4).log10().ceil().max(lo + 1.0);
    let xs = |x: f64| l + pw * x / xmax;
    let ys = |y: f64| t + ph * (1.0 - ((y.max(1e-9).log10() - lo) / (hi - lo)).clamp(0.0, 1.0));
    let mut svg = String::new();
    header(
        &mut svg,
        h,
        &format!("{}: round-trip latency by percentile", r.name.as_str()),
    );
    // Grid and axes.
    let mut e = lo;
    while e <= hi + 1e-9 {
        for m in [1.0, 2.0, 5.0] {
            let y = m * 10f64.powf(e);
            if y > 10f64.powf(hi) * 1.0001 {
                continue;
            }
            let (stroke, label) = if m == 1.0 {
                ("#bbb", trim(y))
            } else {
                ("#eee", String::new())
            };
            let _ = writeln!(
                svg,
                r##"<line x1="{l}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="{stroke}"/><text x="{2}" y="{3:.1}" text-anchor="end">{label}</text>"##,
                ys(y),
                l + pw,
                l - 6.0,
                ys(y) + 4.0,
            );
        }
        e += 1.0;
    }
    for (x, lbl) in [
        (0.0, "0%"),
        (std::f64::consts::LOG10_2, "50%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        if x > xmax + 1e-9 {
            continue;
        }
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{t}" x2="{0:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{lbl}</text>"##,
            xs(x),
            t + ph,
            t + ph + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{0}" y="{1}" text-anchor="middle">percentile (log scale of 1/(1−p))</text>
<text x="18" y="{2}" text-anchor="middle" transform="rotate(-90 18 {2})">round trip (ms, log scale)</text>"##,
        l + pw / 2.0,
        h - 28.0,
        t + ph / 2.0
    );
    for (i, (name, s)) in series.iter().enumerate() {
        let mut pts = String::new();
        let steps = 300;
        for k in 0..=steps {
            let x = xmax * k as f64 / steps as f64;
            let q = 100.0 * (1.0 - 10f64.powf(-x));
            let _ = write!(pts, "{:.1},{:.1} ", xs(x), ys(percentile(s, q)));
        }
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"##,
            COLORS[i % 3],
            pts.trim_end()
        );
        let p50 = percentile(s, 50.0);
        let p99 = percentile(s, 99.0);
        legend(
            &mut svg,
            i,
            &format!(
                "{name}: p50 {} ms, p99 {} ms ({} samples, all runs pooled)",
                trim(p50),
                trim(p99),
                s.len()
            ),
            l,
            t,
        );
    }
    if !py.is_empty() {
        let i = series.len();
        for (lbl, q, v) in &py {
            let x = -(1.0 - q / 100.0f64).log10();
            let _ = writeln!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{}"/><text x="{:.1}" y="{:.1}" fill="{}">{lbl}</text>"##,
                xs(x),
                ys(*v),
                COLORS[2],
                xs(x) + 7.0,
                ys(*v) - 6.0,
                COLORS[2]
            );
        }
        let p50 = py.iter().find(|x| x.0 == "p50").map(|x| x.2).unwrap_or(0.0);
        legend(
            &mut svg,
            i,
            &format!("Python Veltix 3.3.0 (its own bench): p50 {} ms", trim(p50)),
            l,
            t,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn legend(svg: &mut String, i: usize, text: &str, l: f64, t: f64) {
    let y = t + 16.0 + 18.0 * i as f64;
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
        l + 12.0,
        y - 4.0,
        COLORS[i % 3],
        l + 32.0,
        y + 1.0,
        esc(text)
    );
}

/// One group of bars: label, unit, and up to three (series, value).
pub struct BarGroup {
    label: String,
    unit: String,
    values: [Option<f64>; 3],
}

fn throughput_bars(reports: &[Report]) -> Vec<BarGroup> {
    let mut out = Vec::new();
    for r in reports {
        for c in comparisons(r.name) {
            if !c.higher || c.unit == "%" {
                continue;
            }
            let ours = r.result.get(c.ours);
            let raw = c.raw.and_then(|k| r.raw.as_ref()?.get(k));
            let py = c.py.and_then(|k| r.python.as_ref()?.get(k));
            if ours.is_none() {
                continue;
            }
            out.push(BarGroup {
                label: format!("{}: {}", r.name.as_str(), c.label),
                unit: c.unit.to_string(),
                values: [ours, raw, py],
            });
        }
    }
    out
}

/// Horizontal grouped bars on a log scale (values span several orders of magnitude).
pub fn throughput_svg(groups: &[BarGroup]) -> String {
    let bar = 16.0;
    let gap = 14.0;
    let group_h = 3.0 * bar + gap;
    let (l, rt, t, b) = (300.0, 110.0, 100.0, 50.0);
    let h = t + b + group_h * groups.len() as f64;
    let pw = W - l - rt;
    let vals: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let lo = vals
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1e-9)
        .log10()
        .floor();
    let hi = vals
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .max(1e-9)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let xs = |v: f64| l + pw * ((v.max(1e-12).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
    let mut svg = String::new();
    header(
        &mut svg,
        h,
        "Throughput (log scale): veltix-rs vs raw TCP vs Python Veltix 3.3.0",
    );
    let names = [
        "veltix-rs",
        "raw TCP (same bytes, no framework)",
        "Python Veltix 3.3.0 (pinned, its own bench)",
    ];
    for (i, n) in names.iter().enumerate() {
        let y = 40.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r##"<rect x="{l}" y="{y:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            COLORS[i],
            l + 18.0,
            y + 10.0,
            esc(n)
        );
    }
    let mut e = lo;
    while e <= hi + 1e-9 {
        let x = xs(10f64.powf(e));
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            h - b,
            h - b + 16.0,
            fmt_num(10f64.powf(e))
        );
        e += 1.0;
    }
    for (gi, g) in groups.iter().enumerate() {
        let y0 = t + group_h * gi as f64;
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            l - 8.0,
            y0 + 1.5 * bar + 4.0,
            esc(&format!("{} ({})", g.label, g.unit))
        );
        for (si, v) in g.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let y = y0 + bar * si as f64;
            let x1 = xs(*v);
            let _ = writeln!(
                svg,
                r##"<rect x="{l}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
                (x1 - l).max(1.0),
                bar - 2.0,
                COLORS[si],
                x1 + 4.0,
                y + bar - 5.0,
                fmt_num(*v)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn trim(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
