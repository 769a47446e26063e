//! The attacks a byzantine user makes on a node's user session. Each attack
//! is a list of messages, each with what the node must do with it. The
//! node's session is the judge of a helo, so that is where most attacks
//! aim; after the handshake every message is an input by design, so there
//! the attacks are about limits and about whose name an input carries.

use crate::scenario::AttackKind;
use hotpocket_node::contract::UserInput;
use hotpocket_node::crypto::{Keypair, PubKey};
use hotpocket_node::users::{helo_message, SessionLimits};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

use serde_json::{json, Value};

// What the session's refusals say, as far as telling them apart needs.
pub const R_SIG: &str = "signature does not verify";
pub const R_CHALLENGE: &str = "challenge does not match";
pub const R_SIZE: &str = "-byte limit";
pub const R_RATE: &str = "too many messages";
pub const R_ROUND: &str = "inputs a round";
pub const R_BINARY: &str = "expected a helo text message";
pub const R_JSON: &str = "not valid JSON";
pub const R_NO_TYPE: &str = "no \"type\" field";
pub const R_TYPE: &str = "expected a helo message";
pub const R_PUBKEY: &str = "pubkey: ";
pub const R_SIG_FORMAT: &str = "sig: ";
pub const R_NO_TS: &str = "no \"timestamp\"";
pub const R_TS: &str = "away from this node's clock";

/// What the node must do with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Pass the handshake: the session is now the sender's, in its own key.
    Open,
    /// Take it as one input, in the sender's name.
    Input,
    /// Ignore it: a repeat, or a message on a closed session.
    Nothing,
    /// Refuse it and close the session, with an error saying this.
    Closed(&'static str),
    /// Drop it with an error saying this and keep the session.
    Dropped(&'static str),
}

pub struct Step {
    pub bytes: Vec<u8>,
    pub text: bool,
    pub expect: Expect,
    /// The attack's variant, for the report of a misjudged message.
    pub what: &'static str,
}

/// An honest user the attacker tries to speak for, and what it overheard.
pub struct Victim {
    pub key: PubKey,
    /// A kv key the victim wrote.
    pub kv_key: Option<String>,
    /// A helo the victim sent some node, for another challenge.
    pub helo: Option<String>,
}

pub struct Ctx<'a> {
    pub key: &'a Keypair,
    pub user: usize,
    /// This session's challenge.
    pub challenge: &'a str,
    /// The challenge of another session open at the same node.
    pub other_challenge: Option<&'a str>,
    /// (challenge, helo answering it) of this user's earlier session.
    pub old: Option<&'a (String, String)>,
    pub victim: Option<&'a Victim>,
    /// The user's clock, unix seconds.
    pub now_s: u64,
    pub limits: &'a SessionLimits,
}

fn helo_json(pubkey: &str, sig: &str, challenge: Value, ts: Value) -> Vec<u8> {
    json!({"type": "helo", "pubkey": pubkey, "sig": sig, "challenge": challenge, "timestamp": ts})
        .to_string()
        .into_bytes()
}

fn step(bytes: Vec<u8>, expect: Expect, what: &'static str) -> Step {
    Step {
        bytes,
        text: true,
        expect,
        what,
    }
}

fn random_hex(rng: &mut ChaCha8Rng, n: usize) -> String {
    let mut b = vec![0u8; n];
    rng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A well-formed kv command of this user's: its answer names its key, so
/// the output checks tie it back to the input like an honest one.
fn kv_input(rng: &mut ChaCha8Rng, user: usize, value: &str) -> Vec<u8> {
    format!("set b{user}-{} {value}\n", rng.next_u64() % 100).into_bytes()
}

impl Ctx<'_> {
    fn helo(&self) -> Vec<u8> {
        helo_message(self.key, self.challenge, self.now_s).into_bytes()
    }

    fn sign(&self, msg: &str) -> String {
        self.key.sign_raw(msg.as_bytes()).to_hex()
    }

    /// A helo in this user's key, signed over `challenge`, naming it.
    fn helo_for(&self, challenge: &str) -> Vec<u8> {
        helo_message(self.key, challenge, self.now_s).into_bytes()
    }

    fn victim_key(&self, rng: &mut ChaCha8Rng) -> PubKey {
        self.victim.map_or_else(
            || {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                Keypair::from_seed(seed).public()
            },
            |v| v.key,
        )
    }
}

