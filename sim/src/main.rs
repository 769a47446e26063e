//! `hotpocket-sim`: run, fuzz and benchmark consensus scenarios.
// `bench` times the simulator against the wall clock.
#![allow(clippy::disallowed_methods)]

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hotpocket_sim::check::violation::Class;
use hotpocket_sim::fuzz::{fuzzed, parse_seeds};
use hotpocket_sim::{campaign, picture, run, Report, Scenario};
use std::path::{Path, PathBuf};

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
    /// Run one scenario with one seed. Exits 1 on a safety violation, 4 on a
    /// crash (a panic, a node stopped), 3 on a liveness failure only; 2 on
    /// a usage or file error.
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
        /// Draw the run as one self-contained HTML page: a lane per node,
        /// messages as arrows, faults, closes and the violation marked.
        #[arg(long)]
        picture: Option<PathBuf>,
        /// The picture's window in simulated ms, as FROM..TO (default: four
        /// rounds before the first violation to one after, or the last
        /// five rounds).
        #[arg(long)]
        window: Option<String>,
        /// Write the run's sends and receives with vector clocks for ShiViz.
        #[arg(long)]
        shiviz: Option<PathBuf>,
    },
    /// Run scenarios over a range of seeds (or as many as a budget allows),
    /// varying fault parameters within each scenario's [fuzz] or [swarm]
    /// ranges; writes each failing seed's scenario and shrinks the first of
    /// each kind of violation. Exits as `run` does for the gravest
    /// failure of any seed.
    Fuzz {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Seeds to try, as A..B (B exclusive) or N [default: 0..100, or
        /// unbounded with --budget].
        #[arg(long)]
        seeds: Option<String>,
        /// Stop starting runs after this much wall time (90s, 5m, 2h).
        #[arg(long)]
        budget: Option<String>,
        /// Run only shard i of n (seeds with seed % n == i), so n machines
        /// or jobs split one range with no coordinator; `merge` adds up
        /// their reports.
        #[arg(long, default_value = "0/1")]
        shard: String,
        /// Where failing seeds' scenarios (and the shrunk ones) go.
        #[arg(long, default_value = "target/fuzz-failures")]
        out: PathBuf,
        /// Write the campaign report as JSON to this file (`--json` alone:
        /// to stdout, instead of text): runs, simulated time, failures by
        /// kind with their reproduction lines, faults and roles drawn.
        #[arg(long, num_args = 0..=1, default_missing_value = "-")]
        json: Option<PathBuf>,
        /// Runs each shrink may make (0: do not shrink); the result goes
        /// beside the failing file as NAME-seed-N-min.toml.
        #[arg(long, default_value_t = 200)]
        shrink_runs: u64,
        /// Rare paths (comma-separated names, as the report lists them:
        /// rollback-proven, rollback-refused-voted, ...) that some run must
        /// reach; the campaign fails (exit 1) when one was never reached.
        #[arg(long, value_delimiter = ',')]
        require: Vec<String>,
    },
    /// Fold the JSON reports of a campaign's shards into one.
    Merge {
        /// Reports written by `fuzz --json FILE`.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write the merged report here (default: stdout, as JSON).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rare paths some run of the shards together must reach, as for
        /// `fuzz --require`: shards split the seeds, so this is where a
        /// sharded campaign checks them.
        #[arg(long, value_delimiter = ',')]
        require: Vec<String>,
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
    /// Measure simulated time per wall-clock time on one core (5 nodes,
    /// lossy network, roundtime 1000 ms, no faults or checks that stop a
    /// run), with min/median/max over repeated runs, the cost of a round and
    /// a node-round, peak memory and the signature work. Build with
    /// --release for meaningful numbers.
    Bench {
        /// Simulated seconds a run lasts.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Scenario to time instead of the built-in lossy one.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Nodes to simulate instead of the scenario's (one user per node).
        #[arg(long)]
        nodes: Option<usize>,
        /// Runs to time (the same seed each time).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
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
            picture: picture_out,
            window,
            shiviz,
        } => {
            let base = Scenario::load(&file)?;
            let s = if f { fuzzed(&base, seed) } else { base };
            if f && !json {
                println!("drawn: {}", s.description);
            }
            let keep = picture_out.is_some() || shiviz.is_some();
            let report = hotpocket_sim::runner::run_with(&s, seed, events, keep);
            picture::write(
                &s,
                &report,
                picture_out.as_deref(),
                window.as_deref(),
                shiviz.as_deref(),
            )?;
            let repro = campaign::repro_command(&file, seed, f);
            if json {
                println!("{}", serde_json::to_string_pretty(&json_report(&report))?);
            } else {
                print_report(&report);
            }
            if let Some(class) = Class::worst(&report.violations) {
                eprintln!("FAILED ({class:?}); reproduce with: {repro}");
                std::process::exit(class.exit_code());
            }
            Ok(())
        }
        Command::Fuzz {
            files,
            seeds,
            budget,
            shard,
            out,
            json,
            shrink_runs,
            require,
        } => {
            let budget = budget
                .map(|b| campaign::parse_budget(&b))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let seeds = match (seeds, budget) {
                (Some(s), _) => parse_seeds(&s).map_err(anyhow::Error::msg)?,
                (None, Some(_)) => 0..u64::MAX,
                (None, None) => 0..100,
            };
            let to_stdout = json.as_deref() == Some(Path::new("-"));
            let plan = campaign::Plan {
                files,
                seeds,
                shard: campaign::Shard::parse(&shard).map_err(anyhow::Error::msg)?,
                budget,
                out,
                shrink_runs,
                verbose: !to_stdout,
            };
            let report = campaign::run(&plan)?;
            match json {
                Some(_) if to_stdout => println!("{}", serde_json::to_string_pretty(&report)?),
                Some(path) => {
                    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                        .with_context(|| format!("writing {}", path.display()))?;
                    print_campaign(&report);
                }
                None => print_campaign(&report),
            }
            if let Some(class) = report.class() {
                std::process::exit(class.exit_code());
            }
            require_reached(&report, &require);
            Ok(())
        }
        Command::Merge {
            reports,
            out,
            require,
        } => {
            let report = campaign::merge(&reports)?;
            let text = serde_json::to_string_pretty(&report)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    print_campaign(&report);
                }
                None => println!("{text}"),
            }
            require_reached(&report, &require);
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
            // It tells where it wrote the result.
            if campaign::shrink_to_file(&s, seed, max_runs, &path, true)? {
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
        Command::Bench {
            seconds,
            scenario,
            nodes,
            runs,
            seed,
        } => {
            let scenario = match scenario {
                Some(f) => Scenario::load(&f)?,
                None => toml::from_str(include_str!("../../scenarios/lossy.toml"))
                    .context("built-in lossy scenario")?,
            };
            let b = hotpocket_sim::bench::Bench {
                scenario,
                seconds,
                nodes,
                runs,
                seed,
            };
            for line in b.time()?.lines() {
                println!("{line}");
            }
            Ok(())
        }
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
                    report
                        .violations
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            predictable += report.beacon.outcomes - report.beacon.random;
            values.extend(report.beacon.values);
        }
    }
    let s = hotpocket_sim::check::beacon_stats::summarise(&values);
    let verdict =
        |t: &hotpocket_sim::check::beacon_stats::Test| if t.passed() { "pass" } else { "FAIL" };
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

