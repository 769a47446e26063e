//! User sessions, sans-IO: two protocols on one port, with limits. The
//! websocket server feeds text and binary messages in and carries the
//! replies out; it never decides anything.
//!
//! The prototype's: the node sends
//! `{"hotpocket":"0.1","type":"public_challenge","challenge":"<32 hex>"}`.
//! The user answers `{"type":"helo","pubkey":"<64 hex>","sig":"<128 hex>",
//! "challenge":"…","timestamp":<unix s>}`, `sig` being ed25519 over the
//! challenge string. Every later message is one input, vouched for by
//! this node.
//!
//! hpcore's (`hp.rs`), when the node serves it: the node sends
//! `user_challenge` first, with the same challenge. A
//! `user_challenge_response` opens an hpcore session (signed inputs,
//! statuses, `stat`, `lcl`); a `helo` opens a prototype one at once; a
//! user silent for a moment (`on_quiet`) is sent the `public_challenge`
//! too, which is what the prototype's own client waits for.

use crate::consensus::Withheld;
use crate::contract::{input_hash, RunOutcome, SignedInput};
use crate::crypto::{verify_raw, Hash, Keypair, PubKey, Sig};
use hp::{HpNode, Reason, Refused, Request};
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

pub mod hp;
pub mod hp_client;
pub mod hp_ledger;
pub mod hp_outputs;
mod intake;
pub mod statuses;
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
    /// Whether the seed prototype's sessions are opened: their inputs are
    /// vouched for by this node only (`ConsensusConfig::vouched_inputs`).
    pub prototype_sessions: bool,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_message_bytes: 1 << 20,
            max_messages_per_minute: 600,
            max_inputs_per_round: 64,
            roundtime_ms: 1000,
            timestamp_tolerance_s: 300,
            prototype_sessions: true,
        }
    }
}

/// What the server must do next, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send this text message.
    Send(String),
    /// The user submitted this input.
    Input {
        user: PubKey,
        body: Vec<u8>,
    },
    /// Send this text message, then close the connection.
    Close(String),
    /// Send this hpcore message (JSON, in a binary frame).
    SendHp(String),
    /// An hpcore user submitted this signed input, named `name` (its
    /// `input_hash`), to run in a ledger no later than `max_ledger`.
    Signed {
        input: SignedInput,
        name: String,
        nonce: u64,
        max_ledger: u64,
    },
    /// An hpcore user asks for the node's status, or its lcl, or a ledger.
    Stat,
    Lcl,
    LedgerQuery {
        user: PubKey,
        query: hp_ledger::Query,
    },
    /// An hpcore user turns `ledger_event` notifications on or off.
    LedgerEvents(bool),
    /// An hpcore user's read request.
    Read {
        user: PubKey,
        id: String,
        content: String,
    },
}

#[derive(Debug)]
enum State {
    Challenged {
        challenge: String,
        /// The prototype's `public_challenge` went out too.
        prototype_offered: bool,
    },
    Open {
        user: PubKey,
        hp: bool,
    },
    Closed,
}

#[derive(Debug)]
pub struct Session {
    limits: SessionLimits,
    /// Set when the node serves hpcore's protocol.
    hp: Option<Arc<HpNode>>,
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

/// Why a `helo` is refused where the network takes signed inputs only.
pub const PROTOTYPE_OFF: &str =
    "this network takes only inputs their users sign (hpcore's protocol, \
e.g. hotpocket-js-client): the prototype's sessions are off";

/// A plain error for a user, as the session's refusals are worded.
pub fn error_message(msg: &str) -> String {
    json!({"hotpocket": PROTOCOL_VERSION, "type": "error", "error": msg}).to_string()
}

impl Session {
    /// Starts a session with 16 bytes from the entropy source; returns it and
    /// the challenge message to send.
    pub fn open(limits: SessionLimits, challenge: [u8; 16]) -> (Session, String) {
        let challenge = hex::encode(challenge);
        let msg = public_challenge(&challenge);
        let session = Session {
            limits,
            hp: None,
            state: State::Challenged {
                challenge,
                prototype_offered: true,
            },
            minute: (0, 0),
            round: (0, 0),
            recent: VecDeque::new(),
            recent_set: BTreeSet::new(),
        };
        (session, msg)
    }

    /// As [`open`](Self::open), for a node that serves hpcore's protocol
    /// too: the message to send (in a binary frame) is hpcore's
    /// `user_challenge`; the prototype's follows from [`on_quiet`](Self::on_quiet).
    pub fn open_hp(
        limits: SessionLimits,
        challenge: [u8; 16],
        node: Arc<HpNode>,
    ) -> (Session, String) {
        let (mut session, _) = Session::open(limits, challenge);
        let State::Challenged { challenge, .. } = &session.state else {
            unreachable!("a new session is challenged")
        };
        let msg = hp::user_challenge(&node, challenge);
        session.state = State::Challenged {
            challenge: challenge.clone(),
            prototype_offered: false,
        };
        session.hp = Some(node);
        (session, msg)
    }

    /// The user has said nothing since the challenge: a prototype client
    /// waits for its own `public_challenge`, sent once.
    pub fn on_quiet(&mut self) -> Vec<Reply> {
        match &mut self.state {
            State::Challenged {
                challenge,
                prototype_offered,
            } if !*prototype_offered && self.limits.prototype_sessions => {
                *prototype_offered = true;
                vec![Reply::Send(public_challenge(challenge))]
            }
            _ => vec![],
        }
    }

