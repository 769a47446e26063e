//! The user's side of hpcore's protocol, sans-IO: what `hotpocket client`
//! sends and how it checks what comes back, as the official client does.
//! The node's side is `hp.rs`.
//!
//! A user trusts some node keys. After the handshake it trusts the UNL the
//! first such node reports, and takes an output only when 80% of that UNL
//! signed the root its outputs fold to: it needs no trust in the node it
//! is connected to for outputs (statuses and reads are that node's word).

use super::hp::{ed_hex, input_name, parse_ed_hex};
use crate::contract::{leaf, B3};
use crate::crypto::{verify_raw, Keypair, PubKey, Sig};
use serde_json::{json, Value};

/// The share of the UNL whose signatures make an output trusted (the
/// official client's `outputValidationPassThreshold`), as a fraction.
pub const OUTPUT_SIGNERS: (usize, usize) = (4, 5);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("the node's first message is not a user_challenge: {0}")]
    NotAChallenge(String),
    #[error("the node serves contract {got:?}, not {want:?}")]
    OtherContract { want: String, got: String },
    #[error("the node's handshake answer is not a server_challenge_response: {0}")]
    BadServerResponse(String),
    #[error("the node's signature over our challenge does not verify")]
    BadServerSig,
    #[error("node {0} is not one of the keys trusted here")]
    Untrusted(String),
}

/// What the node's `user_challenge` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub challenge: String,
    pub contract_id: String,
    pub contract_version: String,
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

/// Reads the node's `user_challenge`; `contract`, if given, is the id the
/// user expects.
pub fn read_challenge(bytes: &[u8], contract: Option<&str>) -> Result<Challenge, ClientError> {
    let shown = || String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    let v: Value =
        serde_json::from_slice(bytes).map_err(|_| ClientError::NotAChallenge(shown()))?;
    let (Some("user_challenge"), Some(challenge), Some(id), Some(version)) = (
        field(&v, "type"),
        field(&v, "challenge"),
        field(&v, "contract_id"),
        field(&v, "contract_version"),
    ) else {
        return Err(ClientError::NotAChallenge(shown()));
    };
    if let Some(want) = contract.filter(|w| *w != id) {
        return Err(ClientError::OtherContract {
            want: want.to_string(),
            got: id.to_string(),
        });
    }
    Ok(Challenge {
        challenge: challenge.to_string(),
        contract_id: id.to_string(),
        contract_version: version.to_string(),
    })
}

/// The `user_challenge_response` to `c`, carrying `ours` (32 hex digits)
/// for the node to sign.
pub fn challenge_response(key: &Keypair, c: &Challenge, ours: &str) -> String {
    json!({
        "type": "user_challenge_response",
        "sig": key.sign_raw(c.challenge.as_bytes()).to_hex(),
        "pubkey": ed_hex(&key.public()),
        "server_challenge": ours,
        "protocol": "json",
    })
    .to_string()
}

/// Who the node proved to be, and the UNL it reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub node: PubKey,
    pub unl: Vec<PubKey>,
}

/// Checks the node's `server_challenge_response` to `ours`: its signature
/// over `ours`, the contract id and version; and, unless `trusted` is
/// empty (trust any node), that its key is trusted.
pub fn check_server(
    bytes: &[u8],
    c: &Challenge,
    ours: &str,
    trusted: &[PubKey],
) -> Result<Server, ClientError> {
    let bad = |why: &str| ClientError::BadServerResponse(why.to_string());
    let v: Value = serde_json::from_slice(bytes).map_err(|_| bad("not JSON"))?;
    if field(&v, "type") != Some("server_challenge_response") {
        return Err(bad("another type"));
    }
    let node = field(&v, "pubkey")
        .and_then(parse_ed_hex)
        .ok_or_else(|| bad("no \"pubkey\""))?;
    let sig = field(&v, "sig")
        .and_then(|s| Sig::from_hex(s).ok())
        .ok_or_else(|| bad("no \"sig\""))?;
    let signed = format!("{ours}{}{}", c.contract_id, c.contract_version);
    verify_raw(&node, signed.as_bytes(), &sig).map_err(|_| ClientError::BadServerSig)?;
    if !trusted.is_empty() && !trusted.contains(&node) {
        return Err(ClientError::Untrusted(ed_hex(&node)));
    }
    let unl = (v.get("unl").and_then(Value::as_array))
        .ok_or_else(|| bad("no \"unl\""))?
        .iter()
        .map(|k| k.as_str().and_then(parse_ed_hex))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("a UNL key that is not \"ed\" and 64 hex digits"))?;
    Ok(Server { node, unl })
}

/// The nonce after `prev` at `now_ms`: the clock, scaled so that many in
/// one ms stay apart, and always above the last.
pub fn next_nonce(prev: u64, now_ms: u64) -> u64 {
    now_ms.saturating_mul(1024).max(prev + 1)
}

