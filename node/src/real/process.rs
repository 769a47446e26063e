//! Runs a contract as a child process with the prototype's fd interface.
//!
//! The contract starts in its state directory with the run's description on
//! stdin (closed after). Each user's inputs sit in a sealed in-memory file
//! whose read end is the user's input fd: fully written before the contract
//! starts, whatever the size, so it can read to EOF or ask FIONREAD. Each
//! output fd is a pipe the host reads concurrently. The NPL fds are two
//! pipes joined to the run's [`RunLink`] while it runs (`npl_pipes`).
//!
//! A run ends when the contract's main process exits (or at its time or
//! output limit): then its process group and whatever escaped the group
//! are killed (`reaper`), and its pipes are read to EOF, which comes at
//! once, since nobody is left to hold them; a holder out of the node's
//! reach gets `PIPE_GRACE`, after which what the pipes hold is read and
//! the run is over. The outputs of a run over its time or output limit are
//! discarded, because where concurrent readers stopped is not something
//! two nodes would agree on, while "timed out" is.

use crate::contract::{
    describe, FdlistFormat, RunLimits, RunOutcome, RunRequest, RunResult, StateNode, UserIo,
};
use crate::crypto::PubKey;
use crate::env::RunLink;
use crate::gate::LogThrottle;
use crate::real::npl_pipes;
use crate::real::reaper::ContractProcess;
use crate::real::run_log::{excerpt, FailureLog, Say};
use crate::real::users_ws::now_ms;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How much of the contract's own stdout and stderr reaches the log.
const LOG_BYTES: usize = 16 * 1024;

/// Once the contract's main process has exited and what it left running
/// is killed, how long its output pipes are still read to EOF. Only a
/// process the node cannot reach holds one open that long; then what the
/// pipe holds is read and the run ends.
const PIPE_GRACE: Duration = Duration::from_millis(150);

/// Most bytes read from one pipe once the grace is over: more than a pipe
/// holds, so a writer that never stops cannot keep the read going.
const FINAL_READ_BYTES: usize = 2 << 20;

/// Where the contract starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workdir {
    /// In its state directory: what it writes to `.` is its state
    /// (hpcore's layout, and the default).
    #[default]
    State,
    /// In the directory holding the state directory, the node directory:
    /// the prototype's layout, with `binargs` relative to it and the
    /// contract writing its state under `state/`.
    Contract,
}

#[derive(Clone, Debug)]
pub struct ProcessRunner {
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub state_dir: PathBuf,
    pub workdir: Workdir,
    pub format: FdlistFormat,
    /// What each user's fds carry.
    pub io: UserIo,
    pub limits: RunLimits,
}

