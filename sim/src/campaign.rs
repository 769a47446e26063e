//! Fuzz campaigns: seeds from a range, a shard of it, or as
//! many as a wall-clock budget allows; failing seeds written out and
//! shrunk; one JSON report per campaign, which `merge` folds together, so
//! shards run on any job engine (a CI matrix, Indexed Jobs, GNU parallel)
//! with no coordinator of ours.
//!
//! The budget is wall time by definition: it decides only how many seeds
//! run, never what happens inside one, so every run still replays.

use crate::check::violation::{Class, Kind, Violation};
use crate::fuzz::fuzzed;
use crate::fuzz::swarm::role_name;
use crate::scenario::{Role, Scenario};
use crate::shrink::shrink;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Seeds `seed % count == index` of a range: shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// "i/n", with 0 <= i < n.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let err = || format!("expected a shard as i/n with 0 <= i < n, got {text:?}");
        let (i, n) = text.split_once('/').ok_or_else(err)?;
        let (index, count) = (i.parse().map_err(|_| err())?, n.parse().map_err(|_| err())?);
        if index >= count {
            return Err(err());
        }
        Ok(Shard { index, count })
    }

    pub fn has(&self, seed: u64) -> bool {
        seed % self.count == self.index
    }

    /// How many seeds of `range` are in this shard.
    pub fn count_in(&self, range: &std::ops::Range<u64>) -> u64 {
        let first = range.start + (self.index + self.count - range.start % self.count) % self.count;
        if first >= range.end {
            0
        } else {
            (range.end - 1 - first) / self.count + 1
        }
    }
}

/// "90s", "5m", "2h", or plain seconds.
pub fn parse_budget(text: &str) -> Result<Duration, String> {
    let err = || format!("expected a budget like 90s, 5m or 2h, got {text:?}");
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().map_err(|_| err())?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(err()),
    };
    Ok(Duration::from_secs(secs))
}

/// What one shard covered: its seed range, shard, and the first seed it
/// did not get to (when a budget ended it early).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Span {
    pub from: u64,
    pub to: u64,
    pub shard: String,
    pub stopped_at: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub scenario: String,
    pub file: String,
    pub seed: u64,
    pub kind: Kind,
    pub violations: Vec<Violation>,
    pub reproduce: String,
    pub reproduce_file: String,
    pub reproduce_shrunk: Option<String>,
}

/// A campaign's figures; shards' reports add up with [`CampaignReport::merge`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CampaignReport {
    pub runs: u64,
    pub failed: u64,
    pub passed: bool,
    pub simulated_ms: u64,
    pub wall_ms: u64,
    pub spans: Vec<Span>,
    /// Failing runs by violation kind (the first violation of each run).
    pub by_kind: BTreeMap<Kind, u64>,
    pub failures: Vec<Failure>,
    /// How many times each timeline fault kind was drawn, over all runs.
    pub faults: BTreeMap<String, u64>,
    /// How many nodes played each byzantine role, over all runs.
    pub roles: BTreeMap<String, u64>,
    /// How many runs took each rare path (`RarePath::name`) on an honest
    /// node.
    #[serde(default)]
    pub reached: BTreeMap<String, u64>,
}

impl CampaignReport {
    pub fn merge(&mut self, other: CampaignReport) {
        self.passed = (self.runs == 0 || self.passed) && other.passed;
        self.runs += other.runs;
        self.failed += other.failed;
        self.simulated_ms += other.simulated_ms;
        self.wall_ms += other.wall_ms;
        self.spans.extend(other.spans);
        add(&mut self.by_kind, other.by_kind);
        add(&mut self.faults, other.faults);
        add(&mut self.roles, other.roles);
        add(&mut self.reached, other.reached);
        self.failures.extend(other.failures);
        self.failures
            .sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
    }

    /// Of the rare paths `required`, those no run reached.
    pub fn unreached<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        (required.iter())
            .filter(|p| self.reached.get(*p).is_none_or(|n| *n == 0))
            .map(String::as_str)
            .collect()
    }

    /// The gravest class among the failures, which the exit code says.
    pub fn class(&self) -> Option<Class> {
        Class::worst(self.failures.iter().flat_map(|f| &f.violations))
    }

    fn count_drawn(&mut self, s: &Scenario) {
        for e in &s.timeline {
            let v = serde_json::to_value(&e.fault).unwrap_or_default();
            let action = v["action"].as_str().unwrap_or("?").to_string();
            *self.faults.entry(action).or_default() += 1;
        }
        for id in 0..s.nodes {
            let role = s.role(id);
            if role != Role::Honest {
                *self.roles.entry(role_name(role)).or_default() += 1;
            }
        }
    }
}

fn add<K: Ord>(to: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
    for (k, v) in from {
        *to.entry(k).or_default() += v;
    }
}

pub struct Plan {
    pub files: Vec<PathBuf>,
    pub seeds: std::ops::Range<u64>,
    pub shard: Shard,
    pub budget: Option<Duration>,
    /// Where failing scenarios (and their shrunk forms) are written.
    pub out: PathBuf,
    /// Runs each shrink may make; 0 skips shrinking.
    pub shrink_runs: u64,
    /// Print each failure and progress to stderr.
    pub verbose: bool,
}

