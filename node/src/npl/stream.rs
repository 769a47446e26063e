//! Per-run bookkeeping: for each author, which chunks were accepted, which
//! wait for a gap to fill, and how far delivery got.

use crate::crypto::{Hash, PubKey};
use std::collections::BTreeMap;

/// One author's chunks in one run.
#[derive(Debug, Default)]
pub(super) struct Stream {
    /// The next index to hand to the contract.
    pub next: u64,
    /// Content hash of every accepted chunk, delivered or waiting, by index:
    /// what tells a copy from an equivocation.
    pub marks: BTreeMap<u64, Hash>,
    /// Accepted chunks not delivered yet, by index.
    pub held: BTreeMap<u64, Vec<u8>>,
    /// Data bytes accepted (for our own stream: sent).
    pub bytes: usize,
    /// Over a limit: everything else from this author this run is dropped.
    pub cut_off: bool,
}

impl Stream {
    /// Takes the held chunks that are next in order, advancing `next`.
    pub fn take_ready(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(data) = self.held.remove(&self.next) {
            out.push(data);
            self.next += 1;
        }
        out
    }

    /// Cuts the author off, dropping what it had waiting. Returns the
    /// number of chunks and bytes dropped.
    pub fn cut(&mut self) -> (u64, usize) {
        self.cut_off = true;
        // Marks only serve to judge later chunks, and there will be none.
        self.marks.clear();
        let held = std::mem::take(&mut self.held);
        (held.len() as u64, held.values().map(Vec::len).sum())
    }
}

/// The party line of one run, by author.
#[derive(Debug, Default)]
pub(super) struct Run {
    pub authors: BTreeMap<PubKey, Stream>,
}

impl Run {
    /// Chunks and bytes accepted but not delivered.
    pub fn held(&self) -> (u64, usize) {
        self.authors.values().fold((0, 0), |(n, b), s| {
            (
                n + s.held.len() as u64,
                b + s.held.values().map(Vec::len).sum::<usize>(),
            )
        })
    }
}