/// The messages of one attack of `kind` and what the node must answer.
pub fn plan(kind: AttackKind, rng: &mut ChaCha8Rng, c: &Ctx) -> Vec<Step> {
    let mut steps = match kind {
        AttackKind::BadSignature => bad_signature(rng, c),
        AttackKind::ReplayedChallenge => replayed(rng, c),
        AttackKind::WrongChallenge => wrong_challenge(rng, c),
        AttackKind::Impersonation => impersonation(rng, c),
        AttackKind::MessageFlood => message_flood(rng, c),
        AttackKind::InputFlood => input_flood(rng, c),
        AttackKind::Oversize => oversize(rng, c),
        AttackKind::Malformed => malformed(rng, c),
    };
    // A session the node closed must stay closed whatever comes next.
    if matches!(steps.last(), Some(s) if matches!(s.expect, Expect::Closed(_)))
        && rng.next_u64().is_multiple_of(2)
    {
        let body = kv_input(rng, c.user, "after-close");
        steps.push(step(body, Expect::Nothing, "input on a closed session"));
        steps.push(step(c.helo(), Expect::Nothing, "helo on a closed session"));
    }
    steps
}

/// A helo in the user's own key for the right challenge whose signature
/// does not verify.
fn bad_signature(rng: &mut ChaCha8Rng, c: &Ctx) -> Vec<Step> {
    let me = c.key.public().to_hex();
    let ts = json!(c.now_s);
    let (bytes, what) = match rng.next_u64() % 5 {
        0 => {
            let sig = random_hex(rng, 64);
            (
                helo_json(&me, &sig, json!(c.challenge), ts),
                "random signature",
            )
        }
        1 => {
            let sig = c.sign(&format!("{}x", c.challenge));
            (
                helo_json(&me, &sig, json!(c.challenge), ts),
                "signature over other bytes",
            )
        }
        2 => {
            let mut sig = c.key.sign_raw(c.challenge.as_bytes()).0;
            let bit = rng.next_u64() % 512;
            sig[(bit / 8) as usize] ^= 1 << (bit % 8);
            let sig = hex::encode(sig);
            (
                helo_json(&me, &sig, json!(c.challenge), ts),
                "one bit flipped",
            )
        }
        3 => {
            let raw = hex::decode(c.challenge).unwrap_or_default();
            let sig = c.key.sign_raw(&raw).to_hex();
            (
                helo_json(&me, &sig, json!(c.challenge), ts),
                "signature over the decoded challenge",
            )
        }
        _ => {
            // The identity point with s = 0 "verifies" any message under a
            // lax ed25519 check: only a strict one refuses it.
            let mut identity = [0u8; 32];
            identity[0] = 1;
            let sig = format!("{}{}", hex::encode(identity), "00".repeat(32));
            let key = hex::encode(identity);
            (
                helo_json(&key, &sig, json!(c.challenge), ts),
                "weak key, identity signature",
            )
        }
    };
    vec![step(bytes, Expect::Closed(R_SIG), what)]
}

/// A validly signed helo, but for a challenge this session never sent.
fn replayed(rng: &mut ChaCha8Rng, c: &Ctx) -> Vec<Step> {
    let variant = rng.next_u64() % 3;
    let (bytes, what) = match (variant, c.old, c.other_challenge) {
        (0, Some((old, _)), _) => (c.helo_for(old), "own earlier session's challenge"),
        (1, Some((_, helo)), _) => (helo.clone().into_bytes(), "own earlier helo, verbatim"),
        (_, _, Some(other)) => (c.helo_for(other), "another open session's challenge"),
        (_, Some((old, _)), None) => (c.helo_for(old), "own earlier session's challenge"),
        (_, None, None) => (c.helo_for(&random_hex(rng, 16)), "a made-up challenge"),
    };
    vec![step(bytes, Expect::Closed(R_CHALLENGE), what)]
}

/// A helo signed in the user's own key over something that is not the
/// challenge string the node sent.
fn wrong_challenge(rng: &mut ChaCha8Rng, c: &Ctx) -> Vec<Step> {
    let me = c.key.public().to_hex();
    let ts = json!(c.now_s);
    let signed = |s: String| (c.sign(&s), json!(s));
    let ((sig, field), what) = match rng.next_u64() % 6 {
        0 => (signed(random_hex(rng, 16)), "random challenge"),
        1 => {
            let mut up = c.challenge.to_uppercase();
            if up == c.challenge {
                up.push('0');
            }
            (signed(up), "the challenge in upper case")
        }
        2 => {
            let mut s = c.challenge.to_string();
            let last = if s.ends_with('0') { '1' } else { '0' };
            s.pop();
            s.push(last);
            (signed(s), "one character changed")
        }
        3 => (signed(String::new()), "empty challenge"),
        4 => {
            let bytes = hex::decode(c.challenge).unwrap_or_default();
            (
                (c.sign(c.challenge), json!(bytes)),
                "challenge as an array of bytes",
            )
        }
        _ => {
            let bytes = helo_json(&me, &c.sign(c.challenge), Value::Null, ts);
            return vec![step(
                bytes,
                Expect::Closed(R_CHALLENGE),
                "challenge missing",
            )];
        }
    };
    let bytes = helo_json(&me, &sig, field, ts);
    vec![step(bytes, Expect::Closed(R_CHALLENGE), what)]
}

