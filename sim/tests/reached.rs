//! Coverage marks: a scenario written to take a rare path must take it.
//! Without these, a change that stops a rule from ever running (the
//! rollback guard in `Chain::roll_back` made to let a voted lcl go, say)
//! would pass every safety check of every scenario that never reaches
//! it; with the guard so changed, `lone-close` reaches
//! `rollback-unproven` instead and this fails.

use hotpocket_sim::{run, Scenario};
use std::path::PathBuf;

fn load(name: &str) -> Scenario {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    Scenario::load(&dir.join(format!("{name}.toml"))).unwrap()
}

/// `name` passes at seeds 1-3, taking every one of `paths` and never
/// `rollback-unproven` (`unproven` says what that would mean).
fn takes(name: &str, paths: &[&str], unproven: &str) {
    let s = load(name);
    for seed in 1..=3 {
        let r = run(&s, seed);
        assert!(r.passed, "{name} seed {seed}: {:?}", r.violations);
        for path in paths {
            assert!(
                r.reached.iter().any(|p| p == path),
                "{name} seed {seed}: {path} not reached; reached {:?}",
                r.reached
            );
        }
        assert!(
            !r.reached.iter().any(|p| p == "rollback-unproven"),
            "{name} seed {seed}: {unproven}"
        );
    }
}

#[test]
fn a_lone_close_is_refused_rollback_then_proven_and_switched() {
    let paths = [
        "lone-close",
        "rollback-refused-voted",
        "rollback-proven",
        "switched-to-proven",
    ];
    let unproven = "node 0 dropped the ledger it voted on without a proof";
    takes("lone-close", &paths, unproven);
}

/// The restored-lcl guard: node 0 restarts after voting on top of the
/// ledger it closed alone, so only that guard keeps the ledger until a
/// proof shows the other final. With the guard gone it drops the ledger
/// unproven, which the vote checker (it saw the vote) reports.
#[test]
fn a_restarted_lone_closer_is_refused_rollback_then_proven_and_switched() {
    let paths = [
        "rollback-refused-restored",
        "rollback-proven",
        "switched-to-proven",
    ];
    let unproven = "node 0 dropped its restored lcl without a proof";
    takes("lone-close-restart", &paths, unproven);
}

/// History that fails verification is refused, and by the check that
/// caught it: a forger's proofs hold too few valid signatures once its
/// forged ones are dropped; a liar's carry a signature that does not hold.
#[test]
fn bad_history_is_refused_by_the_check_that_caught_it() {
    let reached = |name: &str, seed| run(&load(name), seed).reached;
    for seed in 1..=3 {
        let r = reached("history-forger", seed);
        assert!(
            r.iter().any(|p| p == "history-refused-proof-too-small"),
            "{r:?}"
        );
    }
    let r = reached("history-liar", 1);
    assert!(
        r.iter().any(|p| p == "history-refused-proof-signature"),
        "{r:?}"
    );
    // Proofs in the real voters' names, only the signatures wrong.
    for name in ["proof-forger", "proof-forgers"] {
        for seed in 1..=3 {
            let r = reached(name, seed);
            assert!(
                r.iter().any(|p| p == "history-refused-proof-signature"),
                "{name} seed {seed}: {r:?}"
            );
        }
    }
}
