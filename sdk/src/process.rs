//! Running a contract as the node's child process: the description on
//! stdin, each user's inputs from their fds, the state in the working
//! directory, outputs to the users' fds.

use crate::{parse_description, Contract, Description, DirState, Run, SdkError};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;

/// Runs `contract` as the node's child process and exits.
pub fn main<C: Contract>(contract: C) -> ! {
    exit_with(run_process(contract))
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
