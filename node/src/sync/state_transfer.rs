//! State sync: fetching the contract state a ledger certifies.
//!
//! Everything is asked for by hash: a directory by its Merkle hash, a file
//! by its content digest. So every answer can be checked on arrival, and a
//! peer can serve it from any state it keeps (the latest run or the one
//! before) as long as that part did not change. Fetching walks the target
//! tree from the root, skipping every subtree whose hash equals the local
//! one, so only differing directories are listed and only differing files
//! travel. Verified listings and files are kept by hash, so when the target
//! moves on to a newer ledger mid-fetch, the walk starts again at the new
//! root and fetches only what changed since.

use crate::contract::ExecResult;
use crate::contract::{dir_hash, file_leaf, link_leaf, StateNode};
use crate::crypto::Hash;
use crate::wire::MAX_FRAME_BYTES;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Largest piece of a file asked for or sent in one message.
pub const CHUNK_BYTES: u32 = 512 * 1024;
/// Most entries a directory listing may have: its answer must fit a frame.
pub const MAX_DIR_ENTRIES: usize = 200_000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StateRequest {
    /// The entries of the directory with this Merkle hash.
    Dir(Hash),
    /// `len` bytes from `offset` of the file with this content digest.
    Chunk {
        digest: [u8; 32],
        size: u64,
        offset: u64,
        len: u32,
    },
}

/// One directory entry as a listing carries it: enough to hash it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    File { size: u64, digest: [u8; 32] },
    Symlink { target: Vec<u8> },
    Dir(Hash),
}

impl Entry {
    pub fn of(node: &StateNode) -> Entry {
        match node {
            StateNode::File { size, digest } => Entry::File {
                size: *size,
                digest: *digest,
            },
            StateNode::Symlink { target } => Entry::Symlink {
                target: target.clone(),
            },
            StateNode::Dir { .. } => Entry::Dir(node.hash()),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Entry::File { .. } => b'f',
            Entry::Symlink { .. } => b'l',
            Entry::Dir(_) => b'd',
        }
    }

    fn hash(&self) -> Hash {
        match self {
            Entry::File { size, digest } => file_leaf(*size, digest),
            Entry::Symlink { target } => link_leaf(target),
            Entry::Dir(h) => *h,
        }
    }
}

pub type Listing = Vec<(Vec<u8>, Entry)>;

/// The Merkle hash of a directory with these entries.
fn listing_hash(entries: &Listing) -> Hash {
    dir_hash(
        entries
            .iter()
            .map(|(n, e)| (n.as_slice(), e.kind(), e.hash())),
    )
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateResponse {
    Dir {
        hash: Hash,
        entries: Listing,
    },
    Chunk {
        digest: [u8; 32],
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The peer keeps nothing by that hash (its state moved on).
    Missing(StateRequest),
}

/// What turns a state directory into the fetched state: first remove, then
/// put; paths are relative to the state root, `/`-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatePatch {
    /// The ledger whose run left this state, and that run's certified result.
    pub seq: u64,
    pub result: ExecResult,
    pub remove: Vec<Vec<u8>>,
    pub files: Vec<(Vec<u8>, Vec<u8>)>,
    pub links: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("answer to a request that was not made")]
    Unasked,
    #[error("directory listing does not hash to {0}")]
    DirHash(Hash),
    #[error("directory listing has a bad or unsorted name")]
    BadName,
    #[error("directory listing has {0} entries, more than allowed")]
    TooManyEntries(usize),
    #[error("file piece at {got} where {want} was asked")]
    ChunkOffset { got: u64, want: u64 },
    #[error("file piece of {got} bytes where {want} were asked")]
    ChunkLength { got: usize, want: u64 },
    #[error("assembled file does not match its digest")]
    FileDigest,
}

/// What was fetched, for the run report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FetchStats {
    pub bytes: u64,
    pub dirs: u64,
    pub files: u64,
}

/// What the fetch needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Want(Vec<StateRequest>),
    Done(StatePatch),
}

/// The fetch of one target state, sans I/O: [`StateFetch::step`] says what
/// to ask for, [`StateFetch::on_response`] checks what came back.
pub struct StateFetch {
    pub seq: u64,
    pub result: ExecResult,
    /// The tree this node holds, hashed once, listed by directory hash.
    local: StateIndex,
    listings: BTreeMap<Hash, Listing>,
    contents: BTreeMap<[u8; 32], Vec<u8>>,
    /// Files being assembled, by digest: the bytes so far.
    partial: BTreeMap<[u8; 32], Vec<u8>>,
    pub stats: FetchStats,
}

#[derive(Default)]
struct Walk {
    want: Vec<StateRequest>,
    remove: Vec<Vec<u8>>,
    files: Vec<(Vec<u8>, [u8; 32])>,
    links: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The entry named `name` in a listing (listings are sorted by name).
fn find<'a>(list: &'a Listing, name: &[u8]) -> Option<&'a Entry> {
    list.binary_search_by(|(n, _)| n.as_slice().cmp(name))
        .ok()
        .map(|i| &list[i].1)
}

fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = path.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl StateFetch {
    /// Fetches the state ledger `seq`'s run left (`result.state` is its
    /// root), starting from `local`, the tree this node holds.
    pub fn new(seq: u64, result: ExecResult, local: &StateNode) -> StateFetch {
        StateFetch {
            seq,
            result,
            local: StateIndex::new(local),
            listings: BTreeMap::new(),
            contents: BTreeMap::new(),
            partial: BTreeMap::new(),
            stats: FetchStats::default(),
        }
    }

    /// Moves on to a newer certified state, keeping what was fetched.
    pub fn retarget(&mut self, seq: u64, result: ExecResult) {
        self.seq = seq;
        self.result = result;
    }

    /// What to ask for next; once nothing is missing, the patch, which
    /// takes the fetched files with it (the fetch is then spent).
    pub fn step(&mut self) -> Step {
        let mut w = Walk::default();
        self.walk(self.result.state, Some(self.local.root), &[], &mut w);
        if !w.want.is_empty() {
            return Step::Want(w.want);
        }
        let mut uses: BTreeMap<[u8; 32], usize> = BTreeMap::new();
        for (_, d) in &w.files {
            *uses.entry(*d).or_default() += 1;
        }
        let files = w
            .files
            .into_iter()
            .map(|(p, d)| {
                let left = uses.get_mut(&d).expect("counted above");
                *left -= 1;
                // Moved out at its last use: a diff is held once, not twice.
                let bytes = if *left == 0 {
                    self.contents.remove(&d)
                } else {
                    self.contents.get(&d).cloned()
                };
                (p, bytes.unwrap_or_default())
            })
            .collect();
        Step::Done(StatePatch {
            seq: self.seq,
            result: self.result,
            remove: w.remove,
            files,
            links: w.links,
        })
    }

    /// Walks the target directory `hash` against the local directory
    /// `local` (its hash, if the path is a directory here).
    fn walk(&self, hash: Hash, local: Option<Hash>, path: &[u8], w: &mut Walk) {
        if local == Some(hash) {
            return;
        }
        let Some(entries) = self.listings.get(&hash) else {
            w.want.push(StateRequest::Dir(hash));
            return;
        };
        let mine = local.and_then(|h| self.local.listing(&h));
        for (name, child) in mine.into_iter().flatten() {
            let keep = find(entries, name).is_some_and(|e| e.kind() == child.kind());
            if !keep {
                w.remove.push(join(path, name));
            }
        }
        for (name, entry) in entries {
            let have = mine
                .and_then(|c| find(c, name))
                .filter(|c| c.kind() == entry.kind());
            let have = have.map(|c| c.hash());
            if have == Some(entry.hash()) {
                continue;
            }
            let p = join(path, name);
            match entry {
                Entry::Dir(h) => self.walk(*h, have, &p, w),
                Entry::Symlink { target } => w.links.push((p, target.clone())),
                Entry::File { size, digest } => {
                    if *size == 0 || self.contents.contains_key(digest) {
                        w.files.push((p, *digest));
                        continue;
                    }
                    let offset = self.partial.get(digest).map_or(0, |b| b.len() as u64);
                    w.want.push(StateRequest::Chunk {
                        digest: *digest,
                        size: *size,
                        offset,
                        len: (size - offset).min(CHUNK_BYTES as u64) as u32,
                    });
                }
            }
        }
    }

    /// Checks a peer's answer to `asked` and keeps it if it holds.
    pub fn on_response(
        &mut self,
        asked: &StateRequest,
        response: StateResponse,
    ) -> Result<(), FetchError> {
        match (asked, response) {
            (StateRequest::Dir(want), StateResponse::Dir { hash, entries }) if *want == hash => {
                if entries.len() > MAX_DIR_ENTRIES {
                    return Err(FetchError::TooManyEntries(entries.len()));
                }
                let sorted = entries.windows(2).all(|p| p[0].0 < p[1].0);
                if !sorted || !entries.iter().all(|(n, _)| valid_name(n)) {
                    return Err(FetchError::BadName);
                }
                let got = listing_hash(&entries);
                if got != hash {
                    return Err(FetchError::DirHash(hash));
                }
                self.stats.dirs += 1;
                self.stats.bytes += entries
                    .iter()
                    .map(|(n, _)| n.len() as u64 + 41)
                    .sum::<u64>();
                self.listings.insert(hash, entries);
                Ok(())
            }
            (
                StateRequest::Chunk {
                    digest,
                    size,
                    offset,
                    len,
                },
                StateResponse::Chunk {
                    digest: d,
                    offset: o,
                    bytes,
                },
            ) if *digest == d => {
                let have = self.partial.get(digest).map_or(0, |b| b.len() as u64);
                if o != *offset || o != have {
                    return Err(FetchError::ChunkOffset { got: o, want: have });
                }
                if bytes.len() as u64 != *len as u64 {
                    return Err(FetchError::ChunkLength {
                        got: bytes.len(),
                        want: *len as u64,
                    });
                }
                self.stats.bytes += bytes.len() as u64;
                let buf = self.partial.entry(*digest).or_default();
                buf.extend_from_slice(&bytes);
                if (buf.len() as u64) < *size {
                    return Ok(());
                }
                let buf = self.partial.remove(digest).expect("inserted above");
                if <[u8; 32]>::from(Sha256::digest(&buf)) != *digest {
                    // Which piece was bad cannot be told: start over.
                    return Err(FetchError::FileDigest);
                }
                self.stats.files += 1;
                self.contents.insert(*digest, buf);
                Ok(())
            }
            _ => Err(FetchError::Unasked),
        }
    }
}

