//! A contract's processes, and everything they start, end with its run.
//!
//! A contract runs in a process group of its own, so killing the group
//! ends whatever it forked. A process that calls `setsid` (or `setpgid`)
//! leaves the group, and when its parent dies it is reparented: to init,
//! where nothing here can find it again, unless this process is a *child
//! subreaper* (`PR_SET_CHILD_SUBREAPER`). The node binary turns that on
//! ([`become_subreaper`]); from then on every orphan of a contract becomes
//! a child of the node, and [`sweep`] kills and reaps it.
//!
//! Why the sweep kills nothing unrelated:
//! - It only runs in a process that called [`become_subreaper`], which
//!   `hotpocket run` does and the library never does by itself. A test
//!   process that spawns other things must not call it.
//! - It only looks at this process's own children (`ppid` is us), and
//!   only at those it has not reaped: a child's pid cannot be reused until
//!   its parent reaps it, so signalling it by pid cannot hit another
//!   process.
//! - Children that were already there when the subreaper was turned on
//!   (a shell that `exec`ed into the node hands over its own) are left
//!   alone.
//! - It does nothing while any contract is running ([`ContractProcess`]
//!   registers its pid from before `fork` returns until it is reaped): a
//!   contract's main process is a child of ours tokio must reap, and an
//!   orphan cannot be told apart from one a running contract still needs.
//!   The node runs one ledger at a time, users' reads beside it, so it
//!   sweeps after every run; the last of several concurrent runs sweeps
//!   for all of them.
//!
//! What is left: a contract's children then are its descendants it had
//! not waited for, so they are what the sweep kills, repeating until none
//! is left, since killing one reparents its own children to us.

use std::io;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Set once this process is a subreaper: only then does [`sweep`] act.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

struct Registry {
    /// Main pids of contracts started and not yet reaped (a pid can
    /// repeat once reaped, hence a list, not a set).
    live: Vec<i32>,
    /// Children this process had before it became a subreaper.
    inherited: Vec<i32>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    inherited: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // The registry holds plain pids, consistent after any panic.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A sweep stops after this many rounds even if orphans keep appearing (a
/// fork bomb faster than SIGKILL is not something to spin on for ever).
const MAX_ROUNDS: usize = 64;

/// How long one sweep waits for the orphans it killed to be reapable;
/// one stuck in the kernel (`D` state) is left for the next sweep.
const REAP_PATIENCE: Duration = Duration::from_secs(2);

/// Makes this process a child subreaper and turns [`sweep`] on. For the
/// node binary only: from then on [`sweep`] kills every child of this
/// process that was not already there and is not a running contract.
pub fn become_subreaper() -> io::Result<()> {
    let mut reg = registry();
    if SUBREAPER.load(Ordering::SeqCst) {
        return Ok(());
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and
    // changes nothing but an attribute of this process.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    reg.inherited = children()?;
    SUBREAPER.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`become_subreaper`] succeeded in this process.
pub fn is_subreaper() -> bool {
    SUBREAPER.load(Ordering::SeqCst)
}

/// The pids whose parent is this process, from `/proc`.
fn children() -> io::Result<Vec<i32>> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // A process gone meanwhile is simply not a child any more.
        let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if parent_of_stat(&stat) == Some(me) {
            out.push(pid);
        }
    }
    Ok(out)
}

/// The ppid field of a `/proc/<pid>/stat` line: the fourth field, counted
/// after the command name, which is in parentheses and may hold anything.
fn parent_of_stat(stat: &[u8]) -> Option<i32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    fields.next()?; // state
    fields.next()?.parse().ok()
}

