//! `hotpocket bench`: a local cluster under load from concurrent users.
//! Measures input-to-output latency (ms and rounds), answered inputs per
//! second and node memory. A measurement, not a test: run it `--release`.

use crate::cli::bench_memory::status_kib;
use crate::cli::cluster::{node_dir, prepare, spawn_nodes, stop_nodes, Plan, STOP_GRACE};
use crate::real::config::Config;
use crate::real::store::LedgerReader;
use crate::real::users_ws::now_ms;
use crate::real::{random_key, OsEntropy};
use crate::users::answer_challenge;
use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub struct Options {
    pub nodes: usize,
    pub roundtime: u64,
    /// Percent of the round for each of stages 1-3; stage 0, which also
    /// holds the contract run, gets the rest.
    pub stage_slice: u64,
    pub clients: usize,
    /// Inputs each client sends a second.
    pub rate: u64,
    /// Most unanswered inputs a client lets pile up.
    pub window: usize,
    /// `set` commands (the contract writes a file each) or `get` (reads).
    pub write: bool,
    pub warmup: u64,
    pub seconds: u64,
    pub contract: PathBuf,
    pub peerport: u16,
    pub pubport: u16,
    /// Users speak hpcore's protocol (signed inputs, statuses) rather
    /// than the prototype's (`bench_hp`).
    pub hpcore: bool,
    /// hp.cfg's `memory_ledgers` on every node.
    pub memory_ledgers: u64,
}

fn rss_kb(pid: u32) -> u64 {
    status_kib(pid, "VmRSS").unwrap_or(0)
}

/// The highest ledger seq in a node's SQLite file (0 before any).
pub(crate) fn head(dir: &Path) -> u64 {
    LedgerReader::open(&dir.join("ledger.sqlite"))
        .and_then(|r| r.tip())
        .map_or(0, |t| t.map_or(0, |(seq, _, _)| seq))
}

/// What became of the inputs the clients sent, by send time (ms).
#[derive(Default)]
pub(crate) struct Tally {
    /// (send time, latency) of each input whose output came back.
    pub answered: Vec<(u64, u64)>,
    /// Send times of inputs a node refused (it was busy): told at once.
    pub refused: Vec<u64>,
    /// Send times of inputs still unanswered when the client gave up on
    /// them (10 s, or the end of the drain): lost, unless a notice said
    /// why (an hpcore status among `rejected`).
    pub unanswered: Vec<u64>,
    /// hpcore statuses rejecting an input for another reason than the
    /// node being busy, by reason, in the whole run.
    pub rejected: BTreeMap<String, u64>,
    /// `uncertified` notices received (each covers a user's outputs of one
    /// ledger, so it names no single input).
    uncertified: u64,
    /// `contract_failed` notices received (one per ledger, likewise).
    failed: u64,
}

/// How long a client keeps reading after it stops sending, for the answers
/// of inputs still in flight.
pub(crate) const DRAIN: Duration = Duration::from_secs(10);

