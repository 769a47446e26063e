//! Pictures of a run: one self-contained HTML page (inline SVG
//! and a few lines of script, nothing fetched) with a lane per node on
//! simulated time, each message an arrow coloured by kind, lost and
//! blocked ones cut short where they died, faults shaded, closes and
//! rollbacks marked and the violation highlighted; a per-round strip of
//! the whole run above it. Also a ShiViz log (vector clocks).

use crate::runner::Report;
use crate::scenario::Scenario;
use crate::world::log::{self, Fate, Log, MarkKind};
use anyhow::Context;
use std::fmt::Write;
use std::path::Path;

/// Arrows drawn at most; the page says how many more the window had.
const MAX_ARROWS: usize = 20_000;
const LEFT: f64 = 70.0;
const LANE: f64 = 56.0;
const WIDTH: f64 = 1400.0;

/// The window a page opens on: around the first violation that has a
/// time (four rounds before it, one after), else the last five rounds.
pub fn default_window(report: &Report, roundtime: u64, end: u64) -> (u64, u64) {
    match report.violations.iter().find_map(|v| v.at_ms) {
        Some(t) => (t.saturating_sub(4 * roundtime), (t + roundtime).min(end)),
        None => (end.saturating_sub(5 * roundtime), end),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A hue from the hash in a close's text ("closed seq N HHHHHHHH ...").
fn hash_hue(text: &str) -> u32 {
    let h = text.split_whitespace().nth(3).unwrap_or("");
    u32::from_str_radix(h.get(..4).unwrap_or("0"), 16).unwrap_or(0) % 360
}

fn colour(kind: &str) -> &'static str {
    match kind {
        "s0" => "#9ecae1",
        "s1" => "#4292c6",
        "s2" => "#2171b5",
        "s3" => "#08306b",
        "history" => "#f16913",
        "bodies" => "#807dba",
        "state" => "#8c6d31",
        "npl" => "#1b9e77",
        _ => "#999999",
    }
}

/// The page. `lanes` is the number of node slots (a twin's second copy is
/// the last), `roundtime` sizes the per-round strip.
pub fn html(
    log: &Log,
    report: &Report,
    lanes: usize,
    roundtime: u64,
    window: (u64, u64),
) -> String {
    let (a, b) = (window.0, window.1.max(window.0 + 1));
    let x = |t: u64| LEFT + (t.saturating_sub(a)) as f64 * WIDTH / (b - a) as f64;
    let y = |n: usize| 30.0 + n as f64 * LANE;
    let height = y(lanes) + 10.0;
    let mut svg = String::new();
    let w = LEFT + WIDTH + 20.0;
    let _ = write!(
        svg,
        r#"<svg id="lanes" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}">"#
    );
    svg.push_str(r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="5" markerHeight="5" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="context-stroke"/></marker></defs>"#);
    // Faults: a band across the window from each to the next heal (or
    // restart/resume of the same node), labelled.
    for (i, m) in log.marks.iter().enumerate() {
        if m.kind != MarkKind::Fault || m.t > b {
            continue;
        }
        let ends = |e: &&log::Mark| {
            e.kind == MarkKind::Fault
                && e.t >= m.t
                && (e.text.starts_with("heal")
                    || (m.node.is_some()
                        && e.node == m.node
                        && (e.text.starts_with("restart") || e.text.starts_with("resume"))))
        };
        let long = ["partition", "block", "crash", "pause"]
            .iter()
            .any(|k| m.text.starts_with(k));
        let end = if let Some(until) = m.until {
            until
        } else if long {
            log.marks[i + 1..].iter().find(ends).map_or(b, |e| e.t)
        } else {
            m.t
        };
        if end < a {
            continue;
        }
        let (y0, y1) = match m.node {
            Some(n) => (y(n) - LANE / 2.0 + 4.0, y(n) + LANE / 2.0 - 4.0),
            None => (10.0, height - 5.0),
        };
        let x0 = x(m.t.max(a));
        let x1 = x(end.min(b)).max(x0 + 2.0);
        let _ = write!(
            svg,
            r##"<rect class="fault" x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="#fdd0a2" fill-opacity="0.45"><title>{} at {}ms</title></rect>"##,
            x1 - x0,
            y1 - y0,
            esc(&m.text),
            m.t
        );
    }
    for n in 0..lanes {
        let _ = write!(
            svg,
            r##"<line class="lane" x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#444" stroke-width="1"/><text x="8" y="{2:.1}" font-size="13" font-family="monospace">node {n}</text>"##,
            y(n),
            LEFT + WIDTH,
            y(n) + 4.0
        );
    }
    let mut drawn = 0;
    let mut skipped = 0;
    for m in &log.msgs {
        let arrives = match m.fate {
            Fate::Delivered(t) | Fate::Blocked(t) | Fate::Dead(t) => t,
            Fate::Lost | Fate::InFlight => m.sent,
        };
        if arrives < a || m.sent > b {
            continue;
        }
        if drawn >= MAX_ARROWS {
            skipped += 1;
            continue;
        }
        drawn += 1;
        let (x0, y0) = (x(m.sent), y(m.from));
        let c = colour(m.kind);
        let title = esc(&format!(
            "{} -> {} at {}ms: {} [{:?}]",
            m.from, m.to, m.sent, m.detail, m.fate
        ));
        match m.fate {
            Fate::Delivered(t) => {
                let _ = write!(
                    svg,
                    r#"<line class="msg {}" x1="{x0:.1}" y1="{y0:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="1" marker-end="url(#arrow)"><title>{title}</title></line>"#,
                    m.kind,
                    x(t),
                    y(m.to)
                );
            }
            _ => {
                // Cut short halfway, where it died.
                let t = arrives.max(m.sent + (b - a) / 100);
                let (x1, y1) = ((x0 + x(t)) / 2.0, (y0 + y(m.to)) / 2.0);
                let _ = write!(
                    svg,
                    r##"<line class="msg dead {}" x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y1:.1}" stroke="{c}" stroke-width="1" stroke-dasharray="3 2"><title>{title}</title></line><text x="{:.1}" y="{:.1}" font-size="10" fill="#d62728">x</text>"##,
                    m.kind,
                    x1 - 3.0,
                    y1 + 3.0
                );
            }
        }
    }
    for m in &log.marks {
        let (Some(n), true) = (m.node, (a..=b).contains(&m.t)) else {
            continue;
        };
        let hue;
        let (shape, fill) = match m.kind {
            // Coloured by the ledger's hash: a fork shows as two colours
            // at one seq.
            MarkKind::Close => {
                hue = format!("hsl({}, 70%, 40%)", hash_hue(&m.text));
                ("circle", hue.as_str())
            }
            MarkKind::Rollback => ("rollback", "#d62728"),
            MarkKind::Note => ("circle", "#ff7f0e"),
            MarkKind::Fault => ("circle", "#8c564b"),
        };
        let (cx, cy) = (x(m.t), y(n));
        let title = esc(&format!("node {n} at {}ms: {}", m.t, m.text));
        if shape == "rollback" {
            let _ = write!(
                svg,
                r#"<path class="mark rollback" d="M {cx:.1} {:.1} l 6 10 l -12 0 z" fill="{fill}"><title>{title}</title></path>"#,
                cy - 5.0
            );
        } else {
            let _ = write!(
                svg,
                r#"<circle class="mark {:?}" cx="{cx:.1}" cy="{cy:.1}" r="4" fill="{fill}"><title>{title}</title></circle>"#,
                m.kind
            );
        }
        if m.kind == MarkKind::Close {
            let seq = m.text.split_whitespace().nth(2).unwrap_or("");
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="9" fill="{fill}">{seq}</text>"#,
                cx + 3.0,
                cy - 6.0
            );
        }
    }
    for v in &report.violations {
        let Some(t) = v.at_ms else {
            continue;
        };
        if !(a..=b).contains(&t) {
            continue;
        }
        let _ = write!(
            svg,
            r##"<line class="violation" x1="{0:.1}" y1="5" x2="{0:.1}" y2="{height:.1}" stroke="#d62728" stroke-width="2"><title>{1}</title></line>"##,
            x(t),
            esc(&v.to_string())
        );
    }
    svg.push_str("</svg>");
    let strip = rounds_strip(log, report, lanes, roundtime, (a, b));
    page(report, &svg, &strip, (a, b), drawn, skipped)
}

/// The whole run, a column per round and a row per node: green where the
/// node closed a ledger, red where it rolled back, orange where messages
/// to or from it died; the window outlined.
fn rounds_strip(
    log: &Log,
    report: &Report,
    lanes: usize,
    roundtime: u64,
    (a, b): (u64, u64),
) -> String {
    let rounds = (report.simulated_ms / roundtime.max(1) + 1) as usize;
    let cell = (WIDTH / rounds as f64).clamp(1.0, 12.0);
    let mut grid = vec![vec![(0u32, 0u32, 0u32); rounds]; lanes];
    let at = |t: u64| ((t / roundtime.max(1)) as usize).min(rounds - 1);
    for m in &log.marks {
        if let Some(n) = m.node.filter(|n| *n < lanes) {
            match m.kind {
                MarkKind::Close => grid[n][at(m.t)].0 += 1,
                MarkKind::Rollback => grid[n][at(m.t)].1 += 1,
                _ => {}
            }
        }
    }
    for m in &log.msgs {
        if !matches!(m.fate, Fate::Delivered(_) | Fate::InFlight) && m.from < lanes {
            grid[m.from][at(m.sent)].2 += 1;
        }
    }
    let h = lanes as f64 * 8.0 + 10.0;
    let mut s = format!(
        r#"<svg id="rounds" xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}">"#,
        LEFT + rounds as f64 * cell + 10.0
    );
    for (n, row) in grid.iter().enumerate() {
        for (r, &(closes, rollbacks, died)) in row.iter().enumerate() {
            let fill = match (closes, rollbacks, died) {
                (_, 1.., _) => "#d62728",
                (1.., _, 0) => "#74c476",
                (1.., _, _) => "#c7e9c0",
                (0, 0, 1..) => "#fdae6b",
                _ => "#f0f0f0",
            };
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="7" fill="{fill}"><title>node {n}, round {r}: {closes} closes, {rollbacks} rollbacks, {died} messages lost or blocked</title></rect>"#,
                LEFT + r as f64 * cell,
                n as f64 * 8.0,
                cell.max(1.0) - 0.5
            );
        }
    }
    let _ = write!(
        s,
        r##"<rect x="{:.1}" y="0" width="{:.1}" height="{:.1}" fill="none" stroke="#000" stroke-width="1.5"/></svg>"##,
        LEFT + a as f64 / roundtime.max(1) as f64 * cell,
        ((b - a) as f64 / roundtime.max(1) as f64 * cell).max(2.0),
        lanes as f64 * 8.0
    );
    s
}

