//! Memory that does not grow with history: a node keeps its newest
//! ledgers whole and serves older ones from its store.

#[path = "support/net.rs"]
mod net;

use hotpocket_node::consensus::{input_hash, Action, Input, PeerMessage, Wanted};
use hotpocket_node::ledger::LedgerRecord;
use net::{Net, T0};

#[test]
fn a_node_keeps_a_window_and_serves_older_ledgers_from_its_store() {
    let mut net = Net::with(5, |c| c.memory_ledgers = 4);
    net.run_until(T0 + 20_000);
    let head = net.nodes[0].lcl();
    assert!(head.seq >= 15, "{head:?}");
    for (i, n) in net.nodes.iter().enumerate() {
        // The window and the runs whose verdicts are still to come.
        assert!(n.chain().len() <= 8, "node {i} holds {}", n.chain().len());
        assert_eq!(n.chain_base() + n.chain().len() as u64 - 1, n.lcl().seq);
        assert_eq!(net.disks[i].len() as u64, n.lcl().seq, "node {i}'s store");
    }
    // Node 4 restarts from an empty disk: every ledger it lacks is older
    // than what its peers keep in memory, so they read them from store.
    let served: u64 = (0..4).map(|i| net.nodes[i].stats().history_served).sum();
    net.restart_empty(4, net.config());
    net.run_between(T0 + 20_050, T0 + 26_000);
    assert_eq!(net.nodes[4].lcl(), net.nodes[0].lcl());
    assert!(net.nodes[4].stats().history_adopted >= head.seq);
    let closed: Vec<u64> = net.closed[4].iter().map(|(s, _)| *s).collect();
    assert_eq!(&closed[..3], &[1, 2, 3], "from the first ledger on");
    let now_served: u64 = (0..4).map(|i| net.nodes[i].stats().history_served).sum();
    assert!(now_served > served);
    // The ledgers it fetched are the ones its peers stored.
    assert_eq!(net.disks[4], net.disks[0]);
}

#[test]
fn bodies_of_a_ledger_older_than_memory_come_from_the_store() {
    let mut net = Net::with(5, |c| c.memory_ledgers = 4);
    let body = b"an input that lands early".to_vec();
    let a = net.nodes[0].handle(T0 + 10, Input::Submit(body.clone()));
    net.apply(0, T0 + 10, a);
    net.run_until(T0 + 20_000);
    let h = input_hash(&body);
    let seq = (net.disks[0].iter()).position(|r| r.ledger.inputs.contains(&h));
    let seq = seq.expect("the input landed") as u64 + 1;
    assert!(seq < net.nodes[0].chain_base(), "ledger {seq} left memory");
    // A peer whose contract lags asks node 0 for it.
    let from = net.keys[1].public();
    let bytes = PeerMessage::BodyRequest(vec![h]).encode();
    let now = T0 + 20_010;
    let out = net.nodes[0].handle(now, Input::Peer { from, bytes });
    let read = out.iter().find_map(|a| match a {
        Action::ReadStored { from_seq, want, .. } => Some((*from_seq, want.clone())),
        _ => None,
    });
    assert_eq!(read, Some((seq, Wanted::Bodies(vec![h]))));
    let records = vec![LedgerRecord::clone(&net.disks[0][seq as usize - 1])];
    let want = Wanted::Bodies(vec![h]);
    let stored = Input::Stored {
        to: from,
        records,
        want,
    };
    let out = net.nodes[0].handle(now, stored);
    let sent = out.iter().find_map(|a| match a {
        Action::Send { to, bytes } if *to == from => PeerMessage::decode(bytes).ok(),
        _ => None,
    });
    assert!(matches!(sent, Some(PeerMessage::BodyResponse(b)) if b == vec![body]));
}
