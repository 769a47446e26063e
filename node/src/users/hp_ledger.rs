//! hpcore's `ledger_query`: one ledger by its seq, with the caller's own
//! inputs in it if asked. The node answers from its stored chain; this
//! file reads the query and writes the answer, the store is the caller's.
//! And its `ledger_event` notifications: each ledger as it closes, and
//! the node's vote status as it changes, to users who subscribed.
//!
//! hpcore's ledgers carry fields this chain has no counterpart for
//! (`config_hash`, `user_hash`, `input_hash`): they are sent as zeros. Its
//! `state_hash` and `output_hash` are the certified result of the ledger's
//! run, which a later ledger carries: empty until one has. Outputs are not
//! kept after delivery, so `outputs` is always empty.

use super::hp::{ed_hex, input_name};
use crate::consensus::VoteStatus;
use crate::contract::{runnable, SignedInput, UserInput};
use crate::crypto::{Hash, PubKey};
use crate::ledger::{ExecResult, Ledger, LedgerRecord};
use serde_json::{json, Value};

/// A `ledger_query`; `seq` is `None` when the query is not one by a seq
/// this node can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: String,
    pub seq: Option<u64>,
    pub inputs: bool,
    pub outputs: bool,
}

/// What a node found for a query: the ledger, and its run's certified
/// result once a later ledger carries it.
pub struct Found {
    pub record: LedgerRecord,
    pub certified: Option<ExecResult>,
}

/// Reads a `ledger_query` message (hpcore filters by `seq_no` only).
pub fn query_of(v: &Value) -> Query {
    let includes = |what: &str| {
        (v.get("include").and_then(Value::as_array))
            .is_some_and(|l| l.iter().any(|i| i.as_str() == Some(what)))
    };
    let by_seq = v.get("filter_by").and_then(Value::as_str) == Some("seq_no");
    let seq = v.pointer("/params/seq_no").and_then(Value::as_u64);
    Query {
        id: (v.get("id").and_then(Value::as_str))
            .unwrap_or_default()
            .into(),
        seq: seq.filter(|_| by_seq),
        inputs: includes("inputs"),
        outputs: includes("outputs"),
    }
}

/// Why a query got no ledger, as hpcore's `error` field says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// Not a query by seq.
    BadQuery,
    /// The node could not read its chain.
    Failed,
    /// The node keeps no chain it can query.
    NotSupported,
}

/// The answer to `q` from `caller`: the ledger found, none (`Ok(None)`:
/// no such seq here), or why not.
pub fn result(q: &Query, caller: &PubKey, found: Result<Option<&Found>, QueryError>) -> String {
    let error = match found {
        Ok(_) => Value::Null,
        Err(QueryError::BadQuery) => "bad_msg_format".into(),
        Err(QueryError::Failed) => "exec_failure".into(),
        Err(QueryError::NotSupported) => "not_supported".into(),
    };
    let results: Vec<Value> = found
        .ok()
        .flatten()
        .map(|f| ledger(q, caller, f))
        .into_iter()
        .collect();
    json!({"type": "ledger_query_result", "reply_for": q.id, "error": error, "results": results})
        .to_string()
}

/// The nine fields hpcore's client reads of a ledger.
fn fields(ledger: &Ledger, hash: &Hash, certified: Option<&ExecResult>) -> Value {
    let zeros = hex::encode([0u8; 32]);
    let certified = |pick: fn(&ExecResult) -> String| certified.map_or(String::new(), pick);
    json!({
        "seq_no": ledger.seq,
        "timestamp": ledger.time,
        "hash": hex::encode(hash.0),
        "prev_hash": hex::encode(ledger.prev.0),
        "state_hash": certified(|c| hex::encode(c.state.0)),
        "config_hash": zeros,
        "user_hash": zeros,
        "input_hash": zeros,
        "output_hash": certified(|c| hex::encode(c.output.0)),
    })
}

/// `ledger_created`: ledger `hash` closed (its run not yet certified).
pub fn ledger_created(ledger: &Ledger, hash: &Hash) -> String {
    json!({"type": "ledger_event", "event": "ledger_created", "ledger": fields(ledger, hash, None)})
        .to_string()
}

