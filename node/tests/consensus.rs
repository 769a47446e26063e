//! The consensus state machine driven directly, with no runtime at all: a
//! perfect, instant bus and a stepped clock. This is what sans-IO buys.

#[path = "support/net.rs"]
mod net;

use hotpocket_node::consensus::{
    input_hash, Action, ConsensusConfig, Event, Input, Job, Node, NodeError, PeerMessage, Proposal,
};
use hotpocket_node::contract::Stamper;
use hotpocket_node::crypto::{Hash, Keypair, PubKey};
use hotpocket_node::ledger::{LedgerId, LedgerRecord};
use net::{initial, run_of, Net, T0};

#[test]
fn four_nodes_close_the_same_ledgers_every_round() {
    let mut net = Net::new(4);
    net.run_until(T0 + 10_000);
    // Round boundaries fall on whole seconds; a close happens at each one
    // after the first full round.
    let first = &net.closed[0];
    assert!(first.len() >= 9, "only {} ledgers closed", first.len());
    for c in &net.closed[1..] {
        assert_eq!(c, first);
    }
    for (k, (seq, _)) in first.iter().enumerate() {
        assert_eq!(*seq, k as u64 + 1);
    }
    // Every ledger carries a proof signed by all four.
    let chain = net.nodes[0].chain();
    assert!(chain[1..].iter().all(|r| r.proof.len() == 4));
}

#[test]
fn submitted_inputs_land_in_exactly_one_ledger() {
    let mut net = Net::new(5);
    net.step(T0);
    let bodies: Vec<Vec<u8>> = (0..20).map(|i| format!("input {i}").into_bytes()).collect();
    for (k, b) in bodies.iter().enumerate() {
        let i = k % 5;
        let a = net.nodes[i].handle(T0 + 10, Input::Submit(b.clone()));
        net.apply(i, T0 + 10, a);
        // The same body again, to another node: still one ledger.
        let a = net.nodes[(i + 1) % 5].handle(T0 + 10, Input::Submit(b.clone()));
        net.apply((i + 1) % 5, T0 + 10, a);
    }
    net.run_until(T0 + 6_000);
    let chain = net.nodes[0].chain();
    let mut seen: Vec<Hash> = chain.iter().flat_map(|r| r.ledger.inputs.clone()).collect();
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(total, seen.len(), "an input landed twice");
    let want: Vec<Hash> = bodies.iter().map(|b| input_hash(b)).collect();
    for h in &want {
        assert!(seen.contains(h), "input {h:?} never closed");
    }
    // Bodies travel with the ledger.
    assert!(chain
        .iter()
        .all(|r| r.ledger.inputs.iter().all(|h| r.bodies.contains_key(h))));
}

#[test]
fn bad_proposals_are_dropped_and_counted() {
    let mut net = Net::new(4);
    net.run_until(T0 + 2_100);
    let lcl = net.nodes[0].lcl();
    let round = (T0 + 2_100) / 1000;
    let outsider = Keypair::from_seed([99; 32]);
    let mk = |k: &Keypair, round: u64, lcl: LedgerId| Proposal {
        author: k.public(),
        round,
        stage: 0,
        time: round * 1000,
        lcl,
        inputs: vec![],
        results: vec![],
        beacon: Default::default(),
    };
    let send = |net: &mut Net, p: PeerMessage| {
        let from = net.keys[1].public();
        net.nodes[0].handle(
            T0 + 2_100,
            Input::Peer {
                from,
                bytes: p.encode(),
            },
        );
    };
    // Outside the UNL.
    send(
        &mut net,
        PeerMessage::Proposal(Box::new(mk(&outsider, round, lcl).sign(&outsider))),
    );
    // Claims node 2's identity, signed by node 1.
    let mut p = mk(&net.keys[2], round, lcl);
    p.stage = 1;
    let forged = p.sign(&net.keys[1].clone());
    send(&mut net, PeerMessage::Proposal(Box::new(forged)));
    // Far too old.
    let k3 = net.keys[3].clone();
    send(
        &mut net,
        PeerMessage::Proposal(Box::new(mk(&k3, round - 10, lcl).sign(&k3))),
    );
    // Not decodable.
    let from = net.keys[1].public();
    net.nodes[0].handle(
        T0 + 2_100,
        Input::Peer {
            from,
            bytes: vec![1, 200, 3],
        },
    );
    // Another lcl: kept for desync detection, counted as foreign.
    let other = LedgerId {
        seq: lcl.seq,
        hash: Hash([7; 32]),
    };
    let mut p = mk(&k3, round, other);
    p.stage = 2;
    send(&mut net, PeerMessage::Proposal(Box::new(p.sign(&k3))));

    let s = net.nodes[0].stats();
    assert_eq!(s.dropped_not_unl, 1);
    assert_eq!(s.dropped_bad_signature, 1);
    assert_eq!(s.dropped_stale, 1);
    assert_eq!(s.dropped_malformed, 1);
    assert_eq!(s.foreign_lcl, 1);
}

