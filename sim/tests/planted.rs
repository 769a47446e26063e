//! The fuzzer has teeth: with one of the protocol's checks switched off
//! (`[consensus] planted_bug`, a knob only tests set), the adversary
//! written to probe that check makes the run fail with a fork (or, for
//! bodies, an honest node running other inputs than its ledger), while with
//! the check in place the same run passes. A prober that could not tell
//! the difference would prove nothing.

use hotpocket_node::consensus::PlantedBug;
use hotpocket_sim::check::violation::{Kind, Violation};
use hotpocket_sim::scenario::HandshakeKind;
use hotpocket_sim::{run, Scenario};
use std::path::PathBuf;

fn load(name: &str) -> Scenario {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    Scenario::load(&dir.join(format!("{name}.toml"))).unwrap()
}

/// Runs `name` with `seed`, first as written, then with `bug` planted;
/// returns the violations of the second run.
fn with_and_without(name: &str, bug: PlantedBug, seed: u64) -> Vec<Violation> {
    let mut s = load(name);
    let clean = run(&s, seed);
    assert!(clean.passed, "{name} seed {seed}: {:?}", clean.violations);
    s.consensus.planted_bug = Some(bug);
    run(&s, seed).violations
}

/// `name` with `bug` planted has a violation of `kind` whose detail holds
/// `detail`, at seeds 1-3 (and passes without it).
fn assert_caught(name: &str, bug: PlantedBug, kind: Kind, detail: &str) {
    assert_caught_at(name, bug, kind, detail, &[1, 2, 3]);
}

/// As `assert_caught`, at the seeds given.
fn assert_caught_at(name: &str, bug: PlantedBug, kind: Kind, detail: &str, seeds: &[u64]) {
    for &seed in seeds {
        let v = with_and_without(name, bug, seed);
        assert!(
            v.iter()
                .any(|v| v.kind == kind && v.detail.contains(detail)),
            "{name} with {bug:?}, seed {seed}: expected {kind} ({detail}), got {v:?}"
        );
    }
}

fn assert_fork(name: &str, bug: PlantedBug) {
    assert_caught(name, bug, Kind::Fork, "");
}

#[test]
fn vote_forger_forks_a_node_that_skips_signature_checks() {
    assert_fork("vote-forger", PlantedBug::NoSignatureCheck);
}

#[test]
fn sybil_forks_a_node_that_counts_keys_outside_the_unl() {
    assert_fork("sybil", PlantedBug::NoUnlCheck);
}

#[test]
fn a_partition_forks_nodes_that_close_on_a_majority_of_what_they_received() {
    // 3/2 split of five: each side's stage-3 proposals agree among
    // themselves, so each side closes its own ledger.
    assert_fork("majority-partition", PlantedBug::CloseOnReceived);
}

#[test]
fn a_lone_close_catches_a_node_that_drops_its_voted_lcl_without_proof() {
    // The vote checker saw node 0's stage-3 vote on top of the ledger it
    // closed alone; with the guard off it drops that ledger when the UNL
    // moves on, before any proof of the other one reaches it.
    let bug = PlantedBug::RollBackVoted;
    assert_caught("lone-close", bug, Kind::Rollback, "voted at stage 3");
}

#[test]
fn a_crash_after_a_lone_close_catches_a_node_that_adopts_an_outvoted_tip() {
    // The restarted node's catch-up reaches the lone closer first: taking
    // its tip, which fewer peers are on, splits the honest nodes 2/2 and
    // nothing closes again. Liveness, never safety: both ledgers are
    // proven.
    let name = "regressions/lone-close-crash-split";
    let bug = PlantedBug::AdoptOutvotedTip;
    assert_caught_at(name, bug, Kind::Liveness, "", &[1, 3, 4711]);
}

#[test]
fn lcl_liars_catch_a_node_that_takes_a_proven_sibling_as_proof_it_lost() {
    // The liars hand a victim the lone closer's ledger with its real
    // proof: taken as a proof of finality, the victim drops the lcl it
    // voted on for a ledger nobody built on (seeds 1 and 4; at seed 2 a
    // node drops one that another had already finalised).
    let bug = PlantedBug::SiblingAsProof;
    let detail = "so no proof of its finality can exist";
    assert_caught_at("lcl-liars", bug, Kind::Rollback, detail, &[1, 4]);
    assert_caught_at("lcl-liars", bug, Kind::Rollback, "had finalised", &[2]);
}

