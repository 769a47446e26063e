//! A simulated node's contract state directory: the files the latest run
//! left, their tree, and how to step back over the last few runs.

use super::tree::Tree;
use hotpocket_contract::{Changes, MemState};
use hotpocket_node::contract::{ExecResult, StateNode};
use hotpocket_node::crypto::Hash;
use hotpocket_node::env::RollbackError;
use hotpocket_node::sync::state_transfer::{apply_to_files, StatePatch};
use std::collections::BTreeMap;

/// Runs kept, so the contract can step back; the protocol asks for one.
const KEPT_RUNS: usize = 3;

/// One kept run: its result, and what its changes replaced (the bytes
/// each path held before, `None` where there was no file), which undoes it.
#[derive(Clone)]
struct Step {
    result: ExecResult,
    undo: Changes,
}

#[derive(Clone)]
pub struct ContractDisk {
    files: MemState,
    tree: Tree,
    /// seq -> the run of that ledger, newest last.
    runs: BTreeMap<u64, Step>,
}

impl Default for ContractDisk {
    fn default() -> Self {
        let files = MemState::default();
        let tree = Tree::of(&files);
        let result = ExecResult {
            state: tree.hash(),
            output: Hash::ZERO,
        };
        ContractDisk {
            files,
            tree,
            runs: BTreeMap::from([(
                0,
                Step {
                    result,
                    undo: Changes::new(),
                },
            )]),
        }
    }
}

impl ContractDisk {
    /// Where the state is: the ledger whose run left it, and that result.
    pub fn latest(&self) -> (u64, ExecResult) {
        let (seq, step) = self.runs.last_key_value().expect("never empty");
        (*seq, step.result)
    }

    /// The files the latest run left.
    pub fn files(&self) -> &MemState {
        &self.files
    }

    pub fn tree(&self) -> StateNode {
        self.tree.to_state_node()
    }

    /// Keeps run `seq`, which made `changes`, with its output; returns its
    /// result. Only the changed paths are hashed again. Runs come in order
    /// (`finish` reports any other as a violation); one out of order would
    /// leave undo steps that no longer lead back run by run.
    pub fn keep(&mut self, seq: u64, changes: &Changes, output: Hash) -> ExecResult {
        let undo = self.files.apply(changes);
        self.tree.update(&self.files, changes);
        let result = ExecResult {
            state: self.tree.hash(),
            output,
        };
        self.runs.insert(seq, Step { result, undo });
        while self.runs.len() > KEPT_RUNS {
            self.runs.pop_first();
        }
        result
    }

    /// Steps back to what running `seq` left. A contract that has not run
    /// `seq` yet has nothing to undo; one that no longer keeps that state
    /// stays as it is and says so, like the process host.
    pub fn rollback(&mut self, seq: u64) -> Result<(), RollbackError> {
        let (ran, _) = self.latest();
        if ran <= seq {
            return Ok(());
        }
        if !self.runs.contains_key(&seq) {
            return Err(RollbackError::NoSnapshot { want: seq, ran });
        }
        while let Some(entry) = self.runs.last_entry() {
            if *entry.key() <= seq {
                break;
            }
            let step = entry.remove();
            self.files.apply(&step.undo);
            self.tree.update(&self.files, &step.undo);
        }
        Ok(())
    }

    /// The files and tree the run before the latest left, when it is kept:
    /// rebuilt from the latest run's undo (only a peer fetching state asks).
    pub fn previous(&self) -> Option<(MemState, StateNode)> {
        if self.runs.len() < 2 {
            return None;
        }
        let (_, latest) = self.runs.last_key_value()?;
        let mut before = self.files.clone();
        before.apply(&latest.undo);
        let tree = Tree::of(&before).to_state_node();
        Some((before, tree))
    }

    /// The state `patch` makes of the latest one, with what it hashes to.
    pub fn patched(&self, patch: &StatePatch) -> (MemState, Tree) {
        let mut files = self.files.clone();
        apply_to_files(&mut files.0, patch);
        let tree = Tree::of(&files);
        (files, tree)
    }

    /// Replaces everything with an installed state, certified as `seq`'s.
    pub fn install(&mut self, seq: u64, files: MemState, tree: Tree, result: ExecResult) {
        self.files = files;
        self.tree = tree;
        let undo = Changes::new();
        self.runs = BTreeMap::from([(seq, Step { result, undo })]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_runs(seqs: &[u64]) -> ContractDisk {
        let mut disk = ContractDisk::default();
        for &seq in seqs {
            let changes = Changes::from([(format!("kv/{seq}"), Some(vec![seq as u8]))]);
            disk.keep(seq, &changes, Hash::ZERO);
        }
        disk
    }

    #[test]
    fn rolls_back_to_a_kept_run_and_refuses_past_it_like_the_process_host() {
        let mut disk = disk_with_runs(&[1, 2, 3, 4]);
        let third = disk.runs[&3].result;
        assert!(
            disk.rollback(5).is_ok(),
            "not run that far: nothing to undo"
        );
        assert_eq!(disk.latest().0, 4);
        disk.rollback(3).unwrap();
        assert_eq!(disk.latest(), (3, third));
        assert_eq!(disk.files, disk_with_runs(&[1, 2, 3]).files);
        assert_eq!(third.state, Tree::of(&disk.files).hash());
        // Run 1 is no longer kept: the state stays as it is.
        assert!(matches!(
            disk.rollback(1),
            Err(RollbackError::NoSnapshot { want: 1, ran: 3 })
        ));
        assert_eq!(disk.latest(), (3, third));
    }

    #[test]
    fn the_run_before_is_rebuilt_for_serving() {
        let mut disk = disk_with_runs(&[1, 2]);
        let changes = Changes::from([
            ("kv/1".to_string(), None),
            ("kv/2".to_string(), Some(b"new".to_vec())),
        ]);
        disk.keep(3, &changes, Hash::ZERO);
        let (files, tree) = disk.previous().expect("run 2 is kept");
        assert_eq!(files, disk_with_runs(&[1, 2]).files);
        assert_eq!(tree.hash(), disk.runs[&2].result.state);
        assert_eq!(disk.tree().hash(), disk.runs[&3].result.state);
        assert!(disk_with_runs(&[]).previous().is_none());
    }
}
