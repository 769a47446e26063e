//! The command line: exit codes, JSON shape, reproduction commands.

use std::process::Command;

fn sim() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hotpocket-sim"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary with `args`, expects success, parses its JSON output.
fn json_of(args: &[&str]) -> serde_json::Value {
    let out = sim().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn run_json_has_the_promised_fields() {
    let v = json_of(&["run", "scenarios/happy-path.toml", "--seed", "3", "--json"]);
    assert_eq!(v["seed"], 3);
    assert_eq!(v["passed"], true);
    assert_eq!(v["trace_hash"].as_str().unwrap().len(), 64);
    assert_eq!(v["violations"].as_array().unwrap().len(), 0);
    assert_eq!(v["simulated_ms"], 30000);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    for n in nodes {
        assert!(n["seq"].as_u64().unwrap() >= 28);
        assert_eq!(n["lcl"].as_str().unwrap().len(), 64);
        assert!(n["id"].is_u64());
    }
}

#[test]
fn a_failing_run_exits_with_its_class_and_says_how_to_reproduce() {
    let dir = scratch("hps-cli");
    let f = dir.join("impossible.toml");
    std::fs::write(
        &f,
        "name = \"impossible\"\nduration_ms = 3000\nnodes = 3\n[[expect]]\nkind = \"reach_seq\"\nseq = 50\nby_ms = 3000\n",
    )
    .unwrap();
    let out = sim()
        .args(["run", f.to_str().unwrap(), "--seed", "9"])
        .output()
        .unwrap();
    // Liveness only: exit code 3.
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("hotpocket-sim run {} --seed 9", f.display())),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("VIOLATION liveness"), "{text}");
}

#[test]
fn bad_scenarios_are_refused_with_the_reason() {
    let dir = scratch("hps-cli-bad");
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "name = \"x\"\nduration_ms = 1000\nnodes = 3\nunl = [0, 7]\n",
    )
    .unwrap();
    let out = sim().args(["run", f.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unl names node 7"));
    let out = sim().args(["run", "no/such/file.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn fuzz_reports_in_json() {
    let v = json_of(&["fuzz", "scenarios/silent.toml", "--seeds", "0..3", "--json"]);
    assert_eq!(v["runs"], 3);
    assert_eq!(v["passed"], true);
}

#[test]
fn shrink_writes_a_smaller_file_that_still_fails_and_refuses_a_passing_one() {
    let dir = scratch("hps-cli-shrink");
    let f = dir.join("slow.toml");
    // Ledger 50 in 3 s cannot happen; the crash is beside the point.
    std::fs::write(
        &f,
        "name = \"slow\"\nduration_ms = 3000\nnodes = 5\n\
         [[timeline]]\nat_ms = 1000\naction = \"crash\"\nnode = 2\n\
         [[expect]]\nkind = \"reach_seq\"\nseq = 50\nby_ms = 3000\nnodes = [0]\n",
    )
    .unwrap();
    let out = sim()
        .args(["shrink", f.to_str().unwrap(), "--seed", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let min = std::fs::read_to_string(dir.join("slow-min.toml")).unwrap();
    assert!(
        min.contains("# shrunk: liveness: node 0 reached seq"),
        "{min}"
    );
    assert!(
        min.contains("from 1 to 0 timeline events and 5 to 1 nodes"),
        "{min}"
    );
    assert!(min.contains("# hotpocket-sim run FILE --seed 4"), "{min}");
    let out = sim()
        .args([
            "run",
            dir.join("slow-min.toml").to_str().unwrap(),
            "--seed",
            "4",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));

    let out = sim()
        .args(["shrink", "scenarios/happy-path.toml", "--max-runs", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to shrink"));
}

#[test]
fn shards_split_a_campaign_and_merge_adds_them_up() {
    let dir = scratch("hps-cli-shards");
    let report = |i: u64| dir.join(format!("shard-{i}.json"));
    for i in 0..2 {
        let shard = format!("{i}/2");
        let out = sim()
            .args([
                "fuzz",
                "scenarios/silent.toml",
                "--seeds",
                "0..5",
                "--shard",
                &shard,
            ])
            .arg("--json")
            .arg(report(i))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let merged = json_of(&[
        "merge",
        report(0).to_str().unwrap(),
        report(1).to_str().unwrap(),
    ]);
    assert_eq!(merged["runs"], 5);
    assert_eq!(merged["passed"], true);
    assert_eq!(merged["spans"].as_array().unwrap().len(), 2);
    assert_eq!(merged["roles"]["silent"], 5);

    // A budget with no seed range ends (seeds are unbounded then) and says
    // where it stopped.
    let v = json_of(&["fuzz", "scenarios/silent.toml", "--budget", "0s", "--json"]);
    assert_eq!(v["runs"], 0);
    assert_eq!(v["spans"][0]["stopped_at"], 0);
}

/// Every field path of `v` with its JSON type (arrays by their first
/// element): the shape a consumer of `--json` relies on, not its values.
fn shape(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value::*;
    match v {
        Object(m) => {
            for (k, x) in m {
                shape(x, &format!("{path}.{k}"), out);
            }
        }
        Array(a) => match a.first() {
            Some(x) => shape(x, &format!("{path}[]"), out),
            None => out.push(format!("{path}[] (empty)")),
        },
        Null => out.push(format!("{path}: null")),
        Bool(_) => out.push(format!("{path}: bool")),
        Number(_) => out.push(format!("{path}: number")),
        String(_) => out.push(format!("{path}: string")),
    }
}

/// The `run --json` report's shape as a reviewed snapshot: renaming or
/// dropping a field shows as a diff (`cargo insta review`).
#[test]
fn run_json_shape_is_the_snapshot() {
    let v = json_of(&["run", "scenarios/happy-path.toml", "--seed", "1", "--json"]);
    let mut paths = vec![];
    shape(&v, "", &mut paths);
    insta::assert_snapshot!(paths.join("\n"));
}

/// What the swarm draws for its first seeds, as a reviewed snapshot: a
/// change to the draws shows as a diff, and asks for a new campaign.
#[test]
fn swarm_draws_are_the_snapshot() {
    let base = hotpocket_sim::Scenario::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/swarm.toml"
    )))
    .unwrap();
    let drawn: Vec<String> = (1..=3)
        .map(|seed| {
            let s = hotpocket_sim::fuzz::fuzzed(&base, seed);
            format!("# seed {seed}\n{}", toml::to_string_pretty(&s).unwrap())
        })
        .collect();
    insta::assert_snapshot!(drawn.join("\n"));
}
