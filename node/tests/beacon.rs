//! The random beacon through the consensus state machine: every ledger from
//! the second on carries a value every node agrees on, made from every
//! node's secret, and handed to the contract; a node that stops is recorded
//! absent and the value still comes.

#[path = "support/net.rs"]
mod net;

use hotpocket_node::beacon;
use hotpocket_node::contract::RunRequest;
use hotpocket_node::crypto::{KeyRing, PubKey};
use hotpocket_node::ledger::LedgerRecord;
use net::{Net, T0};
use std::collections::BTreeSet;

fn keys(net: &Net) -> Vec<PubKey> {
    let mut k: Vec<PubKey> = net.keys.iter().map(|k| k.public()).collect();
    k.sort();
    k
}

/// Checks that `r`'s outcome is what its parent's commits and its own
/// reveals give, as any node could recompute it from the chain alone.
fn recomputed(net: &Net, parent: &LedgerRecord, r: &LedgerRecord) -> beacon::Outcome {
    let unl = keys(net);
    let session = hotpocket_node::ledger::LedgerId {
        seq: parent.ledger.seq - 1,
        hash: parent.ledger.prev,
    };
    beacon::decide(
        &KeyRing::new(&unl),
        &unl,
        session,
        &parent.ledger.beacon.commits,
        &r.ledger.beacon.reveals,
        &parent.ledger.beacon.frauds,
    )
}

#[test]
fn every_ledger_from_the_second_has_a_value_from_every_node() {
    let mut net = Net::new(4);
    net.run_until(T0 + 10_000);
    let chain = net.nodes[0].chain();
    assert!(chain.len() >= 8, "only {} ledgers", chain.len());
    for n in &net.nodes[1..] {
        assert_eq!(n.chain(), &chain[..n.chain().len()]);
    }
    let all = keys(&net);
    // Ledger 1 carries the first commits and no outcome: nothing was
    // revealed yet, and the contract gets no `rand`.
    assert_eq!(chain[1].ledger.beacon.commits.len(), 4);
    assert!(chain[1].ledger.beacon.outcome.is_none());
    assert_eq!(RunRequest::for_ledger(&chain[1], all[0], &all).rand, None);
    let mut values = BTreeSet::new();
    for w in chain[1..].windows(2) {
        let (parent, r) = (&w[0], &w[1]);
        let b = &r.ledger.beacon;
        assert_eq!(b.commits.len(), 4, "ledger {}", r.ledger.seq);
        assert_eq!(b.reveals.len(), 4, "ledger {}", r.ledger.seq);
        let o = b.outcome.as_deref().expect("an outcome from ledger 2 on");
        assert_eq!(o.revealed, all);
        assert!(o.absent.is_empty() && o.fraud.is_empty());
        assert_eq!(*o, recomputed(&net, parent, r));
        assert_eq!(RunRequest::for_ledger(r, all[0], &all).rand, Some(o.value));
        assert!(values.insert(o.value), "value repeated at {}", r.ledger.seq);
    }
    assert!(net.nodes[0].stats().beacon.absent.is_empty());
}

#[test]
fn a_node_that_stops_is_recorded_absent_and_the_value_still_comes() {
    let mut net = Net::new(5);
    net.run_until(T0 + 5_000);
    let stopped_at = net.nodes[4].lcl().seq;
    net.down[4] = true;
    net.run_between(T0 + 5_050, T0 + 12_000);
    let chain = net.nodes[0].chain();
    assert!(
        chain.len() as u64 > stopped_at + 4,
        "the four left did not go on"
    );
    let gone = net.keys[4].public();
    let mut absent_in = vec![];
    for w in chain[1..].windows(2) {
        let (parent, r) = (&w[0], &w[1]);
        let o = r.ledger.beacon.outcome.as_deref().unwrap();
        assert_eq!(*o, recomputed(&net, parent, r));
        assert!(o.is_random(), "ledger {} has no secret in it", r.ledger.seq);
        assert!(o.fraud.is_empty());
        if o.absent.contains(&gone) {
            absent_in.push(r.ledger.seq);
        }
        assert!(o.absent.iter().all(|k| *k == gone), "{:?}", o.absent);
        // Once it stopped it commits no more, so it is absent once: in
        // the ledger with the reveals of its last commit.
        assert_eq!(
            parent
                .ledger
                .beacon
                .commits
                .iter()
                .any(|c| c.author == gone),
            r.ledger.seq <= stopped_at + 2
        );
    }
    assert_eq!(absent_in.len(), 1, "absent in {absent_in:?}");
    let stats = net.nodes[0].stats().beacon;
    assert_eq!(stats.absent, vec![(gone, 1)]);
}
