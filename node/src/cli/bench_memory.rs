//! `hotpocket bench-memory`: the resident memory of a real node process
//! under the two attacks that used to grow it without bound.
//!
//! A small local cluster runs a contract that answers every user with a
//! large output each run. The target, node 0, is measured idle, then while
//! an insider holding node 1's key keeps sessions open on it that declare
//! the largest frame and stall (attack A), then while one user keeps many
//! connections open that never read and asks for an output every round
//! (attack B). Each phase's peak RSS is checked against a bound over the
//! idle one. A measurement with a verdict: build with `--release`.

mod attacks;

use crate::cli::bench::head;
use crate::cli::cluster::{node_dir, prepare, spawn_nodes, stop_nodes, Plan, STOP_GRACE};
use crate::cli::signals::{Stop, StopSignals};
use crate::real::config::Config;
use crate::real::{random_key, OsEntropy};
use crate::wire::MAX_FRAME_BYTES;
use anyhow::{bail, Context};
use attacks::{attack_a, attack_b, reference_b};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `hotpocket bench-memory`'s flags.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Nodes in the cluster: at least 2, as attack A holds node 1's key.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Round length, ms.
    #[arg(long, default_value_t = 1000)]
    pub roundtime: u64,
    /// Seconds the idle node is sampled for the baseline, once the chain runs.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Attack A: stalled sessions held at once.
    #[arg(long, default_value_t = 30)]
    pub stall_sessions: usize,
    /// Attack A: KiB of each declared frame sent before stalling.
    #[arg(long, default_value_t = 0)]
    pub stall_fill_kib: usize,
    /// Attack A: how long, s (a session the node cuts is opened again).
    #[arg(long, default_value_t = 20)]
    pub stall_seconds: u64,
    /// Attack B: connections of the one user.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Attack B: MiB the contract writes to the user each run.
    #[arg(long, default_value_t = 15)]
    pub output_mib: usize,
    /// Attack B: rounds it asks for an output.
    #[arg(long, default_value_t = 12)]
    pub amplify_rounds: u64,
    /// Seconds sampled after each attack ends.
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
    /// Sampling interval, ms.
    #[arg(long, default_value_t = 500)]
    pub sample_ms: u64,
    /// Bound on attack A's peak over the baseline, MiB.
    #[arg(long, default_value_t = 64)]
    pub stall_bound_mib: u64,
    /// Bound on attack B's peak over the baseline, MiB.
    #[arg(long, default_value_t = 384)]
    pub amplify_bound_mib: u64,
    /// A bound on either attack's peak RSS itself, MiB [default: none].
    #[arg(long)]
    pub max_rss_mib: Option<u64>,
    /// Peer port of node 0; node i uses this plus i.
    #[arg(long, default_value_t = 26860)]
    pub peerport: u16,
    /// User port of node 0; node i uses this plus i.
    #[arg(long, default_value_t = 12080)]
    pub pubport: u16,
}

impl Options {
    fn stall_fill(&self) -> usize {
        self.stall_fill_kib.saturating_mul(1 << 10)
    }

    fn output_bytes(&self) -> usize {
        self.output_mib.saturating_mul(1 << 20)
    }
}

/// The contract: every user with inputs in a run gets `argv[1]` bytes,
/// however many inputs it sent, as the hardening work's "15 MB per round to that
/// user". The same on every node, so every run is certified and delivered.
const CONTRACT: &str = r#"#!/usr/bin/env python3
# Written by `hotpocket bench-memory`: answers each user with inputs in a
# run with argv[1] bytes.
import json, os, sys
size = int(sys.argv[1])
desc = json.load(sys.stdin)
chunk = b"x" * (1 << 20)
for user, (in_fd, out_fd) in sorted(desc["user"].items()):
    os.close(in_fd)
    with os.fdopen(out_fd, "wb") as out:
        left = size
        while left > 0:
            out.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
"#;

const MIB: f64 = (1 << 20) as f64;

/// A field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS, so each
/// phase's peak is its own, between samples too. Whether the kernel did.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// RSS at a phase's start and end, and its peak, in KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Phase {
    before: u64,
    peak: u64,
    after: u64,
}

/// Samples VmRSS every `every` until `stop`; the largest seen.
async fn sample(pid: u32, every: Duration, mut stop: watch::Receiver<bool>) -> u64 {
    let mut max = 0;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => match status_kib(pid, "VmRSS") {
                Some(kib) => max = max.max(kib),
                None => return max, // gone: the caller says so
            },
            _ = stop.changed() => return max,
        }
    }
}

