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
    use crate::contract::RunOutcome;

    fn ring(cfg: &ConsensusConfig) -> KeyRing {
        KeyRing::new(&cfg.unl)
    }

    fn keys(n: u8) -> Vec<Keypair> {
        (0..n).map(|i| Keypair::from_seed([i + 1; 32])).collect()
    }

    fn setup(n: u8) -> (Vec<Keypair>, ConsensusConfig, RunResult) {
        let keys = keys(n);
        let cfg = ConsensusConfig::new(keys.iter().map(Keypair::public).collect());
        let run = RunResult {
            outcome: RunOutcome::Exited(Some(0)),
            outputs: BTreeMap::from([(PubKey([7; 32]), b"out".to_vec())]),
        };
        (keys, cfg, run)
    }

    fn sig_of(key: &Keypair, seq: u64, run: &RunResult) -> OutputSig {
        let tree = OutputTree::of(run, seq, &Hash([seq as u8; 32]));
        OutputSig {
            seq,
            root: tree.root(),
            author: key.public(),
            sig: tree.sign(key),
        }
    }

    fn handed(out: &[Action]) -> Vec<(u64, usize)> {
        (out.iter())
            .filter_map(|a| match a {
                Action::OutputsSigned { seq, sigs, .. } => Some((*seq, sigs.len())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn outputs_are_handed_once_when_four_of_five_signed() {
        let (keys, cfg, run) = setup(5);
        let (mut sigs, mut out) = (OutputSigs::default(), Vec::new());
        // One peer is faster than us: its signature waits.
        sigs.on_sig((&cfg, &ring(&cfg)), 3, sig_of(&keys[1], 3, &run), &mut out);
        sigs.delivered(
            (&cfg, &ring(&cfg)),
            &keys[0],
            (3, &Hash([3; 32])),
            &run,
            3,
            &mut out,
        );
        assert!(matches!(out[0], Action::Broadcast { .. }));
        sigs.on_sig((&cfg, &ring(&cfg)), 3, sig_of(&keys[2], 3, &run), &mut out);
        assert!(handed(&out).is_empty(), "3 of 5 is short of 80%");
        sigs.on_sig((&cfg, &ring(&cfg)), 3, sig_of(&keys[3], 3, &run), &mut out);
        sigs.on_sig((&cfg, &ring(&cfg)), 3, sig_of(&keys[4], 3, &run), &mut out);
        assert_eq!(handed(&out), vec![(3, 4)]);
    }

    #[test]
    fn forged_foreign_and_repeated_signatures_never_count() {
        let (keys, cfg, run) = setup(5);
        let (mut sigs, mut out) = (OutputSigs::default(), Vec::new());
        sigs.delivered(
            (&cfg, &ring(&cfg)),
            &keys[0],
            (3, &Hash([3; 32])),
            &run,
            3,
            &mut out,
        );
        let mut forged = sig_of(&keys[1], 3, &run);
        forged.author = keys[2].public();
        let outsider = sig_of(&Keypair::from_seed([99; 32]), 3, &run);
        let mut other_run = run.clone();
        other_run.outputs.insert(PubKey([7; 32]), b"lie".to_vec());
        let other_root = sig_of(&keys[3], 3, &other_run);
        for s in [forged, outsider, other_root, sig_of(&keys[1], 3, &run)] {
            sigs.on_sig((&cfg, &ring(&cfg)), 3, s, &mut out);
        }
        // keys[1] again, then a replay of its signature for another seq.
        sigs.on_sig((&cfg, &ring(&cfg)), 3, sig_of(&keys[1], 3, &run), &mut out);
        assert_eq!(sigs.ours[&3].sigs.len(), 2, "ours and keys[1] only");
        // Far from the lcl: not even kept.
        sigs.on_sig(
            (&cfg, &ring(&cfg)),
            3,
            sig_of(&keys[1], 4 + WINDOW, &run),
            &mut out,
        );
        sigs.on_sig(
            (&cfg, &ring(&cfg)),
            3 + BACK,
            sig_of(&keys[1], 3, &run),
            &mut out,
        );
        assert!(sigs.early.is_empty());
    }

    #[test]
    fn a_run_short_of_signatures_is_handed_with_what_it_has_when_it_leaves() {
        let (keys, cfg, run) = setup(5);
        let (mut sigs, mut out) = (OutputSigs::default(), Vec::new());
        // Delivered 60 ledgers after its own (a contract far behind), it
        // still waits its window, and peers' signatures still count.
        sigs.delivered(
            (&cfg, &ring(&cfg)),
            &keys[0],
            (3, &Hash([3; 32])),
            &run,
            60,
            &mut out,
        );
        sigs.on_lcl(60 + WINDOW - 1, &mut out);
        sigs.on_sig(
            (&cfg, &ring(&cfg)),
            60 + WINDOW - 1,
            sig_of(&keys[1], 3, &run),
            &mut out,
        );
        assert!(handed(&out).is_empty());
        sigs.on_lcl(60 + WINDOW, &mut out);
        assert_eq!(handed(&out), vec![(3, 2)]);
        assert!(sigs.ours.is_empty());
    }

    #[test]
    fn a_one_node_unl_hands_its_own_signature_at_once() {
        let (keys, cfg, run) = setup(1);
        let (mut sigs, mut out) = (OutputSigs::default(), Vec::new());
        sigs.delivered(
            (&cfg, &ring(&cfg)),
            &keys[0],
            (3, &Hash([3; 32])),
            &run,
            3,
            &mut out,
        );
        assert_eq!(handed(&out), vec![(3, 1)]);
    }

    #[test]
    fn a_node_outside_the_unl_does_not_count_its_own_signature() {
        let (keys, cfg, run) = setup(5);
        let outsider = Keypair::from_seed([77; 32]);
        let (mut sigs, mut out) = (OutputSigs::default(), Vec::new());
        let ring = ring(&cfg);
        sigs.delivered(
            (&cfg, &ring),
            &outsider,
            (3, &Hash([3; 32])),
            &run,
            3,
            &mut out,
        );
        for k in &keys[..3] {
            sigs.on_sig((&cfg, &ring), 3, sig_of(k, 3, &run), &mut out);
        }
        assert!(handed(&out).is_empty(), "3 of the UNL and an outsider");
        sigs.on_sig((&cfg, &ring), 3, sig_of(&keys[3], 3, &run), &mut out);
        assert_eq!(handed(&out), vec![(3, 4)]);
    }
}
