//! Running a contract as the node's child process: the description on
//! stdin, each user's inputs from their fds, the state in the working
//! directory, outputs to the users' fds, and the party line on its fds.

use crate::{
    parse_description, Contract, Description, DirState, FdTransport, Npl, NplContract, Run,
    SdkError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Runs `contract` as the node's child process and exits.
pub fn main<C: Contract>(contract: C) -> ! {
    exit_with(run_process(contract))
}

/// Runs an NPL `contract` as the node's child process and exits. Without
/// NPL fds in the description the contract gets [`Npl::disconnected`].
pub fn main_npl<C: NplContract>(contract: C) -> ! {
    exit_with(run_process_npl(contract))
}

fn exit_with(result: Result<(), SdkError>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("contract failed: {e}");
            std::process::exit(1)
        }
    }
}

/// Wakes the thread parked in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives one future to completion on this thread, parking while it is
/// pending. Enough for a contract process, whose only waits are the NPL
/// transport's; the simulator drives contract futures itself instead.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            // A wake before the park leaves a token, so none is lost.
            Poll::Pending => std::thread::park(),
        }
    }
}

/// The description and every user's inputs (written in full and closed by
/// the node before we start, so reading to EOF does not wait on anyone).
fn read_run() -> Result<(Description, BTreeMap<String, Vec<u8>>), SdkError> {
    let mut text = String::new();
    io::stdin().read_to_string(&mut text)?;
    let description = parse_description(&text)?;
    let mut inputs = BTreeMap::new();
    for (user, &(fd_in, _)) in &description.users {
        // SAFETY: the node opened these fds for this process, one per user.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd_in) };
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        inputs.insert(user.clone(), data);
    }
    Ok((description, inputs))
}

fn write_outputs(
    description: &Description,
    outputs: BTreeMap<String, Vec<u8>>,
) -> Result<(), SdkError> {
    for (user, data) in outputs {
        if let Some(&(_, fd)) = description.users.get(&user) {
            // SAFETY: as above, the user's output fd is ours to write and close.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            f.write_all(&data)?;
        }
    }
    Ok(())
}

fn run_process<C: Contract>(mut contract: C) -> Result<(), SdkError> {
    let (description, inputs) = read_run()?;
    let mut state = DirState(PathBuf::from("."));
    let mut run = Run::in_memory(description.clone(), inputs, &mut state);
    contract.run(&mut run)?;
    write_outputs(&description, run.into_outputs())
}

/// The party line over the description's fds. Fds that are stdio, equal,
/// or a user's are refused: owning them twice would close them twice.
fn open_npl(description: &Description) -> Result<Npl<'static>, SdkError> {
    let Some((fd_in, fd_out)) = description.npl else {
        return Ok(Npl::disconnected());
    };
    let taken: BTreeSet<i32> = description
        .users
        .values()
        .flat_map(|&(i, o)| [i, o])
        .collect();
    if fd_in == fd_out
        || [fd_in, fd_out]
            .iter()
            .any(|fd| *fd <= 2 || taken.contains(fd))
    {
        return Err(SdkError::Description(format!(
            "npl fds [{fd_in}, {fd_out}] clash with stdio, each other or a user's fds"
        )));
    }
    // SAFETY: the node opened both fds for this process and nothing else
    // here uses them (checked above); -1 and other stdio values are out.
    let (i, o) = unsafe { (OwnedFd::from_raw_fd(fd_in), OwnedFd::from_raw_fd(fd_out)) };
    Ok(Npl::new(Box::new(FdTransport::new(i, o))))
}

fn run_process_npl<C: NplContract>(mut contract: C) -> Result<(), SdkError> {
    let (description, inputs) = read_run()?;
    let mut npl = open_npl(&description)?;
    let mut state = DirState(PathBuf::from("."));
    let mut run = Run::in_memory(description.clone(), inputs, &mut state);
    block_on(contract.run(&mut run, &mut npl))?;
    // Close the party line before the outputs: the node need not wait on it.
    drop(npl);
    write_outputs(&description, run.into_outputs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending `n` times, waking itself each time, then ready.
    struct Yield(u32);

    impl Future for Yield {
        type Output = u32;
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.0 == 0 {
                return Poll::Ready(7);
            }
            self.0 -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn block_on_drives_a_future_that_waits() {
        assert_eq!(block_on(Yield(3)), 7);
        assert_eq!(block_on(async { Yield(1).await + 1 }), 8);
    }
}
