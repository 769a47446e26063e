//! The node's chain of closed ledgers: appending, finality, the replay
//! window of included inputs, and the one rule that says when the lcl may
//! be rolled back.

use super::nonces::{Nonces, NONCE_WINDOW};
use super::pool::InputPool;
use super::Kept;
use crate::contract::{ExecResult, Signer};
use crate::crypto::Hash;
use crate::ledger::{check_link, ChainError, LedgerId, LedgerRecord, Verdict};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Seqs an included input hash is remembered for, to refuse replays.
const INCLUDED_WINDOW: u64 = 1024;

#[derive(Debug)]
pub struct Chain {
    /// Genesis first; a record's index is its seq. Shared with the store
    /// (`Action::Persist`): a store in memory keeps no second copy.
    records: Vec<Arc<LedgerRecord>>,
    /// Inputs already in a ledger, with its seq, so they never land twice.
    included: BTreeMap<Hash, u64>,
    /// Highest seq known final here: a ledger was appended on top of it.
    final_seq: u64,
    /// Seq of the lcl restored at start. The vote record does not survive a
    /// restart, so the restored lcl is treated as voted on.
    restored_seq: u64,
    /// The lcl this node signed a stage-3 proposal on. Such an lcl is never
    /// rolled back: that one-shot vote is what makes finality safe.
    voted_on: Option<LedgerId>,
    verdicts: Verdicts,
    /// Users' nonces in recent ledgers, which order their signed inputs.
    nonces: Nonces,
}

/// The verdicts on runs that the chain's ledgers carry.
#[derive(Debug, Default)]
struct Verdicts {
    by_seq: BTreeMap<u64, Option<ExecResult>>,
    /// The first run without a verdict.
    undecided: u64,
    /// The newest certified run, with its result.
    certified: Option<(u64, ExecResult)>,
}

impl Verdicts {
    fn of(records: &[Arc<LedgerRecord>]) -> Verdicts {
        let mut v = Verdicts::default();
        for r in records {
            v.take(&r.ledger.verdicts);
        }
        v
    }

    /// Takes a new ledger's verdicts. They start at the first undecided
    /// run in every ledger the UNL closed (the candidate is built that
    /// way); any others are ignored rather than trusted.
    fn take(&mut self, verdicts: &[Verdict]) {
        for v in verdicts {
            if v.seq != self.undecided {
                tracing::warn!(
                    seq = v.seq,
                    undecided = self.undecided,
                    "verdict out of order ignored"
                );
                continue;
            }
            self.by_seq.insert(v.seq, v.result);
            if let Some(r) = v.result {
                self.certified = Some((v.seq, r));
            }
            self.undecided += 1;
        }
    }
}

impl Chain {
    /// The chain a store kept (the ledgers after genesis, in order), checked
    /// link by link: a disk can lie too.
    pub fn restore(stored: Vec<LedgerRecord>) -> Result<Chain, ChainError> {
        let mut records = vec![Arc::new(LedgerRecord::genesis())];
        for r in stored {
            check_link(&records[records.len() - 1].id(), &r.ledger, &r.hash)?;
            records.push(Arc::new(r));
        }
        let lcl_seq = records.len() as u64 - 1;
        let mut included = BTreeMap::new();
        for r in records
            .iter()
            .rev()
            .take_while(|r| r.ledger.seq + INCLUDED_WINDOW > lcl_seq)
        {
            for i in &r.ledger.inputs {
                included.insert(*i, r.ledger.seq);
            }
        }
        let mut nonces = Nonces::default();
        let recent = records.len().saturating_sub(NONCE_WINDOW as usize);
        for r in &records[recent.max(1)..] {
            nonces.add(r, &BTreeMap::new());
        }
        Ok(Chain {
            verdicts: Verdicts::of(&records),
            nonces,
            records,
            included,
            final_seq: lcl_seq.saturating_sub(1),
            restored_seq: lcl_seq,
            voted_on: None,
        })
    }

    pub fn lcl(&self) -> LedgerId {
        self.records.last().expect("chain has genesis").id()
    }

    pub fn records(&self) -> &[Arc<LedgerRecord>] {
        &self.records
    }

    pub fn get(&self, seq: u64) -> Option<&LedgerRecord> {
        self.shared(seq).map(|r| &**r)
    }

    /// Ledger `seq` as the chain holds it, to share with the store.
    pub fn shared(&self, seq: u64) -> Option<&Arc<LedgerRecord>> {
        self.records.get(usize::try_from(seq).ok()?)
    }