/// Kills and reaps every orphan of a finished contract that was
/// reparented to this process, repeating until none is left. Does nothing
/// unless this process is a subreaper, or while any contract runs (see the
/// module's doc). Returns how many it killed. Blocks for at most a few
/// seconds, normally for well under a millisecond.
pub fn sweep() -> usize {
    if !is_subreaper() {
        return 0;
    }
    let mut killed = 0;
    for _ in 0..MAX_ROUNDS {
        let orphans = {
            // Held while listing: a contract spawned meanwhile is
            // registered before it can be listed.
            let reg = registry();
            if !reg.live.is_empty() {
                return killed;
            }
            match children() {
                Ok(c) => c
                    .into_iter()
                    .filter(|p| !reg.inherited.contains(p))
                    .collect::<Vec<_>>(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not list this process's children");
                    return killed;
                }
            }
        };
        if orphans.is_empty() {
            return killed;
        }
        for &pid in &orphans {
            // SAFETY: `pid` is an unreaped child of this process, so the
            // pid cannot have been reused by another process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        reap(&orphans);
        killed += orphans.len();
    }
    tracing::warn!(
        killed,
        "processes a contract left behind keep appearing: stopped sweeping"
    );
    killed
}

/// Reaps `pids` (children of ours just sent SIGKILL), waiting at most
/// `REAP_PATIENCE` in all. Once a child is reaped its own children have
/// been reparented to us, for the next round to find.
fn reap(pids: &[i32]) {
    let start = std::time::Instant::now();
    let mut left: Vec<i32> = pids.to_vec();
    loop {
        left.retain(|&pid| {
            let mut status = 0;
            // SAFETY: waitpid on a child pid of ours, with a valid pointer
            // to an int it writes the status to.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            // 0: still dying. -1: not ours to reap any more (ECHILD).
            r == 0
        });
        if left.is_empty() || start.elapsed() > REAP_PATIENCE {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A running contract's main process, leading its own process group.
/// Dropping it (a run cut short, the node shutting down) kills the group,
/// reaps the process and sweeps; [`ContractProcess::finish`] does the same
/// without blocking.
pub struct ContractProcess {
    child: tokio::process::Child,
    pid: i32,
    /// The main process is reaped, so its pid, which is the group's id,
    /// could now name another group: never signal the group after that.
    reaped: bool,
    /// Deregistered and swept: nothing left to do.
    released: bool,
}

impl ContractProcess {
    /// Spawns `cmd`, which must put the child in a new process group
    /// (`process_group(0)`), registered as running before anything can
    /// sweep.
    pub fn spawn(cmd: &mut tokio::process::Command) -> io::Result<ContractProcess> {
        let mut reg = registry();
        let child = cmd.spawn()?;
        let pid = match child.id().map(i32::try_from) {
            Some(Ok(pid)) => pid,
            // Right after a spawn tokio always has the pid; without one
            // there is no group to kill, so give up on this child.
            _ => return Err(io::Error::other("spawned contract has no pid")),
        };
        reg.live.push(pid);
        Ok(ContractProcess {
            child,
            pid,
            reaped: false,
            released: false,
        })
    }

    /// The process's stdin, stdout and stderr, if spawned `piped()`.
    #[allow(clippy::type_complexity)]
    pub fn take_stdio(
        &mut self,
    ) -> (
        Option<tokio::process::ChildStdin>,
        Option<tokio::process::ChildStdout>,
        Option<tokio::process::ChildStderr>,
    ) {
        let c = &mut self.child;
        (c.stdin.take(), c.stdout.take(), c.stderr.take())
    }

    /// Waits until the main process has exited, without reaping it, so its
    /// group id stays reserved for [`ContractProcess::finish`]. An error
    /// (none is expected: the child is ours and unreaped) ends the wait
    /// too; `finish` then kills whatever is left.
    pub async fn exited(&self) -> io::Result<()> {
        let pid = self.pid;
        tokio::task::spawn_blocking(move || wait_exit_nowait(pid))
            .await
            .map_err(io::Error::other)?
    }

    /// Kills the group (all the contract did not take out of it), reaps
    /// the main process, then sweeps orphans. Returns its exit status.
    pub async fn finish(&mut self) -> io::Result<ExitStatus> {
        self.kill_group();
        let status = self.child.wait().await;
        self.reaped = true;
        deregister(self.pid);
        self.released = true;
        // Reaping waits on processes SIGKILL is ending: off the async
        // threads, however briefly.
        let _ = tokio::task::spawn_blocking(sweep).await;
        status
    }

    fn kill_group(&self) {
        if !self.reaped {
            // SAFETY: a negative pid signals the process group the child
            // leads (`process_group(0)`); the child is not reaped, so its
            // pid, and the group's id, still belong to it.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        }
    }
}

impl Drop for ContractProcess {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.kill_group();
        if !self.reaped {
            // SIGKILL ends it within moments; bounded in case it cannot.
            let start = std::time::Instant::now();
            while !matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))
                && start.elapsed() < REAP_PATIENCE
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.reaped = true;
        }
        deregister(self.pid);
        self.released = true;
        sweep();
    }
}

fn deregister(pid: i32) {
    let mut reg = registry();
    if let Some(i) = reg.live.iter().position(|&p| p == pid) {
        reg.live.swap_remove(i);
    }
}

/// Blocks until child `pid` has exited, leaving it waitable (`WNOWAIT`).
fn wait_exit_nowait(pid: i32) -> io::Result<()> {
    loop {
        // SAFETY: siginfo_t is plain data, valid when zeroed.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only to `info`, which outlives the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parent_of_stat;

    #[test]
    fn ppid_is_read_after_the_command_name_whatever_it_holds() {
        assert_eq!(parent_of_stat(b"42 (sleep) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of_stat(b"42 (a) b) 9 (c) R 12 1 1"), Some(12));
        assert_eq!(parent_of_stat(b"42 (x"), None);
        assert_eq!(parent_of_stat(b""), None);
    }
}
