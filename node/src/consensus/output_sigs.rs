//! The UNL's signatures over each run's output tree root, which hpcore's
//! users check before they believe an output (`contract::OutputTree`):
//! a user that trusts no single node takes outputs a threshold of the UNL
//! signed. Each node signs the root of every run it delivers (its outputs
//! were certified) and tells its peers; a node hands its users the
//! signatures over the root it computed itself once enough have come.
//!
//! What a peer sends is bounded before it is kept: one signature per UNL
//! member per ledger, for ledgers near this node's lcl only (a run is
//! delivered when a later ledger certifies it, up to
//! `VERDICT_BACKSTOP` ledgers after its own). A signature is
//! checked when it can count, against the root this node computed; one
//! over another root is never counted and never passed on.

use super::tally::VERDICT_BACKSTOP;
use super::{threshold, Action, ConsensusConfig, PeerMessage};
use crate::contract::{OutputTree, RunResult, B3};
use crate::crypto::{Hash, KeyRing, Keypair, PubKey, Sig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Ledgers a delivered run waits for its signatures; also how far ahead of
/// the lcl a peer's signature is kept (a peer ahead delivers earlier).
const WINDOW: u64 = 16;

/// How far behind the lcl a peer's signature for a run not delivered here
/// yet is kept: runs are delivered up to `VERDICT_BACKSTOP` ledgers after
/// their own, by a contract up to `state_sync_gap` (32 by default) behind.
const BACK: u64 = VERDICT_BACKSTOP + 40;

/// The least share of the UNL hpcore's client takes outputs on (its
/// `outputValidationPassThreshold`).
const CLIENT_PCT: u64 = 80;

/// One node's signature over the output tree root of ledger `seq`'s run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSig {
    pub seq: u64,
    pub root: B3,
    pub author: PubKey,
    pub sig: Sig,
}

/// A run this node delivered, and the signatures over its root so far.
struct Ours {
    root: B3,
    sigs: BTreeMap<PubKey, Sig>,
    handed: bool,
    /// The lcl at which it stops waiting.
    until: u64,
}

#[derive(Default)]
pub struct OutputSigs {
    ours: BTreeMap<u64, Ours>,
    /// Signatures heard for runs not delivered here yet, unchecked.
    early: BTreeMap<u64, BTreeMap<PubKey, (B3, Sig)>>,
}

impl OutputSigs {
    /// This node delivers ledger `seq`'s run (ledger hash `ledger`) at
    /// lcl `lcl`: it signs the root and tells its peers; the signatures
    /// heard already over the same root count.
    pub fn delivered(
        &mut self,
        (cfg, ring): (&ConsensusConfig, &KeyRing),
        key: &Keypair,
        (seq, ledger): (u64, &Hash),
        run: &RunResult,
        lcl: u64,
        out: &mut Vec<Action>,
    ) {
        let tree = OutputTree::of(run, seq, ledger);
        let root = tree.root();
        // Delivered again (the run was done again after a state sync):
        // signed and handed already.
        if self.ours.get(&seq).is_some_and(|o| o.root == root) {
            return;
        }
        let mine = OutputSig {
            seq,
            root,
            author: key.public(),
            sig: tree.sign(key),
        };
        out.push(Action::Broadcast {
            bytes: PeerMessage::OutputSig(mine.clone()).encode(),
        });
        // A node outside the UNL signs for its peers' sake, but its own
        // signature does not count toward what its users' client asks.
        let mut sigs = BTreeMap::new();
        if cfg.in_unl(&mine.author) {
            sigs.insert(mine.author, mine.sig);
        }
        let mut ours = Ours {
            root,
            sigs,
            handed: false,
            until: lcl + WINDOW,
        };
        for (author, (r, sig)) in self.early.remove(&seq).unwrap_or_default() {
            if r == root && ring.verify_raw(&author, &root, &sig).is_ok() {
                ours.sigs.insert(author, sig);
            }
        }
        self.ours.insert(seq, ours);
        self.hand_if_enough(cfg, seq, out);
    }