/// A `contract_input` of `input`, and the name its statuses will carry.
pub fn input_message(key: &Keypair, input: &str, nonce: u64, max_ledger: u64) -> (String, String) {
    let container =
        json!({"input": input, "nonce": nonce, "max_ledger_seq_no": max_ledger}).to_string();
    let sig = key.sign_raw(container.as_bytes());
    let name = input_name(&sig);
    let msg = json!({"type": "contract_input", "input_container": container, "sig": sig.to_hex()});
    (msg.to_string(), name)
}

pub fn read_request(id: &str, content: &str) -> String {
    json!({"type": "contract_read_request", "id": id, "content": content}).to_string()
}

pub fn ledger_query(id: &str, seq: u64) -> String {
    json!({
        "type": "ledger_query",
        "id": id,
        "filter_by": "seq_no",
        "params": {"seq_no": seq},
        "include": ["inputs", "outputs"],
    })
    .to_string()
}

/// `{"type": kind}`: `stat`, `lcl`.
pub fn plain_request(kind: &str) -> String {
    json!({ "type": kind }).to_string()
}

/// A `contract_output` whose proof holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub seq: u64,
    pub ledger_hash: String,
    pub outputs: Vec<String>,
    /// UNL members with a valid signature over the root.
    pub signers: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutputError {
    #[error("not a well-formed contract_output: {0}")]
    Malformed(&'static str),
    #[error("the output hash is not that of this user's outputs")]
    Hash,
    #[error("the hash tree does not hold this user's leaf exactly once")]
    Tree,
    #[error("{signers} of the {unl} UNL members signed the root: under 80%")]
    TooFewSigners { signers: usize, unl: usize },
}

/// The root of a collapsed `hash_tree`, `null` standing for `mine`: None
/// unless `null` is found exactly once (the official client's fold).
fn fold(tree: &[Value], mine: &B3, found: &mut bool) -> Option<B3> {
    let mut h = blake3::Hasher::new();
    for elem in tree {
        match elem {
            Value::Array(sub) => {
                h.update(&fold(sub, mine, found)?);
            }
            Value::Null if *found => return None,
            Value::Null => {
                *found = true;
                h.update(mine);
            }
            Value::String(s) => {
                let bytes: B3 = hex::decode(s).ok()?.try_into().ok()?;
                h.update(&bytes);
            }
            _ => return None,
        }
    }
    Some(*h.finalize().as_bytes())
}

/// Checks a `contract_output` for `user` against `unl`, as the official
/// client does: the output hash over the outputs as received, the tree
/// folding to a root, and 80% of the UNL's keys signing that root.
pub fn verify_output(v: &Value, user: &PubKey, unl: &[PubKey]) -> Result<Output, OutputError> {
    let m = OutputError::Malformed;
    let outputs = (v.get("outputs").and_then(Value::as_array))
        .ok_or(m("no outputs"))?
        .iter()
        .map(|o| o.as_str().map(String::from))
        .collect::<Option<Vec<_>>>()
        .ok_or(m("an output that is not a string"))?;
    let mine = leaf(user, &outputs);
    if field(v, "output_hash") != Some(hex::encode(mine).as_str()) {
        return Err(OutputError::Hash);
    }
    let tree = v.get("hash_tree").and_then(Value::as_array);
    let mut found = false;
    let root = fold(tree.ok_or(m("no hash_tree"))?, &mine, &mut found)
        .filter(|_| found)
        .ok_or(OutputError::Tree)?;
    let mut signed: Vec<PubKey> = Vec::new();
    for pair in (v.get("unl_sig").and_then(Value::as_array)).ok_or(m("no unl_sig"))? {
        let (Some(k), Some(s)) = (
            pair.get(0).and_then(Value::as_str).and_then(parse_ed_hex),
            (pair.get(1).and_then(Value::as_str)).and_then(|s| Sig::from_hex(s).ok()),
        ) else {
            continue;
        };
        if unl.contains(&k) && !signed.contains(&k) && verify_raw(&k, &root, &s).is_ok() {
            signed.push(k);
        }
    }
    let (num, den) = OUTPUT_SIGNERS;
    if unl.is_empty() || signed.len() * den < unl.len() * num {
        return Err(OutputError::TooFewSigners {
            signers: signed.len(),
            unl: unl.len(),
        });
    }
    Ok(Output {
        seq: v
            .get("ledger_seq_no")
            .and_then(Value::as_u64)
            .ok_or(m("no ledger_seq_no"))?,
        ledger_hash: field(v, "ledger_hash").unwrap_or_default().to_string(),
        outputs,
        signers: signed.len(),
    })
}

#[cfg(test)]
#[path = "hp_client_tests.rs"]
mod tests;
