//! hpcore's user protocol (hpcore 0.6; what the official client library
//! `hotpocket-js-client` speaks), sans-IO: its messages, the checks and
//! signatures of its handshake, and its input statuses. JSON text, sent in
//! binary websocket frames: the client in a browser decodes no other kind.
//!
//! The handshake: the node sends `user_challenge`; the user answers
//! `user_challenge_response`, signing the challenge's hex text and sending a
//! challenge of its own; the node answers `server_challenge_response`,
//! signing that challenge followed by the contract's id and version, with
//! its UNL, which a client that trusts this node's key then trusts.

use crate::contract::{Container, SignedInput, SignedInputError};
use crate::crypto::{verify_raw, Keypair, PubKey, Sig};
use crate::ledger::LedgerId;
use serde_json::{json, Value};

/// The version the client requires (it accepts any `0.6.` one).
pub const HP_VERSION: &str = "0.6.4";

/// Who the node says it is in hpcore's handshake.
#[derive(Clone)]
pub struct HpNode {
    pub key: Keypair,
    pub contract_id: String,
    pub contract_version: String,
    pub unl: Vec<PubKey>,
}

impl std::fmt::Debug for HpNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HpNode")
            .field("key", &self.key.public())
            .field("contract_id", &self.contract_id)
            .field("contract_version", &self.contract_version)
            .finish()
    }
}

/// A key as hpcore writes it: `ed` and 64 hex digits.
pub fn ed_hex(key: &PubKey) -> String {
    format!("ed{}", key.to_hex())
}

/// A key written as [`ed_hex`] does, in lower case.
pub fn parse_ed_hex(s: &str) -> Option<PubKey> {
    let hex = s.strip_prefix("ed")?;
    (hex.len() == 64 && super::is_lower_hex(hex)).then(|| PubKey::from_hex(hex).ok())?
}

/// The node's first message: the challenge, and what it serves.
pub fn user_challenge(node: &HpNode, challenge: &str) -> String {
    json!({
        "hp_version": HP_VERSION,
        "type": "user_challenge",
        "contract_id": node.contract_id,
        "contract_version": node.contract_version,
        "challenge": challenge,
    })
    .to_string()
}

/// Checks a `user_challenge_response` to `challenge`: the user's key and
/// its signature over the challenge text. Returns the user and the
/// `server_challenge_response` to send.
///
/// The user's own challenge must be 32 hex digits, as the client makes it:
/// the node signs it raw, so a user choosing it freely could have the node
/// sign any text that ends in the contract's id and version.
pub fn accept_user(
    node: &HpNode,
    challenge: &str,
    bytes: &[u8],
) -> Result<(PubKey, String), String> {
    let msg: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("user_challenge_response is not valid JSON: {e}"))?;
    let field = |name: &str| msg.get(name).and_then(Value::as_str);
    let user = field("pubkey")
        .and_then(parse_ed_hex)
        .ok_or("user_challenge_response needs \"pubkey\": \"ed\" and 64 lower-case hex digits")?;
    let sig = field("sig")
        .and_then(|s| Sig::from_hex(s).ok())
        .ok_or("user_challenge_response needs \"sig\": 128 hex digits")?;
    verify_raw(&user, challenge.as_bytes(), &sig)
        .map_err(|_| "signature does not verify: sign the challenge text with the pubkey's key")?;
    let theirs = field("server_challenge")
        .filter(|c| super::is_challenge(c))
        .ok_or("server_challenge must be 32 lower-case hex digits")?;
    match field("protocol") {
        Some("json") => {}
        Some(other) => {
            return Err(format!(
                "protocol {other:?} is not served here: use \"json\""
            ))
        }
        None => return Err("user_challenge_response needs \"protocol\": \"json\"".into()),
    }
    let signed = format!("{theirs}{}{}", node.contract_id, node.contract_version);
    let answer = json!({
        "type": "server_challenge_response",
        "sig": node.key.sign_raw(signed.as_bytes()).to_hex(),
        "pubkey": ed_hex(&node.key.public()),
        "unl": node.unl.iter().map(ed_hex).collect::<Vec<_>>(),
    });
    Ok((user, answer.to_string()))
}

/// Whether a message is hpcore's `user_challenge_response` (what a
/// prototype client never sends).
pub fn is_response(bytes: &[u8]) -> bool {
    is_kind(bytes, "user_challenge_response")
}

