//! One node's party line: which runs it accepts chunks for, what it
//! delivers to its contract, what it relays, and what it refuses.

use super::message::{frame, NplChunk, NplEnvelope, SignedChunk};
use super::stream::{Run, Stream};
use super::{LimitsError, NplLimits, NplStats};
use crate::crypto::{KeyRing, Keypair, PubKey};
use serde::Serialize;
use std::collections::BTreeMap;

/// What an arriving chunk turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ChunkVerdict {
    /// New and valid: delivered now, or held until its turn.
    Accepted,
    /// A copy of a chunk already accepted.
    Duplicate,
    /// One of our own chunks coming back.
    Echo,
    /// A second, validly signed, different chunk for one (author, run,
    /// index). The first stays.
    Equivocation,
    /// For a run neither in progress nor next.
    Stale,
    BadSignature,
    /// Its author is not in the UNL.
    NotUnl,
    /// Valid, but it would have to wait and the buffer is full.
    OverBuffer,
    /// This chunk took its author over a limit: the author is cut off for
    /// the run.
    CutOff(CutOff),
    /// Its author was already cut off for the run.
    AfterCutOff,
}

/// An author cut off for one run, for the caller to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CutOff {
    pub author: PubKey,
    pub seq: u64,
    pub reason: CutOffReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CutOffReason {
    /// A chunk with no data: no honest sender makes one.
    EmptyChunk,
    /// A chunk over `max_chunk_bytes`.
    ChunkTooBig { bytes: usize },
    /// An index at or past `max_chunks_per_author_per_run`.
    TooManyChunks { index: u64 },
    /// The run's data would come to `bytes`, over the per-run limit.
    TooManyBytes { bytes: usize },
}

/// A chunk to pass on: send `env` to each of `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    pub env: NplEnvelope,
    /// Every UNL member but the peer it came from, its author and us.
    pub to: Vec<PubKey>,
}

/// What [`PartyLine::receive`] makes of a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub verdict: ChunkVerdict,
    /// Framed records to write to the contract's NPL input now, in order.
    /// Only ever for the run in progress: that is the chunk's run.
    pub records: Vec<Vec<u8>>,
    pub relay: Option<Relay>,
}

impl Received {
    fn only(verdict: ChunkVerdict) -> Received {
        Received {
            verdict,
            records: Vec::new(),
            relay: None,
        }
    }
}

/// What [`PartyLine::send`] makes of our contract's output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// Signed chunks to send to every other UNL member.
    pub envelopes: Vec<NplEnvelope>,
    /// The same chunks framed for our own contract's NPL input.
    pub records: Vec<Vec<u8>>,
    /// Set when this write took us over a per-run limit.
    pub cut_off: Option<CutOff>,
    /// Bytes of this write not sent because of the limits.
    pub dropped: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("NPL output for run {seq}, but the run in progress is {running:?}")]
    NotRunning { seq: u64, running: Option<u64> },
    #[error("NPL output must be signed with this node's key")]
    WrongKey,
}

/// The NPL state of one node.
#[derive(Debug)]
pub struct PartyLine {
    limits: NplLimits,
    me: PubKey,
    /// The run in progress, if any.
    running: Option<u64>,
    /// The run whose chunks are accepted while none is in progress.
    expected: u64,
    /// The run in progress and the next, at most.
    runs: BTreeMap<u64, Run>,
    /// Data bytes held undelivered, over every run and author.
    buffered: usize,
    stats: NplStats,
}

impl PartyLine {
    /// Ledger 1 is the first whose contract runs; use [`PartyLine::expect`]
    /// to start elsewhere (after a restart or a state sync).
    pub fn new(limits: NplLimits, me: PubKey) -> Result<PartyLine, LimitsError> {
        limits.validate()?;
        Ok(PartyLine {
            limits,
            me,
            running: None,
            expected: 1,
            runs: BTreeMap::new(),
            buffered: 0,
            stats: NplStats::default(),
        })
    }

    pub fn stats(&self) -> &NplStats {
        &self.stats
    }

    pub fn limits(&self) -> &NplLimits {
        &self.limits
    }

    /// The run in progress.
    pub fn running(&self) -> Option<u64> {
        self.running
    }

    /// Data bytes held undelivered.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Whether chunks for `seq` are accepted now.
    pub fn accepts(&self, seq: u64) -> bool {
        match self.running {
            Some(r) => seq == r || seq == r.saturating_add(1),
            None => seq == self.expected,
        }
    }