#[test]
fn a_node_that_restarts_behind_catches_up_with_verified_history() {
    let mut net = Net::new(5);
    net.run_until(T0 + 8_000);
    let head = net.nodes[0].lcl();
    assert!(head.seq >= 6);
    // Node 4 restarts from an empty disk: it must fetch every ledger.
    net.restart_empty(4, net.config());
    net.run_between(T0 + 8_050, T0 + 12_000);
    assert_eq!(net.nodes[4].lcl(), net.nodes[0].lcl());
    assert!(net.nodes[4].stats().history_adopted >= head.seq);
    assert_eq!(net.nodes[4].chain(), net.nodes[0].chain());
}

#[test]
fn a_state_sync_nobody_serves_is_given_up_and_the_ledgers_are_run() {
    let mut net = Net::new(5);
    net.run_until(T0 + 8_000);
    let head = net.nodes[0].lcl();
    // Node 4 restarts with an empty disk and a low gap: it wants the state
    // from its peers, but no peer here answers state requests.
    let mut cfg = net.config();
    cfg.state_sync_gap = 2;
    net.restart_empty(4, cfg);
    net.run_between(T0 + 8_050, T0 + 40_000);
    assert_eq!(net.abandoned[4].len(), 1, "{:?}", net.abandoned[4]);
    assert!(net.abandoned[4][0] >= head.seq - 1);
    // Then it ran every ledger itself, in order, and rejoined.
    let ran: Vec<u64> = net.runs[4].iter().map(|(s, _)| *s).collect();
    let want: Vec<u64> = (1..=ran.len() as u64).collect();
    assert_eq!(ran, want);
    assert!(ran.len() as u64 >= head.seq);
    assert_eq!(net.nodes[4].lcl(), net.nodes[0].lcl());
    assert!(net.nodes[4].stats().state_syncs == 0);
}

#[test]
fn after_a_failed_rollback_no_ledger_runs_until_the_certified_state_is_fetched() {
    let mut net = Net::new(5);
    net.run_until(T0 + 6_000);
    let lcl = net.nodes[3].lcl();
    let ran_before = net.runs[3].len();
    // The host could not return node 3's state to ledger lcl - 1: it holds
    // a later run than the chain says. Nobody here answers state requests.
    let now = T0 + 6_010;
    let fed = Input::RollbackFailed {
        seq: lcl.seq - 1,
        error: "no snapshot".into(),
    };
    let a = net.nodes[3].handle(now, fed);
    let started = a.iter().any(
        |a| matches!(a, Action::Notify(Event::StateSyncStarted { seq, .. }) if *seq == lcl.seq - 1),
    );
    assert!(
        started,
        "a forced sync of the certified state starts: {a:?}"
    );
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::Contract(Job::Execute(_)))),
        "no run goes first"
    );
    net.apply(3, now, a);
    // Rounds go by, and the sync is given up (nobody serves state), but no
    // run happens on the wrong state: the node keeps waiting for it.
    net.run_between(T0 + 6_050, T0 + 40_000);
    assert!(!net.abandoned[3].is_empty(), "the sync was given up");
    assert_eq!(net.runs[3].len(), ran_before, "no run on the wrong state");
    // Consensus goes on without its runs; its stage-3 votes wait for them.
    assert!(net.nodes[0].lcl().seq > lcl.seq + 20);
}

#[test]
fn a_corrupt_stored_chain_is_refused_at_start() {
    let mut net = Net::new(4);
    net.run_until(T0 + 5_000);
    let mut stored: Vec<LedgerRecord> = net.nodes[0].chain()[1..]
        .iter()
        .map(|r| LedgerRecord::clone(r))
        .collect();
    stored[1].ledger.time += 1;
    let cfg = ConsensusConfig::new(net.keys.iter().map(|k| k.public()).collect());
    assert!(Node::new(cfg, net.keys[0].clone(), stored, initial()).is_err());
}