/// Runs the campaign. Seeds go in the outer loop and files in the inner,
/// so a budget shares its time among the files.
#[allow(clippy::disallowed_methods)] // the budget is wall time (module doc)
pub fn run(plan: &Plan) -> Result<CampaignReport> {
    let started = Instant::now();
    let bases: Vec<(PathBuf, Scenario)> = plan
        .files
        .iter()
        .map(|f| Ok((f.clone(), Scenario::load(f)?)))
        .collect::<Result<_>>()?;
    // Under a budget the range may be unbounded: no total to show.
    let total = match plan.budget {
        Some(_) => 0,
        None => plan.shard.count_in(&plan.seeds),
    };
    let progress = Progress::new(plan.verbose, total * bases.len() as u64, plan.budget);
    let mut r = CampaignReport {
        passed: true,
        ..CampaignReport::default()
    };
    let mut shrunk_kinds = std::collections::BTreeSet::new();
    let mut stopped_at = None;
    for seed in plan.seeds.clone().filter(|s| plan.shard.has(*s)) {
        if plan.budget.is_some_and(|b| started.elapsed() >= b) {
            stopped_at = Some(seed);
            break;
        }
        for (file, base) in &bases {
            let s = fuzzed(base, seed);
            r.count_drawn(&s);
            let report = crate::runner::run(&s, seed);
            r.runs += 1;
            for p in &report.reached {
                *r.reached.entry(p.clone()).or_default() += 1;
            }
            r.simulated_ms += report.simulated_ms;
            if !report.passed {
                let k = report.violations[0].kind;
                let written = write_failure(&plan.out, &s, seed)?;
                let min = if plan.shrink_runs > 0 && shrunk_kinds.insert(k) {
                    let path = written.with_file_name(format!("{}-seed-{seed}-min.toml", s.name));
                    shrink_to_file(&s, seed, plan.shrink_runs, &path, plan.verbose)?;
                    Some(repro_command(&path, seed, false))
                } else {
                    None
                };
                let f = Failure {
                    scenario: base.name.clone(),
                    file: file.display().to_string(),
                    seed,
                    kind: k,
                    violations: report.violations,
                    reproduce: repro_command(file, seed, true),
                    reproduce_file: repro_command(&written, seed, false),
                    reproduce_shrunk: min,
                };
                progress.failed(&f);
                *r.by_kind.entry(k).or_default() += 1;
                r.failed += 1;
                r.passed = false;
                r.failures.push(f);
            }
            progress.ran(&r);
        }
    }
    progress.done();
    r.wall_ms = started.elapsed().as_millis() as u64;
    r.spans.push(Span {
        from: plan.seeds.start,
        to: plan.seeds.end,
        shard: format!("{}/{}", plan.shard.index, plan.shard.count),
        stopped_at,
    });
    Ok(r)
}

/// A progress bar on a terminal, a plain line every 100 runs otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    verbose: bool,
}

