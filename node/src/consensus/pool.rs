//! The input pool: bodies waiting for consensus, with admission limits,
//! expiry, and the batching and re-sending of this node's own users'
//! inputs.

use super::message::PeerMessage;
use super::{Action, ConsensusConfig};
use crate::contract::{admissible, input_hash, Signer};
use crate::crypto::Hash;
use std::collections::{BTreeMap, BTreeSet};

/// Rounds an input may wait in the pool before it is dropped.
pub const INPUT_TTL_ROUNDS: u64 = 20;
/// Largest batch of inputs sent in one message.
const BATCH_BYTES: usize = 1 << 20;

/// What became of a body offered to the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Pooled now.
    New,
    /// Already pooled, or already in a recent ledger.
    Known,
    /// Over a size limit (too big, or the pool is full), a signed input
    /// whose signature or container does not hold, or a vouched input on a
    /// network that takes none (`contract::last_ledger`).
    Refused,
}

#[derive(Debug)]
struct Pooled {
    body: Vec<u8>,
    arrived: u64,
    last: u64,
    /// Who signed it, for a signed input.
    signer: Option<Signer>,
}

#[derive(Debug, Default)]
pub struct InputPool {
    /// Bodies by input hash, with the round each arrived in and the last
    /// ledger it may go into (`contract::last_ledger`).
    bodies: BTreeMap<Hash, Pooled>,
    bytes: usize,
    /// Pooled inputs this node took from its own users: it re-sends them
    /// while they wait, since a lost broadcast would otherwise keep them
    /// below the stage-1 threshold for good.
    mine: BTreeSet<Hash>,
    /// Users' inputs taken since the last broadcast, and when they go out:
    /// one message for many inputs, so a busy node signs and sends a few
    /// frames a stage rather than one per input.
    outgoing: Vec<Vec<u8>>,
    outgoing_bytes: usize,
    flush_at: Option<u64>,
}

impl InputPool {
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    pub fn get(&self, h: &Hash) -> Option<&Vec<u8>> {
        self.bodies.get(h).map(|p| &p.body)
    }

    /// When the batch of users' inputs is due to go out.
    pub fn deadline(&self) -> Option<u64> {
        self.flush_at
    }

    /// Offers a body; `included` says whether a recent ledger holds it.
    pub fn admit(
        &mut self,
        cfg: &ConsensusConfig,
        body: Vec<u8>,
        round: u64,
        mine: bool,
        included: impl Fn(&Hash) -> bool,
    ) -> Admission {
        if body.len() > cfg.max_input_bytes
            || self.bodies.len() >= cfg.max_pool_inputs
            || self.bytes + body.len() > cfg.max_pool_bytes
        {
            return Admission::Refused;
        }
        let h = input_hash(&body);
        if included(&h) || self.bodies.contains_key(&h) {
            return Admission::Known;
        }
        // Checked once here, before any vote: a signature that does not
        // hold would only be skipped at run time, after taking ledger space.
        let (last, signer) = match admissible(&body, cfg.vouched_inputs) {
            Some(a) => a,
            None if super::planted!(cfg, UncheckedInputs) => (u64::MAX, None),
            None => return Admission::Refused,
        };
        if mine {
            self.mine.insert(h);
        }
        self.insert(h, body, round, (last, signer));
        Admission::New
    }

    fn insert(
        &mut self,
        h: Hash,
        body: Vec<u8>,
        arrived: u64,
        (last, signer): (u64, Option<Signer>),
    ) {
        self.bytes += body.len();
        let pooled = Pooled {
            body,
            arrived,
            last,
            signer,
        };
        self.bodies.insert(h, pooled);
    }

    /// A body a user submitted here: pooled, and queued for the UNL within
    /// a few ms (an eighth of a stage at most).
    pub fn submit(
        &mut self,
        cfg: &ConsensusConfig,
        now: u64,
        body: Vec<u8>,
        round: u64,
        included: impl Fn(&Hash) -> bool,
    ) -> Admission {
        let admission = self.admit(cfg, body.clone(), round, true, included);
        if admission == Admission::New {
            self.outgoing_bytes += body.len();
            self.outgoing.push(body);
            let wait = (cfg.stage_ms() / 8).clamp(1, 10);
            self.flush_at.get_or_insert(now + wait);
        }
        admission
    }

    /// The queued users' inputs, once their time has come or they fill a
    /// batch.
    pub fn flush(&mut self, now: u64) -> Option<Action> {
        if !(self.flush_at.is_some_and(|t| now >= t) || self.outgoing_bytes >= BATCH_BYTES) {
            return None;
        }
        self.flush_at = None;
        self.outgoing_bytes = 0;
        if self.outgoing.is_empty() {
            return None;
        }
        let bytes = PeerMessage::Inputs(std::mem::take(&mut self.outgoing)).encode();
        Some(Action::Broadcast { bytes })
    }