    /// Whether a ledger in the replay window holds input `h`.
    pub fn includes(&self, h: &Hash) -> bool {
        self.included.contains_key(h)
    }

    /// Whether a signed input by `s` may go into the next ledger, its
    /// nonce above those of its user's inputs that ran (see `nonces`).
    pub fn fresh(&self, s: &Signer) -> bool {
        self.nonces.fresh(&s.user, s.nonce, self.lcl().seq + 1)
    }

    /// The body of an included input, if this node holds it.
    pub fn body(&self, h: &Hash) -> Option<&Vec<u8>> {
        let seq = self.included.get(h)?;
        self.get(*seq)?.bodies.get(h)
    }

    /// The newest state the chain certifies: usually the lcl's
    /// predecessor's run, older if the runs since have no verdict yet or
    /// went uncertified.
    pub fn certified_target(&self) -> Option<(u64, ExecResult)> {
        self.verdicts.certified
    }

    /// The verdict on running ledger `seq`: `None` while there is none,
    /// `Some(None)` if the run went uncertified.
    pub fn verdict(&self, seq: u64) -> Option<Option<ExecResult>> {
        self.verdicts.by_seq.get(&seq).copied()
    }

    /// The first run the chain has no verdict on.
    pub fn undecided(&self) -> u64 {
        self.verdicts.undecided
    }

    /// Input hashes ledger `seq` names whose bodies it lacks.
    pub fn missing_bodies(&self, seq: u64) -> Vec<Hash> {
        let Some(r) = self.get(seq) else {
            return Vec::new();
        };
        r.ledger
            .inputs
            .iter()
            .filter(|h| !r.bodies.contains_key(h))
            .copied()
            .collect()
    }

    /// Whether ledger `seq` names input `h`.
    pub fn names(&self, seq: u64, h: &Hash) -> bool {
        self.get(seq)
            .is_some_and(|r| r.ledger.inputs.binary_search(h).is_ok())
    }

    /// Adds a fetched body to ledger `seq`; returns whether it was new.
    pub fn add_body(&mut self, seq: u64, h: Hash, body: Vec<u8>) -> bool {
        // A copy if the store shares the record: rare (a body fetched
        // after the close), and the store's record stays as written.
        let r = Arc::make_mut(&mut self.records[seq as usize]);
        r.bodies.insert(h, body).is_none()
    }

    /// Records this node's stage-3 vote on the lcl.
    pub fn vote(&mut self, on: LedgerId) {
        self.voted_on = Some(on);
    }

    /// Adds a verified ledger and forgets its inputs. Bodies the record
    /// lacks move into it from the pool: a peer's record may lack some this
    /// node holds, and if the only other holders crash, these copies are
    /// the last ones. The ledger below it is final from now on.
    pub fn append(&mut self, mut record: LedgerRecord, pool: &mut InputPool) -> &Arc<LedgerRecord> {
        let seq = record.ledger.seq;
        let mut checked = BTreeMap::new();
        for h in &record.ledger.inputs {
            if let Some((b, signer)) = pool.take_signed(h) {
                // The pool's check holds for the record's body only if
                // it is the same body (a hash names one).
                record.bodies.entry(*h).or_insert(b);
                checked.insert(*h, signer);
            }
            self.included.insert(*h, seq);
        }
        // Ledgers are appended one seq at a time, so one ledger leaves the
        // window: forget its inputs, not scan the whole window (20 000
        // hashes at 20 inputs a second) on every close.
        let leaving = seq.checked_sub(INCLUDED_WINDOW);
        if let Some(old) = leaving.and_then(|s| self.records.get(s as usize)) {
            for h in &old.ledger.inputs {
                if self
                    .included
                    .get(h)
                    .is_some_and(|s| *s + INCLUDED_WINDOW <= seq)
                {
                    self.included.remove(h);
                }
            }
        }
        self.final_seq = self.final_seq.max(seq - 1);
        self.verdicts.take(&record.ledger.verdicts);
        self.nonces.add(&record, &checked);
        self.nonces.prune(self.final_seq + 1);
        self.records.push(Arc::new(record));
        self.records.last().expect("just pushed")
    }