/// Whether a message is a JSON object of `"type": kind`, read without
/// taking its other fields apart.
pub fn is_kind(bytes: &[u8], kind: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<&'a str>,
    }
    serde_json::from_slice::<Typed>(bytes).is_ok_and(|t| t.kind == Some(kind))
}

/// The name of the input a message carries, if it carries a signature
/// (`""` if not): what a status refusing it must name.
pub fn name_of(bytes: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(bytes).ok();
    let sig = v
        .as_ref()
        .and_then(|v| v.get("sig"))
        .and_then(Value::as_str);
    sig.and_then(|s| Sig::from_hex(s).ok())
        .map_or_else(String::new, |s| input_name(&s))
}

/// Why an input was refused, in hpcore's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BadMsgFormat,
    InvalidMsgType,
    BadSig,
    MaxLedgerExpired,
    MaxLedgerOffsetExceeded,
    NonceExpired,
    AlreadySubmitted,
    RoundInputsOverflow,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadMsgFormat => "bad_msg_format",
            Reason::InvalidMsgType => "invalid_msg_type",
            Reason::BadSig => "bad_sig",
            Reason::MaxLedgerExpired => "max_ledger_expired",
            Reason::MaxLedgerOffsetExceeded => "max_ledger_offset_exceeded",
            Reason::NonceExpired => "nonce_expired",
            Reason::AlreadySubmitted => "already_submitted",
            Reason::RoundInputsOverflow => "round_inputs_overflow",
        }
    }
}

/// What an hpcore user asks for, once in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `contract_input`: the signed input, what its container says, and
    /// its name for the user (`input_hash`: BLAKE3 of the signature, hex).
    Input {
        signed: SignedInput,
        container: Container,
        hash: String,
    },
    Stat,
    Lcl,
    /// `contract_read_request`: `content` for the contract to answer on
    /// the node's current state, the answer to carry `id`.
    Read {
        id: String,
        content: String,
    },
    LedgerQuery(super::hp_ledger::Query),
    /// `subscription` to `ledger_event` (on or off). One to `unl_change`
    /// is taken and needs nothing: this UNL never changes.
    Subscribe {
        ledger_events: Option<bool>,
    },
}

/// A refused request: the reason and the input it names (empty when the
/// message named none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    pub hash: String,
}

/// The name hpcore's client gives an input: BLAKE3 of its signature.
pub fn input_name(sig: &Sig) -> String {
    hex::encode(blake3::hash(&sig.0).as_bytes())
}

/// Reads one message of `user`'s.
pub fn request(user: PubKey, bytes: &[u8]) -> Result<Request, Refused> {
    let refused = |reason, hash: &str| Refused {
        reason,
        hash: hash.to_string(),
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|_| refused(Reason::BadMsgFormat, ""))?;
    let field = |name: &str| v.get(name).and_then(Value::as_str);
    match field("type") {
        Some("contract_input") => {
            let (Some(text), Some(sig)) = (field("input_container"), field("sig")) else {
                return Err(refused(Reason::BadMsgFormat, ""));
            };
            let sig = Sig::from_hex(sig).map_err(|_| refused(Reason::BadMsgFormat, ""))?;
            let hash = input_name(&sig);
            let signed = SignedInput {
                user,
                container: text.to_string(),
                sig,
            };
            match signed.open() {
                Ok(container) => Ok(Request::Input {
                    signed,
                    container,
                    hash,
                }),
                Err(SignedInputError::BadSig) => Err(refused(Reason::BadSig, &hash)),
                Err(SignedInputError::BadContainer(_)) => Err(refused(Reason::BadMsgFormat, &hash)),
            }
        }
        Some("stat") => Ok(Request::Stat),
        Some("lcl") => Ok(Request::Lcl),
        // Both strings, as hpcore requires.
        Some("contract_read_request") => match (field("id"), field("content")) {
            (Some(id), Some(content)) => Ok(Request::Read {
                id: id.to_string(),
                content: content.to_string(),
            }),
            _ => Err(refused(Reason::BadMsgFormat, "")),
        },
        Some("ledger_query") => Ok(Request::LedgerQuery(super::hp_ledger::query_of(&v))),
        // hpcore takes `health_event` only with its health statistics on,
        // which its config file cannot turn on: a bad message there too.
        Some("subscription") => {
            let enabled = v.get("enabled").and_then(Value::as_bool);
            match (field("channel"), enabled) {
                (Some("unl_change"), Some(_)) => Ok(Request::Subscribe {
                    ledger_events: None,
                }),
                (Some("ledger_event"), Some(on)) => Ok(Request::Subscribe {
                    ledger_events: Some(on),
                }),
                _ => Err(refused(Reason::BadMsgFormat, "")),
            }
        }
        _ => Err(refused(Reason::InvalidMsgType, "")),
    }
}