impl Progress {
    fn new(verbose: bool, runs: u64, budget: Option<Duration>) -> Progress {
        let on_terminal = verbose && std::io::stderr().is_terminal();
        let bar = on_terminal.then(|| {
            let bar = if budget.is_some() {
                indicatif::ProgressBar::new_spinner()
            } else {
                indicatif::ProgressBar::new(runs)
            };
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress { bar, verbose }
    }

    fn ran(&self, r: &CampaignReport) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(r.runs);
                bar.set_message(format!("{} failed", r.failed));
            }
            None if self.verbose && r.runs.is_multiple_of(100) => {
                eprintln!("{} runs, {} failed", r.runs, r.failed)
            }
            None => {}
        }
    }

    fn failed(&self, f: &Failure) {
        if !self.verbose {
            return;
        }
        let first = f.violations.iter().take(3).map(Violation::to_string);
        let mut shown = first.collect::<Vec<_>>().join("; ");
        if f.violations.len() > 3 {
            shown += &format!("; ... {} violations in all", f.violations.len());
        }
        let text = format!(
            "FAIL {} seed {}: {shown}\n  reproduce: {}{}",
            f.scenario,
            f.seed,
            f.reproduce,
            f.reproduce_shrunk
                .as_ref()
                .map_or(String::new(), |m| format!("\n  shrunk: {m}")),
        );
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The command that replays `file` with `seed` (drawn again with
/// `fuzzed`, as `fuzz` ran it).
pub fn repro_command(file: &Path, seed: u64, fuzzed: bool) -> String {
    let flag = if fuzzed { " --fuzzed" } else { "" };
    format!("hotpocket-sim run {} --seed {seed}{flag}", file.display())
}

fn write_failure(dir: &Path, s: &Scenario, seed: u64) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}-seed-{seed}.toml", s.name));
    let text = toml::to_string_pretty(s).context("serialising the failing scenario")?;
    std::fs::write(&path, format!("# {}\n{text}", s.description))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Shrinks `s`'s failing run with `seed` into `path`, with a header saying
/// what still fails, how much went, and how to run it; false if it passes.
#[allow(clippy::disallowed_methods)] // the header reports wall time spent
pub fn shrink_to_file(
    s: &Scenario,
    seed: u64,
    max_runs: u64,
    path: &Path,
    verbose: bool,
) -> Result<bool> {
    let started = Instant::now();
    let mut start = s.clone();
    start.fuzz = None;
    start.swarm = None;
    let Some(m) = shrink(&start, seed, max_runs) else {
        return Ok(false);
    };
    let secs = started.elapsed().as_secs_f64();
    let budget = if m.exhausted {
        ", the run budget spent"
    } else {
        ""
    };
    let from = if s.description.is_empty() {
        &s.name
    } else {
        &s.description
    };
    let header = format!(
        "# shrunk: {}\n# shrunk from {} to {} timeline events and {} to {} nodes in {secs:.0} s \
         ({} runs{budget})\n# from: {from}\n# hotpocket-sim run FILE --seed {seed}\n",
        m.violation,
        s.timeline.len(),
        m.scenario.timeline.len(),
        s.nodes,
        m.scenario.nodes,
        m.runs,
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string_pretty(&m.scenario).context("serialising the shrunk scenario")?;
    std::fs::write(path, format!("{header}{text}"))
        .with_context(|| format!("writing {}", path.display()))?;
    if verbose {
        eprint!("{header}");
        eprintln!("wrote {}", path.display());
    }
    Ok(true)
}

/// Folds shard reports (JSON files) into one.
pub fn merge(files: &[PathBuf]) -> Result<CampaignReport> {
    let mut total = CampaignReport {
        passed: true,
        ..CampaignReport::default()
    };
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let r: CampaignReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a campaign report", f.display()))?;
        total.merge(r);
    }
    if files.is_empty() {
        bail!("no reports to merge");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_a_range_exactly_and_budgets_parse() {
        let shards: Vec<Shard> = (0..3)
            .map(|i| Shard::parse(&format!("{i}/3")).unwrap())
            .collect();
        for seed in 0..50 {
            assert_eq!(shards.iter().filter(|s| s.has(seed)).count(), 1);
        }
        for range in [0..10, 7..8, 5..5, 4..100] {
            for s in &shards {
                let n = range.clone().filter(|x| s.has(*x)).count() as u64;
                assert_eq!(s.count_in(&range), n, "{range:?} {s:?}");
            }
        }
        assert!(Shard::parse("3/3").is_err());
        assert!(Shard::parse("1").is_err());
        assert_eq!(parse_budget("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_budget("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_budget("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_budget("5 min").is_err());
        assert!(parse_budget("m").is_err());
    }

    #[test]
    fn merged_reports_add_up() {
        let one = |runs, failed: u64, kind: Kind| CampaignReport {
            runs,
            failed,
            passed: failed == 0,
            simulated_ms: runs * 1000,
            by_kind: BTreeMap::from([(kind, failed)]),
            faults: BTreeMap::from([("crash".to_string(), runs)]),
            ..CampaignReport::default()
        };
        let mut r = CampaignReport {
            passed: true,
            ..CampaignReport::default()
        };
        r.merge(one(10, 0, Kind::Fork));
        assert!(r.passed);
        r.merge(one(5, 2, Kind::Fork));
        r.merge(one(5, 1, Kind::Liveness));
        assert_eq!((r.runs, r.failed, r.simulated_ms), (20, 3, 20_000));
        assert!(!r.passed);
        assert_eq!(r.by_kind[&Kind::Fork], 2);
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(r#""by_kind":{"fork":2,"liveness":1}"#),
            "{json}"
        );
        assert_eq!(r.faults["crash"], 20);
    }

    /// A path counts as reached once any shard's run reached it.
    #[test]
    fn required_paths_are_checked_over_merged_shards() {
        let shard = |paths: &[(&str, u64)]| CampaignReport {
            reached: (paths.iter()).map(|(p, n)| (p.to_string(), *n)).collect(),
            ..CampaignReport::default()
        };
        let required: Vec<String> = ["rollback-proven", "lone-close", "history-adopted"]
            .map(String::from)
            .to_vec();
        let mut r = shard(&[("history-adopted", 3)]);
        assert_eq!(r.unreached(&required), ["rollback-proven", "lone-close"]);
        r.merge(shard(&[("rollback-proven", 1), ("history-adopted", 2)]));
        assert_eq!(r.unreached(&required), ["lone-close"]);
        assert_eq!(r.reached["history-adopted"], 5);
        // Shards written before the field existed read as reaching nothing.
        let old: CampaignReport = serde_json::from_str(
            r#"{"runs":1,"failed":0,"passed":true,"simulated_ms":0,"wall_ms":0,
                "spans":[],"by_kind":{},"failures":[],"faults":{},"roles":{}}"#,
        )
        .unwrap();
        assert!(old.reached.is_empty());
    }
}
