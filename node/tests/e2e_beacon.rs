//! End to end for the random beacon, with real processes on loopback: five
//! `hotpocket run` nodes run `fixtures/contracts/rand.py`, which keeps in
//! its state the `rand` each ledger's run was given. Every node's contract
//! got the same value for a ledger, a fresh one from ledger 2 on, the one
//! every node's SQLite `beacon` column records. After a SIGKILL the four
//! left (80% of the UNL, what closing a ledger takes) go on with values
//! from their own secrets, and the killed node is recorded absent.
#![cfg(feature = "runtime")]
// Real processes on real time.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{beacons, head, node_dir, node_key, wait_for, Cluster};

const NODES: usize = 5;
const KILLED: usize = 4;

/// Ports from the process id, so parallel test runs rarely collide; below
/// the other e2e tests' ranges and the kernel's ephemeral ports.
fn base_port() -> u16 {
    10_000 + (std::process::id() % 1_000) as u16 * 10
}

fn start() -> Cluster {
    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/contracts/rand.py");
    cluster::start("e2e-beacon", NODES, base_port(), &contract, "")
}

/// What rand.py wrote, by seq: 64 hex digits, "null" or "invalid".
fn contract_rand(dir: &Path) -> BTreeMap<i64, String> {
    let Ok(files) = std::fs::read_dir(dir.join("state/rand")) else {
        return BTreeMap::new();
    };
    files
        .filter_map(|f| {
            let f = f.ok()?;
            let seq = f.file_name().to_str()?.parse().ok()?;
            Some((seq, std::fs::read_to_string(f.path()).ok()?))
        })
        .collect()
}

/// A ledger's `rand` as rand.py writes it.
fn rand_text(beacon: &serde_json::Value) -> String {
    match &beacon["rand"] {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::String(s) => s.clone(),
        other => panic!("rand is neither hex nor null: {other}"),
    }
}

fn keys(list: &serde_json::Value) -> Vec<&str> {
    let list = list.as_array().expect("a list of keys");
    list.iter()
        .map(|k| k.as_str().expect("a hex key"))
        .collect()
}

#[test]
fn every_contract_gets_the_same_fresh_rand_and_a_killed_node_is_absent() {
    let mut cluster = start();
    let dirs: Vec<PathBuf> = (0..NODES).map(|i| node_dir(&cluster.root, i)).collect();
    wait_for(
        "every node to close and run ledgers",
        Duration::from_secs(60),
        || dirs.iter().all(|d| contract_rand(d).contains_key(&5)),
    );

    // SIGKILL at a point of the round that varies from run to run, so
    // runs together cover the round: whether the last commit the node
    // sent makes a ledger depends on it. Every ledger in some node's
    // SQLite file by now closed before the kill.
    let phase = std::process::id() % 1000;
    std::thread::sleep(Duration::from_millis(phase.into()));
    let before_kill = dirs.iter().map(|d| head(d)).max().unwrap();
    cluster.children[KILLED].kill().unwrap();
    cluster.children[KILLED].wait().unwrap();
    let alive = &dirs[..KILLED];
    // The kill shows as an absence within two or three ledgers.
    wait_for("ledgers after the kill", Duration::from_secs(60), || {
        alive.iter().all(|d| head(d) >= before_kill + 6)
    });
    let target = alive.iter().map(|d| head(d)).min().unwrap();
    wait_for(
        "the four left to run the ledgers they closed",
        Duration::from_secs(60),
        || alive.iter().all(|d| contract_rand(d).contains_key(&target)),
    );

    // Every node's beacon column agrees on the ledgers it has.
    let chain: BTreeMap<i64, serde_json::Value> = beacons(&dirs[0])
        .into_iter()
        .filter(|b| b.0 <= target)
        .collect();
    assert_eq!(
        chain.keys().copied().collect::<Vec<_>>(),
        (1..=target).collect::<Vec<_>>()
    );
    for d in &dirs[1..] {
        for (seq, b) in beacons(d).into_iter().filter(|b| b.0 <= target) {
            assert_eq!(b, chain[&seq], "ledger {seq} on {}", d.display());
        }
    }

    // Ledger 1 has nothing revealed yet; every later one a fresh value.
    assert_eq!(chain[&1]["rand"], serde_json::Value::Null, "{}", chain[&1]);
    let mut values = BTreeSet::new();
    for (seq, b) in chain.range(2..) {
        let rand = b["rand"]
            .as_str()
            .unwrap_or_else(|| panic!("ledger {seq}: {b}"));
        assert!(
            rand.len() == 64 && rand.bytes().all(|c| c.is_ascii_hexdigit()),
            "ledger {seq}: {b}"
        );
        assert!(!keys(&b["revealed"]).is_empty(), "ledger {seq}: {b}");
        assert!(values.insert(rand), "ledger {seq} repeats a value: {b}");
    }

    // Each contract got its own node's value for every ledger it ran: the
    // four left ran them all; the killed one those before it died.
    for (i, d) in dirs.iter().enumerate() {
        let ran: BTreeMap<i64, String> = contract_rand(d)
            .into_iter()
            .filter(|r| r.0 <= target)
            .collect();
        if i != KILLED {
            assert_eq!(ran.len() as i64, target, "node {i} ran {:?}", ran.keys());
        }
        let own: BTreeMap<i64, serde_json::Value> = beacons(d).into_iter().collect();
        for (seq, got) in &ran {
            assert_eq!(*got, rand_text(&own[seq]), "node {i}, ledger {seq}");
        }
    }

    // Nobody is absent before the kill. (A live node is absent when its
    // commit made a ledger and the stage-0 proposal with its reveal then
    // missed the next; load alone could do that, 25 nodes on 2 cores did
    // not.) Only the killed node is absent after it: its last commit is
    // in some ledger, and its reveal never comes. Nobody is convicted of
    // fraud.
    let gone = node_key(KILLED).public().to_hex();
    let mut absent_in = vec![];
    for (seq, b) in &chain {
        assert_eq!(b["fraud"], serde_json::json!([]), "ledger {seq}: {b}");
        let absent = keys(&b["absent"]);
        if *seq <= before_kill {
            assert!(absent.is_empty(), "ledger {seq}, before the kill: {b}");
        }
        assert!(absent.iter().all(|k| *k == gone), "ledger {seq}: {b}");
        if absent.contains(&gone.as_str()) {
            absent_in.push(*seq);
        }
    }
    assert!(
        !absent_in.is_empty(),
        "node {KILLED} ({gone}) absent in no ledger; killed after {before_kill}, checked to {target}"
    );
    eprintln!(
        "killed {phase} ms after ledger 5 ran, after ledger {before_kill}; \
         absent in {absent_in:?}; checked to {target}"
    );
}
