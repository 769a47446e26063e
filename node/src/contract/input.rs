//! A user's input as it travels through consensus, and how a closed
//! ledger's inputs become one contract run.

use super::{RunRequest, SignedInput};
use crate::crypto::{Hash, PubKey};
use crate::ledger::LedgerRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The hash that names an input body in proposals and ledgers.
pub fn input_hash(body: &[u8]) -> Hash {
    Hash::of("hotpocket/input/v1", &[body])
}

/// The body the UNL agrees on: who sent it, a nonce, and what they sent.
/// The ledger names it by `input_hash` of this encoding.
///
/// The nonce keeps two equal messages from one user apart (each is its own
/// input) and orders a user's inputs the way the node that took them
/// received them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInput {
    pub user: PubKey,
    pub nonce: u64,
    pub payload: Vec<u8>,
}

impl UserInput {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding to memory cannot fail")
    }

    /// `None` for anything that is not exactly one encoded input: a
    /// byzantine node can get any bytes agreed on, and every honest node
    /// must then skip them the same way.
    pub fn decode(bytes: &[u8]) -> Option<UserInput> {
        match postcard::take_from_bytes::<UserInput>(bytes) {
            Ok((input, [])) => Some(input),
            _ => None,
        }
    }
}

/// Gives the inputs a node takes from its users their nonces: the node's
/// clock in ms times 1024, then counting up, so nonces grow even across a
/// restart (unless the clock steps back by more than the node's downtime).
#[derive(Debug, Default)]
pub struct Stamper {
    last: u64,
}

impl Stamper {
    /// The consensus body for `payload` from `user`, received at `now_ms`.
    pub fn stamp(&mut self, now_ms: u64, user: PubKey, payload: Vec<u8>) -> Vec<u8> {
        let nonce = now_ms.saturating_mul(1024).max(self.last + 1);
        self.last = nonce;
        UserInput {
            user,
            nonce,
            payload,
        }
        .encode()
    }
}

/// What orders a signed input among its user's: who signed it, its nonce,
/// and the last ledger it may go into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signer {
    pub user: PubKey,
    pub nonce: u64,
    pub last: u64,
}

/// The signer of a signed input whose signature and container hold.
pub fn signer(body: &[u8]) -> Option<Signer> {
    let signed = SignedInput::decode_marked(body)?.ok()?;
    let c = signed.open().ok()?;
    Some(Signer {
        user: signed.user,
        nonce: c.nonce,
        last: c.max_ledger_seq_no,
    })
}

/// The last ledger `body` may go into (a signed input's
/// `max_ledger_seq_no`, no limit for a vouched one), and its signer if it
/// is signed; `None` for a signed input whose signature or container does
/// not hold, or any vouched one when the network takes none (`vouched`
/// false): no honest node pools or proposes those.
pub fn admissible(body: &[u8], vouched: bool) -> Option<(u64, Option<Signer>)> {
    match SignedInput::decode_marked(body) {
        None => vouched.then_some((u64::MAX, None)),
        Some(_) => signer(body).map(|s| (s.last, Some(s))),
    }
}

/// The last ledger of [`admissible`].
pub fn last_ledger(body: &[u8], vouched: bool) -> Option<u64> {
    admissible(body, vouched).map(|(last, _)| last)
}

/// A body of ledger `seq` as it runs: its user, nonce and payload; `None`
/// for a body every node skips the same way: one that is not an input, a
/// signed input whose signature or container does not hold, one past its
/// `max_ledger_seq_no`, or a vouched one on a network that takes none
/// (`vouched` false: the node that took it is all that vouches for it).
pub fn runnable(body: &[u8], seq: u64, vouched: bool) -> Option<UserInput> {
    // Signed first: a signed body can also read as a vouched input under a
    // key that begins with the signed kind's mark, which nobody holds.
    let Some(signed) = SignedInput::decode_marked(body) else {
        return UserInput::decode(body).filter(|_| vouched);
    };
    let signed = signed.ok()?;
    let c = signed.open().ok()?;
    (seq <= c.max_ledger_seq_no).then(|| UserInput {
        user: signed.user,
        nonce: c.nonce,
        payload: c.input.into_bytes(),
    })
}