    /// The run chunks are accepted for while none is in progress.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// No run is in progress and `seq` is the next to run: after a restart,
    /// or when a fetched state skips runs. Forgets every other run.
    pub fn expect(&mut self, seq: u64) {
        self.running = None;
        self.expected = seq;
        self.discard_runs(|s| s != seq);
    }

    /// The contract starts running ledger `seq`. Returns the records
    /// buffered for it, to write to its NPL input before anything else.
    /// A run still in progress is over, as if finished.
    pub fn run_started(&mut self, seq: u64) -> Vec<Vec<u8>> {
        self.running = Some(seq);
        self.expected = seq.saturating_add(1);
        self.discard_runs(|s| s != seq && s != seq.saturating_add(1));
        let Some(run) = self.runs.get_mut(&seq) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for (author, stream) in run.authors.iter_mut() {
            deliver(
                &mut self.stats,
                &mut self.buffered,
                author,
                stream.take_ready(),
                &mut records,
            );
        }
        records
    }

    /// The run of `seq` is over: its chunks from now on are stale, and what
    /// still waited for a gap is dropped.
    pub fn run_finished(&mut self, seq: u64) {
        self.discard_runs(|s| s <= seq);
        if self.running.is_none_or(|r| r <= seq) {
            self.running = None;
            self.expected = seq.saturating_add(1);
        }
    }

    /// Our contract wrote `bytes` to its NPL output during run `seq`. Cuts
    /// them into signed chunks for the UNL, and frames the same chunks for
    /// our own contract: a node hears itself, as in the prototype and
    /// hpcore, so a contract collecting one message from every node (a
    /// multisig) treats its own node's like any other and sees the same
    /// set of authors as its copies on the other nodes.
    ///
    /// Writes are not merged: each call makes at least one chunk, so the
    /// caller should read the output in large pieces.
    pub fn send(&mut self, key: &Keypair, seq: u64, bytes: &[u8]) -> Result<Outgoing, SendError> {
        if key.public() != self.me {
            return Err(SendError::WrongKey);
        }
        if self.running != Some(seq) {
            return Err(SendError::NotRunning {
                seq,
                running: self.running,
            });
        }
        let me = self.me;
        let limits = &self.limits;
        let stream = self
            .runs
            .entry(seq)
            .or_default()
            .authors
            .entry(me)
            .or_default();
        let mut out = Outgoing::default();
        let mut rest = bytes;
        while !rest.is_empty() && !stream.cut_off {
            let room = limits.max_bytes_per_author_per_run - stream.bytes;
            if stream.next >= limits.max_chunks_per_author_per_run || room == 0 {
                let reason = if room == 0 {
                    CutOffReason::TooManyBytes {
                        bytes: stream.bytes.saturating_add(rest.len()),
                    }
                } else {
                    CutOffReason::TooManyChunks { index: stream.next }
                };
                stream.cut_off = true;
                self.stats.cut_off += 1;
                out.cut_off = Some(CutOff {
                    author: me,
                    seq,
                    reason,
                });
                break;
            }
            let (data, tail) = rest.split_at(rest.len().min(limits.max_chunk_bytes).min(room));
            rest = tail;
            let chunk = NplChunk {
                author: me,
                seq,
                index: stream.next,
                data: data.to_vec(),
            };
            stream.next += 1;
            stream.bytes += data.len();
            out.records.push(frame(&me, data));
            out.envelopes.push(NplEnvelope {
                hops: 0,
                chunk: chunk.sign(key),
            });
            self.stats.chunks_sent += 1;
            self.stats.chunks_delivered += 1;
            self.stats.bytes_delivered += data.len() as u64;
        }
        out.dropped = rest.len();
        self.stats.own_bytes_dropped += rest.len() as u64;
        Ok(out)
    }