    /// A peer's signature. `lcl` is this node's last closed ledger.
    pub fn on_sig(
        &mut self,
        (cfg, ring): (&ConsensusConfig, &KeyRing),
        lcl: u64,
        s: OutputSig,
        out: &mut Vec<Action>,
    ) {
        if !cfg.in_unl(&s.author) {
            return;
        }
        // A run waiting here counts it however late it was delivered.
        if let Some(ours) = self.ours.get_mut(&s.seq) {
            let counts = ours.root == s.root && !ours.sigs.contains_key(&s.author);
            if counts && ring.verify_raw(&s.author, &s.root, &s.sig).is_ok() {
                ours.sigs.insert(s.author, s.sig);
                self.hand_if_enough(cfg, s.seq, out);
            }
            return;
        }
        let near = s.seq.saturating_add(BACK) > lcl && s.seq <= lcl.saturating_add(WINDOW);
        if near {
            let heard = self.early.entry(s.seq).or_default();
            heard.entry(s.author).or_insert((s.root, s.sig));
        }
    }

    /// The lcl moved to `lcl`: runs that waited `WINDOW` ledgers go. One
    /// whose signatures never reached the threshold is handed out with
    /// those it has, so its users hear of it (their client then refuses
    /// it, as it should).
    pub fn on_lcl(&mut self, lcl: u64, out: &mut Vec<Action>) {
        self.early = self.early.split_off(&lcl.saturating_sub(BACK - 1));
        let done: Vec<u64> = (self.ours.iter())
            .filter(|(_, o)| o.until <= lcl)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in done {
            let ours = self.ours.remove(&seq).expect("listed above");
            if !ours.handed {
                out.push(signed(seq, &ours));
            }
        }
    }

    fn hand_if_enough(&mut self, cfg: &ConsensusConfig, seq: u64, out: &mut Vec<Action>) {
        let needed = signers_needed(cfg);
        let Some(ours) = self.ours.get_mut(&seq) else {
            return;
        };
        if !ours.handed && ours.sigs.len() >= needed {
            ours.handed = true;
            out.push(signed(seq, ours));
        }
    }
}

/// Signatures a run's outputs are handed with, unless it leaves the window
/// short: what hpcore's client asks, or the close threshold if higher.
pub fn signers_needed(cfg: &ConsensusConfig) -> usize {
    threshold(cfg.unl.len(), CLIENT_PCT.max(cfg.close_threshold_pct))
}