/// `vote_status`: the node's view of its place in consensus changed.
pub fn vote_status_event(status: VoteStatus) -> String {
    let status = super::hp::vote_status_name(status);
    json!({"type": "ledger_event", "event": "vote_status", "vote_status": status}).to_string()
}

fn ledger(q: &Query, caller: &PubKey, f: &Found) -> Value {
    let r = &f.record;
    let mut out = fields(&r.ledger, &r.hash, f.certified.as_ref());
    if q.inputs {
        out["inputs"] = Value::Array(inputs_of(r, caller));
    }
    if q.outputs {
        out["outputs"] = Value::Array(vec![]);
    }
    out
}

/// The caller's inputs that ran in `r`, named as its client names them.
fn inputs_of(r: &LedgerRecord, caller: &PubKey) -> Vec<Value> {
    let seq = r.ledger.seq;
    (r.ledger.inputs.iter())
        .filter_map(|h| {
            let body = r.bodies.get(h)?;
            // Whose it is first: a signature is checked for the caller's
            // own inputs only, not for every input of a full ledger.
            let signed = SignedInput::decode(body);
            let user = match &signed {
                Some(s) => s.user,
                None => UserInput::decode(body)?.user,
            };
            if user != *caller {
                return None;
            }
            // Vouched inputs too: a ledger holds only those the network took.
            let input = runnable(body, seq, true)?;
            let name = signed.map_or(h.to_string(), |s| input_name(&s.sig));
            Some(json!({
                "pubkey": ed_hex(caller),
                "hash": name,
                "nonce": input.nonce,
                "blob": hex::encode(&input.payload),
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Stamper;
    use crate::crypto::{Hash, Keypair};

    #[test]
    fn a_query_is_read_by_seq_or_marked_bad() {
        let q = query_of(
            &json!({"type": "ledger_query", "id": "q", "filter_by": "seq_no",
            "params": {"seq_no": 7}, "include": ["inputs"]}),
        );
        assert_eq!((q.seq, q.inputs, q.outputs), (Some(7), true, false));
        let other = query_of(&json!({"id": "q", "filter_by": "hash", "params": {"seq_no": 7}}));
        assert_eq!(other.seq, None);
        let answer: Value =
            serde_json::from_str(&result(&other, &PubKey([0; 32]), Err(QueryError::BadQuery)))
                .unwrap();
        assert_eq!(answer["error"], "bad_msg_format");
        assert_eq!(answer["reply_for"], "q");
    }

    #[test]
    fn a_ledger_is_answered_with_the_callers_inputs_only() {
        let (me, other) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
        let c = r#"{"input":"mine","nonce":5,"max_ledger_seq_no":9}"#;
        let signed = SignedInput {
            user: me.public(),
            container: c.into(),
            sig: me.sign_raw(c.as_bytes()),
        };
        let theirs = Stamper::default().stamp(1, other.public(), b"theirs".to_vec());
        let mut record = LedgerRecord::genesis();
        record.ledger.seq = 4;
        for body in [signed.encode(), theirs] {
            let h = crate::contract::input_hash(&body);
            record.ledger.inputs.push(h);
            record.bodies.insert(h, body);
        }
        let found = Found {
            record,
            certified: Some(ExecResult {
                state: Hash([3; 32]),
                output: Hash([4; 32]),
            }),
        };
        let q = query_of(
            &json!({"id": "q", "filter_by": "seq_no", "params": {"seq_no": 4},
            "include": ["inputs", "outputs"]}),
        );
        let v: Value = serde_json::from_str(&result(&q, &me.public(), Ok(Some(&found)))).unwrap();
        assert_eq!(v["error"], Value::Null);
        let l = &v["results"][0];
        assert_eq!(l["seq_no"], 4);
        assert_eq!(l["state_hash"], hex::encode([3; 32]));
        let inputs = l["inputs"].as_array().unwrap();
        assert_eq!(inputs.len(), 1, "{inputs:?}");
        assert_eq!(inputs[0]["hash"], input_name(&signed.sig));
        assert_eq!(inputs[0]["blob"], hex::encode("mine"));
        assert_eq!(inputs[0]["nonce"], 5);
        assert_eq!(l["outputs"], json!([]));
        let none: Value = serde_json::from_str(&result(&q, &me.public(), Ok(None))).unwrap();
        assert_eq!(none["results"], json!([]));
    }
}
