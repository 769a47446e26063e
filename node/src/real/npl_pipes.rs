//! The node party line's two pipes for one contract run.
//!
//! The contract reads its NPL input (`npl[0]` in the description) and
//! writes its NPL output (`npl[1]`). While it runs, one task reads the
//! output as it comes and hands each read to the run's [`RunLink`], and
//! another writes what the node delivers into the input. Neither can hold
//! the node up: the output is read on past its bound and discarded, so the
//! contract never blocks on a full pipe; the input goes through a bounded
//! queue, so a contract that never reads costs the node a few MiB, not a
//! stalled round. Both tasks end with the run.

use crate::contract::RunLimits;
use crate::env::RunLink;
use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

/// Bytes taken from the contract's NPL output per read: a party line chunk.
const READ_BYTES: usize = 64 * 1024;

/// After the run ends (and its process group is killed), how long the
/// output is still read for what the contract wrote just before it ended.
/// Only a process that left the group can hold the pipe open that long.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// The ends of one run's pipes the contract gets, before it is spawned.
pub struct ChildEnds {
    /// Read end of the NPL input: `npl[0]`.
    pub input: OwnedFd,
    /// Write end of the NPL output: `npl[1]`.
    pub output: OwnedFd,
}

/// The node's ends: write the NPL input, read the NPL output.
pub struct NodeEnds {
    input: OwnedFd,
    output: OwnedFd,
}

/// Both pipes, every end close-on-exec: the spawn clears that on the
/// child's two ends only, so the contract never holds the node's ends (it
/// would then never see its input end).
pub fn open() -> io::Result<(ChildEnds, NodeEnds)> {
    let (in_r, in_w) = io::pipe()?;
    let (out_r, out_w) = io::pipe()?;
    let child = ChildEnds {
        input: in_r.into(),
        output: out_w.into(),
    };
    let node = NodeEnds {
        input: in_w.into(),
        output: out_r.into(),
    };
    Ok((child, node))
}

/// The two tasks moving one run's NPL bytes. Dropping it stops both, so
/// no task outlives the run however it ends.
pub struct Bridge {
    reader: JoinHandle<Drained>,
    writer: JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// What the output reader passed on and threw away.
#[derive(Default)]
struct Drained {
    passed: usize,
    discarded: usize,
}

impl NodeEnds {
    /// Starts moving bytes between the pipes and `link`. Needs a tokio
    /// runtime; the child's ends should be closed here once it has them.
    pub fn start(self, seq: u64, link: RunLink, limits: &RunLimits) -> io::Result<Bridge> {
        let output = pipe::Receiver::from_owned_fd(self.output)?;
        let input = pipe::Sender::from_owned_fd(self.input)?;
        let reader = tokio::spawn(read_output(output, link.clone(), limits.max_npl_out_bytes));
        let queue = limits.max_npl_in_queue_bytes;
        let writer = tokio::spawn(write_input(seq, input, link, queue));
        Ok(Bridge { reader, writer })
    }
}

impl Bridge {
    /// The run is over: what the contract wrote before it ended still goes
    /// to the node, then both tasks stop and both pipes close.
    pub async fn finish(mut self, seq: u64) {
        self.writer.abort();
        match tokio::time::timeout(DRAIN_GRACE, &mut self.reader).await {
            Ok(Ok(read)) if read.discarded > 0 => tracing::warn!(
                seq,
                passed = read.passed,
                discarded = read.discarded,
                "contract wrote more to the NPL than a run may send: the rest was discarded"
            ),
            Ok(_) => {}
            Err(_) => tracing::warn!(
                seq,
                "a process the contract left behind holds its NPL output open: stopped reading"
            ),
        }
        // A reader past its grace stops here; awaiting the aborted writer
        // makes sure it is gone, and its pipe end closed, before the run
        // reports its end.
        self.reader.abort();
        let _ = (&mut self.writer).await;
    }
}

/// Reads the contract's NPL output to EOF, passing the first `cap` bytes
/// to the node as they come and discarding the rest.
async fn read_output(mut pipe: pipe::Receiver, link: RunLink, cap: usize) -> Drained {
    let mut read = Drained::default();
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return read,
            Ok(n) => {
                let take = n.min(cap - read.passed);
                if take > 0 {
                    link.send(buf[..take].to_vec());
                }
                read.passed += take;
                read.discarded += n - take;
            }
        }
    }
}

/// Writes what the node delivers into the contract's NPL input, holding at
/// most `cap` bytes the contract has not taken yet. Runs until aborted, and
/// always takes what the node delivers, so the link never fills.
async fn write_input(seq: u64, mut pipe: pipe::Sender, link: RunLink, cap: usize) {
    let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
    // Bytes in `queue` not written yet, and how far into its front.
    let (mut queued, mut offset) = (0usize, 0usize);
    // Set once something is dropped: from then on everything is, so the
    // contract's input is a prefix of the line.
    let mut closed = false;
    loop {
        let front = queue.front().map_or(&[][..], |m| &m[offset..]);
        tokio::select! {
            // What the node delivers first: taking it never waits.
            biased;
            m = link.recv() => {
                if closed || m.is_empty() {
                    continue;
                }
                if queued.saturating_add(m.len()) > cap {
                    tracing::warn!(
                        seq,
                        held = queued,
                        "contract is not reading its NPL input: the rest of this run's is dropped"
                    );
                    closed = true;
                    continue;
                }
                queued += m.len();
                queue.push_back(m);
            }
            written = pipe.write(front), if !front.is_empty() => match written {
                Ok(n) => {
                    queued -= n;
                    offset += n;
                    if queue.front().is_some_and(|m| m.len() == offset) {
                        queue.pop_front();
                        offset = 0;
                    }
                }
                // The contract closed its end (or exited): nothing more
                // can reach it.
                Err(_) => {
                    closed = true;
                    queue.clear();
                    (queued, offset) = (0, 0);
                }
            },
        }
    }
}
