//! The contract state as a Merkle tree over its directory.
//!
//! A directory's hash covers its entries in byte order of their names, each
//! with its kind and hash; a file's leaf covers its size and content digest.
//! Two state directories hash equal exactly when they hold the same names,
//! kinds and bytes (empty directories do not count: state is its files),
//! and a subtree that differs can be found by walking only the directories
//! whose hashes differ: what state sync does.

use crate::crypto::{Hash, Hasher};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateNode {
    /// `digest` is the plain sha256 of the file's bytes.
    File {
        size: u64,
        digest: [u8; 32],
    },
    Symlink {
        target: Vec<u8>,
    },
    Dir {
        children: BTreeMap<Vec<u8>, StateNode>,
    },
}

/// The leaf hash of a file with this size and content digest.
pub fn file_leaf(size: u64, digest: &[u8; 32]) -> Hash {
    let mut h = Hasher::new("hotpocket/state/file");
    h.u64(size).bytes(digest);
    h.finish()
}

/// The leaf hash of a symlink to `target` (never followed).
pub fn link_leaf(target: &[u8]) -> Hash {
    Hash::of("hotpocket/state/link", &[target])
}

impl StateNode {
    pub fn empty_dir() -> StateNode {
        StateNode::Dir {
            children: BTreeMap::new(),
        }
    }

    /// The tree of in-memory files (relative `/`-separated path -> bytes),
    /// as the simulator's contracts keep their state.
    pub fn from_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> StateNode {
        use sha2::Digest;
        StateNode::from_digests(
            files.into_iter().map(|(path, bytes)| {
                (path, bytes.len() as u64, sha2::Sha256::digest(bytes).into())
            }),
        )
    }

    /// The same, from each file's size and content digest.
    pub fn from_digests<'a>(
        files: impl IntoIterator<Item = (&'a str, u64, [u8; 32])>,
    ) -> StateNode {
        let mut root = BTreeMap::new();
        for (path, size, digest) in files {
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            insert(&mut root, &parts, StateNode::File { size, digest });
        }
        StateNode::Dir { children: root }
    }

    pub fn hash(&self) -> Hash {
        match self {
            StateNode::File { size, digest } => file_leaf(*size, digest),
            StateNode::Symlink { target } => link_leaf(target),
            StateNode::Dir { children } => dir_hash(
                children
                    .iter()
                    .map(|(n, c)| (n.as_slice(), c.kind(), c.hash())),
            ),
        }
    }

    /// One byte naming the kind, as the directory hash covers it.
    pub fn kind(&self) -> u8 {
        match self {
            StateNode::File { .. } => b'f',
            StateNode::Symlink { .. } => b'l',
            StateNode::Dir { .. } => b'd',
        }
    }

    /// The content digest of the file at `path` (`/`-separated), if any.
    pub fn digest_at(&self, path: &str) -> Option<&[u8; 32]> {
        let mut node = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let StateNode::Dir { children } = node else {
                return None;
            };
            node = children.get(part.as_bytes())?;
        }
        match node {
            StateNode::File { digest, .. } => Some(digest),
            _ => None,
        }
    }

    /// Paths (joined with `/`) of files and links whose content differs
    /// between `self` and `other`, or exist in only one; identical subtrees
    /// are skipped by hash.
    pub fn differing_paths(&self, other: &StateNode) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        diff(self, other, &mut Vec::new(), &mut out);
        out
    }
}

/// The hash of a directory with these entries (name, kind, hash), which
/// must come in byte order of their names.
pub fn dir_hash<'a>(entries: impl ExactSizeIterator<Item = (&'a [u8], u8, Hash)>) -> Hash {
    let mut h = Hasher::new("hotpocket/state/dir");
    h.u64(entries.len() as u64);
    // `bytes(name).bytes(&[kind]).hash(&hash)` per entry, laid out in one
    // buffer and hashed at once: a state directory has hundreds of them.
    let mut stream = Vec::with_capacity(entries.len() * 96);
    for (name, kind, hash) in entries {
        stream.extend_from_slice(&(name.len() as u64).to_le_bytes());
        stream.extend_from_slice(name);
        stream.extend_from_slice(&1u64.to_le_bytes());
        stream.push(kind);
        stream.extend_from_slice(&hash.0);
    }
    h.encoded(&stream);
    h.finish()
}

/// Puts `leaf` at `parts` under `dir`, making directories on the way. A file
/// where a directory is needed keeps the file (the path is invalid anyway).
fn insert(dir: &mut BTreeMap<Vec<u8>, StateNode>, parts: &[&str], leaf: StateNode) {
    match parts {
        [] => {}
        [name] => {
            dir.insert(name.as_bytes().to_vec(), leaf);
        }
        [first, rest @ ..] => {
            let entry = dir
                .entry(first.as_bytes().to_vec())
                .or_insert_with(StateNode::empty_dir);
            if let StateNode::Dir { children } = entry {
                insert(children, rest, leaf);
            }
        }
    }
}

