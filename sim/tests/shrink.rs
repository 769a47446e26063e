//! Shrinking on a deliberately broken protocol: with
//! `close_on_received` planted, a node closes on a majority of the stage-3
//! votes it received, so each side of a partition closes on its own. A small
//! campaign over a noisy partition scenario finds the fork, and the
//! shrinker brings the run down to a few timeline events that still fork.

use hotpocket_node::consensus::PlantedBug;
use hotpocket_sim::check::violation::{Kind, Violation};
use hotpocket_sim::fuzz::fuzzed;
use hotpocket_sim::scenario::Fault;
use hotpocket_sim::scenario::Ranges;
use hotpocket_sim::shrink::shrink;
use hotpocket_sim::{run, Scenario};
use std::path::PathBuf;

fn noisy_broken_partition() -> Scenario {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut s = Scenario::load(&dir.join("majority-partition.toml")).unwrap();
    s.consensus.planted_bug = Some(PlantedBug::CloseOnReceived);
    s.fuzz = Some(Ranges {
        loss_pct: Some([1.0, 3.0]),
        reorder_pct: Some([0.0, 10.0]),
        clock_offset_ms: Some([-20, 20]),
        crashes: Some([5, 5]),
        timeline_jitter_ms: Some(500),
        ..Ranges::default()
    });
    s
}

#[test]
fn a_planted_fork_found_by_a_campaign_shrinks_to_a_few_events_and_replays() {
    let base = noisy_broken_partition();
    let forks = |v: &[Violation]| v.iter().any(|v| v.kind == Kind::Fork);
    let (seed, failing) = (0..10)
        .map(|seed| (seed, fuzzed(&base, seed)))
        .find(|(seed, s)| forks(&run(s, *seed).violations))
        .expect("the campaign finds the planted fork");
    assert!(failing.timeline.len() > 10, "{}", failing.timeline.len());

    let m = shrink(&failing, seed, 120).expect("the run fails");
    assert_eq!(m.violation.kind, Kind::Fork, "{}", m.violation);
    assert!(m.scenario.timeline.len() <= 10, "{:?}", m.scenario.timeline);
    assert!(m.runs <= 120);
    let calmer = m.scenario.network.loss_pct == 0.0 || m.scenario.nodes < failing.nodes;
    assert!(calmer, "nothing but the timeline shrank");

    // What `shrink` writes replays: the file, read back, forks the same way
    // with the same seed.
    let text = toml::to_string_pretty(&m.scenario).unwrap();
    let back: Scenario = toml::from_str(&text).unwrap();
    let again = run(&back, seed).violations;
    assert!(again.contains(&m.violation), "{again:?}");
    // And it is the planted bug that fails it: the same file passes on the
    // correct protocol.
    let mut fixed = back;
    fixed.consensus.planted_bug = None;
    let r = run(&fixed, seed);
    assert!(r.passed, "{:?}", r.violations);
}

/// A liveness expectation is judged only where the timeline lets a correct
/// protocol meet it; otherwise a shrink step that drops a restart would
/// turn any bug into "a node is down for good", which the correct code
/// fails too.
#[test]
fn a_node_down_for_good_without_a_quorum_is_no_liveness_failure() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut s = Scenario::load(&dir.join("crash-restart.toml")).unwrap();
    // Three nodes: the close threshold (80%) needs all of them.
    s.nodes = 3;
    let r = run(&s, 1);
    assert!(r.passed, "{:?}", r.violations);
    s.timeline
        .retain(|e| !matches!(e.fault, Fault::Restart { .. }));
    let r = run(&s, 1);
    assert!(r.passed, "{:?}", r.violations);
    // Judged it still is while a quorum is up: five nodes, one down for
    // good, four must go on, and the expectation is raised past reach.
    s.nodes = 5;
    for e in &mut s.expectations {
        if let hotpocket_sim::scenario::Expectation::ReachSeq { seq, .. } = e {
            *seq = 10_000;
        }
    }
    let r = run(&s, 1);
    let live: Vec<_> = (r.violations.iter())
        .filter(|v| v.kind == Kind::Liveness)
        .filter_map(|v| v.node)
        .collect();
    assert_eq!(live, [0, 1, 3, 4], "{:?}", r.violations);
}
