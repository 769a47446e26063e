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
    /// Takes over `host.state_dir`, first finishing a rollback that a crash
    /// cut between its two renames (the store was truncated before the
    /// rollback started, so the snapshot is the state to keep).
    pub fn open(host: ProcessHost, node: PubKey, unl: Vec<PubKey>) -> io::Result<ProcessContract> {
        let c = ProcessContract {
            host,
            node,
            unl,
            snapshot: None,
        };
        let (dir, snap) = (&c.host.state_dir, c.sibling("prev"));
        if !dir.exists() && snap.is_dir() {
            tracing::warn!(dir = %dir.display(), "finishing an interrupted contract state rollback");
            std::fs::rename(&snap, dir)?;
        }
        let old = c.sibling("rolledback");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        Ok(c)
    }

    /// `<state dir>.<suffix>`, beside the state directory (never inside it,
    /// whatever the path's trailing slashes).
    fn sibling(&self, suffix: &str) -> PathBuf {
        let dir = &self.host.state_dir;
        let mut name = dir.file_name().unwrap_or(dir.as_os_str()).to_owned();
        name.push(".");
        name.push(suffix);
        dir.parent().unwrap_or(Path::new(".")).join(name)
    }

    /// The state directory's Merkle root as it is now.
    pub fn state_hash(&self) -> io::Result<Hash> {
        Ok(state_dir::scan(&self.host.state_dir)?.hash())
    }

    fn take_snapshot(&mut self, seq: u64) -> io::Result<()> {
        let snap = self.sibling("prev");
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
        let (snap, old) = (self.sibling("prev"), self.sibling("rolledback"));
        let dir = &self.host.state_dir;
        if old.exists() {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::error!(error = %e, "cannot clear an old rolled-back state");
                return;
            }
        }
        // Two renames, so at no point is the directory half old, half new;
        // `open` finishes the job if a crash falls between them.
        if let Err(e) = std::fs::rename(dir, &old) {
            tracing::error!(error = %e, "contract state rollback failed");
            return;
        }
        if let Err(e) = std::fs::rename(&snap, dir) {
            tracing::error!(error = %e, "contract state rollback failed; keeping the rolled-back state");
            let _ = std::fs::rename(&old, dir);
            return;
        }
        let swapped = std::fs::remove_dir_all(&old);
        match swapped {
            Ok(()) => self.snapshot = None,
            Err(e) => tracing::error!(error = %e, "contract state rollback failed"),
        }
    }
}