/// A ledger on `parent`, signed at stage 3 by the first four keys.
fn proven(net: &Net, parent: LedgerId, time: u64) -> LedgerRecord {
    let proof: Vec<_> = net.keys[..4]
        .iter()
        .map(|k| {
            Proposal {
                author: k.public(),
                round: time / 1000,
                stage: 3,
                time,
                lcl: parent,
                inputs: vec![],
                results: vec![],
                beacon: Default::default(),
            }
            .sign(k)
        })
        .map(std::sync::Arc::new)
        .collect();
    let ledger = proof[0].proposal.candidate();
    LedgerRecord {
        hash: ledger.hash(),
        ledger,
        proof,
        bodies: Default::default(),
    }
}

/// Node 0 receives a history answer from node 1.
fn answer(net: &mut Net, now: u64, records: Vec<LedgerRecord>) -> Vec<Action> {
    let from = net.keys[1].public();
    let bytes = PeerMessage::HistoryResponse(records).encode();
    net.nodes[0].handle(now, Input::Peer { from, bytes })
}

#[test]
fn a_self_contradicting_history_answer_is_rejected_and_a_proven_fork_rolls_back() {
    let mut net = Net::new(5);
    net.run_until(T0 + 3_100);
    let base = net.nodes[0].lcl();
    let now = T0 + 3_100;
    // Two ledgers at seq a+1 (the UNL equivocated: only a test can), and a
    // proven child of the second.
    let c = proven(&net, base, now - 100);
    let d = proven(&net, base, now - 200);
    let d2 = proven(&net, d.id(), now);
    let peer = net.keys[1].public();
    // Node 0 learns peer 1 is on d2 and asks it for history.
    let p = Proposal {
        author: peer,
        round: now / 1000,
        stage: 1,
        time: now / 1000 * 1000,
        lcl: d2.id(),
        inputs: vec![],
        results: vec![],
        beacon: Default::default(),
    };
    let ask = net.nodes[0].handle(
        now,
        Input::Peer {
            from: peer,
            bytes: PeerMessage::Proposal(Box::new(p.sign(&net.keys[1].clone()))).encode(),
        },
    );
    assert!(
        ask.iter()
            .any(|a| matches!(a, Action::Send { to, .. } if *to == peer)),
        "{ask:?}"
    );

    // [c, d2]: c extends our chain, d2 proves another parent. Rejected as a
    // whole lie after c, with no rollback of what it just adopted.
    let out = answer(&mut net, now + 10, vec![c.clone(), d2.clone()]);
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Contract(Job::Rollback { .. }))),
        "{out:?}"
    );
    assert_eq!(net.nodes[0].lcl(), c.id());
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Persist(r) if r.hash == c.hash)));
    assert_eq!(net.nodes[0].stats().history_rejected, 1);

    // [d2] alone proves the UNL finalised d, not c: c goes, d and d2 come.
    let out = answer(&mut net, now + 20, vec![d2.clone()]);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Contract(Job::Rollback { to }) if *to == base)),
        "{out:?}"
    );
    assert_eq!(net.nodes[0].lcl(), base);
    answer(&mut net, now + 30, vec![d.clone(), d2.clone()]);
    assert_eq!(net.nodes[0].lcl(), d2.id());
}

#[test]
fn a_node_that_missed_an_input_body_fetches_it_before_running() {
    let mut net = Net::new(5);
    net.run_until(T0 + 2_000);
    // Node 1 takes an input; its broadcast reaches everyone but node 0.
    let body = b"only four of five saw this".to_vec();
    let out = net.nodes[1].handle(T0 + 2_010, Input::Submit(body.clone()));
    let from = net.keys[1].public();
    for a in out {
        if let Action::Broadcast { bytes } = a {
            for j in 2..5 {
                let more = net.nodes[j].handle(
                    T0 + 2_010,
                    Input::Peer {
                        from,
                        bytes: bytes.clone(),
                    },
                );
                net.apply(j, T0 + 2_010, more);
            }
        }
    }
    let mut t = T0 + 2_050;
    while t <= T0 + 6_000 {
        net.step(t);
        t += 50;
    }
    let h = input_hash(&body);
    let chain = net.nodes[0].chain();
    let rec = chain
        .iter()
        .find(|r| r.ledger.inputs.contains(&h))
        .expect("the four closed a ledger with the input");
    assert_eq!(rec.bodies.get(&h), Some(&body), "node 0 fetched the body");
    assert!(
        net.runs[0].iter().all(|(_, complete)| *complete),
        "{:?}",
        net.runs[0]
    );
    assert!(
        net.runs[0].iter().any(|(seq, _)| *seq == rec.ledger.seq),
        "node 0 ran that ledger"
    );
    assert_eq!(net.nodes[0].lcl(), net.nodes[1].lcl());
}

