//! `hotpocket-sim`: run, fuzz and benchmark consensus scenarios.
// `bench` times the simulator against the wall clock.
#![allow(clippy::disallowed_methods)]

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hotpocket_sim::fuzz::{fuzzed, parse_seeds};
use hotpocket_sim::{run, shrink, Report, Scenario};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "hotpocket-sim",
    version,
    about = "Deterministic simulator for Hot Pocket consensus",
    long_about = "Runs many Hot Pocket nodes in one process on simulated time, network, disks and \
                  contract, with the faults and byzantine peers a scenario file describes. Safety is \
                  checked after every event; the same seed always gives the same trace hash."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario with one seed; exits 1 if any check fails.
    Run {
        /// Scenario file (TOML), see scenarios/README.md.
        file: PathBuf,
        /// Seed for every random choice in the run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Draw fault parameters from the scenario's [fuzz] ranges, exactly as
        /// `fuzz` does for this seed.
        #[arg(long)]
        fuzzed: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Print every protocol event (closes, status changes, rejected
        /// history) with its simulated time and node, as it happens.
        #[arg(long)]
        events: bool,
    },
    /// Run scenarios over a range of seeds, varying fault parameters within
    /// each scenario's [fuzz] ranges; exits 1 if any seed fails.
    Fuzz {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Seeds to try, as A..B (B exclusive) or N.
        #[arg(long, default_value = "0..100")]
        seeds: String,
        /// Where a failing seed's concrete scenario is written.
        #[arg(long, default_value = "target/fuzz-failures")]
        out: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Shrink the first failing seed of each kind of violation, making
        /// at most this many runs for each (0: do not shrink); the result
        /// goes beside the failing file as NAME-seed-N-min.toml.
        #[arg(long, default_value_t = 200)]
        shrink_runs: u64,
    },
    /// Shrink a failing run to a smaller scenario that fails the same way
    /// with the same seed: fewer timeline events, byzantine nodes, nodes and
    /// users, calmer network and clocks, a shorter run. Deterministic.
    Shrink {
        /// The failing scenario file.
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Start from the scenario `fuzz` draws for this seed.
        #[arg(long)]
        fuzzed: bool,
        /// Make at most this many runs (the bound on its time: a run of a
        /// 60 s swarm scenario takes about 2 s in a release build).
        #[arg(long, default_value_t = 300)]
        max_runs: u64,
        /// Where to write the result (default: FILE's stem + "-min.toml"
        /// beside it; with --fuzzed, in target/fuzz-failures).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the concrete scenario `fuzz` runs for a seed (every value its
    /// [fuzz] or [swarm] table drew) as a scenario file.
    Draw {
        /// Scenario file with a [fuzz] or [swarm] table.
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write it here instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Measure the random beacon over many runs: the bits of every final
    /// ledger's value (monobit and chi-square tests), and how often the
    /// value's lowest bit is clear, the bit a `beacon_withholder` bends.
    Randomness {
        /// Scenario files; every final ledger with a random value counts.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Seeds, as A..B (B exclusive) or N; each run is fuzzed as `fuzz`
        /// would run it.
        #[arg(long, default_value = "0..180")]
        seeds: String,
        /// Exit 1 if a test fails (p < 0.001) or a run has a violation.
        #[arg(long)]
        check: bool,
    },
    /// Measure simulated time per wall-clock time (5 nodes, lossy network,
    /// roundtime 1000 ms). Build with --release for meaningful numbers.
    Bench {
        /// Simulated seconds to run.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Scenario to time instead of the built-in lossy one.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
}

fn main() {
    // Rust ignores SIGPIPE, so `hotpocket-sim ... | head` would panic on the
    // closed pipe; restore the usual behaviour of a command-line tool.
    // SAFETY: called first thing, before any thread or runtime exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Run {
            file,
            seed,
            fuzzed: f,
            json,
            events,
        } => {
            let base = Scenario::load(&file)?;
            let s = if f { fuzzed(&base, seed) } else { base };
            if f && !json {
                println!("drawn: {}", s.description);
            }
            let report = hotpocket_sim::runner::run_with(&s, seed, events);
            let repro = repro_command(&file, seed, f);
            if json {
                println!("{}", serde_json::to_string_pretty(&json_report(&report))?);
            } else {
                print_report(&report);
            }
            if !report.passed {
                eprintln!("FAILED; reproduce with: {repro}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Fuzz {
            files,
            seeds,
            out,
            json,
            shrink_runs,
        } => {
            let range = parse_seeds(&seeds).map_err(anyhow::Error::msg)?;
            let mut failures = Vec::new();
            let mut shrunk_kinds = std::collections::BTreeSet::new();
            let mut runs = 0u64;
            for file in &files {
                let base = Scenario::load(file)?;
                for seed in range.clone() {
                    let s = fuzzed(&base, seed);
                    let report = run(&s, seed);
                    runs += 1;
                    if !report.passed {
                        let written = write_failure(&out, &s, seed)?;
                        let kind = shrink::kind(&report.violations[0]);
                        let min = if shrink_runs > 0 && shrunk_kinds.insert(kind) {
                            let path =
                                written.with_file_name(format!("{}-seed-{seed}-min.toml", s.name));
                            shrink_to_file(&s, seed, shrink_runs, &path)?;
                            Some(format!(
                                "hotpocket-sim run {} --seed {seed}",
                                path.display()
                            ))
                        } else {
                            None
                        };
                        let f = serde_json::json!({
                            "scenario": base.name,
                            "file": file.display().to_string(),
                            "seed": seed,
                            "violations": report.violations,
                            "reproduce": repro_command(file, seed, true),
                            "reproduce_file": format!("hotpocket-sim run {} --seed {seed}", written.display()),
                            "reproduce_shrunk": min,
                        });
                        if !json {
                            eprintln!(
                                "FAIL {} seed {seed}: {}",
                                base.name,
                                report.violations.join("; ")
                            );
                            eprintln!(
                                "  reproduce: {}",
                                f["reproduce"].as_str().unwrap_or_default()
                            );
                            if let Some(m) = &min {
                                eprintln!("  shrunk: {m}");
                            }
                        }
                        failures.push(f);
                    }
                }
                if !json {
                    println!("{}: {} seeds", base.name, range.end - range.start);
                }
            }
            if json {
                let v = serde_json::json!({"runs": runs, "passed": failures.is_empty(), "failures": failures});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{runs} runs, {} failed", failures.len());
            }
            if !failures.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Shrink {
            file,
            seed,
            fuzzed: f,
            max_runs,
            out,
        } => {
            let base = Scenario::load(&file)?;
            let s = if f { fuzzed(&base, seed) } else { base };
            let stem = file
                .file_stem()
                .map_or("scenario".into(), |x| x.to_string_lossy());
            let path = out.unwrap_or_else(|| {
                if f {
                    Path::new("target/fuzz-failures").join(format!("{stem}-seed-{seed}-min.toml"))
                } else {
                    file.with_file_name(format!("{stem}-min.toml"))
                }
            });
            if shrink_to_file(&s, seed, max_runs, &path)? {
                Ok(())
            } else {
                bail!(
                    "{} passes with seed {seed}: nothing to shrink",
                    file.display()
                )
            }
        }
        Command::Draw { file, seed, out } => {
            let s = fuzzed(&Scenario::load(&file)?, seed);
            let text = format!(
                "# {}\n# hotpocket-sim run FILE --seed {seed}\n{}",
                s.description,
                toml::to_string_pretty(&s).context("serialising the drawn scenario")?
            );
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Randomness {
            files,
            seeds,
            check,
        } => randomness(&files, &seeds, check),
        Command::Bench { seconds, scenario } => bench(seconds, scenario.as_deref()),
    }
}

fn randomness(files: &[PathBuf], seeds: &str, check: bool) -> Result<()> {
    let range = parse_seeds(seeds).map_err(anyhow::Error::msg)?;
    let (mut values, mut runs, mut failed, mut predictable) = (Vec::new(), 0, 0, 0);
    for file in files {
        let base = Scenario::load(file)?;
        for seed in range.clone() {
            let report = run(&fuzzed(&base, seed), seed);
            runs += 1;
            if !report.passed {
                failed += 1;
                eprintln!(
                    "FAIL {} seed {seed}: {}",
                    base.name,
                    report.violations.join("; ")
                );
            }
            predictable += report.beacon.outcomes - report.beacon.random;
            values.extend(report.beacon.values);
        }
    }
    let s = hotpocket_sim::randomness::summarise(&values);
    let verdict = |t: &hotpocket_sim::randomness::Test| if t.passed() { "pass" } else { "FAIL" };
    println!(
        "{runs} runs ({failed} with violations): {} final ledgers with a random value, {predictable} without",
        s.values
    );
    println!(
        "  monobit: {} ones in {} bits ({:.5}), z = {:.2}, p = {:.3}: {}",
        s.ones,
        s.bits,
        s.ones as f64 / s.bits.max(1) as f64,
        s.monobit.statistic,
        s.monobit.p,
        verdict(&s.monobit)
    );
    println!(
        "  chi-square over byte values: {:.1} on 255 degrees of freedom, p = {:.3}: {}",
        s.chi_square.statistic,
        s.chi_square.p,
        verdict(&s.chi_square)
    );
    let (share, se) = s.liked_share();
    println!(
        "  lowest bit clear: {:.2}% ± {:.2}% (uniform 50%; one withholder that always reveals last gets at most 75%)",
        share * 100.0,
        se * 100.0
    );
    if check && (failed > 0 || !s.monobit.passed() || !s.chi_square.passed() || s.values == 0) {
        std::process::exit(1);
    }
    Ok(())
}

fn repro_command(file: &Path, seed: u64, fuzzed: bool) -> String {
    let flag = if fuzzed { " --fuzzed" } else { "" };
    format!("hotpocket-sim run {} --seed {seed}{flag}", file.display())
}

/// Shrinks `s`'s failing run with `seed` into `path`, with a header saying
/// what still fails, how much went, and how to run it; false if it passes.
fn shrink_to_file(s: &Scenario, seed: u64, max_runs: u64, path: &Path) -> Result<bool> {
    let started = Instant::now();
    let mut start = s.clone();
    start.fuzz = None;
    start.swarm = None;
    let Some(m) = shrink::shrink(&start, seed, max_runs) else {
        return Ok(false);
    };
    let secs = started.elapsed().as_secs_f64();
    let budget = if m.exhausted {
        ", the run budget spent"
    } else {
        ""
    };
    let header =
        format!(
        "# shrunk: {}\n# shrunk from {} to {} timeline events and {} to {} nodes in {secs:.0} s \
         ({} runs{budget})\n# from: {}\n# hotpocket-sim run FILE --seed {seed}\n",
        m.violation,
        s.timeline.len(),
        m.scenario.timeline.len(),
        s.nodes,
        m.scenario.nodes,
        m.runs,
        if s.description.is_empty() { &s.name } else { &s.description },
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string_pretty(&m.scenario).context("serialising the shrunk scenario")?;
    std::fs::write(path, format!("{header}{text}"))
        .with_context(|| format!("writing {}", path.display()))?;
    eprint!("{header}");
    println!("wrote {}", path.display());
    Ok(true)
}

fn write_failure(dir: &Path, s: &Scenario, seed: u64) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}-seed-{seed}.toml", s.name));
    let text = toml::to_string_pretty(s).context("serialising the failing scenario")?;
    std::fs::write(&path, format!("# {}\n{text}", s.description))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn json_report(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "scenario": r.scenario,
        "seed": r.seed,
        "trace_hash": r.trace_hash,
        "passed": r.passed,
        "violations": r.violations,
        "simulated_ms": r.simulated_ms,
        "nodes": r.nodes,
        "net": r.net,
        "trace_events": r.trace_events,
        "inputs_submitted": r.inputs_submitted,
        "inputs_dropped": r.inputs_dropped,
        "inputs_taken": r.inputs_taken,
        "inputs_answered": r.inputs_answered,
        "rolled_back": r.rolled_back,
        "byzantine_users": r.byzantine_users,
    })
}

fn print_report(r: &Report) {
    println!(
        "scenario {} seed {} ({} simulated ms)",
        r.scenario, r.seed, r.simulated_ms
    );
    for n in &r.nodes {
        let s = &n.stats;
        println!(
            "  node {:>2} {:<11} seq {:>5} lcl {} status {:<10} dropped: sig {} stale {} not-unl {} malformed {} equivocations {}",
            n.id,
            format!("{:?}", n.role).to_lowercase(),
            n.seq,
            n.lcl.get(..16).unwrap_or("-"),
            n.status.map_or("-".to_string(), |s| format!("{s:?}").to_lowercase()),
            s.dropped_bad_signature,
            s.dropped_stale,
            s.dropped_not_unl,
            s.dropped_malformed,
            s.equivocations,
        );
        let p = &s.npl;
        if p.chunks_sent + p.chunks_delivered > 0 {
            println!(
                "           npl: {} chunks sent, {} delivered, {} relayed; dropped: stale {} dup {} sig {} cut-off {} ({} authors), equivocations {}; runs diverged {}, withheld {}",
                p.chunks_sent,
                p.chunks_delivered,
                p.relayed,
                p.dropped_stale,
                p.dropped_duplicate,
                p.dropped_bad_signature,
                p.dropped_cut_off,
                p.cut_off,
                p.equivocations,
                n.diverged,
                n.withheld,
            );
        }
        if s.state_syncs > 0 || s.state_rejected > 0 {
            println!(
                "           state sync: {} installed, {} bytes and {} files fetched, {} answers rejected",
                s.state_syncs, s.state_bytes_fetched, s.state_files_fetched, s.state_rejected
            );
        }
    }
    let n = &r.net;
    println!(
        "  network: {} sent, {} delivered, {} lost, {} blocked, {} duplicated; {} unfinal closes rolled back",
        n.sent, n.delivered, n.lost, n.blocked, n.duplicated, r.rolled_back
    );
    println!(
        "  users: {} inputs sent, {} to a node that was down; {} taken, {} answered",
        r.inputs_submitted + r.inputs_dropped,
        r.inputs_dropped,
        r.inputs_taken,
        r.inputs_answered
    );
    if !r.byzantine_users.attacks.is_empty() {
        println!("  {}", r.byzantine_users.line());
    }
    let b = &r.beacon;
    println!(
        "  beacon: {} final outcomes, {} random; absent {:?}, convicted {:?} (node: ledgers); {} honest absences excused (away or behind), {} honest commits missed a ledger",
        b.outcomes, b.random, b.absent, b.fraud, b.excused, b.commits_missed
    );
    if r.violations.is_empty() {
        println!("  no violations");
    } else {
        for v in &r.violations {
            println!("  VIOLATION {v}");
        }
    }
    println!("trace hash {}", r.trace_hash);
}

fn bench(seconds: u64, file: Option<&Path>) -> Result<()> {
    let mut s: Scenario = match file {
        Some(f) => Scenario::load(f)?,
        None => toml::from_str(include_str!("../../scenarios/lossy.toml"))
            .context("built-in lossy scenario")?,
    };
    if seconds == 0 {
        bail!("--seconds must be positive");
    }
    s.duration_ms = seconds * 1000;
    s.expectations.clear();
    s.timeline.clear();
    for w in &mut s.workload {
        w.stop_ms = s.duration_ms;
    }
    let started = Instant::now();
    let r = run(&s, 1);
    let wall = started.elapsed();
    let rounds = s.duration_ms / s.consensus.roundtime_ms;
    let sig_checks: u64 = r.nodes.iter().map(|n| n.stats.signature_checks).sum();
    let ledgers = r.nodes.iter().map(|n| n.seq).min().unwrap_or(0);
    println!(
        "scenario {} ({} nodes, roundtime {} ms)",
        s.name, s.nodes, s.consensus.roundtime_ms
    );
    println!(
        "simulated {} s in {:.2} s wall: {:.0}x real time",
        seconds,
        wall.as_secs_f64(),
        s.duration_ms as f64 / 1000.0 / wall.as_secs_f64()
    );
    println!(
        "ledgers closed: {ledgers} of {rounds} rounds; passed: {}",
        r.passed
    );
    println!(
        "messages: {} sent, {} delivered; signature checks: {} ({:.1} per round, {:.1} per node-round)",
        r.net.sent,
        r.net.delivered,
        sig_checks,
        sig_checks as f64 / rounds as f64,
        sig_checks as f64 / rounds as f64 / s.nodes as f64
    );
    // The floor: what those checks alone cost on this machine, verified the
    // way a node does (UNL keys decompressed once).
    let k = hotpocket_node::crypto::Keypair::from_seed([3; 32]);
    let ring = hotpocket_node::crypto::KeyRing::new(&[k.public()]);
    let msg = [7u8; 240]; // about a stage-0 proposal with a few inputs
    let sig = k.sign("bench", &msg);
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        ring.verify(&k.public(), "bench", &msg, &sig)
            .context("bench signature")?;
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(k.sign("bench", &msg));
    }
    let per_sign = t.elapsed().as_secs_f64() / n as f64;
    let signs = 4 * s.nodes as u64 * rounds; // one proposal a stage a node
    println!(
        "one ed25519 verification: {:.1} us, one signature: {:.1} us; all checks and signatures: {:.2} s = {:.0}% of wall time",
        per * 1e6,
        per_sign * 1e6,
        per * sig_checks as f64 + per_sign * signs as f64,
        100.0 * (per * sig_checks as f64 + per_sign * signs as f64) / wall.as_secs_f64()
    );
    Ok(())
}
