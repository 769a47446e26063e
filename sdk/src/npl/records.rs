//! Reading the node's side of the party line: records
//! `Length: N\nPubkey: <64 hex>\n\n<N bytes>` cut at arbitrary points, and
//! per-author reassembly of whole messages (4-byte big-endian length, then
//! the bytes) from the data of those records.
//!
//! Both work a byte slice at a time and keep their own partial state, so any
//! split of the input gives the same messages. Neither panics on any input.

use crate::{NplError, MAX_MESSAGE};
use std::collections::{BTreeMap, VecDeque};

/// Longest header line: "Pubkey: " and 64 hex digits. A longer line is
/// rejected before it is buffered further, so a broken node cannot make us
/// buffer without bound while we wait for a newline.
const MAX_LINE: usize = 8 + 64;

enum Stage {
    /// Reading header line `index` (0 Length, 1 Pubkey, 2 empty).
    Header {
        line: Vec<u8>,
        index: u8,
        len: u64,
        author: String,
    },
    Data {
        author: String,
        remaining: u64,
    },
}

/// The node's record stream -> (author, data) pieces, in order.
pub(crate) struct RecordParser {
    stage: Stage,
    /// Set on the first malformed header: the stream cannot be resynced.
    failed: Option<NplError>,
}

fn header_start() -> Stage {
    Stage::Header {
        line: Vec::new(),
        index: 0,
        len: 0,
        author: String::new(),
    }
}

fn shown(line: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(line))
}

fn parse_length(line: &[u8]) -> Result<u64, NplError> {
    let bad = || NplError::BadRecord(format!("expected 'Length: <decimal>', got {}", shown(line)));
    let digits = line.strip_prefix(b"Length: ").ok_or_else(bad)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // All ASCII digits, so utf8 holds; parse fails only on overflow.
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(bad)
}

fn parse_pubkey(line: &[u8]) -> Result<String, NplError> {
    let bad = || NplError::BadRecord(format!("expected 'Pubkey: <64 hex>', got {}", shown(line)));
    let hex = line.strip_prefix(b"Pubkey: ").ok_or_else(bad)?;
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    // Lowercase, as the description's `unl` keys are, so callers can
    // compare keys as strings.
    Ok(hex.iter().map(|b| b.to_ascii_lowercase() as char).collect())
}

impl RecordParser {
    pub(crate) fn new() -> RecordParser {
        RecordParser {
            stage: header_start(),
            failed: None,
        }
    }

    /// Feeds the next bytes of the stream; `sink` gets each piece of record
    /// data with its author. After an error every call fails the same way.
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        sink: &mut dyn FnMut(&str, &[u8]),
    ) -> Result<(), NplError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        while !bytes.is_empty() {
            if let Err(e) = self.step(&mut bytes, sink) {
                self.failed = Some(e.clone());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Consumes at least one byte of `bytes` (`feed` never passes none).
    fn step(
        &mut self,
        bytes: &mut &[u8],
        sink: &mut dyn FnMut(&str, &[u8]),
    ) -> Result<(), NplError> {
        match &mut self.stage {
            Stage::Data { author, remaining } => {
                let n = bytes
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let (piece, rest) = bytes.split_at(n);
                sink(author, piece);
                *bytes = rest;
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.stage = header_start();
                }
            }
            Stage::Header {
                line,
                index,
                len,
                author,
            } => {
                let Some((&b, rest)) = bytes.split_first() else {
                    return Ok(());
                };
                *bytes = rest;
                if b != b'\n' {
                    if line.len() == MAX_LINE {
                        return Err(NplError::BadRecord(format!(
                            "header line longer than {MAX_LINE} bytes: {}...",
                            shown(line)
                        )));
                    }
                    line.push(b);
                    return Ok(());
                }
                match index {
                    0 => *len = parse_length(line)?,
                    1 => *author = parse_pubkey(line)?,
                    _ if !line.is_empty() => {
                        return Err(NplError::BadRecord(format!(
                            "expected an empty line after the headers, got {}",
                            shown(line)
                        )))
                    }
                    _ => {
                        self.stage = if *len == 0 {
                            header_start()
                        } else {
                            Stage::Data {
                                author: std::mem::take(author),
                                remaining: *len,
                            }
                        };
                        return Ok(());
                    }
                }
                line.clear();
                *index += 1;
            }
        }
        Ok(())
    }
}

/// One author's message in progress.
#[derive(Default)]
struct Partial {
    prefix: [u8; 4],
    have_prefix: usize,
    body: Vec<u8>,
    want: usize,
}

/// Per-author byte streams -> whole messages, in the order they complete.
#[derive(Default)]
pub(crate) struct Streams {
    partial: BTreeMap<String, Partial>,
    ready: VecDeque<(String, Vec<u8>)>,
    /// Authors whose length prefix broke the bound. Their framing cannot be
    /// trusted after that, so the rest of their stream is dropped; the
    /// other authors go on (a peer's garbage must not stop our contract).
    broken: BTreeMap<String, NplError>,
}

impl Streams {
    pub(crate) fn push(&mut self, author: &str, mut data: &[u8]) {
        if self.broken.contains_key(author) {
            return;
        }
        let p = self.partial.entry(author.to_string()).or_default();
        while !data.is_empty() {
            if p.have_prefix < 4 {
                let n = (4 - p.have_prefix).min(data.len());
                p.prefix[p.have_prefix..p.have_prefix + n].copy_from_slice(&data[..n]);
                p.have_prefix += n;
                data = &data[n..];
                if p.have_prefix < 4 {
                    return;
                }
                let len = u32::from_be_bytes(p.prefix);
                if len as usize > MAX_MESSAGE {
                    self.partial.remove(author);
                    self.broken.insert(
                        author.to_string(),
                        NplError::TooLarge {
                            author: Some(author.to_string()),
                            len: len.into(),
                        },
                    );
                    return;
                }
                p.want = len as usize;
            } else {
                let n = (p.want - p.body.len()).min(data.len());
                p.body.extend_from_slice(&data[..n]);
                data = &data[n..];
            }
            if p.have_prefix == 4 && p.body.len() == p.want {
                let body = std::mem::take(&mut p.body);
                *p = Partial::default();
                self.ready.push_back((author.to_string(), body));
            }
        }
    }

    pub(crate) fn pop(&mut self) -> Option<(String, Vec<u8>)> {
        self.ready.pop_front()
    }

    pub(crate) fn broken(&self) -> &BTreeMap<String, NplError> {
        &self.broken
    }
}