/// Inputs may name a last ledger at most this far past the lcl (hpcore's
/// default offset; its client asks for lcl + 10 unless told otherwise).
pub const MAX_LEDGER_OFFSET: u64 = 10;

/// Whether an input naming `max_ledger` as its last ledger can still run,
/// seen from lcl `lcl`.
pub fn check_max_ledger(max_ledger: u64, lcl: u64) -> Result<(), Reason> {
    if max_ledger <= lcl {
        Err(Reason::MaxLedgerExpired)
    } else if max_ledger > lcl + MAX_LEDGER_OFFSET {
        Err(Reason::MaxLedgerOffsetExceeded)
    } else {
        Ok(())
    }
}

pub fn accepted(hash: &str, ledger: LedgerId) -> String {
    json!({
        "type": "contract_input_status",
        "status": "accepted",
        "input_hash": hash,
        "ledger_seq_no": ledger.seq,
        "ledger_hash": hex::encode(ledger.hash.0),
    })
    .to_string()
}

pub fn rejected(refused: &Refused) -> String {
    json!({
        "type": "contract_input_status",
        "status": "rejected",
        "reason": refused.reason.as_str(),
        "input_hash": refused.hash,
    })
    .to_string()
}

/// What `stat` and `lcl` report: the node's view of its chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub lcl: LedgerId,
    /// `synced`, `desync`, `unreliable`, or `unknown` before the first.
    pub vote_status: &'static str,
    pub roundtime_ms: u64,
    /// Whether the node runs users' read requests.
    pub read_requests: bool,
}

impl View {
    /// The view of a node that has closed nothing yet.
    pub fn starting(roundtime_ms: u64, read_requests: bool) -> View {
        View {
            lcl: LedgerId {
                seq: 0,
                hash: crate::crypto::Hash::ZERO,
            },
            vote_status: "unknown",
            roundtime_ms,
            read_requests,
        }
    }
}

/// A vote status in hpcore's words.
pub fn vote_status_name(status: crate::consensus::VoteStatus) -> &'static str {
    use crate::consensus::VoteStatus;
    match status {
        VoteStatus::Synced => "synced",
        VoteStatus::Desync => "desync",
        VoteStatus::Unreliable => "unreliable",
    }
}

pub fn stat_response(node: &HpNode, view: &View) -> String {
    json!({
        "type": "stat_response",
        "hp_version": HP_VERSION,
        "ledger_seq_no": view.lcl.seq,
        "ledger_hash": hex::encode(view.lcl.hash.0),
        "vote_status": view.vote_status,
        "round_time": view.roundtime_ms,
        "contract_execution_enabled": true,
        "read_requests_enabled": view.read_requests,
        "is_full_history_node": true,
        "weakly_connected": false,
        "current_unl": node.unl.iter().map(ed_hex).collect::<Vec<_>>(),
        "peers": [],
    })
    .to_string()
}

/// The answer to read request `id`: what the contract wrote (as outputs
/// are written), or, when it gave no answer, `content` null (what hpcore's
/// client resolves a read that timed out to) and why in `error`.
pub fn read_response(id: &str, answer: Result<&[u8], String>) -> String {
    match answer {
        Ok(bytes) => json!({
            "type": "contract_read_response",
            "reply_for": id,
            "content": crate::contract::output_text(bytes),
        }),
        Err(why) => json!({
            "type": "contract_read_response",
            "reply_for": id,
            "content": null,
            "error": why,
        }),
    }
    .to_string()
}

pub fn lcl_response(view: &View) -> String {
    json!({
        "type": "lcl_response",
        "ledger_seq_no": view.lcl.seq,
        "ledger_hash": hex::encode(view.lcl.hash.0),
    })
    .to_string()
}

#[cfg(test)]
#[path = "hp_tests.rs"]
mod tests;
