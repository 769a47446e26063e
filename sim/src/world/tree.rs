//! The simulated state's Merkle tree, with every directory's hash kept, so
//! a run that changes a few files re-hashes only the directories on their
//! paths instead of the whole state (hundreds of files after every run, on
//! every node).
//!
//! Its hash is [`StateNode`]'s for the same files, by construction where
//! that is simple: every path plain (`a/b`, no empty or `.` parts) and no
//! file standing where another path needs a directory. Anything else (a
//! contract may write such paths) rebuilds the tree from the files, with
//! `StateNode::from_digests`'s rules, as it always did.

use hotpocket_contract::{Changes, MemState};
use hotpocket_node::contract::{dir_hash, file_leaf, StateNode};
use hotpocket_node::crypto::Hash;
use sha2::Digest;
use std::collections::BTreeMap;

#[derive(Clone)]
enum Node {
    File {
        size: u64,
        digest: [u8; 32],
        leaf: Hash,
    },
    /// `hash` is `None` while a change below it waits to be hashed.
    Dir {
        children: BTreeMap<Vec<u8>, Node>,
        hash: Option<Hash>,
    },
}

/// A change the incremental path does not take: rebuild instead.
struct Conflict;

#[derive(Clone)]
pub struct Tree {
    root: Node,
    /// Every file of the state is a leaf of its own (plain paths, none
    /// shadowing another): the condition for updating in place.
    exact: bool,
}

fn plain(path: &str) -> bool {
    path.split('/').all(|p| !p.is_empty() && p != ".")
}

fn empty_dir() -> Node {
    Node::Dir {
        children: BTreeMap::new(),
        hash: None,
    }
}

fn file(bytes: &[u8]) -> Node {
    let digest: [u8; 32] = sha2::Sha256::digest(bytes).into();
    let size = bytes.len() as u64;
    Node::File {
        size,
        digest,
        leaf: file_leaf(size, &digest),
    }
}

impl Node {
    fn kind(&self) -> u8 {
        match self {
            Node::File { .. } => b'f',
            Node::Dir { .. } => b'd',
        }
    }

    /// The hash, computing (and keeping) those of directories changed
    /// since the last call.
    fn rehash(&mut self) -> Hash {
        match self {
            Node::File { leaf, .. } => *leaf,
            Node::Dir { children, hash } => {
                if let Some(h) = hash {
                    return *h;
                }
                for c in children.values_mut() {
                    c.rehash();
                }
                let h = dir_hash(
                    children
                        .iter()
                        .map(|(n, c)| (n.as_slice(), c.kind(), c.hash())),
                );
                *hash = Some(h);
                h
            }
        }
    }

    /// The hash as last computed (`rehash` has run since any change).
    fn hash(&self) -> Hash {
        match self {
            Node::File { leaf, .. } => *leaf,
            Node::Dir { hash, .. } => hash.expect("rehashed after every change"),
        }
    }

    /// Puts `leaf` (or removes the file, for `None`) at `parts`, marking
    /// the directories on the way stale and dropping ones left empty.
    fn set(&mut self, parts: &[&str], leaf: Option<Node>) -> Result<(), Conflict> {
        let Node::Dir { children, hash } = self else {
            return Err(Conflict);
        };
        *hash = None;
        match parts {
            [] => Err(Conflict),
            [name] => {
                let name = name.as_bytes();
                match (children.get(name), leaf) {
                    (Some(Node::Dir { .. }), _) => Err(Conflict),
                    (_, Some(leaf)) => {
                        children.insert(name.to_vec(), leaf);
                        Ok(())
                    }
                    (_, None) => {
                        children.remove(name);
                        Ok(())
                    }
                }
            }
            [first, rest @ ..] => {
                let name = first.as_bytes();
                if leaf.is_none() && !children.contains_key(name) {
                    return Ok(()); // removing what is not there
                }
                let child = children.entry(name.to_vec()).or_insert_with(empty_dir);
                child.set(rest, leaf)?;
                if matches!(child, Node::Dir { children, .. } if children.is_empty()) {
                    children.remove(name);
                }
                Ok(())
            }
        }
    }

    fn to_state_node(&self) -> StateNode {
        match self {
            Node::File { size, digest, .. } => StateNode::File {
                size: *size,
                digest: *digest,
            },
            Node::Dir { children, .. } => StateNode::Dir {
                children: children
                    .iter()
                    .map(|(n, c)| (n.clone(), c.to_state_node()))
                    .collect(),
            },
        }
    }

