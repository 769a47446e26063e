//! The process host behind the `ContractHost` seam: runs each closed ledger,
//! keeps one snapshot of the state directory so the one rollback the
//! protocol can ask for (the unfinal lcl, depth 1) is possible, and records
//! which ledger's run the state directory holds, so a restart knows.
//!
//! Files beside the state directory `S`: `S.prev` (the state before the
//! latest run), `S.ran` (JSON: the latest run and the one before it) and,
//! only during a rollback, `S.rolledback`. A crash at any point leaves a
//! state that `open` recognises or repairs: a run cut short is undone from
//! `S.prev`, a rollback cut between its renames is finished.

use crate::consensus::ExecResult;
use crate::contract::{RunOutcome, RunReport, RunRequest};
use crate::crypto::{Hash, PubKey};
use crate::env::ContractHost;
use crate::ledger::LedgerRecord;
use crate::real::host::ProcessHost;
use crate::real::state_dir;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

/// One run: the ledger it ran and what it left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ran {
    pub seq: u64,
    pub state: Hash,
    pub output: Hash,
}

impl Ran {
    pub fn result(&self) -> ExecResult {
        ExecResult {
            state: self.state,
            output: self.output,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RanFile {
    latest: Ran,
    /// The run before `latest`, which `S.prev` holds.
    before: Option<Ran>,
}

pub struct ProcessContract {
    pub host: ProcessHost,
    pub node: PubKey,
    pub unl: Vec<PubKey>,
    ran: Ran,
    /// The run whose state `S.prev` holds, if it is a valid snapshot.
    snapshot: Option<Ran>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl ProcessContract {
    /// Takes over `host.state_dir` (created if missing), repairing what a
    /// crash left half done.
    pub fn open(host: ProcessHost, node: PubKey, unl: Vec<PubKey>) -> io::Result<ProcessContract> {
        let mut c = ProcessContract {
            host,
            node,
            unl,
            ran: Ran {
                seq: 0,
                state: Hash::ZERO,
                output: Hash::ZERO,
            },
            snapshot: None,
        };
        let (dir, snap) = (c.host.state_dir.clone(), c.sibling("prev"));
        if !dir.exists() && snap.is_dir() {
            tracing::warn!(dir = %dir.display(), "finishing an interrupted contract state rollback");
            std::fs::rename(&snap, &dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let old = c.sibling("rolledback");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        let actual = c.state_hash()?;
        let file: Option<RanFile> = match std::fs::read(c.sibling("ran")) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| invalid(e.to_string()))?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        c.ran = match file {
            None => Ran {
                seq: 0,
                state: actual,
                output: Hash::ZERO,
            },
            Some(f) if f.latest.state == actual => {
                // `S.prev` still holds the run before: a rollback right
                // after a restart stays possible.
                c.snapshot = f.before.filter(|_| snap.is_dir());
                f.latest
            }
            Some(RanFile {
                before: Some(b), ..
            }) if b.state == actual => b,
            Some(f) if snap.is_dir() && state_dir::scan(&snap)?.hash() == f.latest.state => {
                tracing::warn!(seq = f.latest.seq, "undoing a contract run a crash cut short");
                std::fs::rename(&dir, &old)?;
                std::fs::rename(&snap, &dir)?;
                std::fs::remove_dir_all(&old)?;
                f.latest
            }
            Some(f) => {
                return Err(invalid(format!(
                    "the contract state directory {} holds neither what ledger {} left nor a snapshot of it",
                    dir.display(),
                    f.latest.seq
                )))
            }
        };
        c.write_ran(c.snapshot)?;
        Ok(c)
    }

    /// The ledger whose run the state directory holds, and its result.
    pub fn ran(&self) -> Ran {
        self.ran
    }

    fn write_ran(&self, before: Option<Ran>) -> io::Result<()> {
        let f = RanFile {
            latest: self.ran,
            before,
        };
        let tmp = self.sibling("ran.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&f).expect("serializes"))?;
        std::fs::rename(&tmp, self.sibling("ran"))
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

    fn take_snapshot(&mut self) -> io::Result<()> {
        let snap = self.sibling("prev");
        self.snapshot = None;
        if snap.exists() {
            std::fs::remove_dir_all(&snap)?;
        }
        copy_tree(&self.host.state_dir, &snap)?;
        self.snapshot = Some(self.ran);
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
            if self.ran.seq + 1 != seq {
                tracing::error!(seq, ran = self.ran.seq, "running a ledger out of order");
            }
            if let Err(e) = self.take_snapshot() {
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
            self.ran = Ran {
                seq,
                state,
                output: run.output_hash(),
            };
            if let Err(e) = self.write_ran(self.snapshot) {
                tracing::error!(error = %e, "could not record the contract run");
            }
            RunReport { state, run }
        }
    }

    fn rollback(&mut self, seq: u64) {
        if self.ran.seq <= seq {
            return; // not run that far yet: nothing to undo
        }
        let Some(snapshot) = self.snapshot.filter(|s| s.seq == seq) else {
            tracing::error!(
                seq,
                snapshot = ?self.snapshot,
                "cannot roll the contract state back: no snapshot of that ledger"
            );
            return;
        };
        let (snap, old) = (self.sibling("prev"), self.sibling("rolledback"));
        let dir = self.host.state_dir.clone();
        if old.exists() {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::error!(error = %e, "cannot clear an old rolled-back state");
                return;
            }
        }
        // Two renames, so at no point is the directory half old, half new;
        // `open` finishes the job if a crash falls between them.
        if let Err(e) = std::fs::rename(&dir, &old) {
            tracing::error!(error = %e, "contract state rollback failed");
            return;
        }
        if let Err(e) = std::fs::rename(&snap, &dir) {
            tracing::error!(error = %e, "contract state rollback failed; keeping the rolled-back state");
            let _ = std::fs::rename(&old, &dir);
            return;
        }
        self.ran = snapshot;
        self.snapshot = None;
        if let Err(e) = self.write_ran(None) {
            tracing::error!(error = %e, "could not record the contract rollback");
        }
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(error = %e, "could not remove the rolled-back state");
        }
    }
}