fn signed(seq: u64, ours: &Ours) -> Action {
    Action::OutputsSigned {
        seq,
        root: ours.root,
        sigs: ours.sigs.iter().map(|(k, s)| (*k, *s)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{RunOutcome, UserIo};

    /// One node's `OutputSigs` in a UNL of `n`, the run every node
    /// delivers, and what the node did.
    struct Net {
        keys: Vec<Keypair>,
        cfg: ConsensusConfig,
        ring: KeyRing,
        run: RunResult,
        sigs: OutputSigs,
        out: Vec<Action>,
    }

    impl Net {
        fn new(n: u8) -> Net {
            let keys: Vec<Keypair> = (0..n).map(|i| Keypair::from_seed([i + 1; 32])).collect();
            let cfg = ConsensusConfig::new(keys.iter().map(Keypair::public).collect());
            let run = RunResult {
                outcome: RunOutcome::Exited(Some(0)),
                outputs: BTreeMap::from([(PubKey([7; 32]), b"out".to_vec())]),
                io: UserIo::Raw,
            };
            Net {
                ring: KeyRing::new(&cfg.unl),
                keys,
                cfg,
                run,
                sigs: OutputSigs::default(),
                out: Vec::new(),
            }
        }

        /// This node, holding `key`, delivers ledger `seq`'s run at `lcl`.
        fn deliver(&mut self, key: &Keypair, seq: u64, lcl: u64) {
            let ledger = Hash([seq as u8; 32]);
            let at = (&self.cfg, &self.ring);
            (self.sigs).delivered(at, key, (seq, &ledger), &self.run, lcl, &mut self.out);
        }

        /// A peer's signature arrives at `lcl`.
        fn hear(&mut self, lcl: u64, s: OutputSig) {
            let at = (&self.cfg, &self.ring);
            self.sigs.on_sig(at, lcl, s, &mut self.out);
        }

        /// `key`'s signature over ledger `seq`'s run (`run`, or the run).
        fn sig(&self, key: &Keypair, seq: u64, run: Option<&RunResult>) -> OutputSig {
            let tree = OutputTree::of(run.unwrap_or(&self.run), seq, &Hash([seq as u8; 32]));
            OutputSig {
                seq,
                root: tree.root(),
                author: key.public(),
                sig: tree.sign(key),
            }
        }

        /// Peer `i`'s signature over ledger `seq`'s run.
        fn peer(&self, i: usize, seq: u64) -> OutputSig {
            self.sig(&self.keys[i], seq, None)
        }

        fn handed(&self) -> Vec<(u64, usize)> {
            (self.out.iter())
                .filter_map(|a| match a {
                    Action::OutputsSigned { seq, sigs, .. } => Some((*seq, sigs.len())),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn outputs_are_handed_once_when_four_of_five_signed() {
        let mut net = Net::new(5);
        // One peer is faster than us: its signature waits.
        net.hear(3, net.peer(1, 3));
        net.deliver(&net.keys[0].clone(), 3, 3);
        assert!(matches!(net.out[0], Action::Broadcast { .. }));
        net.hear(3, net.peer(2, 3));
        assert!(net.handed().is_empty(), "3 of 5 is short of 80%");
        net.hear(3, net.peer(3, 3));
        net.hear(3, net.peer(4, 3));
        assert_eq!(net.handed(), vec![(3, 4)]);
    }

    #[test]
    fn forged_foreign_and_repeated_signatures_never_count() {
        let mut net = Net::new(5);
        net.deliver(&net.keys[0].clone(), 3, 3);
        let mut forged = net.peer(1, 3);
        forged.author = net.keys[2].public();
        let outsider = net.sig(&Keypair::from_seed([99; 32]), 3, None);
        let mut other_run = net.run.clone();
        other_run.outputs.insert(PubKey([7; 32]), b"lie".to_vec());
        let other_root = net.sig(&net.keys[3], 3, Some(&other_run));
        for s in [forged, outsider, other_root, net.peer(1, 3)] {
            net.hear(3, s);
        }
        // keys[1] again.
        net.hear(3, net.peer(1, 3));
        assert_eq!(net.sigs.ours[&3].sigs.len(), 2, "ours and keys[1] only");
        // For runs not delivered here, far from the lcl either way: not
        // even kept.
        net.hear(3, net.peer(1, 4 + WINDOW));
        net.hear(2 + BACK, net.peer(1, 2));
        assert!(net.sigs.early.is_empty());
    }

    #[test]
    fn a_run_short_of_signatures_is_handed_with_what_it_has_when_it_leaves() {
        let mut net = Net::new(5);
        // Delivered 60 ledgers after its own (a contract far behind), it
        // still waits its window, and peers' signatures still count.
        net.deliver(&net.keys[0].clone(), 3, 60);
        net.sigs.on_lcl(60 + WINDOW - 1, &mut net.out);
        net.hear(60 + WINDOW - 1, net.peer(1, 3));
        assert!(net.handed().is_empty());
        net.sigs.on_lcl(60 + WINDOW, &mut net.out);
        assert_eq!(net.handed(), vec![(3, 2)]);
        assert!(net.sigs.ours.is_empty());
    }

    #[test]
    fn a_one_node_unl_hands_its_own_signature_at_once() {
        let mut net = Net::new(1);
        net.deliver(&net.keys[0].clone(), 3, 3);
        assert_eq!(net.handed(), vec![(3, 1)]);
    }

    #[test]
    fn a_node_outside_the_unl_does_not_count_its_own_signature() {
        let mut net = Net::new(5);
        net.deliver(&Keypair::from_seed([77; 32]), 3, 3);
        for i in 0..3 {
            net.hear(3, net.peer(i, 3));
        }
        assert!(net.handed().is_empty(), "3 of the UNL and an outsider");
        net.hear(3, net.peer(3, 3));
        assert_eq!(net.handed(), vec![(3, 4)]);
    }
}