    /// Moves a body out, its ledger closed, with who signed it as checked
    /// when it was pooled: the chain's nonce index need not check again.
    pub fn take_signed(&mut self, h: &Hash) -> Option<(Vec<u8>, Option<Signer>)> {
        let p = self.bodies.remove(h)?;
        self.bytes -= p.body.len();
        Some((p.body, p.signer))
    }

    /// Puts back the body of an input whose ledger was rolled back.
    pub fn put_back(&mut self, cfg: &ConsensusConfig, h: Hash, body: Vec<u8>, round: u64) {
        let admitted = admissible(&body, cfg.vouched_inputs).unwrap_or((0, None));
        self.insert(h, body, round, admitted);
    }

    /// What a stage-0 proposal offers: the oldest waiting inputs first (so
    /// grinding input hashes cannot jump the queue) within the ledger's
    /// count and byte budget (so a ledger always fits in a frame), sorted;
    /// none past its last ledger, for ledger `next`, none a ledger holds,
    /// and no signed one whose nonce the chain does not take (`fresh`).
    pub fn proposable(
        &self,
        cfg: &ConsensusConfig,
        next: u64,
        included: impl Fn(&Hash) -> bool,
        fresh: impl Fn(&Signer) -> bool,
    ) -> Vec<Hash> {
        let mut waiting: Vec<(u64, Hash, usize)> = self
            .bodies
            .iter()
            .filter(|(h, p)| p.last >= next && !included(h))
            .filter(|(_, p)| p.signer.as_ref().is_none_or(&fresh))
            .map(|(h, p)| (p.arrived, *h, p.body.len()))
            .collect();
        waiting.sort();
        let mut budget = cfg.max_ledger_input_bytes;
        let mut inputs: Vec<Hash> = Vec::new();
        for (_, h, len) in waiting {
            if inputs.len() == cfg.max_inputs_per_ledger || len > budget {
                break;
            }
            budget -= len;
            inputs.push(h);
        }
        inputs.sort();
        inputs
    }

