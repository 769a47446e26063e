//! The process host behind the `ContractHost` seam: runs each closed ledger
//! and keeps one snapshot of the state directory so the one rollback the
//! protocol can ask for (the unfinal lcl, depth 1) is possible.

use crate::contract::{RunOutcome, RunReport, RunRequest};
use crate::crypto::{Hash, PubKey};
use crate::env::ContractHost;
use crate::ledger::LedgerRecord;
use crate::real::host::ProcessHost;
use crate::real::state_dir;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

pub struct ProcessContract {
    pub host: ProcessHost,
    pub node: PubKey,
    pub unl: Vec<PubKey>,
    /// The state before the latest run, and the seq whose run left it.
    snapshot: Option<u64>,
}

impl ProcessContract {
    pub fn new(host: ProcessHost, node: PubKey, unl: Vec<PubKey>) -> ProcessContract {
        ProcessContract {
            host,
            node,
            unl,
            snapshot: None,
        }
    }

    fn snapshot_dir(&self) -> PathBuf {
        let mut name = self.host.state_dir.as_os_str().to_owned();
        name.push(".prev");
        PathBuf::from(name)
    }

    /// The state directory's Merkle root as it is now.
    pub fn state_hash(&self) -> io::Result<Hash> {
        Ok(state_dir::scan(&self.host.state_dir)?.hash())
    }

    fn take_snapshot(&mut self, seq: u64) -> io::Result<()> {
        let snap = self.snapshot_dir();
        self.snapshot = None;
        if snap.exists() {
            std::fs::remove_dir_all(&snap)?;
        }
        copy_tree(&self.host.state_dir, &snap)?;
        self.snapshot = Some(seq);
        Ok(())
    }
}

/// Copies a state tree: files, directories and symlinks (not followed).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let kind = std::fs::symlink_metadata(from)?.file_type();
    if kind.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)
    } else if kind.is_dir() {
        std::fs::create_dir(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

impl ContractHost for ProcessContract {
    fn execute(&mut self, record: &LedgerRecord) -> impl Future<Output = RunReport> {
        let req = RunRequest::for_ledger(record, self.node, &self.unl);
        let seq = record.ledger.seq;
        async move {
            if let Err(e) = self.take_snapshot(seq.saturating_sub(1)) {
                // The run goes ahead: only a rollback needs the snapshot,
                // and it says so loudly if it is missing.
                tracing::error!(error = %e, "could not snapshot the contract state");
            }
            let run = self.host.run(&req).await;
            let state = match self.state_hash() {
                Ok(h) => h,
                Err(e) => {
                    // A state directory we cannot read is a local fault;
                    // the zero hash makes this node disagree visibly
                    // (StateMismatch) rather than guess.
                    tracing::error!(error = %e, "could not hash the contract state");
                    Hash::ZERO
                }
            };
            if let RunOutcome::SpawnFailed(why) = &run.outcome {
                tracing::error!(seq, why, "contract did not start");
            }
            RunReport { state, run }
        }
    }

    fn rollback(&mut self, seq: u64) {
        if self.snapshot != Some(seq) {
            tracing::error!(
                seq,
                snapshot = ?self.snapshot,
                "cannot roll the contract state back: no snapshot of that ledger"
            );
            return;
        }
        let snap = self.snapshot_dir();
        let dir = &self.host.state_dir;
        let mut old = dir.as_os_str().to_owned();
        old.push(".rolledback");
        // Two renames, so at no point is the directory half old, half new.
        let swapped = std::fs::rename(dir, &old)
            .and_then(|_| std::fs::rename(&snap, dir))
            .and_then(|_| std::fs::remove_dir_all(&old));
        match swapped {
            Ok(()) => self.snapshot = None,
            Err(e) => tracing::error!(error = %e, "contract state rollback failed"),
        }
    }
}