/// Tries to speak for an honest user: helos naming its key, and, once
/// connected in its own key, inputs that claim to be the victim's. Those
/// the node must take, but in the attacker's name.
fn impersonation(rng: &mut ChaCha8Rng, c: &Ctx) -> Vec<Step> {
    let victim = c.victim_key(rng).to_hex();
    let ts = json!(c.now_s);
    let captured = c.victim.and_then(|v| v.helo.as_deref());
    let mut variant = rng.next_u64() % 6;
    if captured.is_none() && (variant == 1 || variant == 2) {
        variant = 0;
    }
    let open = || step(c.helo(), Expect::Open, "own helo");
    match variant {
        0 => {
            let bytes = helo_json(&victim, &c.sign(c.challenge), json!(c.challenge), ts);
            vec![step(
                bytes,
                Expect::Closed(R_SIG),
                "victim's key, own signature",
            )]
        }
        1 => {
            // The victim's signature is over the challenge it was sent.
            let v: Value = serde_json::from_str(captured.unwrap_or("{}")).unwrap_or_default();
            let sig = v["sig"].as_str().unwrap_or_default();
            let bytes = helo_json(&victim, sig, json!(c.challenge), ts);
            vec![step(
                bytes,
                Expect::Closed(R_SIG),
                "victim's signature of another challenge",
            )]
        }
        2 => {
            let bytes = captured.unwrap_or_default().as_bytes().to_vec();
            vec![step(
                bytes,
                Expect::Closed(R_CHALLENGE),
                "victim's helo replayed",
            )]
        }
        3 => {
            let claim = helo_json(&victim, &c.sign(c.challenge), json!(c.challenge), ts);
            let body = kv_input(rng, c.user, &String::from_utf8_lossy(&claim));
            vec![
                open(),
                step(body, Expect::Input, "a second helo, as the victim"),
            ]
        }
        4 => {
            let kv_key = c
                .victim
                .and_then(|v| v.kv_key.clone())
                .unwrap_or_else(|| "w0-u0-0".into());
            let body = format!("set {kv_key} {}\n", random_hex(rng, 8)).into_bytes();
            vec![open(), step(body, Expect::Input, "the victim's kv key")]
        }
        _ => {
            let forged = UserInput {
                user: c.victim_key(rng),
                nonce: rng.next_u64(),
                payload: kv_input(rng, c.user, "forged"),
            };
            let body = kv_input(rng, c.user, &hex::encode(forged.encode()));
            vec![
                open(),
                step(body, Expect::Input, "an input stamped as the victim's"),
            ]
        }
    }
}

/// Connected, then more messages in one go than a minute allows: mostly
/// repeats (ignored), a few distinct inputs (taken), then the close.
fn message_flood(rng: &mut ChaCha8Rng, c: &Ctx) -> Vec<Step> {
    let distinct: Vec<Vec<u8>> = (0..1 + rng.next_u64() % 8)
        .map(|i| {
            let value = format!("flood{i}.{}", random_hex(rng, 4));
            kv_input(rng, c.user, &value)
        })
        .collect();
    let mut sent = vec![false; distinct.len()];
    let mut steps = vec![step(c.helo(), Expect::Open, "own helo")];
    // The helo counts too.
    for _ in 1..c.limits.max_messages_per_minute {
        let i = (rng.next_u64() % distinct.len() as u64) as usize;
        let expect = if sent[i] {
            Expect::Nothing
        } else {
            Expect::Input
        };
        sent[i] = true;
        steps.push(step(
            distinct[i].clone(),
            expect,
            "flood within the minute's limit",
        ));
    }
    // Past the limit each message is refused and the user stays (the
    // answers of its taken inputs must still reach it); four times past
    // it, the session is closed.
    let limit = c.limits.max_messages_per_minute as usize;
    for n in limit + 1..=4 * limit {
        let past = format!("past{n}.{}", random_hex(rng, 4));
        let body = kv_input(rng, c.user, &past);
        steps.push(step(
            body,
            Expect::Dropped(R_RATE),
            "past the minute's limit",
        ));
    }
    let last = distinct[0].clone();
    steps.push(step(
        last,
        Expect::Closed(R_RATE),
        "four times past the minute's limit",
    ));
    steps
}

