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

/// Ledgers whose inputs and nonces a restart must read again, however few
/// the chain keeps whole: the replay window and the nonce window.
pub const REPLAY_LEDGERS: u64 = if INCLUDED_WINDOW > NONCE_WINDOW {
    INCLUDED_WINDOW
} else {
    NONCE_WINDOW
};

#[derive(Debug)]
pub struct Chain {
    /// The recent ledgers, oldest first: `records[i]` is ledger `base + i`.
    /// Older ones are in the store only (`Chain::prune`). Shared with the
    /// store (`Action::Persist`): a store in memory keeps no second copy.
    records: Vec<Arc<LedgerRecord>>,
    base: u64,
    /// Where the verdicts stood after each ledger in `records`, so that a
    /// rollback steps back without the ledgers before the window.
    marks: Vec<Mark>,
    /// Inputs already in a ledger, with its seq, so they never land twice.
    included: BTreeMap<Hash, u64>,
    /// The same inputs by ledger, to forget a ledger's when it leaves the
    /// replay window (its record may be gone from memory by then).
    included_by_seq: BTreeMap<u64, Vec<Hash>>,
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
    mark: Mark,
}

/// How far the verdicts have come after some ledger.
#[derive(Clone, Copy, Debug, Default)]
struct Mark {
    /// The first run without a verdict; `None` until a ledger restored
    /// from the middle of the chain shows it.
    undecided: Option<u64>,
    /// The newest certified run, with its result.
    certified: Option<(u64, ExecResult)>,
}

impl Verdicts {
    /// From genesis, the first undecided run is known: run 0.
    fn from_genesis() -> Verdicts {
        Verdicts {
            by_seq: BTreeMap::new(),
            mark: Mark {
                undecided: Some(0),
                certified: None,
            },
        }
    }

    /// Takes a new ledger's verdicts. They start at the first undecided
    /// run in every ledger the UNL closed (the candidate is built that
    /// way); any others are ignored rather than trusted. A chain restored
    /// from the middle learns where they start from its first verdict.
    fn take(&mut self, verdicts: &[Verdict]) {
        for v in verdicts {
            let undecided = *self.mark.undecided.get_or_insert(v.seq);
            if v.seq != undecided {
                tracing::warn!(seq = v.seq, undecided, "verdict out of order ignored");
                continue;
            }
            self.by_seq.insert(v.seq, v.result);
            if let Some(r) = v.result {
                self.mark.certified = Some((v.seq, r));
            }
            self.mark.undecided = Some(v.seq + 1);
        }
    }

    /// Back to where they stood at `mark`: the verdicts after it go.
    fn step_back(&mut self, mark: Mark) {
        if let Some(u) = mark.undecided {
            self.by_seq.split_off(&u);
        }
        self.mark = mark;
    }
}

impl Chain {
    /// The chain a store kept: the ledgers after genesis in order, or the
    /// newest part of them (from seq `needed_from` on), checked link by
    /// link (a disk can lie too). Ledgers from `keep_from` on stay whole in
    /// memory; the older ones only give the replay and nonce windows.
    pub fn restore(stored: Vec<LedgerRecord>, keep_from: u64) -> Result<Chain, ChainError> {
        let lcl_seq = stored.last().map_or(0, |r| r.ledger.seq);
        let from_genesis = stored.first().is_none_or(|r| r.ledger.seq == 1);
        // The lcl and the ledger below it, at least: a rollback needs both.
        let keep_from = keep_from.min(lcl_seq.saturating_sub(1));
        let mut chain = Chain {
            records: Vec::new(),
            base: 0,
            marks: Vec::new(),
            included: BTreeMap::new(),
            included_by_seq: BTreeMap::new(),
            final_seq: lcl_seq.saturating_sub(1),
            restored_seq: lcl_seq,
            voted_on: None,
            verdicts: Verdicts::default(),
            nonces: Nonces::default(),
        };
        let mut prev = None;
        if from_genesis {
            chain.verdicts = Verdicts::from_genesis();
            let genesis = LedgerRecord::genesis();
            prev = Some(genesis.id());
            if keep_from == 0 {
                chain.keep(Arc::new(genesis));
            }
        }
        for r in stored {
            if let Some(p) = &prev {
                check_link(p, &r.ledger, &r.hash)?;
            }
            prev = Some(r.id());
            let seq = r.ledger.seq;
            if seq + INCLUDED_WINDOW > lcl_seq {
                chain.include(&r.ledger.inputs, seq);
            }
            if seq + NONCE_WINDOW > lcl_seq {
                chain.nonces.add(&r, &BTreeMap::new());
            }
            chain.verdicts.take(&r.ledger.verdicts);
            if seq >= keep_from {
                chain.keep(Arc::new(r));
            }
        }
        Ok(chain)
    }

    /// The first stored ledger `restore` needs, for a store whose newest
    /// ledger is `tip` and a contract that ran through `ran`.
    pub fn needed_from(tip: u64, ran: u64, memory_ledgers: u64) -> u64 {
        let keep = Chain::keep_from(tip, ran, memory_ledgers);
        (tip + 1).saturating_sub(REPLAY_LEDGERS).min(keep).max(1)
    }