/// One user: sends `rate` inputs a second (at most `window` unanswered)
/// until `stop`, then waits up to `DRAIN` for what is in flight, and
/// records what became of each input in `tally`.
async fn client(
    port: u16,
    id: usize,
    rate: u64,
    window: usize,
    write: bool,
    stop: Instant,
    tally: Arc<Mutex<Tally>>,
) -> anyhow::Result<()> {
    let key = random_key(&mut OsEntropy);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}")).await?;
    let Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) = ws.next().await else {
        bail!("no challenge");
    };
    let challenge = m.into_text()?;
    ws.send(Message::Text(answer_challenge(
        &key,
        &challenge,
        now_ms() / 1000,
    )?))
    .await?;
    // A user's inputs are answered in the order sent, so one queue of send
    // times per key is enough even with a key in flight twice.
    let mut sent: BTreeMap<String, VecDeque<u64>> = BTreeMap::new();
    // sha256 of each command in flight -> its key and send time: a
    // refusal names the input by that digest.
    let mut digests: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut in_flight = 0usize;
    let mut k = 0u64;
    let every = Duration::from_micros(1_000_000 / rate.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drained = stop + DRAIN;
    loop {
        let now_i = Instant::now();
        if now_i >= drained || (now_i >= stop && in_flight == 0) {
            break;
        }
        let sending = now_i < stop;
        tokio::select! {
            _ = tick.tick(), if sending => {
                // Keys cycle so the contract's state stays small: creating
                // files is the slow part of a run. Every message differs
                // (a node drops a repeat within two rounds as a retry).
                let key = if write { format!("c{id}-{}", k % 16) } else { format!("c{id}-{k}") };
                k += 1;
                // An input unanswered for 10 s was lost (it expired in a
                // pool): forget it.
                let now = now_ms();
                {
                    let mut t = tally.lock().expect("not poisoned");
                    for q in sent.values_mut() {
                        while q.front().is_some_and(|t| now.saturating_sub(*t) >= 10_000) {
                            t.unanswered.push(q.pop_front().expect("front checked"));
                            in_flight -= 1;
                        }
                    }
                }
                if in_flight >= window {
                    continue; // the node is behind: do not pile up
                }
                sent.entry(key.clone()).or_default().push_back(now);
                in_flight += 1;
                let cmd = if write { format!("set {key} {k}\n") } else { format!("get {key}\n") };
                digests.insert(hex::encode(Sha256::digest(cmd.as_bytes())), (key, now));
                // Older than 10 s: answered or given up on by now.
                digests.retain(|_, (_, at)| now.saturating_sub(*at) < 10_000);
                ws.send(Message::Binary(cmd.into_bytes())).await?;
            }
            _ = tokio::time::sleep_until(drained.into()), if !sending => {}
            msg = ws.next() => {
                let now = now_ms();
                let mut t = tally.lock().expect("not poisoned");
                match msg {
                    Some(Ok(Message::Binary(b))) => {
                        let text = String::from_utf8_lossy(&b);
                        for line in text.lines() {
                            // "ok KEY" for set; "KEY=v" or "KEY not set" for get.
                            let key = line
                                .strip_prefix("ok ")
                                .or_else(|| line.split(['=', ' ']).next());
                            let sent_at = key
                                .and_then(|k| sent.get_mut(k))
                                .and_then(|q| q.pop_front());
                            if let Some(sent_at) = sent_at {
                                in_flight -= 1;
                                t.answered.push((sent_at, now.saturating_sub(sent_at)));
                            }
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        // The refused input itself, out of its key's queue.
                        let refused = v["input_sha256"]
                            .as_str()
                            .and_then(|d| digests.remove(d))
                            .and_then(|(k, at)| {
                                let q = sent.get_mut(&k)?;
                                let i = q.iter().position(|t| *t == at)?;
                                q.remove(i)
                            });
                        match (v["type"].as_str(), refused) {
                            (Some("uncertified"), _) => t.uncertified += 1,
                            (Some("contract_failed"), _) => t.failed += 1,
                            (Some("error"), Some(sent_at)) => {
                                in_flight -= 1;
                                t.refused.push(sent_at);
                            }
                            _ => bail!("client {id}: node said {text}"),
                        }
                    }
                    Some(Ok(_)) => {}
                    other => bail!("client {id}: connection ended: {other:?}"),
                }
            }
        }
    }
    let mut t = tally.lock().expect("not poisoned");
    for q in sent.values() {
        t.unanswered.extend(q.iter().copied());
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

pub async fn run(o: &Options) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("hp-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let plan = Plan {
        nodes: o.nodes,
        dir: root.clone(),
        contract: o.contract.clone(),
        roundtime: o.roundtime,
        peerport: o.peerport,
        pubport: o.pubport,
        metrics: None,
    };
    prepare(&plan, || random_key(&mut OsEntropy))?;
    for i in 0..o.nodes {
        let dir = node_dir(&root, i);
        let mut cfg = Config::load(&dir)?.cfg;
        cfg.pubmaxcpm = 1_000_000;
        cfg.stage_slice = o.stage_slice;
        cfg.memory_ledgers = o.memory_ledgers;
        cfg.save(&dir)?;
    }
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let mut children = spawn_nodes(&root, o.nodes, Some(&level), false)?;
    let dirs: Vec<PathBuf> = (0..o.nodes).map(|i| node_dir(&root, i)).collect();
    let warm = Instant::now();
    while dirs.iter().any(|d| head(d) < 5) {
        if warm.elapsed() > Duration::from_secs(30) {
            bail!(
                "the cluster did not start closing ledgers; logs in {}",
                root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss: Vec<u64> = children.iter().filter_map(|c| c.id()).map(rss_kb).collect();

    let tally = Arc::new(Mutex::new(Tally::default()));
    // The first seconds create the contract's files; measure after them.
    let warmup = Duration::from_secs(o.warmup);
    let begin = Instant::now();
    let stop = begin + warmup + Duration::from_secs(o.seconds);
    let mut tasks = Vec::new();
    for id in 0..o.clients {
        let port = o.pubport + (id % o.nodes) as u16;
        let t = tally.clone();
        let w = o.write;
        tasks.push(if o.hpcore {
            let load = (o.rate, o.window);
            tokio::spawn(super::bench_hp::client(port, id, load, stop, t))
        } else {
            tokio::spawn(client(port, id, o.rate, o.window, w, stop, t))
        });
    }
    tokio::time::sleep(warmup).await;
    let (measure_from, seq_start) = (now_ms(), head(&dirs[0]));
    tokio::time::sleep_until(stop.into()).await;
    let (measure_to, seq_end) = (now_ms(), head(&dirs[0]));
    let load_rss: Vec<u64> = children.iter().filter_map(|c| c.id()).map(rss_kb).collect();
    let elapsed = (measure_to - measure_from) as f64 / 1000.0;
    let mut failed = 0;
    for t in tasks {
        if let Err(e) = t.await? {
            failed += 1;
            eprintln!("{e:#}");
        }
    }
    for i in stop_nodes(&mut children, STOP_GRACE).await {
        eprintln!("node {i} did not stop within {STOP_GRACE:?} of SIGTERM: killed");
    }

    let t = tally.lock().expect("not poisoned");
    let measured = |at: &u64| (measure_from..measure_to).contains(at);
    let mut l: Vec<u64> = t
        .answered
        .iter()
        .filter(|(sent, _)| measured(sent))
        .map(|(_, ms)| *ms)
        .collect();
    l.sort_unstable();
    let refused = t.refused.iter().filter(|s| measured(s)).count();
    let unanswered = t.unanswered.iter().filter(|s| measured(s)).count();
    let rounds = |ms: u64| ms as f64 / o.roundtime as f64;
    let (p50, p99) = (percentile(&l, 50), percentile(&l, 99));
    let protocol = if o.hpcore {
        "hpcore's protocol, signed"
    } else {
        "the prototype's protocol"
    };
    println!(
        "{} nodes, roundtime {} ms, stage slice {}%, {} clients sending {}/s of `{}` each ({protocol}; at most {} unanswered), {:.1} s measured after {} s warm-up; {failed} clients failed",
        o.nodes, o.roundtime, o.stage_slice, o.clients, o.rate, if o.write { "set" } else { "get" }, o.window, elapsed, o.warmup
    );
    println!(
        "inputs sent in the measured window: {} answered ({:.0}/s), {refused} refused (node busy, told at once), {unanswered} never answered; {} uncertified and {} contract-failed notices in the whole run",
        l.len(),
        l.len() as f64 / elapsed,
        t.uncertified,
        t.failed
    );
    if !t.rejected.is_empty() {
        println!("inputs rejected otherwise, whole run: {:?}", t.rejected);
    }
    println!(
        "ledgers closed: {} ({:.1}/s)",
        seq_end - seq_start,
        (seq_end - seq_start) as f64 / elapsed
    );
    println!(
        "latency input -> output: p50 {p50} ms ({:.2} rounds), p99 {p99} ms ({:.2} rounds)",
        rounds(p50),
        rounds(p99)
    );
    println!(
        "node RSS: idle {} MB max, under load {} MB max",
        idle_rss.iter().max().unwrap_or(&0) / 1024,
        load_rss.iter().max().unwrap_or(&0) / 1024
    );
    for d in &dirs {
        let log = std::fs::read_to_string(d.join("node.log")).unwrap_or_default();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        if !warnings.is_empty() {
            println!(
                "{}: {} warnings, first: {}",
                d.display(),
                warnings.len(),
                warnings[0]
            );
        }
    }
    if std::env::var_os("HP_BENCH_KEEP").is_some() {
        println!("kept {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}