impl RunRequest {
    /// The run of a closed ledger: each user's inputs in nonce order (ties
    /// by input hash). Bodies that do not run (see [`runnable`]), and bodies
    /// the record lacks, are left out; the node runs a ledger only once it
    /// has every body, so all nodes leave out the same ones. `vouched`:
    /// whether the network takes vouched inputs (`ConsensusConfig`).
    pub fn for_ledger(
        record: &LedgerRecord,
        node: PubKey,
        unl: &[PubKey],
        vouched: bool,
    ) -> RunRequest {
        let mut per_user: BTreeMap<PubKey, Vec<(u64, Hash, Vec<u8>)>> = BTreeMap::new();
        let seq = record.ledger.seq;
        for h in &record.ledger.inputs {
            let Some(input) = record.bodies.get(h).and_then(|b| runnable(b, seq, vouched)) else {
                continue;
            };
            per_user
                .entry(input.user)
                .or_default()
                .push((input.nonce, *h, input.payload));
        }
        let inputs = per_user
            .into_iter()
            .map(|(user, mut v)| {
                v.sort_by_key(|(nonce, h, _)| (*nonce, *h));
                (user, v.into_iter().map(|(_, _, p)| p).collect())
            })
            .collect();
        RunRequest {
            seq: record.ledger.seq,
            lcl: record.hash,
            time_ms: record.ledger.time,
            node,
            unl: unl.to_vec(),
            // Only a value some secret went into: without one it is a
            // function of the chain, predictable to anyone.
            rand: (record.ledger.beacon.outcome.as_ref())
                .filter(|o| o.is_random())
                .map(|o| o.value),
            contract_seed: None,
            inputs,
            readonly: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::input_hash;

    #[test]
    fn inputs_reach_their_user_in_nonce_order_and_junk_is_skipped() {
        let (a, b) = (PubKey([1; 32]), PubKey([2; 32]));
        let mut stamp = Stamper::default();
        let bodies = vec![
            stamp.stamp(5, a, b"first".to_vec()),
            stamp.stamp(5, b, b"other".to_vec()),
            stamp.stamp(5, a, b"second".to_vec()),
            stamp.stamp(4, a, b"third".to_vec()), // clock stepped back
            b"not an input".to_vec(),
        ];
        let mut record = LedgerRecord::genesis();
        record.ledger.seq = 3;
        for body in bodies {
            let h = input_hash(&body);
            record.ledger.inputs.push(h);
            record.bodies.insert(h, body);
        }
        record.ledger.inputs.sort();
        let req = RunRequest::for_ledger(&record, a, &[a, b], true);
        assert_eq!(req.seq, 3);
        let got: Vec<&[u8]> = req.inputs[&a].iter().map(|v| v.as_slice()).collect();
        assert_eq!(got, [&b"first"[..], b"second", b"third"]);
        assert_eq!(req.inputs[&b], vec![b"other".to_vec()]);
        assert_eq!(req.inputs.len(), 2);
        // A network that takes signed inputs only runs none of these.
        let signed_only = RunRequest::for_ledger(&record, a, &[a, b], false);
        assert!(signed_only.inputs.is_empty());
    }

    #[test]
    fn signed_inputs_run_until_their_max_ledger_and_forged_ones_never() {
        use crate::crypto::Keypair;
        let key = Keypair::from_seed([3; 32]);
        let user = key.public();
        let sign = |c: &str| SignedInput {
            user,
            container: c.to_string(),
            sig: key.sign_raw(c.as_bytes()),
        };
        let late = sign(r#"{"input":"late","nonce":1,"max_ledger_seq_no":4}"#);
        let on_time = sign(r#"{"input":"b","nonce":3,"max_ledger_seq_no":5}"#);
        let first = sign(r#"{"input":"a","nonce":2,"max_ledger_seq_no":9}"#);
        let mut forged = sign(r#"{"input":"forged","nonce":0,"max_ledger_seq_no":9}"#);
        forged.sig = Keypair::from_seed([4; 32]).sign_raw(forged.container.as_bytes());
        let mut record = LedgerRecord::genesis();
        record.ledger.seq = 5;
        for body in [&late, &on_time, &first, &forged].map(SignedInput::encode) {
            let h = input_hash(&body);
            record.ledger.inputs.push(h);
            record.bodies.insert(h, body);
        }
        record.ledger.inputs.sort();
        let req = RunRequest::for_ledger(&record, user, &[user], true);
        assert_eq!(req.inputs[&user], vec![b"a".to_vec(), b"b".to_vec()]);
        // A network that takes signed inputs only runs the same.
        let req = RunRequest::for_ledger(&record, user, &[user], false);
        assert_eq!(req.inputs[&user], vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn a_marked_body_never_runs_as_a_vouched_input() {
        // A vouched input whose key starts with the signed kind's mark
        // (which no one can hold) reads as a vouched input, and is marked.
        let mut key = [0u8; 32];
        key[..28].copy_from_slice(b"\0hotpocket/signed-input/v1\0\0");
        let body = UserInput {
            user: PubKey(key),
            nonce: 1,
            payload: b"x".to_vec(),
        }
        .encode();
        assert!(UserInput::decode(&body).is_some());
        assert!(SignedInput::decode_marked(&body).is_some());
        assert_eq!(runnable(&body, 1, true), None);
    }

    #[test]
    fn equal_payloads_are_distinct_inputs_and_trailing_bytes_are_refused() {
        let mut stamp = Stamper::default();
        let x = stamp.stamp(1, PubKey([1; 32]), b"inc".to_vec());
        let y = stamp.stamp(1, PubKey([1; 32]), b"inc".to_vec());
        assert_ne!(input_hash(&x), input_hash(&y));
        let mut long = x.clone();
        long.push(0);
        assert!(UserInput::decode(&x).is_some());
        assert!(UserInput::decode(&long).is_none());
    }
}