    /// The authenticated user, once the handshake is done.
    pub fn user(&self) -> Option<PubKey> {
        match self.state {
            State::Open { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Whether the session speaks hpcore's protocol (once open).
    pub fn is_hp(&self) -> bool {
        matches!(self.state, State::Open { hp: true, .. })
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
            if self.is_hp() {
                let refused = Refused {
                    reason: Reason::RoundInputsOverflow,
                    hash: hp::name_of(bytes),
                };
                return vec![Reply::SendHp(hp::rejected(&refused))];
            }
            let why = format!("{why}; message refused, send it again later");
            return vec![Reply::Send(refused_message(bytes, &why))];
        }
        match &self.state {
            State::Challenged { challenge, .. } => {
                let challenge = challenge.clone();
                if let Some(node) = self.hp.clone().filter(|_| hp::is_response(bytes)) {
                    return match hp::accept_user(&node, &challenge, bytes) {
                        Ok((user, answer)) => {
                            self.state = State::Open { user, hp: true };
                            vec![Reply::SendHp(answer)]
                        }
                        Err(e) => self.close(e),
                    };
                }
                if !self.limits.prototype_sessions {
                    return self.close(PROTOTYPE_OFF.into());
                }
                match helo(
                    &challenge,
                    bytes,
                    text,
                    now_ms / 1000,
                    self.limits.timestamp_tolerance_s,
                ) {
                    Ok(user) => {
                        self.state = State::Open { user, hp: false };
                        vec![]
                    }
                    Err(e) => self.close(e),
                }
            }
            State::Open { user, hp: false } => {
                let user = *user;
                match self.take(now_ms, input_hash(bytes)) {
                    Ok(()) => vec![Reply::Input {
                        user,
                        body: bytes.to_vec(),
                    }],
                    Err(None) => vec![],
                    Err(Some(most)) => {
                        let why = format!("input dropped: at most {most} inputs a round");
                        vec![Reply::Send(refused_message(bytes, &why))]
                    }
                }
            }
            State::Open { user, hp: true } => {
                let user = *user;
                self.hp_request(now_ms, user, bytes)
            }
            State::Closed => vec![],
        }
    }

    fn hp_request(&mut self, now_ms: u64, user: PubKey, bytes: &[u8]) -> Vec<Reply> {
        let reply = match hp::request(user, bytes) {
            Ok(Request::Input {
                signed,
                container,
                hash,
            }) => {
                let refused = |reason| {
                    let hash = hash.clone();
                    Reply::SendHp(hp::rejected(&Refused { reason, hash }))
                };
                match self.take(now_ms, input_hash(&signed.encode())) {
                    Ok(()) => Reply::Signed {
                        input: signed,
                        name: hash,
                        nonce: container.nonce,
                        max_ledger: container.max_ledger_seq_no,
                    },
                    // A repeat: its first copy's status answers it.
                    Err(None) => return vec![],
                    Err(Some(_)) => refused(Reason::RoundInputsOverflow),
                }
            }
            Ok(Request::Stat) => Reply::Stat,
            Ok(Request::Lcl) => Reply::Lcl,
            Ok(Request::LedgerQuery(query)) => Reply::LedgerQuery { user, query },
            Ok(Request::Read { id, content }) => Reply::Read { user, id, content },
            Ok(Request::Subscribe {
                ledger_events: Some(on),
            }) => Reply::LedgerEvents(on),
            Ok(Request::Subscribe {
                ledger_events: None,
            }) => return vec![],
            Err(refused) => Reply::SendHp(hp::rejected(&refused)),
        };
        vec![reply]
    }

    /// Takes one input named `h` into this round's count: `Err(None)` for
    /// a repeat of a recent one (a retry), `Err(Some(limit))` past the
    /// round's limit.
    fn take(&mut self, now_ms: u64, h: Hash) -> Result<(), Option<u32>> {
        let round = now_ms / self.limits.roundtime_ms.max(1);
        while let Some(&(r, old)) = self.recent.front() {
            if r + 1 >= round && self.recent.len() < RECENT_INPUTS {
                break;
            }
            self.recent.pop_front();
            self.recent_set.remove(&old);
        }
        if self.recent_set.contains(&h) {
            return Err(None); // a repeat: ignored, as the user may simply retry
        }
        if self.round.0 != round {
            self.round = (round, 0);
        }
        if self.round.1 >= self.limits.max_inputs_per_round {
            return Err(Some(self.limits.max_inputs_per_round));
        }
        self.round.1 += 1;
        self.recent.push_back((round, h));
        self.recent_set.insert(h);
        Ok(())
    }

    /// The node refused an input this session took, named `h` (the hash of
    /// the message as sent; of the signed body, for hpcore's): it was not
    /// submitted, so sending it again must not count as a repeat, nor
    /// against the round's limit.
    pub fn unsubmit(&mut self, h: Hash) {
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

/// Whether `s` is a challenge as nodes make them: 32 lower-case hex digits.
pub fn is_challenge(s: &str) -> bool {
    s.len() == 32 && is_lower_hex(s)
}

/// Hex digits in lower case only, as this node writes them.
fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn public_challenge(challenge: &str) -> String {
    json!({"hotpocket": PROTOCOL_VERSION, "type": "public_challenge", "challenge": challenge})
        .to_string()
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

/// The `helo` answering a node's `public_challenge` message, or its
/// `user_challenge` (hpcore's first message, whose challenge a `helo`
/// answers too).
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
        // Only a node's 32 hex digits: signed raw, free text from a node
        // could be the container of a signed input in this user's name.
        (Some("public_challenge" | "user_challenge"), Some(challenge))
            if is_challenge(challenge) =>
        {
            Ok(helo_message(key, challenge, now_s))
        }
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