#[test]
fn outputs_go_out_once_and_only_after_the_next_ledger_certifies_them() {
    let mut net = Net::new(5);
    net.step(T0);
    let user = Keypair::from_seed([9; 32]).public();
    let mut stamp = Stamper::default();
    let bodies: Vec<Vec<u8>> = (0..6)
        .map(|k| stamp.stamp(T0, user, format!("in{k}").into_bytes()))
        .collect();
    for (k, b) in bodies.iter().enumerate() {
        let a = net.nodes[k % 5].handle(T0 + 10, Input::Submit(b.clone()));
        net.apply(k % 5, T0 + 10, a);
    }
    net.run_until(T0 + 6_000);
    for i in 0..5 {
        let d = &net.delivered[i];
        assert!(d.iter().all(|(_, _, certified)| *certified), "node {i}");
        let mut seqs: Vec<u64> = d.iter().map(|(s, _, _)| *s).collect();
        seqs.dedup();
        assert_eq!(seqs.len(), d.len(), "node {i} delivered a seq twice");
        // Every input came back to its user, in the order it was stamped.
        let echoed: Vec<u8> = d
            .iter()
            .filter_map(|(_, run, _)| run.outputs.get(&user).cloned())
            .collect::<Vec<_>>()
            .join(&b'|');
        assert_eq!(echoed, b"in0|in1|in2|in3|in4|in5", "node {i}");
        // Each run with outputs had its root signed by 4 of the 5, once.
        for (seq, run, _) in d.iter().filter(|(_, run, _)| !run.outputs.is_empty()) {
            let signed: Vec<usize> = (net.signed[i].iter())
                .filter(|(s, _)| s == seq)
                .map(|(_, n)| *n)
                .collect();
            assert!(
                matches!(signed[..], [n] if n >= 4),
                "node {i} seq {seq}: {signed:?} {run:?}"
            );
        }
    }
}

#[test]
fn a_network_that_takes_signed_inputs_only_never_runs_a_vouched_one() {
    use hotpocket_node::contract::SignedInput;
    let mut net = Net::with(5, |cfg| cfg.vouched_inputs = false);
    net.step(T0);
    let user = Keypair::from_seed([9; 32]);
    // Every node is handed an input vouched for in the user's name, as a
    // node that made it up would send it; and the user's own signed one.
    let vouched = Stamper::default().stamp(T0, user.public(), b"made up".to_vec());
    let container = r#"{"input":"signed","nonce":1,"max_ledger_seq_no":20}"#;
    let signed = SignedInput {
        user: user.public(),
        container: container.into(),
        sig: user.sign_raw(container.as_bytes()),
    }
    .encode();
    for i in 0..5 {
        for body in [&vouched, &signed] {
            let a = net.nodes[i].handle(T0 + 10, Input::Submit(body.clone()));
            net.apply(i, T0 + 10, a);
        }
    }
    net.run_until(T0 + 6_000);
    let made_up = hotpocket_node::contract::input_hash(&vouched);
    for i in 0..5 {
        let in_ledgers = net.nodes[i]
            .chain()
            .iter()
            .any(|r| r.ledger.inputs.contains(&made_up));
        assert!(!in_ledgers, "node {i} put the vouched input in a ledger");
        let outputs: Vec<&[u8]> = (net.delivered[i].iter())
            .filter_map(|(_, run, _)| run.outputs.get(&user.public()).map(Vec::as_slice))
            .collect();
        assert_eq!(outputs, [&b"signed"[..]], "node {i}");
    }
}