    /// The first ledger kept whole at start: the window, and every ledger
    /// the contract has still to run.
    pub fn keep_from(tip: u64, ran: u64, memory_ledgers: u64) -> u64 {
        window_start(tip, memory_ledgers).min(ran + 1)
    }

    fn keep(&mut self, record: Arc<LedgerRecord>) {
        if self.records.is_empty() {
            self.base = record.ledger.seq;
        }
        self.records.push(record);
        self.marks.push(self.verdicts.mark);
    }

    fn include(&mut self, inputs: &[Hash], seq: u64) {
        for h in inputs {
            self.included.insert(*h, seq);
        }
        self.included_by_seq.insert(seq, inputs.to_vec());
    }

    pub fn lcl(&self) -> LedgerId {
        self.records.last().expect("chain keeps its lcl").id()
    }

    /// The ledgers in memory, oldest (ledger `base()`) first.
    pub fn records(&self) -> &[Arc<LedgerRecord>] {
        &self.records
    }

    /// The seq of the oldest ledger in memory.
    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn get(&self, seq: u64) -> Option<&LedgerRecord> {
        self.shared(seq).map(|r| &**r)
    }

    /// Ledger `seq` as the chain holds it, to share with the store; `None`
    /// past the lcl or before the window.
    pub fn shared(&self, seq: u64) -> Option<&Arc<LedgerRecord>> {
        let i = seq.checked_sub(self.base)?;
        self.records.get(usize::try_from(i).ok()?)
    }

    /// Lets the ledgers older than the newest `memory_ledgers` go from
    /// memory (they are in the store), but not those from `needed` on,
    /// nor the lcl and the ledger below it.
    pub fn prune(&mut self, memory_ledgers: u64, needed: u64) {
        let lcl = self.lcl().seq;
        let floor = (window_start(lcl, memory_ledgers).min(needed)).min(lcl.saturating_sub(1));
        let Some(n) = floor.checked_sub(self.base).filter(|n| *n > 0) else {
            return;
        };
        self.records.drain(..n as usize);
        self.marks.drain(..n as usize);
        self.base = floor;
        self.verdicts.by_seq = self.verdicts.by_seq.split_off(&floor);
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

    /// The ledger in the replay window that holds input `h`.
    pub fn included_in(&self, h: &Hash) -> Option<u64> {
        self.included.get(h).copied()
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
        self.verdicts.mark.certified
    }

    /// The verdict on running ledger `seq`: `None` while there is none,
    /// `Some(None)` if the run went uncertified.
    pub fn verdict(&self, seq: u64) -> Option<Option<ExecResult>> {
        self.verdicts.by_seq.get(&seq).copied()
    }

    /// The first run the chain has no verdict on.
    pub fn undecided(&self) -> u64 {
        // Unknown only for a chain restored from the middle whose replay
        // window carried no verdict at all, which the verdict backstop
        // rules out: the lcl's run is then the guess.
        (self.verdicts.mark.undecided).unwrap_or_else(|| self.lcl().seq)
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
        let Some(i) = seq.checked_sub(self.base) else {
            return false;
        };
        let Some(r) = self.records.get_mut(i as usize) else {
            return false;
        };
        Arc::make_mut(r).bodies.insert(h, body).is_none()
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
        }
        self.include(&record.ledger.inputs, seq);
        // Ledgers leave the window one at a time: forget their inputs, not
        // scan the whole window (20 000 hashes at 20 inputs a second) on
        // every close.
        while let Some(old) = self.included_by_seq.first_entry() {
            if *old.key() + INCLUDED_WINDOW > seq {
                break;
            }
            for h in old.remove() {
                if self
                    .included
                    .get(&h)
                    .is_some_and(|s| *s + INCLUDED_WINDOW <= seq)
                {
                    self.included.remove(&h);
                }
            }
        }
        self.final_seq = self.final_seq.max(seq - 1);
        self.verdicts.take(&record.ledger.verdicts);
        self.nonces.add(&record, &checked);
        self.nonces.prune(self.final_seq + 1);
        self.keep(Arc::new(record));
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
        if from.seq == 0 || from.seq <= self.final_seq || self.records.len() < 2 {
            return Err(Kept::Final);
        }
        if !proven_elsewhere && from.seq <= self.restored_seq {
            return Err(Kept::Restored);
        }
        if !proven_elsewhere && self.voted_on == Some(from) {
            return Err(Kept::Voted);
        }
        let dropped = Arc::unwrap_or_clone(self.records.pop().expect("two records, checked"));
        self.marks.pop();
        for h in &dropped.ledger.inputs {
            self.included.remove(h);
        }
        self.included_by_seq.remove(&from.seq);
        self.nonces.remove(from.seq);
        let mark = *self.marks.last().expect("one mark a record");
        self.verdicts.step_back(mark);
        Ok(dropped)
    }
}