fn page(
    report: &Report,
    svg: &str,
    strip: &str,
    (a, b): (u64, u64),
    drawn: usize,
    skipped: usize,
) -> String {
    let mut violations: String = report
        .violations
        .iter()
        .take(5)
        .map(|v| format!("<li>{}</li>", esc(&v.to_string())))
        .collect();
    if report.violations.len() > 5 {
        let _ = write!(
            violations,
            "<li>... {} in all</li>",
            report.violations.len()
        );
    }
    let legend: String = ["s0", "s1", "s2", "s3", "history", "bodies", "state", "npl"]
        .iter()
        .map(|k| format!(r#"<span style="color:{}">&#9632; {k}</span> "#, colour(k)))
        .collect();
    let more = if skipped > 0 {
        format!(" ({skipped} more not drawn)")
    } else {
        String::new()
    };
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{name} seed {seed}</title>
<style>body{{font-family:sans-serif;margin:12px}} #view{{overflow:auto;border:1px solid #ccc}} li{{font-family:monospace;font-size:12px}}</style>
</head><body>
<h3>{name}, seed {seed}: {verdict}</h3>
<ul>{violations}</ul>
<div>Whole run, a column per round (green: closed, red: rolled back, orange: messages lost or blocked; the box is the window below)</div>
{strip}
<div>Window {a}..{b} ms: {drawn} messages{more}. Proposals by stage s0..s3, {legend}; dashed with x: lost or blocked; circles: closes (coloured by ledger hash, labelled by seq), notes (orange); triangles: rollbacks; shaded: faults; red line: violation. Hover for content.
Zoom <input id="zoom" type="range" min="0.5" max="8" step="0.5" value="1"></div>
<div id="view">{svg}</div>
<script>
const svg = document.getElementById('lanes');
const w = svg.getAttribute('width');
document.getElementById('zoom').addEventListener('input', e => {{
  svg.setAttribute('width', w * e.target.value);
}});
</script>
</body></html>
"#,
        name = esc(&report.scenario),
        seed = report.seed,
        verdict = if report.passed { "passed" } else { "FAILED" },
    )
}

/// Writes the run's picture and ShiViz log where asked.
pub fn write(
    s: &Scenario,
    report: &Report,
    picture: Option<&Path>,
    window: Option<&str>,
    shiviz_out: Option<&Path>,
) -> anyhow::Result<()> {
    let Some(log) = &report.log else {
        return Ok(());
    };
    let lanes = log
        .msgs
        .iter()
        .map(|m| m.from.max(m.to) + 1)
        .chain(log.marks.iter().filter_map(|m| m.node.map(|n| n + 1)))
        .fold(s.nodes, usize::max);
    let roundtime = s.consensus.roundtime_ms;
    if let Some(path) = picture {
        let window = match window {
            Some(w) => {
                let r = crate::fuzz::parse_seeds(w)
                    .map_err(|_| anyhow::anyhow!("expected --window FROM..TO in ms, got {w:?}"))?;
                (r.start, r.end)
            }
            None => default_window(report, roundtime, report.simulated_ms),
        };
        let page = html(log, report, lanes, roundtime, window);
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "picture: {} (window {}..{} ms)",
            path.display(),
            window.0,
            window.1
        );
    }
    if let Some(path) = shiviz_out {
        std::fs::write(path, shiviz(log, lanes))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("shiviz log: {}", path.display());
    }
    Ok(())
}

