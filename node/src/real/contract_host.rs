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
use crate::contract::{RunReport, RunRequest, StateNode};
use crate::crypto::{Hash, PubKey};
use crate::env::{ContractHost, InstallError, RollbackError, RunLink};
use crate::ledger::LedgerRecord;
use crate::real::metrics::RunSeconds;
use crate::real::process::ProcessRunner;
use crate::real::reads::ReadView;
use crate::real::state_dir::{self, refresh_snapshot, remove_any};
use crate::sync::state_transfer::{serve, StateIndex, StatePatch, StateRequest, StateResponse};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
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

impl RanFile {
    /// Replaces `path` whole, through `tmp`: never half written.
    fn write(&self, tmp: &Path, path: &Path) -> io::Result<()> {
        std::fs::write(tmp, serde_json::to_vec(self).expect("serializes"))?;
        std::fs::rename(tmp, path)
    }
}

pub struct ProcessHost {
    pub host: ProcessRunner,
    pub node: PubKey,
    pub unl: Vec<PubKey>,
    /// The contract's signing seed on this node (`Keypair::contract_seed`),
    /// written into every run's description; None leaves it out.
    pub contract_seed: Option<[u8; 32]>,
    /// `ConsensusConfig::vouched_inputs`: runs skip vouched inputs without.
    pub vouched_inputs: bool,
    /// Where each run's phases are timed, when the node serves metrics.
    pub run_seconds: Option<RunSeconds>,
    ran: Ran,
    /// The run whose state `S.prev` holds, if it is a valid snapshot.
    snapshot: Option<Ran>,
    /// The trees of `S` and `S.prev` as last read, so a snapshot copies
    /// only what the last run changed: creating files is what costs.
    tree: StateNode,
    snap_tree: Option<StateNode>,
    /// Indexes of `tree` and `snap_tree` to answer peers' state requests,
    /// built when first asked for.
    index: Option<StateIndex>,
    snap_index: Option<StateIndex>,
    /// The copy of the state users' reads start from, once served.
    reads: Option<ReadView>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl ProcessHost {
    /// Takes over `host.state_dir` (created if missing), repairing what a
    /// crash left half done.
    pub fn open(host: ProcessRunner, node: PubKey, unl: Vec<PubKey>) -> io::Result<ProcessHost> {
        let mut c = ProcessHost {
            host,
            node,
            unl,
            contract_seed: None,
            vouched_inputs: true,
            run_seconds: None,
            ran: Ran {
                seq: 0,
                state: Hash::ZERO,
                output: Hash::ZERO,
            },
            snapshot: None,
            tree: StateNode::empty_dir(),
            snap_tree: None,
            index: None,
            snap_index: None,
            reads: None,
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
        let actual = state_dir::scan(&dir)?.hash();
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
                c.snapshot = f.before;
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
        c.tree = state_dir::scan(&dir)?;
        c.snap_tree = state_dir::scan(&snap).ok();
        // A snapshot counts only if `S.prev` really holds it (a crash can
        // cut a refresh short).
        let snap_hash = c.snap_tree.as_ref().map(StateNode::hash);
        c.snapshot = c.snapshot.filter(|s| Some(s.state) == snap_hash);
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
        f.write(&self.sibling("ran.tmp"), &self.sibling("ran"))
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

    /// Keeps a copy of the state for users' reads (`S.read`), made now and
    /// brought up to date after every change the host makes.
    pub fn serve_reads(&mut self) -> io::Result<ReadView> {
        let view = ReadView::new(self.sibling("read"));
        view.refresh(&self.host.state_dir, &self.tree, self.ran.seq)?;
        self.reads = Some(view.clone());
        Ok(view)
    }

    /// Where reads copy their state to: `S.reads`.
    pub fn reads_scratch(&self) -> PathBuf {
        self.sibling("reads")
    }

    /// Brings the reads' copy up to what the state directory holds now,
    /// off the async thread. A failure only refuses reads until the next
    /// change.
    async fn refresh_reads(&self) {
        let Some(view) = self.reads.clone() else {
            return;
        };
        if !view.wanted() {
            return view.mark_stale();
        }
        let (dir, tree, seq) = (self.host.state_dir.clone(), self.tree.clone(), self.ran.seq);
        let done = tokio::task::spawn_blocking(move || view.refresh(&dir, &tree, seq)).await;
        if let Err(e) = done.map_err(io::Error::other).and_then(|r| r) {
            tracing::warn!(error = %e, "could not copy the contract state for reads; reads refused until the next ledger");
        }
    }

    /// The state directory's Merkle root as it is now.
    pub fn state_hash(&self) -> io::Result<Hash> {
        Ok(state_dir::scan(&self.host.state_dir)?.hash())
    }

    /// Makes `S.prev` equal `S` (what the latest run left), off the async
    /// thread: consensus goes on meanwhile.
    async fn take_snapshot(&mut self) -> io::Result<()> {
        let (dir, snap) = (self.host.state_dir.clone(), self.sibling("prev"));
        self.snapshot = None;
        let (old, cur) = (self.snap_tree.take(), self.tree.clone());
        self.snap_index = None;
        let copied = tokio::task::spawn_blocking(move || {
            refresh_snapshot(&dir, &snap, old, &cur).map(|()| cur)
        })
        .await
        .map_err(io::Error::other)??;
        self.snap_tree = Some(copied);
        self.snap_index = None;
        self.snapshot = Some(self.ran);
        Ok(())
    }
}

impl ContractHost for ProcessHost {
    fn ran(&self) -> (u64, ExecResult) {
        (self.ran.seq, self.ran.result())
    }

    /// The process's NPL fds are joined to `link` for the run.
    fn execute(&mut self, record: &LedgerRecord, link: RunLink) -> impl Future<Output = RunReport> {
        let mut req = RunRequest::for_ledger(record, self.node, &self.unl, self.vouched_inputs);
        req.contract_seed = self.contract_seed;
        let seq = record.ledger.seq;
        async move {
            if self.ran.seq + 1 != seq {
                tracing::error!(seq, ran = self.ran.seq, "running a ledger out of order");
            }
            let t0 = std::time::Instant::now();
            if let Err(e) = self.take_snapshot().await {
                // The run goes ahead: only a rollback needs the snapshot,
                // and it says so loudly if it is missing.
                tracing::error!(error = %e, "could not snapshot the contract state");
            }
            let t1 = std::time::Instant::now();
            let run = self.host.run_with_link(&req, link).await;
            let t2 = std::time::Instant::now();
            let dir = self.host.state_dir.clone();
            let scanned = tokio::task::spawn_blocking(move || state_dir::scan(&dir))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
            let state = match scanned {
                Ok(tree) => {
                    let h = tree.hash();
                    self.tree = tree;
                    self.index = None;
                    h
                }
                Err(e) => {
                    // A state directory we cannot read is a local fault;
                    // the zero hash makes this node disagree visibly
                    // (StateMismatch) rather than guess.
                    tracing::error!(error = %e, "could not hash the contract state");
                    // Nor is its tree known: reads wait for one that is.
                    if let Some(view) = &self.reads {
                        view.invalidate();
                    }
                    Hash::ZERO
                }
            };
            if let Some(h) = &self.run_seconds {
                for (phase, secs) in [
                    ("snapshot", (t1 - t0).as_secs_f64()),
                    ("run", (t2 - t1).as_secs_f64()),
                    ("hash", t2.elapsed().as_secs_f64()),
                ] {
                    h.get_or_create(&vec![("phase", phase.to_string())])
                        .observe(secs);
                }
            }
            tracing::debug!(
                seq,
                snapshot_ms = (t1 - t0).as_secs_f64() * 1e3,
                run_ms = (t2 - t1).as_secs_f64() * 1e3,
                hash_ms = t2.elapsed().as_secs_f64() * 1e3,
                "contract run timings"
            );
            self.ran = Ran {
                seq,
                state,
                output: run.output_hash(),
            };
            if let Err(e) = self.write_ran(self.snapshot) {
                tracing::error!(error = %e, "could not record the contract run");
            }
            if state != Hash::ZERO {
                self.refresh_reads().await;
            }
            RunReport { state, run }
        }
    }

    fn rollback(&mut self, seq: u64) -> Result<(), RollbackError> {
        // Nothing a run left behind may touch the state being restored (a
        // run's end sweeps already; this is for a sweep that gave up).
        crate::real::reaper::sweep();
        if self.ran.seq <= seq {
            return Ok(()); // not run that far yet: nothing to undo
        }
        let Some(snapshot) = self.snapshot.filter(|s| s.seq == seq) else {
            return Err(RollbackError::NoSnapshot {
                want: seq,
                ran: self.ran.seq,
            });
        };
        let (snap, old) = (self.sibling("prev"), self.sibling("rolledback"));
        let dir = self.host.state_dir.clone();
        // Rare: reads wait for the next run's copy rather than hold this.
        if let Some(view) = &self.reads {
            view.mark_stale();
        }
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        // Two renames, so at no point is the directory half old, half new;
        // `open` finishes the job if a crash falls between them.
        std::fs::rename(&dir, &old)?;
        if let Err(e) = std::fs::rename(&snap, &dir) {
            // Keep the state it was: the failed rollback is reported. If
            // even that fails, there is no state directory to run in.
            std::fs::rename(&old, &dir).map_err(RollbackError::Lost)?;
            return Err(e.into());
        }
        self.ran = snapshot;
        self.snapshot = None;
        // The snapshot's tree is the state's now, and `S.prev` is gone.
        self.tree = match self.snap_tree.take() {
            Some(t) => t,
            None => state_dir::scan(&dir)?,
        };
        self.index = None;
        self.snap_index = None;
        // The state is rolled back; if its record cannot say so, a restart
        // would not know which run it holds. Reported as a failure, so the
        // node installs the certified state, which writes the record anew.
        self.write_ran(None)?;
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(error = %e, "could not remove the rolled-back state");
        }
        Ok(())
    }

    fn state_tree(&mut self) -> StateNode {
        self.tree.clone()
    }

    fn serve_state(&mut self, req: &StateRequest) -> StateResponse {
        let dirs = [self.host.state_dir.clone(), self.sibling("prev")];
        let cur = self
            .index
            .get_or_insert_with(|| StateIndex::new(&self.tree));
        let mut states = vec![&*cur];
        if let Some(t) = &self.snap_tree {
            states.push(self.snap_index.get_or_insert_with(|| StateIndex::new(t)));
        }
        serve(&states, req, |i, path, offset, len| {
            read_piece(&dirs[i].join(OsStr::from_bytes(path)), offset, len)
        })
    }

    async fn install_state(&mut self, patch: StatePatch) -> Result<(), InstallError> {
        let paths = InstallPaths {
            dir: self.host.state_dir.clone(),
            snap: self.sibling("prev"),
            old: self.sibling("rolledback"),
            ran: self.sibling("ran"),
            ran_tmp: self.sibling("ran.tmp"),
        };
        let latest = Ran {
            seq: patch.seq,
            state: patch.result.state,
            output: patch.result.output,
        };
        // If a crash falls before the swap, `open` finds the old state
        // and takes `before`; after it, `latest`.
        let record = RanFile {
            latest,
            before: Some(self.ran),
        };
        self.snapshot = None;
        self.index = None;
        self.snap_index = None;
        let (old, cur) = (self.snap_tree.take(), self.tree.clone());
        let done = tokio::task::spawn_blocking(move || {
            install_blocking(&paths, old, &cur, &patch, &record)
        })
        .await
        .map_err(io::Error::other)?;
        match done {
            Ok((new, old)) => {
                self.tree = new;
                self.snap_tree = old;
                self.ran = latest;
                self.refresh_reads().await;
                Ok(())
            }
            Err((e, snap_tree)) => {
                self.snap_tree = snap_tree;
                Err(e)
            }
        }
    }
}

fn read_piece(path: &Path, offset: u64, len: u32) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

struct InstallPaths {
    dir: PathBuf,
    snap: PathBuf,
    old: PathBuf,
    ran: PathBuf,
    ran_tmp: PathBuf,
}

/// A patch path made safe to join: `/`-separated plain names only.
fn patch_path(p: &[u8]) -> io::Result<&Path> {
    let ok = !p.is_empty()
        && p.split(|b| *b == b'/')
            .all(|n| !n.is_empty() && n != b"." && n != b".." && !n.contains(&0));
    if !ok {
        return Err(invalid(format!(
            "bad path in a state patch: {}",
            String::from_utf8_lossy(p)
        )));
    }
    Ok(Path::new(OsStr::from_bytes(p)))
}

/// Builds the patched state in `S.prev` (first made equal to `S`), checks
/// its hash, records it in `S.ran` and swaps it in with two renames, the
/// old state becoming `S.prev`. Returns the new tree and what `S.prev` now
/// holds; on an error, what `S.prev` holds, with `S` still the old state.
#[allow(clippy::type_complexity)]
fn install_blocking(
    paths: &InstallPaths,
    snap_tree: Option<StateNode>,
    cur: &StateNode,
    patch: &StatePatch,
    record: &RanFile,
) -> Result<(StateNode, Option<StateNode>), (InstallError, Option<StateNode>)> {
    let build = || -> Result<StateNode, InstallError> {
        refresh_snapshot(&paths.dir, &paths.snap, snap_tree, cur)?;
        for p in &patch.remove {
            remove_any(&paths.snap.join(patch_path(p)?))?;
        }
        let puts = patch.files.iter().map(|(p, b)| (p, Some(b), None));
        let links = patch.links.iter().map(|(p, t)| (p, None, Some(t)));
        for (p, bytes, target) in puts.chain(links) {
            let rel = patch_path(p)?;
            // Never write through a symlink the patch did not expect (the
            // cached tree could be stale after a failed scan).
            for dir in rel
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
            {
                let m = std::fs::symlink_metadata(paths.snap.join(dir));
                if m.is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(invalid(format!("{} is a symlink", dir.display())).into());
                }
            }
            let dst = paths.snap.join(rel);
            remove_any(&dst)?;
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match (bytes, target) {
                (Some(b), _) => std::fs::write(&dst, b)?,
                (_, Some(t)) => std::os::unix::fs::symlink(OsStr::from_bytes(t), &dst)?,
                _ => {}
            }
        }
        let tree = state_dir::scan(&paths.snap)?;
        let got = tree.hash();
        if got != patch.result.state {
            return Err(InstallError::Hash {
                want: patch.result.state,
                got,
            });
        }
        Ok(tree)
    };
    let new = build().map_err(|e| (e, state_dir::scan(&paths.snap).ok()))?;
    // Until the second rename `S` holds the old state, which `S.ran` names
    // as `before`; from it on, the new one.
    let swap = || -> io::Result<()> {
        record.write(&paths.ran_tmp, &paths.ran)?;
        if paths.old.exists() {
            std::fs::remove_dir_all(&paths.old)?;
        }
        std::fs::rename(&paths.dir, &paths.old)?;
        if let Err(e) = std::fs::rename(&paths.snap, &paths.dir) {
            std::fs::rename(&paths.old, &paths.dir)?;
            return Err(e);
        }
        Ok(())
    };
    swap().map_err(|e| (e.into(), Some(new.clone())))?;
    // The new state is in place: a failure from here on only costs the
    // next snapshot a full copy.
    if let Err(e) = std::fs::rename(&paths.old, &paths.snap) {
        tracing::warn!(error = %e, "could not keep the old state as the next snapshot's base");
        return Ok((new, None));
    }
    Ok((new, Some(cur.clone())))
}