fn diff(a: &StateNode, b: &StateNode, prefix: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) {
    if a.hash() == b.hash() {
        return;
    }
    match (a, b) {
        (StateNode::Dir { children: ca }, StateNode::Dir { children: cb }) => {
            let names: std::collections::BTreeSet<&Vec<u8>> = ca.keys().chain(cb.keys()).collect();
            for name in names {
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push(b'/');
                }
                prefix.extend_from_slice(name);
                match (ca.get(name), cb.get(name)) {
                    (Some(x), Some(y)) => diff(x, y, prefix, out),
                    (Some(x), None) | (None, Some(x)) => leaves(x, prefix, out),
                    (None, None) => {}
                }
                prefix.truncate(len);
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn leaves(n: &StateNode, prefix: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) {
    match n {
        StateNode::Dir { children } => {
            for (name, child) in children {
                let len = prefix.len();
                prefix.push(b'/');
                prefix.extend_from_slice(name);
                leaves(child, prefix, out);
                prefix.truncate(len);
            }
        }
        _ => out.push(prefix.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &[u8]) -> StateNode {
        use sha2::Digest;
        StateNode::File {
            size: content.len() as u64,
            digest: sha2::Sha256::digest(content).into(),
        }
    }

    fn dir(entries: Vec<(&str, StateNode)>) -> StateNode {
        StateNode::Dir {
            children: entries
                .into_iter()
                .map(|(n, c)| (n.as_bytes().to_vec(), c))
                .collect(),
        }
    }

    #[test]
    fn hash_depends_on_names_kinds_and_bytes_only() {
        let a = dir(vec![
            ("x", file(b"1")),
            ("sub", dir(vec![("y", file(b"2"))])),
        ]);
        let same = dir(vec![
            ("sub", dir(vec![("y", file(b"2"))])),
            ("x", file(b"1")),
        ]);
        assert_eq!(a.hash(), same.hash(), "insertion order does not matter");
        let renamed = dir(vec![
            ("z", file(b"1")),
            ("sub", dir(vec![("y", file(b"2"))])),
        ]);
        let changed = dir(vec![
            ("x", file(b"1")),
            ("sub", dir(vec![("y", file(b"3"))])),
        ]);
        let link = dir(vec![
            (
                "x",
                StateNode::Symlink {
                    target: b"1".to_vec(),
                },
            ),
            ("sub", dir(vec![("y", file(b"2"))])),
        ]);
        for other in [&renamed, &changed, &link] {
            assert_ne!(a.hash(), other.hash());
        }
        assert_ne!(
            StateNode::empty_dir().hash(),
            dir(vec![("e", StateNode::empty_dir())]).hash()
        );
    }

    #[test]
    fn a_directory_hashes_its_entries_as_separate_parts_would() {
        let entries = [
            (&b"a"[..], b'f', Hash([1; 32])),
            (&b"bc"[..], b'd', Hash([2; 32])),
        ];
        let mut h = Hasher::new("hotpocket/state/dir");
        h.u64(2);
        for (name, kind, hash) in entries {
            h.bytes(name).bytes(&[kind]).hash(&hash);
        }
        assert_eq!(dir_hash(entries.into_iter()), h.finish());
    }

    #[test]
    fn from_files_builds_the_same_tree() {
        let t = StateNode::from_files([("kv/a", &b"1"[..]), ("top", &b"2"[..])]);
        let want = dir(vec![
            ("kv", dir(vec![("a", file(b"1"))])),
            ("top", file(b"2")),
        ]);
        assert_eq!(t.hash(), want.hash());
        let StateNode::File { digest, .. } = file(b"1") else {
            unreachable!()
        };
        assert_eq!(t.digest_at("kv/a"), Some(&digest));
        assert_eq!(t.digest_at("kv"), None, "a directory has no digest");
        assert_eq!(t.digest_at("kv/a/x"), None);
        assert_eq!(t.digest_at("nope"), None);
    }

    #[test]
    fn diff_walks_only_differing_subtrees() {
        let a = dir(vec![
            ("same", dir(vec![("big", file(b"x"))])),
            ("d", dir(vec![("f", file(b"1"))])),
            ("gone", file(b"g")),
        ]);
        let b = dir(vec![
            ("same", dir(vec![("big", file(b"x"))])),
            ("d", dir(vec![("f", file(b"2")), ("new", file(b"n"))])),
        ]);
        let paths: Vec<String> = a
            .differing_paths(&b)
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect();
        assert_eq!(paths, vec!["d/f", "d/new", "gone"]);
        assert!(a.differing_paths(&a).is_empty());
    }
}