/// Connected, then more distinct inputs in one round than a user may send:
/// the excess is dropped, the session stays.
fn input_flood(rng: &mut ChaCha8Rng, c: &Ctx) -> Vec<Step> {
    let max = c.limits.max_inputs_per_round as usize;
    let extra = 1 + (rng.next_u64() % 16) as usize;
    let mut steps = vec![step(c.helo(), Expect::Open, "own helo")];
    let mut first = None;
    for i in 0..max + extra {
        let value = format!("in{i}.{}", random_hex(rng, 4));
        let body = kv_input(rng, c.user, &value);
        first.get_or_insert_with(|| body.clone());
        let (expect, what) = if i < max {
            (Expect::Input, "input within the round's limit")
        } else {
            (Expect::Dropped(R_ROUND), "input past the round's limit")
        };
        steps.push(step(body, expect, what));
    }
    let again = first.unwrap_or_default();
    steps.push(step(again, Expect::Nothing, "a repeat of a taken input"));
    steps
}

/// A message one byte to a KiB past `max_message_bytes`.
fn oversize(rng: &mut ChaCha8Rng, c: &Ctx) -> Vec<Step> {
    let n = c.limits.max_message_bytes + 1 + (rng.next_u64() % 1024) as usize;
    match rng.next_u64() % 3 {
        0 => {
            // Valid JSON still: whitespace may follow the object.
            let mut bytes = c.helo();
            bytes.resize(n, b' ');
            vec![step(
                bytes,
                Expect::Closed(R_SIZE),
                "a valid helo padded past the limit",
            )]
        }
        1 => {
            let mut bytes = vec![0u8; n];
            rng.fill_bytes(&mut bytes);
            let mut s = step(
                bytes,
                Expect::Closed(R_SIZE),
                "binary garbage past the limit",
            );
            s.text = false;
            vec![s]
        }
        _ => {
            let mut body = kv_input(rng, c.user, "big");
            body.resize(n, b'x');
            let big = step(body, Expect::Closed(R_SIZE), "an input past the limit");
            vec![step(c.helo(), Expect::Open, "own helo"), big]
        }
    }
}

/// A first message that is no helo, or a helo with a malformed field.
fn malformed(rng: &mut ChaCha8Rng, c: &Ctx) -> Vec<Step> {
    let me = c.key.public().to_hex();
    let sig = c.sign(c.challenge);
    let ch = json!(c.challenge);
    let ts = json!(c.now_s);
    let (bytes, expect, what) = match rng.next_u64() % 13 {
        0 => {
            let mut s = step(
                c.helo(),
                Expect::Closed(R_BINARY),
                "a valid helo as a binary frame",
            );
            s.text = false;
            return vec![s];
        }
        1 => {
            let mut b = vec![0xff, 0xfe];
            b.extend(random_hex(rng, 8).bytes());
            (b, R_JSON, "not UTF-8")
        }
        2 => (b"hello node".to_vec(), R_JSON, "not JSON"),
        3 => {
            let mut b = c.helo();
            b.truncate(b.len() / 2);
            (b, R_JSON, "a truncated helo")
        }
        4 => (Vec::new(), R_JSON, "empty"),
        5 => (b"[1,2,3]".to_vec(), R_NO_TYPE, "JSON but not an object"),
        6 => {
            let b = json!({"type": "contract_input", "input": "x"}).to_string();
            (b.into_bytes(), R_TYPE, "another message type")
        }
        7 => (
            helo_json(&"zz".repeat(32), &sig, ch, ts),
            R_PUBKEY,
            "pubkey not hex",
        ),
        8 => (
            helo_json(&me[..40], &sig, ch, ts),
            R_PUBKEY,
            "pubkey too short",
        ),
        9 => (
            helo_json(&me, &sig[..20], ch, ts),
            R_SIG_FORMAT,
            "sig too short",
        ),
        10 => (
            helo_json(&me, &sig, ch, json!(c.now_s.to_string())),
            R_NO_TS,
            "timestamp a string",
        ),
        11 => {
            let off = c.limits.timestamp_tolerance_s + 1 + rng.next_u64() % 100_000;
            let t = if rng.next_u64().is_multiple_of(2) {
                c.now_s + off
            } else {
                c.now_s - off
            };
            (
                helo_json(&me, &sig, ch, json!(t)),
                R_TS,
                "timestamp far off",
            )
        }
        _ => {
            // Far past serde_json's recursion limit: refused, not a stack overflow.
            let depth = 10_000;
            let b = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            (b.into_bytes(), R_JSON, "JSON nested 10000 deep")
        }
    };
    vec![step(bytes, Expect::Closed(expect), what)]
}
