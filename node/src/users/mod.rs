//! User sessions, sans-IO: the prototype's challenge handshake, then one input
//! per message, with limits. The websocket server feeds text and binary
//! messages in and carries the replies out; it never decides anything.
//!
//! On connect the node sends
//! `{"hotpocket":"0.1","type":"public_challenge","challenge":"<32 hex>"}`.
//! The user answers `{"type":"helo","pubkey":"<64 hex>","sig":"<128 hex>",
//! "challenge":"…","timestamp":<unix s>}`, `sig` being ed25519 over the
//! challenge string. Every later message is one input.

use crate::consensus::Withheld;
use crate::contract::{input_hash, RunOutcome};
use crate::crypto::{verify_raw, Hash, Keypair, PubKey, Sig};
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};

pub mod hp;
pub mod hp_outputs;
mod intake;
pub use intake::{outputs_for, ConnAction, Intake};

pub const PROTOCOL_VERSION: &str = "0.1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Largest message accepted, bytes (the prototype's `pubmaxsize`).
    pub max_message_bytes: usize,
    /// Most messages a minute (the prototype's `pubmaxcpm`).
    pub max_messages_per_minute: u32,
    /// Most inputs accepted from one user per consensus round.
    pub max_inputs_per_round: u32,
    pub roundtime_ms: u64,
    /// How far the helo timestamp may be from the node's clock.
    pub timestamp_tolerance_s: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_message_bytes: 1 << 20,
            max_messages_per_minute: 600,
            max_inputs_per_round: 64,
            roundtime_ms: 1000,
            timestamp_tolerance_s: 300,
        }
    }
}

/// What the server must do next, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send this text message.
    Send(String),
    /// The user submitted this input.
    Input { user: PubKey, body: Vec<u8> },
    /// Send this text message, then close the connection.
    Close(String),
}

#[derive(Debug)]
enum State {
    Challenged { challenge: String },
    Open { user: PubKey },
    Closed,
}

#[derive(Debug)]
pub struct Session {
    limits: SessionLimits,
    state: State,
    /// (minute, messages in it)
    minute: (u64, u32),
    /// (round, inputs in it)
    round: (u64, u32),
    /// This user's inputs of this round and the last (round, hash), oldest
    /// first, to drop repeats: a retried message, not a later one that
    /// happens to be equal (`get x` twice is two inputs).
    recent: VecDeque<(u64, Hash)>,
    recent_set: BTreeSet<Hash>,
}

const RECENT_INPUTS: usize = 1024;

/// What a user hears when its outputs of ledger `seq` were not certified
/// on this node (copies of the contract diverged): they will never come.
pub fn withheld_message(seq: u64, why: Withheld) -> String {
    json!({"hotpocket": PROTOCOL_VERSION, "type": "uncertified", "seq": seq, "reason": why.as_str()})
        .to_string()
}

/// What a user hears when the node refuses an input it sent (`message`,
/// the bytes as sent): the input will not go into any ledger, and sending
/// it again later is safe. `input_sha256` lets the user tell which input.
pub fn refused_message(message: &[u8], why: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(message));
    json!({"hotpocket": PROTOCOL_VERSION, "type": "error", "error": why, "input_sha256": digest})
        .to_string()
}

/// What a user with an input in ledger `seq` hears when that ledger's
/// certified run did not end cleanly: its answer may be missing or partial.
pub fn failed_message(seq: u64, outcome: &RunOutcome) -> String {
    let what = match outcome {
        RunOutcome::Exited(Some(c)) => format!("the contract exited with code {c}"),
        RunOutcome::Exited(None) => "the contract was killed by a signal".to_string(),
        RunOutcome::TimedOut => "the contract ran past its time limit".to_string(),
        RunOutcome::OutputLimit => "the contract wrote past its output limit".to_string(),
        RunOutcome::SpawnFailed(_) => "the contract could not be started".to_string(),
    };
    json!({"hotpocket": PROTOCOL_VERSION, "type": "contract_failed", "seq": seq, "error": what})
        .to_string()
}