    /// At stage 0: drops inputs that waited too long or are past their
    /// last ledger (the next is `next`), and returns the re-sends of this
    /// node's own users' inputs still waiting, every other round.
    pub fn expire(&mut self, round: u64, next: u64) -> Vec<Action> {
        self.bodies
            .retain(|_, p| p.arrived.saturating_add(INPUT_TTL_ROUNDS) > round && p.last >= next);
        self.bytes = self.bodies.values().map(|p| p.body.len()).sum();
        let bodies = &self.bodies;
        self.mine.retain(|h| bodies.contains_key(h));
        let mut out = Vec::new();
        let mut batch = Vec::new();
        let mut size = 0;
        for h in &self.mine {
            let Pooled { body, arrived, .. } = &self.bodies[h];
            let waited = round.saturating_sub(*arrived);
            if waited < 2 || waited % 2 != 0 {
                continue;
            }
            if size + body.len() > BATCH_BYTES && !batch.is_empty() {
                let bytes = PeerMessage::Inputs(std::mem::take(&mut batch)).encode();
                out.push(Action::Broadcast { bytes });
                size = 0;
            }
            size += body.len() + 8;
            batch.push(body.clone());
        }
        if !batch.is_empty() {
            let bytes = PeerMessage::Inputs(batch).encode();
            out.push(Action::Broadcast { bytes });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;

    fn cfg() -> ConsensusConfig {
        ConsensusConfig::new(vec![Keypair::from_seed([1; 32]).public()])
    }

    fn none(_: &Hash) -> bool {
        false
    }

    #[test]
    fn admits_once_within_limits() {
        let mut cfg = cfg();
        cfg.max_pool_inputs = 2;
        let mut pool = InputPool::default();
        assert_eq!(
            pool.admit(&cfg, b"a".to_vec(), 0, false, none),
            Admission::New
        );
        assert_eq!(
            pool.admit(&cfg, b"a".to_vec(), 0, false, none),
            Admission::Known
        );
        let h = input_hash(b"b");
        assert_eq!(
            pool.admit(&cfg, b"b".to_vec(), 0, false, |x| *x == h),
            Admission::Known
        );
        assert_eq!(
            pool.admit(&cfg, b"c".to_vec(), 0, false, none),
            Admission::New
        );
        assert_eq!(
            pool.admit(&cfg, b"d".to_vec(), 0, false, none),
            Admission::Refused
        );
        let big = vec![0; cfg.max_input_bytes + 1];
        assert_eq!(
            pool.take_signed(&input_hash(b"a")),
            Some((b"a".to_vec(), None))
        );
        assert_eq!(pool.admit(&cfg, big, 0, false, none), Admission::Refused);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn byte_budget_counts_what_is_pooled() {
        let mut cfg = cfg();
        cfg.max_pool_bytes = 10;
        let mut pool = InputPool::default();
        assert_eq!(pool.admit(&cfg, vec![1; 6], 0, false, none), Admission::New);
        assert_eq!(
            pool.admit(&cfg, vec![2; 6], 0, false, none),
            Admission::Refused
        );
        pool.take_signed(&input_hash(&[1; 6]));
        assert_eq!(pool.admit(&cfg, vec![2; 6], 0, false, none), Admission::New);
        // Expiry recounts: the bytes of dropped bodies free up.
        assert!(pool.expire(INPUT_TTL_ROUNDS, 1).is_empty());
        assert_eq!(pool.len(), 0);
        assert_eq!(
            pool.admit(&cfg, vec![3; 10], 0, false, none),
            Admission::New
        );
    }

    #[test]
    fn submitted_inputs_go_out_in_one_batch_and_are_resent_while_waiting() {
        let cfg = cfg();
        let mut pool = InputPool::default();
        pool.submit(&cfg, 100, b"x".to_vec(), 0, none);
        pool.submit(&cfg, 101, b"y".to_vec(), 0, none);
        let due = pool.deadline().expect("a flush is due");
        assert!(pool.flush(due - 1).is_none());
        let Some(Action::Broadcast { bytes }) = pool.flush(due) else {
            panic!("expected one broadcast");
        };
        let sent = PeerMessage::decode(&bytes).unwrap();
        assert_eq!(
            sent,
            PeerMessage::Inputs(vec![b"x".to_vec(), b"y".to_vec()])
        );
        assert!(pool.flush(due + 100).is_none());
        // Waiting inputs are re-sent every other round, from the second on.
        assert!(pool.expire(1, 1).is_empty());
        assert_eq!(pool.expire(2, 1).len(), 1);
        assert!(pool.expire(3, 1).is_empty());
        // Inputs from peers are never re-sent by this node.
        let mut peer = InputPool::default();
        peer.admit(&cfg, b"z".to_vec(), 0, false, none);
        assert!(peer.expire(2, 1).is_empty());
    }

    #[test]
    fn proposes_oldest_first_within_the_budget_sorted() {
        let mut cfg = cfg();
        cfg.max_inputs_per_ledger = 2;
        let mut pool = InputPool::default();
        for (i, round) in [(1u8, 5), (2, 3), (3, 4)] {
            pool.admit(&cfg, vec![i], round, false, none);
        }
        let mut want = vec![input_hash(&[2]), input_hash(&[3])];
        want.sort();
        assert_eq!(pool.proposable(&cfg, 1, none, |_| true), want);
        let skip = input_hash(&[2]);
        assert!(!pool
            .proposable(&cfg, 1, |h| *h == skip, |_| true)
            .contains(&skip));
    }

    #[test]
    fn a_signed_input_is_checked_before_it_is_pooled_and_leaves_after_its_last_ledger() {
        use crate::contract::SignedInput;
        let cfg = cfg();
        let user = Keypair::from_seed([5; 32]);
        let container = r#"{"input":"hi","nonce":1,"max_ledger_seq_no":5}"#;
        let good = SignedInput {
            user: user.public(),
            container: container.into(),
            sig: user.sign_raw(container.as_bytes()),
        };
        let mut forged = good.clone();
        forged.container = container.replace("hi", "ho");
        let mut pool = InputPool::default();
        let admit =
            |pool: &mut InputPool, s: &SignedInput| pool.admit(&cfg, s.encode(), 0, false, none);
        assert_eq!(admit(&mut pool, &forged), Admission::Refused);
        assert_eq!(admit(&mut pool, &good), Admission::New);
        let h = input_hash(&good.encode());
        assert_eq!(pool.proposable(&cfg, 5, none, |_| true), vec![h]);
        assert!(
            pool.proposable(&cfg, 6, none, |_| true).is_empty(),
            "past ledger 5"
        );
        // The chain decides on its nonce, seeing who signed it.
        let signer = |s: &Signer| s.user == user.public() && s.nonce == 1 && s.last == 5;
        assert!(pool.proposable(&cfg, 5, none, |s| !signer(s)).is_empty());
        pool.expire(1, 5);
        assert_eq!(pool.len(), 1);
        pool.expire(1, 6);
        assert_eq!(pool.len(), 0);
    }
}
