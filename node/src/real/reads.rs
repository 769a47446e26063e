//! Users' read requests (hpcore's `contract_read_request`): the contract
//! runs with the request as its one user's input, on a copy of the node's
//! current state that is thrown away after, so nothing a read writes
//! persists and nothing it sees is half a ledger's run.
//!
//! The copy comes from `S.read`, a second copy of the state directory `S`
//! beside it, which the process host brings up to date after every run,
//! rollback and installed state while reads are being asked for, and
//! while nothing else writes `S`: only the paths that changed are copied,
//! as for its rollback snapshot. Each read then copies `S.read` whole into
//! a scratch directory (`S.reads/N`), so a read costs a copy of the state:
//! fine for small states, and the reason reads are few at once.

use crate::contract::{RunOutcome, RunRequest, StateNode, UserIo, MAX_MESSAGES};
use crate::crypto::{Hash, PubKey};
use crate::real::process::ProcessRunner;
use crate::real::state_dir::{copy_tree, refresh_snapshot, remove_any};
use crate::real::users_ws::now_ms;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Reads running at once on one node (hpcore's `concurrent_read_requests`
/// default). Each holds a copy of the state and a contract process.
pub const READS_AT_ONCE: usize = 4;

/// Reads one user may have running at once, however many connections it
/// opens: one user cannot take every place.
pub const READS_PER_USER: usize = 2;

/// Longest a read waits for one of those places before it is refused.
pub const READ_WAIT: Duration = Duration::from_secs(5);

/// How long after the last read request the host keeps the reads' copy
/// fresh after every change. Past it, changes only mark the copy stale,
/// so a node nobody reads from pays nothing for reads; the next read then
/// waits for the next run (a round, as every ledger runs), which copies
/// what changed meanwhile.
pub const KEEP_FRESH: Duration = Duration::from_secs(60);

/// The copy of the state reads start from. Shared by the process host,
/// which refreshes it, and the reads, which copy it. The lock keeps a read
/// from copying it half refreshed; the host only ever tries it, so a
/// ledger's run never waits on a read's copy: while a copy holds it, the
/// view stays stale until the host's next change.
#[derive(Clone)]
pub struct ReadView {
    inner: Arc<Shared>,
}

struct Shared {
    view: Mutex<View>,
    /// Whether the view holds the state the host holds now. Written by
    /// the host alone; cleared without the lock.
    fresh: AtomicBool,
    /// The view's tree is not to be trusted: the next refresh copies all.
    invalid: AtomicBool,
    /// Woken after every refresh, for reads waiting on a stale copy.
    refreshed: Notify,
    /// When a read was last asked for, unix ms.
    asked_ms: AtomicU64,
}

struct View {
    dir: PathBuf,
    /// What `dir` holds, or None when it is not a faithful copy of any
    /// state (not made yet, or a refresh failed).
    tree: Option<StateNode>,
    /// The ledger whose run left that state.
    seq: u64,
}

impl ReadView {
    pub fn new(dir: PathBuf) -> ReadView {
        ReadView {
            inner: Arc::new(Shared {
                view: Mutex::new(View {
                    dir,
                    tree: None,
                    seq: 0,
                }),
                fresh: AtomicBool::new(false),
                invalid: AtomicBool::new(false),
                refreshed: Notify::new(),
                asked_ms: AtomicU64::new(0),
            }),
        }
    }

    /// Whether a read was asked for within [`KEEP_FRESH`].
    pub fn wanted(&self) -> bool {
        let asked = self.inner.asked_ms.load(Ordering::Relaxed);
        now_ms().saturating_sub(asked) < KEEP_FRESH.as_millis() as u64
    }

    /// Makes the view hold what `state_dir` holds now, `cur` (its tree as
    /// last scanned), left by ledger `seq`, unless a read is copying it
    /// (then it stays stale). Blocking; the caller keeps `state_dir` still
    /// meanwhile.
    pub fn refresh(&self, state_dir: &Path, cur: &StateNode, seq: u64) -> io::Result<()> {
        self.mark_stale();
        let mut v = match self.inner.view.try_lock() {
            Ok(v) => v,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        let old = v.tree.take();
        let old = old.filter(|_| !self.inner.invalid.swap(false, Ordering::Relaxed));
        refresh_snapshot(state_dir, &v.dir, old, cur)?;
        (v.tree, v.seq) = (Some(cur.clone()), seq);
        self.inner.fresh.store(true, Ordering::Release);
        drop(v);
        self.inner.refreshed.notify_waiters();
        Ok(())
    }

    /// The host is changing the state and the view does not follow yet.
    pub fn mark_stale(&self) {
        self.inner.fresh.store(false, Ordering::Release);
    }

    /// As [`Self::mark_stale`], and the next refresh copies everything: the
    /// state the view was made from is not known.
    pub fn invalidate(&self) {
        self.inner.invalid.store(true, Ordering::Relaxed);
        self.mark_stale();
    }

    /// Copies the view to `to` (which must not exist) if it is fresh;
    /// returns the ledger whose run left it. Blocking.
    fn copy_to(&self, to: &Path) -> io::Result<Option<u64>> {
        let v = self.inner.view.lock().unwrap_or_else(|e| e.into_inner());
        // Fresh only once a refresh left a tree: none is ever copied.
        if !self.inner.fresh.load(Ordering::Acquire) {
            return Ok(None);
        }
        copy_tree(&v.dir, to)?;
        Ok(Some(v.seq))
    }

    /// Copies the view into `scratch` once it is fresh, waiting for the
    /// host's next change until `deadline` if it is not. The scratch
    /// directory and the read's place go into each copy and come back
    /// from it: a read abandoned mid-copy frees both once the copy ends,
    /// never under it.
    async fn copy_fresh(
        &self,
        mut held: (Scratch, OwnedSemaphorePermit),
        deadline: Instant,
    ) -> Result<(u64, (Scratch, OwnedSemaphorePermit)), ReadError> {
        self.inner.asked_ms.store(now_ms(), Ordering::Relaxed);
        loop {
            // Registered before the check: a refresh in between wakes it.
            let refreshed = self.inner.refreshed.notified();
            tokio::pin!(refreshed);
            refreshed.as_mut().enable();
            let view = self.clone();
            let (copied, back) = tokio::task::spawn_blocking(move || {
                let copied = view.copy_to(&held.0 .0);
                (copied, held)
            })
            .await
            .map_err(io::Error::other)?;
            held = back;
            if let Some(seq) = copied? {
                return Ok((seq, held));
            }
            (tokio::time::timeout_at(deadline.into(), refreshed).await)
                .map_err(|_| ReadError::NotReady)?;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("node busy: {READS_AT_ONCE} reads running for over {READ_WAIT:?}; send the read again later")]
    Busy,
    #[error("at most {READS_PER_USER} reads of one user at once")]
    UserBusy,
    #[error("no copy of the latest contract state to read within {READ_WAIT:?}; try again after the next ledger")]
    NotReady,
    #[error("the contract took over its {0} ms limit")]
    TimedOut(u64),
    #[error("the contract wrote over its output limit ({0} bytes, or {MAX_MESSAGES} messages when framed)")]
    OutputLimit(usize),
    #[error("the contract could not be started")]
    NotStarted,
    #[error("the contract wrote no whole message")]
    NoAnswer,
    #[error("could not copy the contract state: {0}")]
    Io(#[from] io::Error),
}

/// Runs users' read requests for one node.
pub struct ContractReads {
    /// The contract as ledgers run it; each read gets its own state dir.
    runner: ProcessRunner,
    view: ReadView,
    /// `S.reads`: one scratch directory per read in it.
    scratch: PathBuf,
    node: PubKey,
    unl: Vec<PubKey>,
    slots: Arc<Semaphore>,
    next: AtomicU64,
    /// Reads running per user.
    users: Arc<Mutex<BTreeMap<PubKey, usize>>>,
}

/// One of a user's reads, counted while it lives.
struct UserRead {
    users: Arc<Mutex<BTreeMap<PubKey, usize>>>,
    user: PubKey,
}

impl UserRead {
    fn start(users: &Arc<Mutex<BTreeMap<PubKey, usize>>>, user: PubKey) -> Option<UserRead> {
        let mut m = users.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(user).or_default();
        if *n >= READS_PER_USER {
            return None;
        }
        *n += 1;
        Some(UserRead {
            users: users.clone(),
            user,
        })
    }
}

impl Drop for UserRead {
    fn drop(&mut self) {
        let mut m = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

/// Removes a read's scratch directory however the read ends, a dropped
/// read (its user gone) included.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.0);
        let remove = move || {
            if let Err(e) = remove_any(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a read's copy of the state");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

impl ContractReads {
    /// Reads for the contract `runner` runs, from `view`, with scratch
    /// space in `scratch` (emptied now: what is there is left from a
    /// node that stopped mid-read).
    pub fn new(
        runner: ProcessRunner,
        view: ReadView,
        scratch: PathBuf,
        node: PubKey,
        unl: Vec<PubKey>,
    ) -> io::Result<ContractReads> {
        remove_any(&scratch)?;
        std::fs::create_dir_all(&scratch)?;
        Ok(ContractReads {
            runner,
            view,
            scratch,
            node,
            unl,
            slots: Arc::new(Semaphore::new(READS_AT_ONCE)),
            next: AtomicU64::new(0),
            users: Default::default(),
        })
    }

    /// Runs the contract on `content` as `user`'s read request and returns
    /// what it wrote to that user: all of it as one answer, or, when the
    /// contract's user I/O is framed, each message (none is an error).
    pub async fn read(&self, user: PubKey, content: Vec<u8>) -> Result<Vec<Vec<u8>>, ReadError> {
        let _mine = UserRead::start(&self.users, user).ok_or(ReadError::UserBusy)?;
        let slot = self.slots.clone().acquire_owned();
        let deadline = Instant::now() + READ_WAIT;
        let slot = tokio::time::timeout_at(deadline.into(), slot)
            .await
            .map_err(|_| ReadError::Busy)?
            .expect("the semaphore is never closed");
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let scratch = Scratch(self.scratch.join(n.to_string()));
        let (seq, (scratch, _slot)) = self.view.copy_fresh((scratch, slot), deadline).await?;
        let runner = ProcessRunner {
            state_dir: scratch.0.clone(),
            ..self.runner.clone()
        };
        let req = RunRequest {
            seq,
            // A read belongs to no ledger: `seq` says which one's state
            // it sees.
            lcl: Hash::ZERO,
            time_ms: now_ms(),
            node: self.node,
            unl: self.unl.clone(),
            rand: None,
            contract_seed: None,
            inputs: [(user, vec![content])].into_iter().collect(),
            readonly: true,
        };
        let mut run = runner.run(&req).await;
        match run.outcome {
            RunOutcome::Exited(_) => {
                let out = run.outputs.remove(&user).unwrap_or_default();
                match run.io {
                    UserIo::Raw => Ok(vec![out]),
                    UserIo::Framed => match run.io.messages(&out) {
                        msgs if msgs.is_empty() => Err(ReadError::NoAnswer),
                        msgs => Ok(msgs.into_iter().map(<[u8]>::to_vec).collect()),
                    },
                }
            }
            RunOutcome::TimedOut => Err(ReadError::TimedOut(self.runner.limits.time_limit_ms)),
            RunOutcome::OutputLimit => {
                Err(ReadError::OutputLimit(self.runner.limits.max_output_bytes))
            }
            // The log has the cause; the user need not see the node's paths.
            RunOutcome::SpawnFailed(_) => Err(ReadError::NotStarted),
        }
    }
}
