//! The node party line (NPL), sans-IO.
//!
//! A contract run is a session. What the contract running ledger `seq`
//! writes to its NPL output is a byte stream; the node cuts it into signed
//! chunks and sends them to the UNL. Each receiver hands the chunks to its
//! own contract as `Length: N\nPubkey: <hex>\n\n<data>` records, per author
//! in order and at most once. Chunk boundaries mean nothing: the SDK frames
//! whole messages on top.
//!
//! [`PartyLine`] holds one node's NPL state. It does no I/O and reads no
//! clock: the caller tells it when runs start and finish, passes it what
//! its contract wrote and what peers sent, and carries out what it returns.

#[cfg(test)]
mod limits_tests;
mod line;
mod message;
mod stream;
#[cfg(test)]
mod tests;

pub use line::{
    ChunkVerdict, CutOff, CutOffReason, Outgoing, PartyLine, Received, Relay, SendError,
};
pub use message::{frame, NplChunk, NplEnvelope, SignedChunk};

use crate::wire::MAX_FRAME_BYTES;
use serde::{Deserialize, Serialize};

/// Room a chunk's envelope takes besides its data: author, seq, index and
/// length varints, the signature, hops and the peer message's tag.
const ENVELOPE_OVERHEAD: usize = 256;

/// Most relay hops `validate` allows: every hop can multiply a chunk's
/// traffic by the UNL's size.
pub const MAX_HOPS: u8 = 4;

/// Bounds on the party line. Every node of a network must use the same
/// values: a receiver with smaller ones would cut off honest authors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NplLimits {
    /// Largest chunk's data, bytes.
    pub max_chunk_bytes: usize,
    /// Most data one author may send in one run, bytes.
    pub max_bytes_per_author_per_run: usize,
    /// Most chunks one author may send in one run.
    pub max_chunks_per_author_per_run: u64,
    /// Most bytes held undelivered, over every author: chunks for the next
    /// run, and chunks of the run in progress waiting for a gap to fill.
    pub max_buffered_bytes: usize,
    /// How many times a chunk is relayed: 0 for a full mesh, 1 when every
    /// pair of nodes shares a neighbour.
    pub max_hops: u8,
}

impl Default for NplLimits {
    fn default() -> Self {
        NplLimits {
            max_chunk_bytes: 64 << 10,
            max_bytes_per_author_per_run: 1 << 20,
            max_chunks_per_author_per_run: 1024,
            max_buffered_bytes: 4 << 20,
            max_hops: 1,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("max_chunk_bytes must be between 1 and {max} to fit a peer frame, got {got}")]
    ChunkBytes { got: usize, max: usize },
    #[error("max_bytes_per_author_per_run must be at least 1, got 0")]
    AuthorBytes,
    #[error("max_chunks_per_author_per_run must be at least 1, got 0")]
    AuthorChunks,
    #[error(
        "max_buffered_bytes ({got}) must hold at least one chunk of max_chunk_bytes ({chunk})"
    )]
    Buffer { got: usize, chunk: usize },
    #[error("max_hops must be at most {MAX_HOPS}, got {0}")]
    Hops(u8),
}

impl NplLimits {
    pub fn validate(&self) -> Result<(), LimitsError> {
        let max = MAX_FRAME_BYTES - ENVELOPE_OVERHEAD;
        if self.max_chunk_bytes == 0 || self.max_chunk_bytes > max {
            return Err(LimitsError::ChunkBytes {
                got: self.max_chunk_bytes,
                max,
            });
        }
        if self.max_bytes_per_author_per_run == 0 {
            return Err(LimitsError::AuthorBytes);
        }
        if self.max_chunks_per_author_per_run == 0 {
            return Err(LimitsError::AuthorChunks);
        }
        // Smaller, and a chunk that must wait could never be held: every
        // author whose chunks arrive out of order would stall.
        if self.max_buffered_bytes < self.max_chunk_bytes {
            return Err(LimitsError::Buffer {
                got: self.max_buffered_bytes,
                chunk: self.max_chunk_bytes,
            });
        }
        if self.max_hops > MAX_HOPS {
            return Err(LimitsError::Hops(self.max_hops));
        }
        Ok(())
    }
}

/// What the party line did, for logs, metrics and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NplStats {
    /// Chunks of our own contract's output signed and sent.
    pub chunks_sent: u64,
    /// Chunks handed to our contract, our own included.
    pub chunks_delivered: u64,
    /// Data bytes of those chunks (framing not counted).
    pub bytes_delivered: u64,
    /// Chunks for a run that is neither in progress nor next.
    pub dropped_stale: u64,
    pub dropped_bad_signature: u64,
    pub dropped_not_unl: u64,
    /// Copies of chunks already accepted, and our own chunks coming back.
    pub dropped_duplicate: u64,
    /// Second, validly signed, different chunks for one (author, run, index).
    pub equivocations: u64,
    /// Times an author (ourselves included) was cut off for a run.
    pub cut_off: u64,
    /// Chunks dropped because their author was already cut off for the run.
    pub dropped_cut_off: u64,
    /// Chunks returned to the caller to relay.
    pub relayed: u64,
    /// Valid chunks that had to wait, dropped because the buffer was full.
    pub dropped_over_buffer: u64,
    /// Accepted chunks never delivered: their gap never filled, their run
    /// was skipped, or their author was cut off.
    pub dropped_undelivered: u64,
    /// Bytes our own contract wrote past its per-run limits, not sent.
    pub own_bytes_dropped: u64,
    pub signature_checks: u64,
}