/// A read-only fd over a sealed in-memory file holding `chunks`, each as
/// `io` puts it.
fn input_fd(chunks: &[Vec<u8>], io: UserIo) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns
    // a new fd we own, or -1.
    let fd = unsafe { libc::memfd_create(c"hotpocket-input".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    for c in chunks {
        if let Some(h) = io.header(c.len()) {
            file.write_all(&h)?;
        }
        file.write_all(c)?;
    }
    // A second, read-only open starts at offset 0 and cannot be written by
    // the contract. std opens it close-on-exec; the child clears that.
    let ro = File::open(format!("/proc/self/fd/{fd}"))?;
    Ok(ro.into())
}

/// What ends the wait for a run's output pipes: `None` while the contract
/// runs, then the instant its pipes stop being waited for.
type PipeDeadline = watch::Receiver<Option<Instant>>;

/// Reads `pipe`, handing each read to `take` until it returns false, to
/// EOF or, past the run's pipe deadline, to what the pipe holds then.
async fn read_pipe(
    mut pipe: pipe::Receiver,
    mut deadline: PipeDeadline,
    mut take: impl FnMut(&[u8]) -> bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            // The deadline first: a writer out of reach that never stops
            // must not keep the read going.
            biased;
            _ = pipe_deadline(&mut deadline) => break,
            r = pipe.read(&mut buf) => match r {
                Ok(n) if n > 0 => {
                    if !take(&buf[..n]) {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
    // Only what is in the pipe now: a pipe holds at most
    // `/proc/sys/fs/pipe-max-size` (1 MiB by default).
    let mut left = FINAL_READ_BYTES;
    while left > 0 {
        match pipe.try_read(&mut buf) {
            Ok(n) if n > 0 => {
                left = left.saturating_sub(n);
                if !take(&buf[..n]) {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Resolves once the run's pipe deadline has passed (at once if the run
/// went away without setting one).
async fn pipe_deadline(deadline: &mut PipeDeadline) {
    let at = match deadline.wait_for(Option::is_some).await {
        Ok(at) => *at,
        Err(_) => None,
    };
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// A task keeping the first `LOG_BYTES` of the contract's stdout or
/// stderr and discarding the rest, so a chatty contract never blocks on a
/// full pipe. None (tokio always hands over a `piped()` one) reads nothing.
fn log_reader(
    pipe: Option<io::Result<OwnedFd>>,
    deadline: PipeDeadline,
) -> io::Result<JoinHandle<Vec<u8>>> {
    let Some(pipe) = pipe else {
        return Ok(tokio::spawn(async { Vec::new() }));
    };
    let pipe = pipe::Receiver::from_owned_fd(pipe?)?;
    let keep = LOG_BYTES;
    Ok(tokio::spawn(async move {
        let mut kept = Vec::new();
        read_pipe(pipe, deadline, |b| {
            let room = keep.saturating_sub(kept.len());
            kept.extend_from_slice(&b[..b.len().min(room)]);
            true
        })
        .await;
        kept
    }))
}

/// What a run's failures have logged so far. One for the process: a node
/// runs one contract, and its log is what is being spared.
static FAILURES: Mutex<FailureLog> = Mutex::new(FailureLog::new());

/// Runs that left a framed message cut short, logged once a minute: a
/// contract that always does would otherwise log every ledger.
static TORN: Mutex<LogThrottle> = Mutex::new(LogThrottle::new(60_000));

impl ProcessRunner {
    /// Hash of the state directory as it is now.
    pub fn state(&self) -> io::Result<StateNode> {
        crate::real::state_dir::scan(&self.state_dir)
    }

    /// Runs `req` with nobody on the party line: what the contract writes
    /// to its NPL output is read and dropped, and its input stays empty.
    pub async fn run(&self, req: &RunRequest) -> RunResult {
        self.run_with_link(req, RunLink::default()).await
    }

    /// Runs `req`, its party line joined to `link`: what the contract
    /// writes to its NPL output is sent on `link` as it comes, and what the
    /// node delivers on `link` is written to its NPL input.
    pub async fn run_with_link(&self, req: &RunRequest, link: RunLink) -> RunResult {
        match self.try_run(req, link).await {
            Ok(r) => r,
            Err(e) => {
                let outcome = RunOutcome::SpawnFailed(format!("{}: {e}", self.binary.display()));
                log_outcome(req, &outcome, &[], &[]);
                RunResult {
                    outcome,
                    outputs: BTreeMap::new(),
                    io: self.io,
                }
            }
        }
    }

    async fn try_run(&self, req: &RunRequest, link: RunLink) -> io::Result<RunResult> {
        // Child-side fds: kept open until the child has them, then dropped
        // here so each output pipe reaches EOF when the contract is done.
        let mut child_side: Vec<OwnedFd> = Vec::new();
        let mut readers = Vec::new();
        let mut fds: BTreeMap<PubKey, (RawFd, RawFd)> = BTreeMap::new();
        for (user, inputs) in &req.inputs {
            let input = input_fd(inputs, self.io)?;
            let (r, w) = io::pipe()?;
            let w: OwnedFd = w.into();
            fds.insert(*user, (input.as_raw_fd(), w.as_raw_fd()));
            child_side.push(input);
            child_side.push(w);
            readers.push((
                *user,
                tokio::net::unix::pipe::Receiver::from_owned_fd(r.into())?,
            ));
        }
        let (npl_child, npl_node) = npl_pipes::open()?;
        let npl = (npl_child.input.as_raw_fd(), npl_child.output.as_raw_fd());
        child_side.push(npl_child.input);
        child_side.push(npl_child.output);
        let description = describe((self.format, self.io), req, npl, &fds);

        let inherit: Vec<RawFd> = child_side.iter().map(|f| f.as_raw_fd()).collect();
        let mut cmd = tokio::process::Command::new(&self.binary);
        let cwd = match self.workdir {
            Workdir::State => self.state_dir.as_path(),
            // A bare `state` has the empty path as its parent.
            Workdir::Contract => match self.state_dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            },
        };
        cmd.args(&self.args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // SAFETY: runs in the forked child before exec; it only calls fcntl,
        // which is async-signal-safe, on fds this process owns, and does not
        // allocate.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        // From here on, dropping `child` (an error below, the node shutting
        // down mid-run) kills the contract's group and what escaped it.
        let mut child = ContractProcess::spawn(&mut cmd)?;
        drop(child_side);
        let (stdin, stdout, stderr) = child.take_stdio();
        let (set_deadline, deadline) = watch::channel(None);
        let stdout = log_reader(stdout.map(|p| p.into_owned_fd()), deadline.clone())?;
        let stderr = log_reader(stderr.map(|p| p.into_owned_fd()), deadline.clone())?;
        // Started only now: a spawn that failed leaves no task behind. What
        // the node delivered meanwhile waits on the link.
        let npl = npl_node.start(req.seq, link, &self.limits)?;

        // A contract that never reads its stdin gets EPIPE; one that leaves
        // a process holding it unread would keep this task: aborted below.
        let feed = stdin.map(|mut stdin| {
            tokio::spawn(async move {
                let _ = stdin.write_all(description.as_bytes()).await;
            })
        });

        let total = Arc::new(AtomicUsize::new(0));
        let over = Arc::new(tokio::sync::Notify::new());
        let limit = self.limits.max_output_bytes;
        let mut tasks = Vec::new();
        for (user, pipe) in readers {
            let (total, over, deadline) = (total.clone(), over.clone(), deadline.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                read_pipe(pipe, deadline, |b| {
                    if total.fetch_add(b.len(), Ordering::Relaxed) + b.len() > limit {
                        over.notify_one();
                        return false;
                    }
                    out.extend_from_slice(b);
                    true
                })
                .await;
                (user, out)
            }));
        }

        let time_limit = tokio::time::sleep(Duration::from_millis(self.limits.time_limit_ms));
        enum End {
            Exited,
            TimedOut,
            OutputLimit,
        }
        // The run ends when the main process does, not when every fd it
        // handed on is closed: a process it left behind could hold one for
        // ever.
        let end = tokio::select! {
            _ = child.exited() => End::Exited,
            _ = time_limit => End::TimedOut,
            _ = over.notified() => End::OutputLimit,
        };
        // Whatever the contract left running dies with the run.
        let status = child.finish().await;
        let mut outcome = match end {
            End::Exited => RunOutcome::Exited(status?.code()),
            End::TimedOut => RunOutcome::TimedOut,
            End::OutputLimit => RunOutcome::OutputLimit,
        };
        // Every writer the node can reach is gone, so the pipes are at EOF
        // once read; only a process out of reach (the node not a
        // subreaper) can hold one open, and the grace bounds that.
        let _ = set_deadline.send(Some(Instant::now() + PIPE_GRACE));
        npl.finish(req.seq).await;
        if let Some(feed) = feed {
            feed.abort();
        }
        let mut outputs = BTreeMap::new();
        for t in tasks {
            if let Ok((user, out)) = t.await {
                outputs.insert(user, out);
            }
        }
        if total.load(Ordering::Relaxed) > limit || outputs.values().any(|o| self.io.too_many(o)) {
            outcome = RunOutcome::OutputLimit;
        }
        if !matches!(outcome, RunOutcome::Exited(_)) {
            outputs.clear();
        }
        let out = stdout.await.unwrap_or_default();
        let err = stderr.await.unwrap_or_default();
        log_outcome(req, &outcome, &out, &err);
        let torn: usize = outputs.values().map(|o| self.io.torn_tail(o)).sum();
        if torn > 0 && !req.readonly {
            let mut throttle = TORN.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = throttle.event(now_ms()) {
                tracing::warn!(
                    seq = req.seq,
                    bytes = torn,
                    count,
                    "the contract left a message cut short on a user's output: it is not sent"
                );
            }
        }
        Ok(RunResult {
            outcome,
            outputs,
            io: self.io,
        })
    }
}

/// A failed run at warn (one that could not start at error), rate-limited
/// (see `run_log`); every run at debug. A user's read only at debug: its
/// failures are the user's to see, and must not crowd out the ledgers'.
fn log_outcome(req: &RunRequest, outcome: &RunOutcome, out: &[u8], err: &[u8]) {
    let seq = req.seq;
    if req.readonly {
        tracing::debug!(seq, ?outcome, stderr = %String::from_utf8_lossy(err), "read request run finished");
        return;
    }
    let failure = match outcome {
        RunOutcome::Exited(Some(0)) => None,
        other => Some(format!("{other:?}")),
    };
    let say = FAILURES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(Instant::now(), failure.as_deref());
    match say {
        // A local fault, not the contract's.
        Say::Failure { repeats } if matches!(outcome, RunOutcome::SpawnFailed(_)) => {
            tracing::error!(seq, ?outcome, repeats, "contract could not be started")
        }
        Say::Failure { repeats } => tracing::warn!(
            seq,
            ?outcome,
            repeats,
            stderr = %excerpt(err),
            "contract run failed"
        ),
        Say::Recovered { failures } => {
            tracing::info!(seq, failures, "contract runs succeed again")
        }
        // A clean run that wrote to stderr: worth a line, as before.
        Say::Nothing if failure.is_none() && !err.is_empty() => {
            tracing::info!(seq, stderr = %excerpt(err), "contract run finished")
        }
        Say::Nothing => {}
    }
    tracing::debug!(
        seq,
        ?outcome,
        stdout = %String::from_utf8_lossy(out),
        stderr = %String::from_utf8_lossy(err),
        "contract run finished"
    );
}
