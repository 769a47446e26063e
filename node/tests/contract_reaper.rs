//! What a contract leaves running ends with its run, even a process that
//! left the contract's process group, and it never holds the run up: in a
//! process that is a child subreaper, as `hotpocket run` is.
//!
//! Every test here makes this test process a subreaper, whose sweep kills
//! any child it did not start as a contract: so no test in this file may
//! start a process any other way.
#![cfg(feature = "runtime")]
// Real processes on real time.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use hotpocket_node::contract::{FdlistFormat, RunLimits, RunOutcome, RunRequest, UserIo};
use hotpocket_node::crypto::{Hash, Keypair, PubKey};
use hotpocket_node::real::process::{ProcessRunner, Workdir};
use hotpocket_node::real::reaper;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Generous bounds for a loaded machine: a test passes as soon as its
/// condition holds, so these only decide how long a failure takes. Each
/// is far below the hour the contract's leftovers would sleep.
const RUN: Duration = Duration::from_secs(60);
const GONE: Duration = Duration::from_secs(30);

fn fixture() -> String {
    format!(
        "{}/../fixtures/contracts/detach.sh",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A host running `detach.sh MODE PIDFILE` in a fresh state directory,
/// and PIDFILE.
fn host(tag: &str, mode: &str, limits: RunLimits) -> (ProcessRunner, PathBuf) {
    reaper::become_subreaper().unwrap();
    assert!(reaper::is_subreaper());
    let root = std::env::temp_dir().join(format!("hp-reaper-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("state")).unwrap();
    let pids = root.join("pids");
    let host = ProcessRunner {
        binary: fixture().into(),
        args: vec![mode.to_string(), pids.display().to_string()],
        state_dir: root.join("state"),
        format: FdlistFormat::Text,
        workdir: Workdir::State,
        io: UserIo::Raw,
        limits,
    };
    (host, pids)
}

fn user() -> PubKey {
    Keypair::from_seed([1; 32]).public()
}

fn request(seq: u64) -> RunRequest {
    RunRequest {
        seq,
        lcl: Hash([9; 32]),
        time_ms: 1_700_000_000_000,
        node: user(),
        unl: vec![user()],
        rand: None,
        contract_seed: None,
        inputs: [(user(), vec![b"hi".to_vec()])].into_iter().collect(),
        readonly: false,
    }
}

fn pids(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Whether `pid` is still one of the contract's processes, even as a
/// zombie (no one reaped it): `/proc` has it under the name it ran as.
fn exists(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        ["(sleep)", "(detach.sh)", "(sh)"]
            .iter()
            .any(|c| s.contains(c))
    })
}

fn wait_gone(pids: &[i32]) {
    let start = Instant::now();
    while pids.iter().any(|&p| exists(p)) {
        assert!(
            start.elapsed() < GONE,
            "still there after {GONE:?}: {:?}",
            pids.iter().filter(|&&p| exists(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_left_the_group_neither_holds_up_the_run_nor_outlives_it() {
    let (h, file) = host("setsid", "setsid", RunLimits::default());
    for seq in [1, 2] {
        // The old host waited for every inherited fd to close: an hour.
        let r = tokio::time::timeout(RUN, h.run(&request(seq)))
            .await
            .expect("the run ends when the contract does");
        assert_eq!(r.outcome, RunOutcome::Exited(Some(0)));
        // What it wrote before it ended is read all the same.
        assert_eq!(r.outputs[&user()], b"bye\n");
        let left = pids(&file);
        assert_eq!(left.len(), seq as usize, "{left:?}");
        // Killed and reaped: not even a zombie is left.
        wait_gone(&left);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_child_dies_with_the_run() {
    let (h, file) = host("fork", "fork", RunLimits::default());
    let r = tokio::time::timeout(RUN, h.run(&request(1)))
        .await
        .expect("the run ends when the contract does");
    assert_eq!(r.outcome, RunOutcome::Exited(Some(0)));
    assert_eq!(r.outputs[&user()], b"bye\n");
    let left = pids(&file);
    assert_eq!(left.len(), 1, "{left:?}");
    wait_gone(&left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_over_its_time_limit_dies_with_all_it_started() {
    let limits = RunLimits {
        time_limit_ms: 2_000,
        ..RunLimits::default()
    };
    let (h, file) = host("limit", "stay", limits);
    let r = tokio::time::timeout(RUN, h.run(&request(1)))
        .await
        .expect("the run ends at its time limit");
    assert_eq!(r.outcome, RunOutcome::TimedOut);
    let left = pids(&file);
    // Both sleepers and the contract itself.
    assert_eq!(left.len(), 3, "{left:?}");
    wait_gone(&left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_dropped_midway_takes_its_processes_with_it() {
    // What happens to the run in progress when the node shuts down.
    let (h, file) = host("dropped", "stay", RunLimits::default());
    let req = request(1);
    let run = h.run(&req);
    let started = async {
        while pids(&file).len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = run => panic!("the contract sleeps for an hour, yet: {:?}", r.outcome),
        _ = tokio::time::timeout(RUN, started) => {}
    }
    let left = pids(&file);
    assert_eq!(left.len(), 3, "the contract did not start: {left:?}");
    wait_gone(&left);
}