/// The first of the newest `memory_ledgers` ledgers up to `lcl`.
fn window_start(lcl: u64, memory_ledgers: u64) -> u64 {
    (lcl + 1).saturating_sub(memory_ledgers)
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
        let chain = Chain::restore(vec![a.clone(), b.clone()], 0).unwrap();
        assert_eq!(chain.lcl(), b.id());
        assert_eq!(chain.restored_seq, 2);
        let stray = next(&g, vec![], 3);
        assert!(Chain::restore(vec![a, stray], 0).is_err());
        // The newest part of a chain is taken as the store gives it.
        assert_eq!(Chain::restore(vec![b.clone()], 0).unwrap().lcl(), b.id());
    }

    #[test]
    fn append_takes_bodies_from_the_pool_and_remembers_inputs() {
        let cfg = super::super::ConsensusConfig::new(vec![]);
        let mut pool = InputPool::default();
        pool.admit(&cfg, b"x".to_vec(), 0, false, |_| false);
        let h = crate::contract::input_hash(b"x");
        let mut chain = Chain::restore(vec![], 0).unwrap();
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
        let mut chain = Chain::restore(vec![], 0).unwrap();
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
        let mut restored = Chain::restore(vec![a], 0).unwrap();
        assert_eq!(restored.roll_back(false).err(), Some(Kept::Restored));
    }

    fn verdict(seq: u64, x: u8) -> Verdict {
        let h = Hash([x; 32]);
        let result = Some(ExecResult {
            state: h,
            output: h,
        });
        Verdict { seq, result }
    }

    /// Ledgers 1..=n, ledger s carrying the verdict on run s - 1 and
    /// input [s; 32].
    fn chain_of(n: u64) -> Vec<LedgerRecord> {
        let mut out: Vec<LedgerRecord> = Vec::new();
        let mut prev = LedgerRecord::genesis().id();
        for s in 1..=n {
            let mut r = next(&prev, vec![Hash([s as u8; 32])], s);
            r.ledger.verdicts = vec![verdict(s - 1, s as u8)];
            r.hash = r.ledger.hash();
            prev = r.id();
            out.push(r);
        }
        out
    }

    #[test]
    fn pruned_ledgers_leave_memory_but_not_the_rules() {
        let all = chain_of(10);
        let mut pool = InputPool::default();
        let mut chain = Chain::restore(vec![], 0).unwrap();
        for r in &all[..9] {
            chain.append(r.clone(), &mut pool);
        }
        chain.prune(4, u64::MAX);
        assert_eq!(chain.base(), 6);
        assert_eq!(chain.records().len(), 4, "ledgers 6..=9");
        assert!(chain.get(5).is_none() && chain.get(6).is_some());
        assert!(
            !chain.add_body(3, Hash([3; 32]), vec![1]),
            "gone from memory"
        );
        assert!(chain.includes(&Hash([3; 32])), "still in the replay window");
        assert_eq!(chain.verdict(6), Some(verdict(6, 7).result));
        assert_eq!(chain.verdict(5), None, "verdicts on runs before it go too");
        // Never the lcl or the ledger below it, whatever the floor.
        chain.prune(1, 100);
        assert_eq!((chain.base(), chain.records().len()), (8, 2));
        // A rollback steps the verdicts back without the older ledgers.
        chain.append(all[9].clone(), &mut pool);
        assert_eq!(chain.undecided(), 10);
        chain.roll_back(false).expect("unvoted");
        assert_eq!(chain.undecided(), 9);
        assert_eq!(chain.certified_target().map(|c| c.0), Some(8));
        assert_eq!(chain.verdict(9), None);
        // The pruned chain rolls back to its last two, then says final.
        assert_eq!(chain.roll_back(true).err(), Some(Kept::Final));
    }

    #[test]
    fn a_chain_restored_from_its_newest_part() {
        let all = chain_of(10);
        let keep_from = Chain::keep_from(10, 10, 4);
        assert_eq!(keep_from, 7);
        assert_eq!(Chain::keep_from(10, 3, 4), 4, "runs still to do stay");
        assert_eq!(Chain::needed_from(10, 10, 4), 1, "the replay window");
        let chain = Chain::restore(all[4..].to_vec(), keep_from).unwrap();
        assert_eq!((chain.base(), chain.lcl()), (7, all[9].id()));
        assert!(chain.includes(&Hash([5; 32])), "older inputs still known");
        assert!(!chain.includes(&Hash([4; 32])), "not read");
        // The verdicts start where its first ledger's do.
        assert_eq!(chain.undecided(), 10);
        assert_eq!(chain.certified_target().map(|c| c.0), Some(9));
        // The same as restored whole, but for what memory holds.
        let whole = Chain::restore(all.clone(), 0).unwrap();
        assert_eq!(whole.records().len(), 11);
        assert_eq!(whole.undecided(), chain.undecided());
        assert_eq!(&whole.records()[7..], chain.records());
    }
}