/// Runs `attack` while sampling the node's RSS, then samples `settle` more;
/// the phase's RSS and what the attack returned.
async fn measure<T>(
    pid: u32,
    every: Duration,
    settle: Duration,
    attack: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(Phase, T)> {
    let rss = || status_kib(pid, "VmRSS").context("the target node is gone");
    let before = rss()?;
    let exact = reset_peak(pid);
    let (stop, stopped) = watch::channel(false);
    let sampler = tokio::spawn(sample(pid, every, stopped));
    let out = attack.await;
    tokio::time::sleep(settle).await;
    let _ = stop.send(true);
    let sampled = sampler.await.context("the RSS sampler")?;
    let out = out?;
    let after = rss()?;
    let hwm = if exact {
        status_kib(pid, "VmHWM").unwrap_or(0)
    } else {
        0
    };
    let peak = sampled.max(hwm).max(after).max(before);
    Ok((
        Phase {
            before,
            peak,
            after,
        },
        out,
    ))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Prints a phase's row; if it has a bound and is over it (or over
/// `--max-rss-mib`), says so.
fn row(o: &Options, name: &str, p: Phase, baseline: u64, bound: Option<u64>) -> Option<String> {
    let growth = mib(p.peak) - mib(baseline);
    print!(
        "{name:<24} {:>8.1} {:>8.1} {:>8.1} {growth:>+16.1}",
        mib(p.before),
        mib(p.peak),
        mib(p.after),
    );
    let Some(bound) = bound else {
        println!();
        return None;
    };
    let limit = mib(baseline) + bound as f64;
    let ok = mib(p.peak) <= limit && o.max_rss_mib.is_none_or(|m| mib(p.peak) <= m as f64);
    println!(
        " {:>8} {}",
        format!("+{bound}"),
        if ok { "ok" } else { "OVER" }
    );
    (!ok).then(|| {
        format!(
            "{name}: peak {:.1} MiB, bound {limit:.1} MiB (baseline + {bound}){}",
            mib(p.peak),
            o.max_rss_mib
                .map_or(String::new(), |m| format!(" and --max-rss-mib {m}"))
        )
    })
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The node directories, the contract and the settings attack B needs.
fn make_cluster(o: &Options, root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let contract = root.join("big-output.py");
    std::fs::write(&contract, CONTRACT)
        .with_context(|| format!("writing {}", contract.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&contract, std::fs::Permissions::from_mode(0o755))?;
    }
    let plan = Plan {
        nodes: o.nodes,
        dir: root.to_path_buf(),
        contract,
        roundtime: o.roundtime,
        peerport: o.peerport,
        pubport: o.pubport,
        metrics: None,
    };
    prepare(&plan, || random_key(&mut OsEntropy))?;
    for i in 0..o.nodes {
        let dir = node_dir(root, i);
        let mut cfg = Config::read(&dir)?;
        cfg.binargs = o.output_bytes().to_string();
        // Room for the output: a run writing more is killed.
        cfg.contract_max_output_bytes = cfg
            .contract_max_output_bytes
            .max(o.output_bytes() + (1 << 20));
        cfg.save(&dir)
            .with_context(|| format!("writing {}", Config::path(&dir).display()))?;
    }
    Ok(())
}

pub async fn run(o: &Options) -> anyhow::Result<()> {
    if o.nodes < 2 {
        bail!("--nodes must be at least 2: attack A dials node 0 with node 1's key");
    }
    if o.stall_fill() >= MAX_FRAME_BYTES {
        bail!(
            "--stall-fill-kib must be under the {} KiB frame it fills",
            MAX_FRAME_BYTES >> 10
        );
    }
    if o.connections == 0 || o.stall_sessions == 0 {
        bail!("--connections and --stall-sessions must be at least 1");
    }
    let root = std::env::temp_dir().join(format!("hp-bench-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Before any node exists: a Ctrl-C then stops the nodes and removes
    // the directory instead of ending this process on the spot.
    let mut stop = StopSignals::install(&[Stop::Int, Stop::Term, Stop::Hup])?;
    let mut children = Vec::new();
    let result = async {
        make_cluster(o, &root)?;
        let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        children = spawn_nodes(&root, o.nodes, Some(&level), false)?;
        let pid = children[0].id().context("node 0 has no pid")?;
        tokio::select! {
            r = measure_all(o, &root, pid) => r,
            s = stop.recv() => Err(anyhow::anyhow!("{s}: stopped")),
        }
    }
    .await;
    let exited = children
        .first_mut()
        .and_then(|c| c.try_wait().ok().flatten());
    for i in stop_nodes(&mut children, STOP_GRACE).await {
        eprintln!("node {i} did not stop within {STOP_GRACE:?} of SIGTERM: killed");
    }
    let log = node_dir(&root, 0).join("node.log");
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    if std::env::var_os("HP_BENCH_KEEP").is_some() {
        println!("kept {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    let result = match exited {
        Some(status) => result.context(format!("node 0 exited ({status})")),
        None => result,
    };
    if result.is_err() {
        // What the node said last, since its directory is gone.
        let lines: Vec<&str> = tail.lines().collect();
        for l in &lines[lines.len().saturating_sub(10)..] {
            eprintln!("node 0: {l}");
        }
    }
    result
}

/// The phases and the verdict, with the cluster running.
async fn measure_all(o: &Options, root: &Path, pid: u32) -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> = (0..o.nodes).map(|i| node_dir(root, i)).collect();
    let started = Instant::now();
    while dirs.iter().any(|d| head(d) < 3) {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the cluster closed no ledgers in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let every = Duration::from_millis(o.sample_ms.max(10));
    let settle = Duration::from_secs(o.settle);
    let idle = Duration::from_secs(o.warmup);
    let (base, ()) = measure(pid, every, Duration::ZERO, async {
        tokio::time::sleep(idle).await;
        Ok(())
    })
    .await
    .context("measuring the baseline")?;
    let baseline = base.peak;

    let insider = Config::load(&dirs[1])?;
    let addr: SocketAddr = format!("127.0.0.1:{}", o.peerport).parse()?;
    let seq = head(&dirs[0]);
    let (a, stalled) = measure(
        pid,
        every,
        settle,
        attack_a(o, addr, &insider.key, &insider.consensus.unl),
    )
    .await
    .context("attack A (stalled frames)")?;
    let a_ledgers = head(&dirs[0]).saturating_sub(seq);
    let seq = head(&dirs[0]);
    let (r, (outputs, output_bytes)) = measure(pid, every, settle, reference_b(o, o.pubport))
        .await
        .context("the reference for attack B (a user that reads)")?;
    let r_ledgers = head(&dirs[0]).saturating_sub(seq);
    let seq = head(&dirs[0]);
    let (b, amplified) = measure(pid, every, settle, attack_b(o, o.pubport))
        .await
        .context("attack B (output amplification)")?;
    let b_ledgers = head(&dirs[0]).saturating_sub(seq);

    println!(
        "node 0 of {} (pid {pid}), roundtime {} ms: RSS of the node process alone (its contract runs apart), MiB",
        o.nodes, o.roundtime
    );
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>16} {:>8}",
        "phase", "before", "peak", "after", "peak - baseline", "bound"
    );
    println!(
        "{:<24} {:>8.1} {:>8.1} {:>8.1}",
        format!("baseline (idle {} s)", o.warmup),
        mib(base.before),
        mib(base.peak),
        mib(base.after)
    );
    let over: Vec<String> = [
        row(o, "A stalled frames", a, baseline, Some(o.stall_bound_mib)),
        row(o, "B0 reference (reads)", r, baseline, None),
        row(
            o,
            "B output amplification",
            b,
            baseline,
            Some(o.amplify_bound_mib),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut held = stalled.closed_after.clone();
    println!(
        "A: {} sessions at a time as node 1 for {} s, each declaring a {} MiB frame and sending {} KiB of it: {} opened, {} held, {} refused; the node closed {} (median after {:.1} s), {} open at the end; {} ledgers closed",
        o.stall_sessions,
        o.stall_seconds,
        MAX_FRAME_BYTES >> 20,
        o.stall_fill() >> 10,
        stalled.opened,
        stalled.held,
        stalled.refused,
        stalled.closed_after.len(),
        median(&mut held) as f64 / 1000.0,
        stalled.open_at_end,
        a_ledgers
    );
    println!(
        "B0: one user, one connection that reads, one input a round for {} rounds: {outputs} outputs, {:.1} MiB received; {r_ledgers} ledgers closed",
        o.amplify_rounds,
        output_bytes as f64 / MIB,
    );
    println!(
        "B: one user, {} connections that never read, {:.1} MiB to it each run, {} rounds: {} inputs sent, {} connections opened, {} found closed by the node; {:.1} MiB of outputs waited unread in the attacker's sockets; {} ledgers closed",
        o.connections,
        o.output_bytes() as f64 / MIB,
        o.amplify_rounds,
        amplified.inputs,
        amplified.opened,
        amplified.closed_by_node,
        amplified.unread as f64 / MIB,
        b_ledgers
    );
    if !over.is_empty() {
        bail!("peak RSS over its bound: {}", over.join("; "));
    }
    Ok(())
}
