//! Outputs as hpcore's client verifies them: each user's output hash, a
//! BLAKE3 tree over every user's output hash of one run, and UNL members'
//! signatures over its root. A user given its own outputs, the tree with
//! its own leaf left out and the signatures checks that a threshold of the
//! UNL signed a root its outputs are part of, without trusting its node.
//!
//! The tree is hpcore's: blocks of 16 hashes, each parent BLAKE3 of its
//! children's hashes laid end to end, a block of one standing for itself.
//! Its leaves are the users with an output, in key order, then one leaf
//! binding the tree to the run: its seq, its ledger and the output hash the
//! ledger after it certifies (hpcore puts the state hash there).

use super::RunResult;
use crate::crypto::{Hash, Keypair, PubKey, Sig};
use serde_json::Value;

/// A BLAKE3 hash, as hpcore's client reads it.
pub type B3 = [u8; 32];

/// One user's output hash: BLAKE3 of `0xED`, the key, then each output.
pub fn leaf(user: &PubKey, outputs: &[String]) -> B3 {
    let mut h = blake3::Hasher::new();
    h.update(&[0xED]).update(&user.0);
    for o in outputs {
        h.update(o.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// One output message as the string hpcore's client hashes: the client
/// hashes strings as UTF-8, so bytes that are not are made so (every node
/// the same way).
pub fn output_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `user`'s outputs of `run` as its client gets them: one string a
/// message (`RunResult::messages`), none when it has nothing.
pub fn output_texts(run: &RunResult, user: &PubKey) -> Vec<String> {
    run.messages(user).into_iter().map(output_text).collect()
}

enum Node {
    Leaf(B3),
    Inner(B3, Vec<Node>),
}

impl Node {
    fn hash(&self) -> &B3 {
        match self {
            Node::Leaf(h) | Node::Inner(h, _) => h,
        }
    }

    /// The node as the user sees it: its hash, unless the user's own leaf
    /// is under it; then its children, that leaf as `null`.
    fn view(&self, mine: &B3) -> Option<Value> {
        match self {
            Node::Leaf(h) => (h == mine).then_some(Value::Null),
            Node::Inner(_, kids) => {
                let at = kids.iter().position(|k| k.view(mine).is_some())?;
                let shown = kids.iter().enumerate().map(|(i, k)| match i == at {
                    true => k.view(mine).expect("found above"),
                    false => Value::String(hex::encode(k.hash())),
                });
                Some(Value::Array(shown.collect()))
            }
        }
    }
}

/// The tree over one run's outputs.
pub struct OutputTree {
    root: Node,
}

impl OutputTree {
    /// The tree of `run`, ledger `seq` with hash `ledger`.
    pub fn of(run: &RunResult, seq: u64, ledger: &Hash) -> OutputTree {
        let mut leaves: Vec<B3> = (run.outputs.keys())
            .map(|user| (user, output_texts(run, user)))
            .filter(|(_, texts)| !texts.is_empty())
            .map(|(user, texts)| leaf(user, &texts))
            .collect();
        let bind = Hash::of(
            "hotpocket/hp-outputs/v1",
            &[&seq.to_be_bytes(), &ledger.0, &run.output_hash().0],
        );
        leaves.push(bind.0);
        OutputTree::from_leaves(leaves)
    }

    fn from_leaves(leaves: Vec<B3>) -> OutputTree {
        let mut level: Vec<Node> = leaves.into_iter().map(Node::Leaf).collect();
        while level.len() > 1 {
            let mut parents = Vec::with_capacity(level.len().div_ceil(16));
            let mut rest = level.into_iter().peekable();
            while rest.peek().is_some() {
                let mut block: Vec<Node> = rest.by_ref().take(16).collect();
                if block.len() == 1 {
                    parents.push(block.pop().expect("one"));
                    continue;
                }
                let mut h = blake3::Hasher::new();
                block.iter().for_each(|n| {
                    h.update(n.hash());
                });
                parents.push(Node::Inner(*h.finalize().as_bytes(), block));
            }
            level = parents;
        }
        OutputTree {
            root: level.pop().expect("the binding leaf is always there"),
        }
    }

    /// What UNL members sign.
    pub fn root(&self) -> B3 {
        *self.root.hash()
    }

    /// The tree as the user with output hash `mine` is given it; `None`
    /// if it has no leaf here.
    pub fn for_user(&self, mine: &B3) -> Option<Value> {
        self.root.view(mine).filter(Value::is_array)
    }

    /// This node's signature over the root: raw, as the client checks it.
    /// Every other signature the node makes is over a `hotpocket/...`
    /// domain, which a BLAKE3 output cannot be chosen to equal.
    pub fn sign(&self, key: &Keypair) -> Sig {
        key.sign_raw(&self.root())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{RunOutcome, UserIo};
    use std::collections::BTreeMap;

    /// The client's fold: an array is BLAKE3 of its folded children laid
    /// end to end, a hex string its bytes, `null` the user's own hash.
    fn fold(v: &Value, mine: &B3, seen: &mut usize) -> Vec<u8> {
        match v {
            Value::Null => {
                *seen += 1;
                mine.to_vec()
            }
            Value::String(s) => hex::decode(s).unwrap(),
            Value::Array(items) => {
                let mut h = blake3::Hasher::new();
                for i in items {
                    h.update(&fold(i, mine, seen));
                }
                h.finalize().as_bytes().to_vec()
            }
            other => panic!("not in a tree: {other}"),
        }
    }

    fn run_of(users: u8) -> RunResult {
        let outputs: BTreeMap<PubKey, Vec<u8>> = (0..users)
            .map(|i| (PubKey([i; 32]), format!("out {i}").into_bytes()))
            .chain([(PubKey([250; 32]), vec![])])
            .collect();
        RunResult {
            outcome: RunOutcome::Exited(Some(0)),
            outputs,
            io: UserIo::Raw,
        }
    }

    #[test]
    fn every_user_folds_its_tree_to_the_signed_root() {
        for users in [1u8, 2, 15, 16, 17, 40, 241] {
            let run = run_of(users);
            let tree = OutputTree::of(&run, 9, &Hash([9; 32]));
            for i in 0..users {
                let mine = leaf(&PubKey([i; 32]), &[format!("out {i}")]);
                let view = tree.for_user(&mine).expect("has a leaf");
                let mut seen = 0;
                assert_eq!(
                    fold(&view, &mine, &mut seen),
                    tree.root().to_vec(),
                    "{users}/{i}"
                );
                assert_eq!(seen, 1);
            }
            let silent = leaf(&PubKey([250; 32]), &[String::new()]);
            assert!(tree.for_user(&silent).is_none(), "no output, no leaf");
        }
    }

    #[test]
    fn framed_outputs_are_one_leaf_over_every_message() {
        let mut out = Vec::new();
        for m in [&b"ok a"[..], b"ok b"] {
            UserIo::Framed.put(m, &mut out);
        }
        let mut run = run_of(3);
        run.io = UserIo::Framed;
        run.outputs.insert(PubKey([1; 32]), out.clone());
        // Bytes that hold no whole frame are no output.
        run.outputs.insert(PubKey([2; 32]), vec![0, 0, 0, 9]);
        let tree = OutputTree::of(&run, 9, &Hash([9; 32]));
        let texts = output_texts(&run, &PubKey([1; 32]));
        assert_eq!(texts, ["ok a", "ok b"]);
        let mine = leaf(&PubKey([1; 32]), &texts);
        let view = tree.for_user(&mine).expect("has a leaf");
        assert_eq!(fold(&view, &mine, &mut 0), tree.root().to_vec());
        assert!(output_texts(&run, &PubKey([2; 32])).is_empty());
        // Read raw, the same bytes are one message, another leaf.
        run.io = UserIo::Raw;
        let raw = leaf(&PubKey([1; 32]), &output_texts(&run, &PubKey([1; 32])));
        assert_ne!(raw, mine);
    }

    #[test]
    fn the_root_binds_the_run_its_ledger_and_every_output() {
        let run = run_of(3);
        let root = |run: &RunResult, seq, l| OutputTree::of(run, seq, &Hash([l; 32])).root();
        let base = root(&run, 9, 9);
        assert_ne!(base, root(&run, 10, 9));
        assert_ne!(base, root(&run, 9, 8));
        let mut other = run.clone();
        other.outputs.insert(PubKey([1; 32]), b"changed".to_vec());
        assert_ne!(base, root(&other, 9, 9));
    }

    #[test]
    fn bytes_that_are_not_utf8_become_text_the_same_way_everywhere() {
        assert_eq!(output_text(b"ok \xff"), "ok \u{fffd}");
        assert_eq!(output_text("héllo ✓".as_bytes()), "héllo ✓");
    }
}
