//! The trace hash of every scenario file and every regression at seeds 1-3,
//! with its verdict, as one reviewed snapshot
//! (`snapshots/trace_hashes__every_scenario_at_seeds_1_to_3.snap`). A change
//! that must not alter behaviour leaves it as it is; one that does shows as
//! its diff, accepted with `cargo insta review` (or by running this test
//! with `INSTA_UPDATE=always`) and committed with the change.

use hotpocket_sim::{run, Scenario};
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_scenario_at_seeds_1_to_3() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut table = String::new();
    for dir in [root.clone(), root.join("regressions")] {
        for f in toml_files(&dir) {
            let s = Scenario::load(&f).unwrap();
            let name = f.strip_prefix(&root).unwrap().display().to_string();
            for seed in 1..=3 {
                let r = run(&s, seed);
                let verdict = if r.passed { "pass" } else { "FAIL" };
                writeln!(table, "{name} {seed} {} {verdict}", r.trace_hash).unwrap();
            }
        }
    }
    insta::assert_snapshot!(table);
}
