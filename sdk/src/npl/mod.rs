//! The node party line (NPL): a channel between this contract and its
//! copies on the other UNL nodes during a run.
//!
//! The node gives the contract a byte stream each way. What the contract
//! writes, the node cuts into chunks and sends to every peer; what peers'
//! contracts (and this one: a node hears itself) wrote arrives as records
//! `Length: N\nPubkey: <author hex>\n\n<N bytes>`. Chunk boundaries mean
//! nothing, so [`Npl`] frames whole messages on top, the same both ways: a
//! 4-byte big-endian length, then the bytes.
//!
//! [`Npl`] reaches the fds through an [`NplTransport`], so the same
//! contract code runs as a process ([`FdTransport`]), in the deterministic
//! simulator (its own transport on simulated time) and in tests
//! ([`MemTransport`]).

mod fd;
mod mem;
mod records;

pub use fd::FdTransport;
pub use mem::{MemTransport, NullTransport};

use crate::{NplError, SdkError};
use records::{RecordParser, Streams};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;

/// The largest message [`Npl`] sends or accepts, in bytes. A bound keeps a
/// peer's length prefix from making every node buffer gigabytes.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Past its deadline, [`Npl::recv`] still takes what is already there (so
/// a timeout of 0 drains the pipe), but at most this many bytes: input that
/// keeps coming without completing a message cannot hold the call.
const LATE_READ_LIMIT: usize = 4 * MAX_MESSAGE;

/// What a transport's `recv` returns: raw input bytes, or None.
pub type RecvFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Option<Vec<u8>>>> + 'a>>;

/// The two byte streams of the party line and a clock to measure them by.
pub trait NplTransport {
    /// Writes bytes to the output stream; the node sends them to all peers.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The next bytes of the input stream, cut anywhere, as soon as any are
    /// there; None if none came within `timeout_ms` of this transport's
    /// clock, or the stream has ended. `timeout_ms == 0` takes only what is
    /// already there.
    fn recv(&mut self, timeout_ms: u64) -> RecvFuture<'_>;
    /// Milliseconds on this transport's clock (any origin): the real one
    /// reads a monotonic clock, the simulator's its simulated time. It lets
    /// [`Npl::recv`] keep one deadline across several reads.
    fn now_ms(&self) -> u64;
}

/// Frames `msg` as it goes on the wire: 4-byte big-endian length, bytes.
pub fn frame_message(msg: &[u8]) -> Result<Vec<u8>, NplError> {
    if msg.len() > MAX_MESSAGE {
        return Err(NplError::TooLarge {
            author: None,
            len: msg.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(4 + msg.len());
    // MAX_MESSAGE < 2^32, checked above.
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    Ok(out)
}

/// One record as the node writes it to the contract's input fd; for tests
/// and simulators that play the node.
pub fn encode_record(author_hex: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("Length: {}\nPubkey: {author_hex}\n\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out
}

/// The contract's end of the party line: whole messages over a transport.
pub struct Npl<'a> {
    transport: Box<dyn NplTransport + 'a>,
    records: RecordParser,
    streams: Streams,
}

impl<'a> Npl<'a> {
    pub fn new(transport: Box<dyn NplTransport + 'a>) -> Npl<'a> {
        Npl {
            transport,
            records: RecordParser::new(),
            streams: Streams::default(),
        }
    }

    /// A party line to nowhere, for runs whose description has no NPL:
    /// sends are dropped and `recv` times out at once, so a contract that
    /// uses the NPL still runs (alone) rather than failing.
    pub fn disconnected() -> Npl<'static> {
        Npl::new(Box::new(NullTransport::default()))
    }

    /// Sends one whole message to every UNL node's contract (this one too).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SdkError> {
        let framed = frame_message(msg)?;
        self.transport.send(&framed)?;
        Ok(())
    }

    /// The next whole message from any author, as (author's node key hex,
    /// bytes), or None if none completes within `timeout_ms` of the
    /// transport's clock (one deadline for the whole call, however many
    /// reads it takes) or the input has ended. A timeout of 0 takes only
    /// what is already there. Messages of one author come in the order it
    /// sent them.
    ///
    /// Fails only if the node's record stream is malformed; a peer whose
    /// framing breaks is dropped instead (see [`Npl::broken_authors`]).
    pub async fn recv(&mut self, timeout_ms: u64) -> Result<Option<(String, Vec<u8>)>, SdkError> {
        let deadline = self.transport.now_ms().saturating_add(timeout_ms);
        let mut late = 0usize;
        loop {
            if let Some(m) = self.streams.pop() {
                return Ok(Some(m));
            }
            let remaining = deadline.saturating_sub(self.transport.now_ms());
            if remaining == 0 && late >= LATE_READ_LIMIT {
                return Ok(None);
            }
            let Some(bytes) = self.transport.recv(remaining).await? else {
                return Ok(None);
            };
            if remaining == 0 {
                if bytes.is_empty() {
                    return Ok(None);
                }
                late += bytes.len();
            }
            let streams = &mut self.streams;
            self.records
                .feed(&bytes, &mut |author, data| streams.push(author, data))?;
        }
    }

    /// Milliseconds on the transport's clock, to budget several `recv`s.
    pub fn now_ms(&self) -> u64 {
        self.transport.now_ms()
    }

    /// Authors whose stream broke the framing (a length over
    /// [`MAX_MESSAGE`]), with why; their later data is ignored.
    pub fn broken_authors(&self) -> &BTreeMap<String, NplError> {
        self.streams.broken()
    }
}

#[cfg(test)]
mod tests;
