//! Runs a contract as a child process with the prototype's fd interface.
//!
//! The contract starts in its state directory with the run's description on
//! stdin (closed after). Each user's inputs sit in a sealed in-memory file
//! whose read end is the user's input fd: fully written before the contract
//! starts, whatever the size, so it can read to EOF or ask FIONREAD. Each
//! output fd is a pipe the host reads concurrently. The NPL fds are two
//! pipes joined to the run's [`RunLink`] while it runs (`npl_pipes`). A run
//! over its time or output limit is killed with its whole process group;
//! its outputs are then discarded, because where concurrent readers stopped
//! is not something two nodes would agree on, while "timed out" is.

use crate::contract::{
    describe, FdlistFormat, RunLimits, RunOutcome, RunRequest, RunResult, StateNode,
};
use crate::crypto::PubKey;
use crate::env::RunLink;
use crate::real::npl_pipes;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How much of the contract's own stdout and stderr reaches the log.
const LOG_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct ProcessHost {
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub state_dir: PathBuf,
    pub format: FdlistFormat,
    pub limits: RunLimits,
}

/// A read-only fd over a sealed in-memory file holding `chunks`.
fn input_fd(chunks: &[Vec<u8>]) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns
    // a new fd we own, or -1.
    let fd = unsafe { libc::memfd_create(c"hotpocket-input".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    for c in chunks {
        file.write_all(c)?;
    }
    // A second, read-only open starts at offset 0 and cannot be written by
    // the contract. std opens it close-on-exec; the child clears that.
    let ro = File::open(format!("/proc/self/fd/{fd}"))?;
    Ok(ro.into())
}

/// Reads `r` to EOF, keeping the first `keep` bytes and discarding the rest,
/// so a chatty contract never blocks on a full pipe.
async fn drain<R: AsyncRead + Unpin>(mut r: R, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = keep.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // SAFETY: kill with a negative pid signals that process group, which
        // `process_group(0)` made the contract's own.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

impl ProcessHost {
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
                tracing::error!(binary = %self.binary.display(), error = %e, "contract could not be started");
                RunResult {
                    outcome: RunOutcome::SpawnFailed(e.to_string()),
                    outputs: BTreeMap::new(),
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
            let input = input_fd(inputs)?;
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
        let description = describe(self.format, req, npl, &fds);

        let inherit: Vec<RawFd> = child_side.iter().map(|f| f.as_raw_fd()).collect();
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(&self.args)
            .current_dir(&self.state_dir)
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
        let mut child = cmd.spawn()?;
        drop(child_side);
        let pid = child.id();
        // Started only now: a spawn that failed leaves no task behind. What
        // the node delivered meanwhile waits on the link.
        let npl = match npl_node.start(req.seq, link, &self.limits) {
            Ok(npl) => npl,
            Err(e) => {
                kill_group(pid);
                let _ = child.wait().await;
                return Err(e);
            }
        };

        if let Some(mut stdin) = child.stdin.take() {
            tokio::spawn(async move {
                // A contract that never reads its stdin gets EPIPE here; fine.
                let _ = stdin.write_all(description.as_bytes()).await;
            });
        }
        let stdout = child
            .stdout
            .take()
            .map(|s| tokio::spawn(drain(s, LOG_BYTES)));
        let stderr = child
            .stderr
            .take()
            .map(|s| tokio::spawn(drain(s, LOG_BYTES)));

        let total = Arc::new(AtomicUsize::new(0));
        let over = Arc::new(tokio::sync::Notify::new());
        let limit = self.limits.max_output_bytes;
        let mut tasks = Vec::new();
        for (user, mut pipe) in readers {
            let (total, over) = (total.clone(), over.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match pipe.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if total.fetch_add(n, Ordering::Relaxed) + n > limit {
                                over.notify_one();
                                break;
                            }
                            out.extend_from_slice(&buf[..n]);
                        }
                    }
                }
                (user, out)
            }));
        }

        let deadline = tokio::time::sleep(Duration::from_millis(self.limits.time_limit_ms));
        let mut outcome = tokio::select! {
            status = child.wait() => RunOutcome::Exited(status?.code()),
            _ = deadline => RunOutcome::TimedOut,
            _ = over.notified() => RunOutcome::OutputLimit,
        };
        // Whatever the contract left running dies with the run, so no stray
        // process keeps an output pipe open.
        kill_group(pid);
        if !matches!(outcome, RunOutcome::Exited(_)) {
            let _ = child.wait().await;
        }
        npl.finish(req.seq).await;
        let mut outputs = BTreeMap::new();
        for t in tasks {
            if let Ok((user, out)) = t.await {
                outputs.insert(user, out);
            }
        }
        if total.load(Ordering::Relaxed) > limit {
            outcome = RunOutcome::OutputLimit;
        }
        if !matches!(outcome, RunOutcome::Exited(_)) {
            outputs.clear();
        }
        let out = match stdout {
            Some(t) => t.await.unwrap_or_default(),
            None => vec![],
        };
        let err = match stderr {
            Some(t) => t.await.unwrap_or_default(),
            None => vec![],
        };
        // A clean run is routine; anything else is worth a line at info.
        let level_info = !matches!(outcome, RunOutcome::Exited(Some(0))) || !err.is_empty();
        if level_info {
            tracing::info!(
                seq = req.seq,
                ?outcome,
                stdout = %String::from_utf8_lossy(&out),
                stderr = %String::from_utf8_lossy(&err),
                "contract run finished"
            );
        }
        tracing::debug!(
            seq = req.seq,
            ?outcome,
            stdout = %String::from_utf8_lossy(&out),
            stderr = %String::from_utf8_lossy(&err),
            "contract run finished"
        );
        Ok(RunResult { outcome, outputs })
    }
}