    /// Drops the lcl if that is safe, and returns it; or names the guard
    /// that kept it.
    ///
    /// Never a final ledger: ledgers below the lcl are final (the lcl's proof
    /// is a threshold of votes on them), and so is any lcl that once had a
    /// ledger appended on top (`final_seq`). Without a proof, only an lcl
    /// this node never voted on (nor restarted with, since the vote record
    /// is not kept across restarts). With `proven_elsewhere` (a verified
    /// threshold of votes on another ledger at this seq) a voted lcl may go
    /// too: that other ledger is final, so this one can never be, and
    /// honest nodes only ever switch towards a proven ledger.
    pub fn roll_back(&mut self, proven_elsewhere: bool) -> Result<LedgerRecord, Kept> {
        let from = self.lcl();
        if from.seq == 0 || from.seq <= self.final_seq {
            return Err(Kept::Final);
        }
        if !proven_elsewhere && from.seq <= self.restored_seq {
            return Err(Kept::Restored);
        }
        if !proven_elsewhere && self.voted_on == Some(from) {
            return Err(Kept::Voted);
        }
        let dropped = Arc::unwrap_or_clone(self.records.pop().expect("seq > 0 so above genesis"));
        for h in &dropped.ledger.inputs {
            self.included.remove(h);
        }
        self.nonces.remove(from.seq);
        if !dropped.ledger.verdicts.is_empty() {
            self.verdicts = Verdicts::of(&self.records);
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    /// A record on top of `prev` (no proof: the chain trusts its caller).
    fn next(prev: &LedgerId, inputs: Vec<Hash>, salt: u64) -> LedgerRecord {
        let ledger = Ledger {
            seq: prev.seq + 1,
            prev: prev.hash,
            time: salt,
            inputs,
            verdicts: vec![],
            beacon: Default::default(),
        };
        LedgerRecord {
            hash: ledger.hash(),
            ledger,
            proof: vec![],
            bodies: BTreeMap::new(),
        }
    }

    #[test]
    fn restore_checks_every_link() {
        let g = LedgerRecord::genesis().id();
        let a = next(&g, vec![], 1);
        let b = next(&a.id(), vec![], 2);
        let chain = Chain::restore(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(chain.lcl(), b.id());
        assert_eq!(chain.restored_seq, 2);
        assert!(Chain::restore(vec![b]).is_err());
    }

    #[test]
    fn append_takes_bodies_from_the_pool_and_remembers_inputs() {
        let cfg = super::super::ConsensusConfig::new(vec![]);
        let mut pool = InputPool::default();
        pool.admit(&cfg, b"x".to_vec(), 0, false, |_| false);
        let h = crate::contract::input_hash(b"x");
        let mut chain = Chain::restore(vec![]).unwrap();
        let r = next(&chain.lcl(), vec![h], 1);
        let appended = chain.append(r, &mut pool);
        assert_eq!(appended.bodies.get(&h), Some(&b"x".to_vec()));
        assert_eq!(pool.len(), 0);
        assert!(chain.includes(&h));
        assert_eq!(chain.body(&h), Some(&b"x".to_vec()));
        assert!(chain.missing_bodies(1).is_empty());
    }

    #[test]
    fn the_rollback_rule() {
        let mut pool = InputPool::default();
        let mut chain = Chain::restore(vec![]).unwrap();
        assert_eq!(
            chain.roll_back(true).err(),
            Some(Kept::Final),
            "never genesis"
        );
        let h = Hash([7; 32]);
        let a = next(&chain.lcl(), vec![h], 1);
        chain.append(a.clone(), &mut pool);
        // Unvoted, not restored: may go without a proof.
        let dropped = chain.roll_back(false).expect("unvoted lcl rolls back");
        assert_eq!(dropped.hash, a.hash);
        assert!(!chain.includes(&h));
        // Voted on: only with a proof of another ledger.
        chain.append(a.clone(), &mut pool);
        chain.vote(a.id());
        assert_eq!(chain.roll_back(false).err(), Some(Kept::Voted));
        assert!(chain.roll_back(true).is_ok());
        // Final (a ledger was appended on top): never, even with a proof.
        chain.append(a.clone(), &mut pool);
        chain.append(next(&a.id(), vec![], 2), &mut pool);
        assert!(chain.roll_back(true).is_ok(), "the new lcl is not final");
        assert_eq!(
            chain.roll_back(true).err(),
            Some(Kept::Final),
            "ledger 1 is final"
        );
        // Restored lcl: treated as voted on.
        let mut restored = Chain::restore(vec![a]).unwrap();
        assert_eq!(restored.roll_back(false).err(), Some(Kept::Restored));
    }
}