#[test]
fn a_planted_bug_is_not_caught_by_an_adversary_that_does_not_probe_it() {
    // The sybil's votes are all validly signed: switching off the
    // signature check changes nothing for it. Teeth per check, not luck.
    let v = with_and_without("sybil", PlantedBug::NoSignatureCheck, 1);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn history_forger_forks_a_node_that_takes_a_weak_history_proof() {
    assert_fork("history-forger", PlantedBug::WeakHistoryProof);
}

#[test]
fn proof_forgers_fork_a_node_that_skips_history_signature_checks() {
    assert_fork("proof-forger", PlantedBug::NoProofSignatureCheck);
    assert_fork("proof-forgers", PlantedBug::NoProofSignatureCheck);
    // The forged proofs hold a threshold of UNL members: the proof
    // forger does not probe the threshold check.
    let v = with_and_without("proof-forger", PlantedBug::WeakHistoryProof, 1);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn body_swapper_makes_a_node_that_skips_body_checks_run_other_inputs() {
    // No fork here: the ledgers are the real ones. The node that took the
    // swapped bodies runs inputs the ledgers do not name, so its state
    // leaves the certified one: the checker's execution-safety violation.
    assert_caught(
        "body-swapper",
        PlantedBug::UncheckedBodies,
        Kind::Divergence,
        "",
    );
}

#[test]
fn history_skipper_makes_a_node_that_skips_link_checks_break_its_chain() {
    // The ledgers and proofs are real, one left out of each answer: taken
    // without the link check, the next one lands two seqs above the node's
    // lcl and the node's own chain (indexed by seq) breaks under it. The
    // simulator reports the panic as a violation.
    assert_caught(
        "history-skipper",
        PlantedBug::NoLinkCheck,
        Kind::Panic,
        "just appended",
    );
}

#[test]
fn input_forger_gets_inputs_in_users_names_into_ledgers_of_nodes_that_pool_them_unchecked() {
    // Signed inputs only: with the check in place no forged input lands;
    // without it, the honest nodes pool the forger's bodies, propose them,
    // and close ledgers holding inputs no user's session gave.
    let (bug, why) = (
        PlantedBug::UncheckedInputs,
        "which no node took from any user",
    );
    assert_caught("input-forger", bug, Kind::Outputs, why);
}

#[test]
fn input_forger_reorders_a_users_inputs_at_nodes_that_ignore_nonces() {
    // It holds back some of its own users' inputs until later ones ran:
    // without the nonce rule they run after them.
    let (bug, why) = (PlantedBug::NoNonceOrder, "after its input of nonce");
    assert_caught("input-forger", bug, Kind::Outputs, why);
}

#[test]
fn twins_with_partitions_fork_nodes_that_close_on_a_majority_of_what_they_received() {
    // Schedules 3, 5 and 6 put two honest nodes with one copy and the
    // third with the other: each side's received votes agree. With the
    // split alone the honest nodes still hear each other and never fork.
    use hotpocket_sim::fuzz::fuzzed;
    let forks = |name: &str, seed: u64, bug: bool| {
        let mut s = fuzzed(&load(name), seed);
        if bug {
            s.consensus.planted_bug = Some(PlantedBug::CloseOnReceived);
        }
        let r = run(&s, seed);
        assert!(bug || r.passed, "{name} seed {seed}: {:?}", r.violations);
        r.violations.iter().any(|v| v.kind == Kind::Fork)
    };
    for seed in [3, 5, 6] {
        assert!(!forks("twins-partition", seed, false));
        assert!(forks("twins-partition", seed, true), "seed {seed}");
        assert!(!forks("twins", seed, true), "seed {seed}");
    }
}

/// The relay adversary and the session check have teeth: with the peer
/// handshake found open to a relay (version 1), or version 2 with dialers
/// that take whatever key answers, the relay gets honest nodes to hold
/// sessions whose key is not the machine at the other end; with the
/// handshake as shipped it gets none.
#[test]
fn the_relay_fools_the_old_handshake_and_an_unpinned_dialer_only() {
    let mut s = load("relay");
    for seed in 1..=2 {
        let clean = run(&s, seed);
        assert!(clean.passed, "relay seed {seed}: {:?}", clean.violations);
        for kind in [HandshakeKind::V1, HandshakeKind::V2Unpinned] {
            s.handshake = kind;
            let v = run(&s, seed).violations;
            assert!(
                v.iter().any(|v| v.kind == Kind::Session),
                "{kind:?}, seed {seed}: expected a fooled session, got {v:?}"
            );
            s.handshake = HandshakeKind::V2;
        }
    }
}