/// The run as a ShiViz log: each send and receive with the node's vector
/// clock. Parse it in ShiViz with `(?<event>.*)\n(?<host>\S*) (?<clock>{.*})`.
pub fn shiviz(log: &Log, lanes: usize) -> String {
    // (time, receive after send at one instant, message)
    let mut steps: Vec<(u64, bool, usize)> = Vec::new();
    for (i, m) in log.msgs.iter().enumerate() {
        steps.push((m.sent, false, i));
        if let Fate::Delivered(t) = m.fate {
            steps.push((t, true, i));
        }
    }
    steps.sort();
    let mut clocks = vec![vec![0u64; lanes]; lanes];
    let mut stamp: Vec<Vec<u64>> = vec![Vec::new(); log.msgs.len()];
    let mut out = String::new();
    for (_, receive, i) in steps {
        let m = &log.msgs[i];
        let (node, what) = if receive {
            (m.to, format!("receive from n{}: {}", m.from, m.detail))
        } else {
            (m.from, format!("send to n{}: {}", m.to, m.detail))
        };
        if node >= lanes {
            continue;
        }
        if receive {
            for (c, s) in clocks[node].iter_mut().zip(&stamp[i]) {
                *c = (*c).max(*s);
            }
        }
        clocks[node][node] += 1;
        if !receive {
            stamp[i] = clocks[node].clone();
        }
        let vc: Vec<String> = clocks[node]
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(n, c)| format!("\"n{n}\":{c}"))
            .collect();
        let _ = writeln!(out, "{what}\nn{node} {{{}}}", vc.join(","));
    }
    out
}