    fn leaves(&self) -> usize {
        match self {
            Node::File { .. } => 1,
            Node::Dir { children, .. } => children.values().map(Node::leaves).sum(),
        }
    }
}

impl Tree {
    /// The tree of `files`, built whole.
    pub fn of(files: &MemState) -> Tree {
        let mut root = empty_dir();
        let mut exact = true;
        for (path, bytes) in &files.0 {
            exact &= plain(path);
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            // StateNode::from_digests's rules: a later path replaces an
            // earlier one at the same place, a file where a directory is
            // needed stays (and the path is lost).
            if insert(&mut root, &parts, file(bytes)).is_err() {
                exact = false;
            }
        }
        root.rehash();
        let exact = exact && root.leaves() == files.0.len();
        Tree { root, exact }
    }

    pub fn hash(&self) -> Hash {
        self.root.hash()
    }

    /// `files` after `changes` were made to it (the files this tree was of,
    /// then `changes`): re-hashes the changed paths only, or rebuilds.
    pub fn update(&mut self, files: &MemState, changes: &Changes) {
        if self.exact && changes.keys().all(|p| plain(p)) {
            let applied = changes.iter().try_for_each(|(path, bytes)| {
                let parts: Vec<&str> = path.split('/').collect();
                self.root.set(&parts, bytes.as_deref().map(file))
            });
            if applied.is_ok() {
                self.root.rehash();
                return;
            }
        }
        *self = Tree::of(files);
    }

    pub fn to_state_node(&self) -> StateNode {
        self.root.to_state_node()
    }
}

/// `StateNode`'s insert: `Err` where a file stands in the way.
fn insert(dir: &mut Node, parts: &[&str], leaf: Node) -> Result<(), Conflict> {
    let Node::Dir { children, .. } = dir else {
        return Err(Conflict);
    };
    match parts {
        [] => Ok(()),
        [name] => {
            children.insert(name.as_bytes().to_vec(), leaf);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = children
                .entry(first.as_bytes().to_vec())
                .or_insert_with(empty_dir);
            insert(entry, rest, leaf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    fn reference(files: &MemState) -> Hash {
        StateNode::from_files(files.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).hash()
    }

    /// Random runs over paths that include every awkward kind (a file
    /// where a directory goes, `a//b`, `./`, deep paths, removals of what
    /// is not there): after each, the kept tree hashes as one built whole.
    #[test]
    fn updates_hash_like_a_tree_built_whole() {
        let paths = [
            "kv/a",
            "kv/b",
            "kv/c",
            "kv",
            "kv/a/x",
            "deep/1/2/3",
            "deep/1/2/4",
            "deep/1",
            "top",
            "a//b",
            "a/b",
            "./c",
            "c",
            "kv/d",
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..40 {
            let mut files = MemState::default();
            let mut tree = Tree::of(&files);
            for _ in 0..30 {
                let mut changes = Changes::new();
                // Mostly plain paths, as the kv contract writes.
                let pool = if rng.next_u32() % 4 == 0 {
                    &paths[..]
                } else {
                    &paths[..3]
                };
                for _ in 0..1 + rng.next_u32() % 4 {
                    let p = pool[rng.next_u32() as usize % pool.len()].to_string();
                    let v =
                        (rng.next_u32() % 3 != 0).then(|| rng.next_u32().to_le_bytes().to_vec());
                    changes.insert(p, v);
                }
                for (p, v) in &changes {
                    match v {
                        Some(v) => files.0.insert(p.clone(), v.clone()),
                        None => files.0.remove(p),
                    };
                }
                tree.update(&files, &changes);
                assert_eq!(tree.hash(), reference(&files), "{:?}", files.0.keys());
                assert_eq!(tree.to_state_node().hash(), reference(&files));
            }
        }
    }

    #[test]
    fn plain_states_update_in_place() {
        let mut files = MemState::default();
        files.0.insert("kv/a".into(), b"1".to_vec());
        let mut tree = Tree::of(&files);
        assert!(tree.exact);
        let changes = Changes::from([("kv/b".to_string(), Some(b"2".to_vec()))]);
        files.0.insert("kv/b".into(), b"2".to_vec());
        tree.update(&files, &changes);
        assert!(tree.exact);
        assert_eq!(tree.hash(), reference(&files));
        // A file where a directory is: the tree is rebuilt, and says so.
        let changes = Changes::from([("kv/a/x".to_string(), Some(b"3".to_vec()))]);
        files.0.insert("kv/a/x".into(), b"3".to_vec());
        tree.update(&files, &changes);
        assert!(!tree.exact);
        assert_eq!(tree.hash(), reference(&files));
    }
}