/// Exits 1 when a required rare path was reached by no run.
fn require_reached(r: &campaign::CampaignReport, required: &[String]) {
    let missing = r.unreached(required);
    if !missing.is_empty() {
        eprintln!(
            "no run reached {}: the campaign did not exercise what it must",
            missing.join(", ")
        );
        std::process::exit(1);
    }
}

/// The text summary of a campaign report.
fn print_campaign(r: &campaign::CampaignReport) {
    println!(
        "{} runs, {} failed ({} simulated s in {} s)",
        r.runs,
        r.failed,
        r.simulated_ms / 1000,
        r.wall_ms / 1000
    );
    for span in &r.spans {
        if let Some(at) = span.stopped_at {
            println!(
                "  shard {} of {}..{}: budget spent, next seed {at}",
                span.shard, span.from, span.to
            );
        }
    }
    for (kind, n) in &r.by_kind {
        println!("  {n} x {kind}");
    }
    if !r.reached.is_empty() {
        let paths: Vec<String> = (r.reached.iter())
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        println!("  rare paths reached (runs): {}", paths.join(", "));
    }
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
        "outputs_signed": r.outputs_signed,
        "statuses": r.statuses,
        "rolled_back": r.rolled_back,
        "reached": r.reached,
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
        "  users: {} inputs sent, {} to a node that was down; {} taken, {} answered; outputs of {} runs handed with 80% of the UNL's signatures, {} with fewer",
        r.inputs_submitted + r.inputs_dropped,
        r.inputs_dropped,
        r.inputs_taken,
        r.inputs_answered,
        r.outputs_signed[0],
        r.outputs_signed[1]
    );
    if r.statuses != [0, 0] {
        println!(
            "  statuses of signed inputs: {} accepted (each naming the ledger that holds it), {} rejected",
            r.statuses[0], r.statuses[1]
        );
    }
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