/// Lists directories and reads files of the states a host keeps, by hash,
/// to answer peers' [`StateRequest`]s.
#[derive(Default)]
pub struct StateIndex {
    /// The indexed tree's root hash.
    pub root: Hash,
    listings: BTreeMap<Hash, Listing>,
    /// Digest -> a path holding that content.
    files: BTreeMap<[u8; 32], Vec<u8>>,
}

impl StateIndex {
    pub fn new(tree: &StateNode) -> StateIndex {
        let mut idx = StateIndex::default();
        idx.root = idx.add(tree, &[]);
        idx
    }

    fn add(&mut self, node: &StateNode, path: &[u8]) -> Hash {
        match node {
            StateNode::Dir { children } => {
                let entries: Listing = children
                    .iter()
                    .map(|(n, c)| {
                        let h = self.add(c, &join(path, n));
                        let e = match c {
                            StateNode::Dir { .. } => Entry::Dir(h),
                            leaf => Entry::of(leaf),
                        };
                        (n.clone(), e)
                    })
                    .collect();
                let hash = listing_hash(&entries);
                self.listings.insert(hash, entries);
                hash
            }
            StateNode::File { digest, .. } => {
                self.files.entry(*digest).or_insert_with(|| path.to_vec());
                node.hash()
            }
            StateNode::Symlink { .. } => node.hash(),
        }
    }

    pub fn listing(&self, hash: &Hash) -> Option<&Listing> {
        self.listings.get(hash)
    }

    /// A path whose file has this content digest.
    pub fn file_path(&self, digest: &[u8; 32]) -> Option<&[u8]> {
        self.files.get(digest).map(Vec::as_slice)
    }
}

/// Answers `req` from the first of `states` that holds what it names;
/// `read(state, path, offset, len)` reads a file piece of that state.
pub fn serve<E>(
    states: &[&StateIndex],
    req: &StateRequest,
    mut read: impl FnMut(usize, &[u8], u64, u32) -> Result<Vec<u8>, E>,
) -> StateResponse {
    let missing = StateResponse::Missing(req.clone());
    match req {
        StateRequest::Dir(hash) => {
            let Some(entries) = states.iter().find_map(|s| s.listing(hash)) else {
                return missing;
            };
            // A listing too big for one frame cannot be sent: the asker
            // gives up on this sync and runs the ledgers instead.
            let size = postcard::experimental::serialized_size(entries).unwrap_or(usize::MAX);
            if entries.len() > MAX_DIR_ENTRIES || size > MAX_FRAME_BYTES - 1024 {
                return missing;
            }
            StateResponse::Dir {
                hash: *hash,
                entries: entries.clone(),
            }
        }
        StateRequest::Chunk {
            digest,
            size,
            offset,
            len,
        } => {
            let len = (*len).min(CHUNK_BYTES);
            if offset.saturating_add(len as u64) > *size {
                return missing;
            }
            for (i, s) in states.iter().enumerate() {
                let Some(path) = s.file_path(digest) else {
                    continue;
                };
                if let Ok(bytes) = read(i, path, *offset, len) {
                    if bytes.len() == len as usize {
                        return StateResponse::Chunk {
                            digest: *digest,
                            offset: *offset,
                            bytes,
                        };
                    }
                }
            }
            missing
        }
    }
}

/// Applies `patch` to a state kept in memory as path -> bytes (the
/// simulator's contracts), which has no symlinks.
pub fn apply_to_files(files: &mut BTreeMap<String, Vec<u8>>, patch: &StatePatch) {
    for p in &patch.remove {
        let p = String::from_utf8_lossy(p).into_owned();
        let under = format!("{p}/");
        files.retain(|k, _| *k != p && !k.starts_with(&under));
    }
    for (p, bytes) in &patch.files {
        files.insert(String::from_utf8_lossy(p).into_owned(), bytes.clone());
    }
}

#[cfg(test)]
#[path = "state_transfer_tests.rs"]
mod tests;
