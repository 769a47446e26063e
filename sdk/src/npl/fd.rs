//! The real party line: the two fds the node opened for this process.
//!
//! Reads wait with `poll(2)` rather than a reader thread: a timed read is
//! one syscall, nothing outlives the run, and no thread sits blocked in
//! `read` when the contract exits. The future `recv` returns is ready when
//! made (the wait happens inside), which suits the one-future `block_on`
//! of [`crate::main_npl`].

use super::{NplTransport, RecvFuture};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

/// Bytes taken per read; the node's chunks are smaller than this.
const READ_SIZE: usize = 64 * 1024;

pub struct FdTransport {
    input: File,
    output: File,
    /// The input reached EOF: the node closed it, nothing more will come.
    eof: bool,
    started: Instant,
}

impl FdTransport {
    /// The party line over the node's (input, output) fds; dropping it
    /// closes both, which tells the node the contract is done talking.
    pub fn new(input: OwnedFd, output: OwnedFd) -> FdTransport {
        FdTransport {
            input: input.into(),
            output: output.into(),
            eof: false,
            // The real transport's timeouts are real time, and nothing but
            // this contract's own waiting depends on it (the NPL design: what a
            // contract heard before its timeout may differ between nodes).
            #[allow(clippy::disallowed_methods)]
            started: Instant::now(),
        }
    }

    fn read_within(&mut self, timeout_ms: u64) -> io::Result<Option<Vec<u8>>> {
        if self.eof {
            return Ok(None);
        }
        let deadline = self.now_ms().saturating_add(timeout_ms);
        loop {
            let wait = deadline.saturating_sub(self.now_ms()).min(i32::MAX as u64) as i32;
            let mut pfd = libc::pollfd {
                fd: self.input.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid, initialised pollfd and a count of one.
            let n = unsafe { libc::poll(&mut pfd, 1, wait) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(None);
            }
            if pfd.revents & libc::POLLNVAL != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the NPL input fd is not open",
                ));
            }
            // Readable, hung up or in error: read says which without
            // blocking (poll reported the pipe ready).
            let mut buf = vec![0; READ_SIZE];
            match self.input.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(None);
                }
                Ok(k) => {
                    buf.truncate(k);
                    return Ok(Some(buf));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl NplTransport for FdTransport {
    /// Blocks while the pipe is full: the node reads the NPL as it comes.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.output.write_all(bytes)
    }

    fn recv(&mut self, timeout_ms: u64) -> RecvFuture<'_> {
        Box::pin(std::future::ready(self.read_within(timeout_ms)))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
