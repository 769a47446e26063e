//! The random beacon through the consensus state machine: every ledger from
//! the second on carries a value every node agrees on, made from every
//! node's secret, and handed to the contract; a node that stops is recorded
//! absent and the value still comes.

#[path = "support/net.rs"]
mod net;

use hotpocket_node::beacon::{self, FraudProof, SignedCommit};
use hotpocket_node::consensus::{Input, Proposal};
use hotpocket_node::contract::RunRequest;
use hotpocket_node::crypto::{Hash, KeyRing, PubKey, Sig};
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
    assert_eq!(
        RunRequest::for_ledger(&chain[1], all[0], &all, true).rand,
        None
    );
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
        assert_eq!(
            RunRequest::for_ledger(r, all[0], &all, true).rand,
            Some(o.value)
        );
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

// A byzantine node (4 of 5) that plays with the beacon's signed entries.
// Each attack stalled consensus or took `rand` over before the ledger hash
// named entries by content and copies were checked one by one.

/// Ledgers node 0 closed, and whether any honest node was recorded absent
/// or convicted, after 3 s of honest play and `secs` of the attack.
fn under_attack(secs: u64, rewrite: &mut dyn FnMut(usize, &mut Proposal)) -> (usize, usize, bool) {
    let mut net = Net::new(5);
    net.run_until(T0 + 3_000);
    let before = net.nodes[0].chain().len();
    net.run_rewriting(T0 + 3_050, T0 + 3_000 + secs * 1000, 4, rewrite);
    let chain = net.nodes[0].chain();
    let byz = net.keys[4].public();
    let honest_hurt = chain
        .iter()
        .filter_map(|r| r.ledger.beacon.outcome.as_deref())
        .any(|o| o.absent.iter().any(|k| *k != byz) || o.fraud.iter().any(|p| p.accused() != byz));
    (before, chain.len(), honest_hurt)
}

#[test]
fn forged_copies_of_honest_reveals_change_nothing() {
    for to_all in [true, false] {
        let (before, after, hurt) = under_attack(10, &mut |to, p| {
            if to_all || to < 2 {
                let me = p.author;
                for r in p.beacon.reveals.iter_mut().filter(|r| r.author != me) {
                    r.sig.0 = [0; 64];
                }
            }
        });
        assert!(after >= before + 9, "to all {to_all}: {before} -> {after}");
        assert!(!hurt, "to all {to_all}: an honest node was left out");
    }
}

/// Another valid signature on `bytes` under `seed`'s key (another nonce),
/// lower than `than`: what only the key's owner can make.
fn second_signature(seed: [u8; 32], domain: &str, bytes: &[u8], than: &Sig) -> Sig {
    use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
    let vk = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    let mut esk = ExpandedSecretKey::from(&seed);
    let mut msg = domain.as_bytes().to_vec();
    msg.push(0);
    msg.extend_from_slice(bytes);
    for i in 0u32.. {
        esk.hash_prefix = [0; 32];
        esk.hash_prefix[..4].copy_from_slice(&i.to_le_bytes());
        let s = raw_sign::<sha2::Sha512>(&esk, &msg, &vk).to_bytes();
        if s < than.0 {
            return Sig(s);
        }
    }
    unreachable!()
}

#[test]
fn a_second_valid_signature_sent_to_some_does_not_split_the_candidates() {
    // Node 4's key is Keypair::from_seed([5; 32]) in the harness.
    let (before, after, hurt) = under_attack(10, &mut |to, p| {
        let me = p.author;
        if p.stage == 2 && to < 2 {
            for c in p.beacon.commits.iter_mut().filter(|c| c.author == me) {
                let bytes = postcard::to_allocvec(&(&c.author, &c.lcl, &c.commitment)).unwrap();
                c.sig = second_signature([5; 32], "hotpocket/beacon-commit/v1", &bytes, &c.sig);
                assert!(c.verify().is_ok());
            }
        }
    });
    assert!(after >= before + 9, "{before} -> {after}");
    assert!(!hurt);
}

#[test]
fn a_flood_of_its_own_commits_is_refused_and_costs_nothing() {
    let mut net = Net::new(5);
    for k in 0..10usize {
        let a = net.nodes[k % 4].handle(T0 + 10, Input::Submit(format!("in {k}").into_bytes()));
        net.apply(k % 4, T0 + 10, a);
    }
    let key = net.keys[4].clone();
    net.run_rewriting(T0, T0 + 13_000, 4, &mut |_, p| {
        if p.stage == 0 {
            let lcl = p.lcl;
            p.beacon.commits = (0..10u8)
                .map(|i| SignedCommit::sign(&key, lcl, Hash([i; 32])))
                .collect();
        }
    });
    let chain = net.nodes[0].chain();
    let inputs: usize = chain.iter().map(|r| r.ledger.inputs.len()).sum();
    assert_eq!(inputs, 10);
    let honest = chain[2..]
        .iter()
        .filter_map(|r| r.ledger.beacon.outcome.as_deref())
        .filter(|o| o.revealed.len() >= 4)
        .count();
    assert!(honest + 2 >= chain.len() - 2, "{honest} of {}", chain.len());
    assert!(net.nodes[0].stats().dropped_malformed > 0);
}

#[test]
fn proofs_against_itself_sent_to_some_do_not_split_the_candidates() {
    let key = hotpocket_node::crypto::Keypair::from_seed([5; 32]);
    let (before, after, hurt) = under_attack(10, &mut |to, p| {
        let (me, lcl) = (p.author, p.lcl);
        if p.stage == 0 {
            p.beacon
                .commits
                .push(SignedCommit::sign(&key, lcl, Hash([0xff; 32])));
            p.beacon.commits.sort_by_key(|c| (c.author, c.commitment));
        } else if p.stage == 2 && to < 2 {
            let low = FraudProof::double_commit(
                SignedCommit::sign(&key, lcl, Hash([0; 32])),
                SignedCommit::sign(&key, lcl, Hash([1; 32])),
            );
            p.beacon.frauds.retain(|f| f.accused() != me);
            p.beacon.frauds.push(low);
            p.beacon.frauds.sort_by_key(|f| f.accused());
        }
    });
    assert!(after >= before + 9, "{before} -> {after}");
    assert!(!hurt);
}