/// Why a node behind on its contract runs refuses a new input.
pub fn busy_reason(behind: u64) -> String {
    format!(
        "node busy: contract runs are {behind} ledgers behind; input refused, send it again later"
    )
}

/// A plain error for a user, as the session's refusals are worded.
pub fn error_message(msg: &str) -> String {
    json!({"hotpocket": PROTOCOL_VERSION, "type": "error", "error": msg}).to_string()
}

impl Session {
    /// Starts a session with 16 bytes from the entropy source; returns it and
    /// the challenge message to send.
    pub fn open(limits: SessionLimits, challenge: [u8; 16]) -> (Session, String) {
        let challenge = hex::encode(challenge);
        let msg = json!({"hotpocket": PROTOCOL_VERSION, "type": "public_challenge", "challenge": challenge}).to_string();
        let session = Session {
            limits,
            state: State::Challenged { challenge },
            minute: (0, 0),
            round: (0, 0),
            recent: VecDeque::new(),
            recent_set: BTreeSet::new(),
        };
        (session, msg)
    }

    /// The authenticated user, once the handshake is done.
    pub fn user(&self) -> Option<PubKey> {
        match self.state {
            State::Open { user } => Some(user),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// A message arrived at node time `now_ms` (unix ms); `text` says whether
    /// it was a websocket text frame.
    pub fn on_message(&mut self, now_ms: u64, bytes: &[u8], text: bool) -> Vec<Reply> {
        if self.is_closed() {
            return vec![];
        }
        if bytes.len() > self.limits.max_message_bytes {
            return self.close(format!(
                "message of {} bytes exceeds the {}-byte limit",
                bytes.len(),
                self.limits.max_message_bytes
            ));
        }
        let minute = now_ms / 60_000;
        if self.minute.0 != minute {
            self.minute = (minute, 0);
        }
        self.minute.1 += 1;
        let limit = self.limits.max_messages_per_minute;
        if self.minute.1 > limit {
            let why = format!("too many messages: the limit is {limit} a minute");
            // Before the helo, or far past the limit, it is a flood, not a
            // user: close. A user past it keeps its connection, so the
            // answers of the inputs already taken still reach it, and hears
            // of each message refused.
            if self.user().is_none() || self.minute.1 > limit.saturating_mul(4) {
                return self.close(why);
            }
            let why = format!("{why}; message refused, send it again later");
            return vec![Reply::Send(refused_message(bytes, &why))];
        }
        match &self.state {
            State::Challenged { challenge } => {
                let challenge = challenge.clone();
                match helo(
                    &challenge,
                    bytes,
                    text,
                    now_ms / 1000,
                    self.limits.timestamp_tolerance_s,
                ) {
                    Ok(user) => {
                        self.state = State::Open { user };
                        vec![]
                    }
                    Err(e) => self.close(e),
                }
            }
            State::Open { user } => {
                let user = *user;
                self.input(now_ms, user, bytes)
            }
            State::Closed => vec![],
        }
    }

    fn input(&mut self, now_ms: u64, user: PubKey, body: &[u8]) -> Vec<Reply> {
        let h = input_hash(body);
        let round = now_ms / self.limits.roundtime_ms.max(1);
        while let Some(&(r, old)) = self.recent.front() {
            if r + 1 >= round && self.recent.len() < RECENT_INPUTS {
                break;
            }
            self.recent.pop_front();
            self.recent_set.remove(&old);
        }
        if self.recent_set.contains(&h) {
            return vec![]; // a repeat: ignored, as the user may simply retry
        }
        if self.round.0 != round {
            self.round = (round, 0);
        }
        if self.round.1 >= self.limits.max_inputs_per_round {
            let why = format!(
                "input dropped: at most {} inputs a round",
                self.limits.max_inputs_per_round
            );
            return vec![Reply::Send(refused_message(body, &why))];
        }
        self.round.1 += 1;
        self.recent.push_back((round, h));
        self.recent_set.insert(h);
        vec![Reply::Input {
            user,
            body: body.to_vec(),
        }]
    }

    /// The node refused an input this session took (`body`, as sent): it
    /// was not submitted, so sending it again must not count as a repeat,
    /// nor against the round's limit.
    pub fn unsubmit(&mut self, body: &[u8]) {
        let h = input_hash(body);
        if self.recent_set.remove(&h) {
            self.recent.retain(|(_, r)| *r != h);
            self.round.1 = self.round.1.saturating_sub(1);
        }
    }

    fn close(&mut self, why: String) -> Vec<Reply> {
        self.state = State::Closed;
        vec![Reply::Close(error_message(&why))]
    }
}

/// The user's side of the handshake: the `helo` a user holding `key` sends
/// for `challenge` at unix time `now_s` (ed25519 over the challenge string).
pub fn helo_message(key: &Keypair, challenge: &str, now_s: u64) -> String {
    json!({
        "type": "helo",
        "pubkey": key.public().to_hex(),
        "sig": key.sign_raw(challenge.as_bytes()).to_hex(),
        "challenge": challenge,
        "timestamp": now_s,
    })
    .to_string()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChallengeError {
    #[error("the node's challenge is not JSON: {0}")]
    NotJson(String),
    #[error("expected a public_challenge, got {0}")]
    NotAChallenge(String),
}

/// The `helo` answering a node's `public_challenge` message.
pub fn answer_challenge(
    key: &Keypair,
    challenge_msg: &str,
    now_s: u64,
) -> Result<String, ChallengeError> {
    let v: Value =
        serde_json::from_str(challenge_msg).map_err(|e| ChallengeError::NotJson(e.to_string()))?;
    match (
        v.get("type").and_then(Value::as_str),
        v.get("challenge").and_then(Value::as_str),
    ) {
        (Some("public_challenge"), Some(challenge)) => Ok(helo_message(key, challenge, now_s)),
        _ => Err(ChallengeError::NotAChallenge(challenge_msg.to_string())),
    }
}

/// Checks a helo; returns the user's key or why it was refused.
fn helo(
    challenge: &str,
    bytes: &[u8],
    text: bool,
    now_s: u64,
    tolerance_s: u64,
) -> Result<PubKey, String> {
    if !text {
        return Err("expected a helo text message before any input".into());
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("helo is not valid JSON: {e}"))?;
    let field = |name: &str| v.get(name).and_then(Value::as_str);
    match field("type") {
        Some("helo") => {}
        Some(other) => return Err(format!("expected a helo message, got type {other:?}")),
        None => return Err("helo has no \"type\" field".into()),
    }
    if field("challenge") != Some(challenge) {
        return Err("challenge does not match the one this node sent".into());
    }
    let pubkey = field("pubkey").ok_or("helo has no \"pubkey\" string")?;
    let user = PubKey::from_hex(pubkey).map_err(|e| format!("pubkey: {e}"))?;
    let sig = field("sig").ok_or("helo has no \"sig\" string")?;
    let sig = Sig::from_hex(sig).map_err(|e| format!("sig: {e}"))?;
    let ts = v
        .get("timestamp")
        .and_then(Value::as_u64)
        .ok_or("helo has no \"timestamp\" in unix seconds")?;
    if ts.abs_diff(now_s) > tolerance_s {
        return Err(format!(
            "timestamp is {} s away from this node's clock (tolerance {tolerance_s} s)",
            ts.abs_diff(now_s)
        ));
    }
    verify_raw(&user, challenge.as_bytes(), &sig).map_err(|_| {
        "signature does not verify: sign the challenge string with the pubkey's key".to_string()
    })?;
    Ok(user)
}

#[cfg(test)]
mod tests;
