//! `hotpocket bench-memory` end to end, shrunk to seconds: it starts a
//! cluster, runs both attacks and the reference between them, prints a
//! number for each phase, fails when a peak is over its bound, and leaves
//! no node process or directory behind. A behaviour test, not a
//! measurement: the numbers of a debug build mean nothing.
#![cfg(feature = "runtime")]
// Real processes on real time (the support module waits on the clock).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::process::Command;

#[path = "support/cluster.rs"]
mod cluster;

/// A base port with 6 free ports from it: 3 nodes' peer, then user, ports.
fn free_base() -> u16 {
    cluster::free_block(61_000, 6)
}

/// The numbers of the table row starting with `name`.
fn row(out: &str, name: &str) -> Vec<f64> {
    let line = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{out}"));
    line[name.len()..]
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The number just before `word` in the line starting with `prefix`.
fn count_before(out: &str, prefix: &str, word: &str) -> u64 {
    let line = out.lines().find(|l| l.starts_with(prefix)).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| w.trim_end_matches([',', ';']) == word)
        .unwrap_or_else(|| panic!("no {word:?} in {line}"));
    words[i - 1].parse().unwrap()
}

#[test]
fn both_attacks_run_each_phase_is_measured_and_a_bound_fails_the_command() {
    let base = free_base();
    let child = Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .args(["bench-memory", "--nodes", "3", "--roundtime", "500"])
        .args(["--warmup", "1", "--settle", "1", "--sample-ms", "100"])
        .args(["--stall-sessions", "3", "--stall-seconds", "2"])
        .args(["--connections", "2", "--output-mib", "1"])
        .args(["--amplify-rounds", "6"])
        // Under any real node's RSS: the verdict must be a failure.
        .args(["--max-rss-mib", "1"])
        .args(["--peerport", &base.to_string()])
        .args(["--pubport", &(base + 3).to_string()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let root = std::env::temp_dir().join(format!("hp-bench-memory-{}", child.id()));
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // It failed on the bound, and on nothing else.
    assert!(
        stderr.contains("peak RSS over its bound") && stderr.contains("--max-rss-mib 1"),
        "{stderr}"
    );

    // before, peak, after for every phase; then growth, and the bound.
    let baseline = row(&stdout, "baseline (idle 1 s)");
    assert_eq!(baseline.len(), 3, "{stdout}");
    assert!(baseline.iter().all(|mib| *mib > 1.0), "{stdout}");
    for name in ["A stalled frames", "B output amplification"] {
        let r = row(&stdout, name);
        assert_eq!(r.len(), 5, "{name}: {stdout}");
        // Each attack over --max-rss-mib, named in the error.
        assert!(stderr.contains(&format!("{name}: peak")), "{stderr}");
        assert!(
            r[1] >= r[0] && r[1] >= r[2],
            "peak is the largest: {stdout}"
        );
        assert!(
            (r[3] - (r[1] - baseline[1])).abs() < 0.11,
            "growth is peak - baseline: {stdout}"
        );
    }
    assert_eq!(row(&stdout, "B0 reference (reads)").len(), 4, "{stdout}");

    // The attacks took: sessions held open on a declared frame, outputs
    // that reached the never-reading sockets, outputs the reader read.
    assert!(count_before(&stdout, "A:", "held") >= 1, "{stdout}");
    assert!(count_before(&stdout, "B0:", "outputs") >= 1, "{stdout}");
    assert_eq!(count_before(&stdout, "B:", "inputs"), 6, "{stdout}");
    assert!(stdout.contains("MiB of outputs waited unread"), "{stdout}");

    // Nothing left behind.
    assert!(!root.exists(), "{} is still there", root.display());
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&*root.to_string_lossy()))
        .collect();
    assert!(left.is_empty(), "still running: {left:?}");
}