#[test]
fn a_restarted_node_reruns_what_its_contract_missed_without_delivering_it_again() {
    let mut net = Net::new(5);
    net.step(T0);
    let user = Keypair::from_seed([9; 32]).public();
    let body = Stamper::default().stamp(T0, user, b"hello".to_vec());
    let a = net.nodes[0].handle(T0 + 10, Input::Submit(body));
    net.apply(0, T0 + 10, a);
    net.run_until(T0 + 6_000);
    let stored: Vec<LedgerRecord> = net.nodes[4].chain()[1..]
        .iter()
        .map(|r| LedgerRecord::clone(r))
        .collect();
    let lcl = stored.len() as u64;
    assert!(lcl >= 4);
    let cfg = ConsensusConfig::new(net.keys.iter().map(|k| k.public()).collect());
    // The contract kept only the initial state: every ledger runs again.
    net.nodes[4] = Node::new(cfg.clone(), net.keys[4].clone(), stored.clone(), initial()).unwrap();
    net.runs[4].clear();
    net.delivered[4].clear();
    net.step(T0 + 6_010);
    let reran: Vec<u64> = net.runs[4].iter().map(|(s, _)| *s).collect();
    assert_eq!(reran, (1..=lcl).collect::<Vec<_>>());
    assert!(net.delivered[4].is_empty(), "{:?}", net.delivered[4]);
    // Whether the lcl's outputs went out before the restart is not on
    // disk, so they never go out again; later ledgers' outputs do.
    let mut t = T0 + 6_050;
    while t <= T0 + 9_000 {
        net.step(t);
        t += 50;
    }
    let due: Vec<u64> = net.delivered[4].iter().map(|(s, _, _)| *s).collect();
    assert_eq!(due.first(), Some(&(lcl + 1)), "{due:?}");
    assert!(due.len() >= 2, "{due:?}");
    // A contract ahead of the stored chain must be rolled back first.
    let ahead = (lcl + 1, initial().1);
    assert!(matches!(
        Node::new(cfg, net.keys[4].clone(), stored, ahead),
        Err(NodeError::ContractAhead { .. })
    ));
}

#[test]
fn a_run_of_a_ledger_no_longer_in_the_chain_is_ignored() {
    let mut net = Net::new(5);
    net.step(T0);
    let user = Keypair::from_seed([9; 32]).public();
    let body = Stamper::default().stamp(T0, user, b"real".to_vec());
    let a = net.nodes[0].handle(T0 + 10, Input::Submit(body));
    net.apply(0, T0 + 10, a);
    net.run_until(T0 + 2_000);
    let lcl = net.nodes[0].lcl();
    // A stale run of "another ledger" at the lcl's seq, as if queued before
    // a rollback: it must neither replace the real outputs nor be sent.
    let mut stale = run_of(
        &net.nodes[0].chain()[lcl.seq as usize],
        PubKey([0; 32]),
        true,
    );
    stale.run.outputs.insert(user, b"stale".to_vec());
    let wrong = Input::Executed {
        seq: lcl.seq,
        hash: Hash([1; 32]),
        report: stale,
    };
    let a = net.nodes[0].handle(T0 + 2_001, wrong);
    net.apply(0, T0 + 2_001, a);
    let mut t = T0 + 2_050;
    while t <= T0 + 5_000 {
        net.step(t);
        t += 50;
    }
    let sent: Vec<&[u8]> = net.delivered[0]
        .iter()
        .filter_map(|(_, run, _)| run.outputs.get(&user).map(|o| o.as_slice()))
        .collect();
    assert_eq!(sent, [&b"real"[..]]);
}

#[test]
fn a_peer_asking_for_history_over_and_over_is_refused_after_a_few() {
    let mut net = Net::new(4);
    net.run_until(T0 + 5_000);
    let from = net.keys[1].public();
    let ask = PeerMessage::HistoryRequest {
        from_seq: 1,
        count: 64,
    }
    .encode();
    let mut answered = 0;
    for k in 0..20 {
        let out = net.nodes[0].handle(
            T0 + 5_010 + k,
            Input::Peer {
                from,
                bytes: ask.clone(),
            },
        );
        answered += out
            .iter()
            .filter(|a| matches!(a, Action::Send { to, .. } if *to == from))
            .count();
    }
    assert_eq!(answered, 8);
    assert_eq!(net.nodes[0].stats().requests_refused, 12);
    // The next round the peer is served again.
    let out = net.nodes[0].handle(T0 + 6_010, Input::Tick);
    net.apply(0, T0 + 6_010, out);
    let out = net.nodes[0].handle(T0 + 6_020, Input::Peer { from, bytes: ask });
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Send { to, .. } if *to == from)));
}