    /// A chunk from peer `from`, a direct neighbour. `unl` is the UNL and
    /// `ring` its cached keys.
    pub fn receive(
        &mut self,
        unl: &[PubKey],
        ring: &KeyRing,
        from: PubKey,
        env: NplEnvelope,
    ) -> Received {
        let c = &env.chunk.chunk;
        let (author, seq, index) = (c.author, c.seq, c.index);
        // Our contract heard our chunks when we sent them. A chunk in our
        // name we did not send (a twin's) is not ours to deliver either.
        if author == self.me {
            self.stats.dropped_duplicate += 1;
            return Received::only(ChunkVerdict::Echo);
        }
        if !unl.contains(&author) {
            self.stats.dropped_not_unl += 1;
            return Received::only(ChunkVerdict::NotUnl);
        }
        if !self.accepts(seq) {
            self.stats.dropped_stale += 1;
            return Received::only(ChunkVerdict::Stale);
        }
        let stream = self
            .runs
            .entry(seq)
            .or_default()
            .authors
            .entry(author)
            .or_default();
        if stream.cut_off {
            self.stats.dropped_cut_off += 1;
            return Received::only(ChunkVerdict::AfterCutOff);
        }
        let content = env.chunk.content();
        // A copy costs no signature check; a different chunk must carry a
        // valid signature before we call it equivocation.
        let first = stream.marks.get(&index).copied();
        if first == Some(content) {
            self.stats.dropped_duplicate += 1;
            return Received::only(ChunkVerdict::Duplicate);
        }
        self.stats.signature_checks += 1;
        if env.chunk.verify_with(ring).is_err() {
            self.stats.dropped_bad_signature += 1;
            return Received::only(ChunkVerdict::BadSignature);
        }
        if first.is_some() {
            self.stats.equivocations += 1;
            return Received::only(ChunkVerdict::Equivocation);
        }
        // Only now, with the author's signature on it, may a chunk cut its
        // author off: otherwise any relay could silence an honest node.
        if let Some(reason) = over_limits(&self.limits, stream, c) {
            let (chunks, bytes) = stream.cut();
            self.buffered -= bytes;
            self.stats.dropped_undelivered += chunks;
            self.stats.cut_off += 1;
            return Received::only(ChunkVerdict::CutOff(CutOff {
                author,
                seq,
                reason,
            }));
        }
        let now = self.running == Some(seq) && index == stream.next;
        let len = c.data.len();
        // Nothing is marked, so a copy by another path may still get in.
        if !now && self.buffered + len > self.limits.max_buffered_bytes {
            self.stats.dropped_over_buffer += 1;
            return Received::only(ChunkVerdict::OverBuffer);
        }
        stream.marks.insert(index, content);
        stream.bytes += len;
        let to: Vec<PubKey> = unl
            .iter()
            .filter(|k| **k != from && **k != author && **k != self.me)
            .copied()
            .collect();
        let relay = (env.hops < self.limits.max_hops && !to.is_empty()).then(|| {
            self.stats.relayed += 1;
            Relay {
                env: NplEnvelope {
                    hops: env.hops + 1,
                    chunk: env.chunk.clone(),
                },
                to,
            }
        });
        let SignedChunk { chunk, .. } = env.chunk;
        self.buffered += len;
        stream.held.insert(index, chunk.data);
        let mut records = Vec::new();
        if now {
            let ready = stream.take_ready();
            deliver(
                &mut self.stats,
                &mut self.buffered,
                &author,
                ready,
                &mut records,
            );
        }
        Received {
            verdict: ChunkVerdict::Accepted,
            records,
            relay,
        }
    }

    /// Forgets the runs `drop` picks, counting what they still held.
    fn discard_runs(&mut self, drop: impl Fn(u64) -> bool) {
        let seqs: Vec<u64> = self.runs.keys().copied().filter(|s| drop(*s)).collect();
        for s in seqs {
            if let Some(run) = self.runs.remove(&s) {
                let (chunks, bytes) = run.held();
                self.stats.dropped_undelivered += chunks;
                self.buffered -= bytes;
            }
        }
    }
}

/// Why a validly signed chunk takes its author over the limits, if it does.
fn over_limits(limits: &NplLimits, stream: &Stream, c: &NplChunk) -> Option<CutOffReason> {
    let len = c.data.len();
    if len == 0 {
        return Some(CutOffReason::EmptyChunk);
    }
    if len > limits.max_chunk_bytes {
        return Some(CutOffReason::ChunkTooBig { bytes: len });
    }
    if c.index >= limits.max_chunks_per_author_per_run {
        return Some(CutOffReason::TooManyChunks { index: c.index });
    }
    // Accepted chunks only, in whatever order they came: an honest author's
    // chunks never add up to more than it may send.
    let total = stream.bytes.saturating_add(len);
    if total > limits.max_bytes_per_author_per_run {
        return Some(CutOffReason::TooManyBytes { bytes: total });
    }
    None
}

/// Frames `ready` (the author's next chunks, in order) into `records`.
fn deliver(
    stats: &mut NplStats,
    buffered: &mut usize,
    author: &PubKey,
    ready: Vec<Vec<u8>>,
    records: &mut Vec<Vec<u8>>,
) {
    for data in ready {
        *buffered -= data.len();
        stats.chunks_delivered += 1;
        stats.bytes_delivered += data.len() as u64;
        records.push(frame(author, &data));
    }
}
