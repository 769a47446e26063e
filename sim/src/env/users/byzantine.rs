//! Byzantine users: they connect through the node's real `Session` and
//! `Intake`, like honest ones, and try the attacks of `attack`. Every
//! refusal the plan expects is counted; every message the node takes or
//! lets pass when it should refuse it (or refuses for another reason, or
//! refuses when it should take it) is a violation.

use super::attack::{plan, Ctx, Expect, Victim};
use super::SimUsers;
use crate::check::outputs::Source;
use crate::check::violation::Kind;
use crate::scenario::{AttackKind, Scenario};
use crate::world::users::{Attack, Tally};
use crate::world::{World, EPOCH_MS};
use hotpocket_node::contract::UserInput;
use hotpocket_node::crypto::PubKey;
use hotpocket_node::users::{helo_message, ConnAction};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::Value;
use std::sync::Arc;

/// What the node did with one message, when it did what it should.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Opened,
    Taken,
    Ignored,
    Refused,
}

/// What the node did with one message, when it did not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misjudged {
    /// It took the message, or let it through, instead of refusing it.
    pub accepted: bool,
    pub what: String,
}

/// The error text of a refusal (the session sends it as JSON).
fn error_text(msg: &str) -> String {
    serde_json::from_str::<Value>(msg)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| msg.to_string())
}

/// Judges the node's `actions` for a message `sent` by the user holding
/// `own`, after which its session is open for `user_after` (if anyone) and
/// `closed_after`.
pub fn judge(
    expect: &Expect,
    own: PubKey,
    sent: &[u8],
    actions: &[ConnAction],
    user_after: Option<PubKey>,
    closed_after: bool,
) -> Result<Outcome, Misjudged> {
    let wrong = |accepted: bool, what: String| Err(Misjudged { accepted, what });
    let took = actions.iter().any(|a| matches!(a, ConnAction::Submit(_)));
    let opened_other = user_after.is_some_and(|u| u != own);
    if opened_other {
        return wrong(
            true,
            format!("opened the session for {user_after:?}, not the sender's own key {own:?}"),
        );
    }
    match expect {
        Expect::Open => match (actions, user_after) {
            ([], Some(_)) => Ok(Outcome::Opened),
            _ => wrong(false, format!("refused a valid helo: {actions:?}")),
        },
        Expect::Input => match actions {
            [ConnAction::Submit(body)] => match UserInput::decode(body) {
                Some(i) if i.user == own && i.payload == sent => Ok(Outcome::Taken),
                Some(i) if i.user != own => {
                    wrong(true, format!("took the input in the name of {:?}", i.user))
                }
                _ => wrong(true, "took another input than the one sent".into()),
            },
            _ => wrong(false, format!("did not take a valid input: {actions:?}")),
        },
        Expect::Nothing => match actions {
            [] => Ok(Outcome::Ignored),
            _ => wrong(took, format!("answered a message it should ignore: {actions:?}")),
        },
        Expect::Closed(why) => match actions {
            [ConnAction::Close(m)] if error_text(m).contains(why) && closed_after => {
                Ok(Outcome::Refused)
            }
            [ConnAction::Close(m)] => wrong(false, format!("refused it, but not for {why:?}: {m}")),
            _ => wrong(
                true,
                format!("did not refuse it (it should close the session: {why}); it answered {actions:?}"),
            ),
        },
        Expect::Dropped(why) => match actions {
            [ConnAction::Send(m)] if error_text(m).contains(why) && !closed_after => {
                Ok(Outcome::Refused)
            }
            _ if took || actions.is_empty() => wrong(
                true,
                format!("did not drop it (it should say: {why}); it answered {actions:?}"),
            ),
            _ => wrong(false, format!("refused it, but not by dropping it ({why}): {actions:?}")),
        },
    }
}

/// The kv key a `set KEY VALUE` body sets ("" for anything else).
fn kv_key(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body.get(..200).unwrap_or(body));
    let mut parts = text.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some("set"), Some(k)) => k.to_string(),
        _ => String::new(),
    }
}

/// The challenge string in a node's `public_challenge` message.
fn challenge_of(msg: &str) -> Option<String> {
    let v: Value = serde_json::from_str(msg).ok()?;
    Some(v.get("challenge")?.as_str()?.to_string())
}

impl SimUsers {
    /// Byzantine user `u` tries `a` on this node: a new connection, its
    /// messages fed through the session one by one, each answer judged.
    pub(super) fn attack(&mut self, u: usize, a: Attack) {
        let now = self.now_ms();
        let now_s = (EPOCH_MS + self.world.now()) / 1000;
        let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
        let honest = self.world.honest_users();
        let victim = (!honest.is_empty()).then(|| {
            let v = honest[(rng.next_u64() % honest.len() as u64) as usize];
            let heard = self.world.heard_of(v);
            Victim {
                key: heard.key,
                kv_key: heard.kv_key,
                helo: heard.helo,
            }
        });
        let (key, old) = (self.world.user_key(u), self.world.seen_by(u));
        let (mut session, msg) = self.intake.open();
        let Some(challenge) = challenge_of(&msg) else {
            self.world.violation(
                Kind::Users,
                self.node,
                format!(
                    "node {} sent a challenge with no challenge string: {msg}",
                    self.node
                ),
            );
            return;
        };
        // A second connection, left unanswered, whose challenge the first
        // answers.
        let other = (a.kind == AttackKind::ReplayedChallenge)
            .then(|| challenge_of(&self.intake.open().1))
            .flatten();
        let limits = self.intake.limits().clone();
        let ctx = Ctx {
            key: &key,
            user: u,
            challenge: &challenge,
            other_challenge: other.as_deref(),
            old: old.as_ref(),
            victim: victim.as_ref(),
            now_s,
            limits: &limits,
        };
        let own = key.public();
        let mut tally = Tally::default();
        for step in plan(a.kind, &mut rng, &ctx) {
            let replies = session.on_message(now, &step.bytes, step.text);
            let actions = self.intake.act(now, replies);
            let verdict = judge(
                &step.expect,
                own,
                &step.bytes,
                &actions,
                session.user(),
                session.is_closed(),
            );
            let source = match &verdict {
                Ok(_) => Source::Byzantine,
                Err(m) => {
                    Source::Refusable(format!("{} ({}): {}", a.kind.name(), step.what, m.what))
                }
            };
            for action in actions {
                if let ConnAction::Submit(body) = action {
                    self.world.input_taken(
                        self.node,
                        u,
                        kv_key(&step.bytes),
                        &body,
                        source.clone(),
                    );
                    self.pending.push_back(body);
                }
            }
            match verdict {
                Ok(Outcome::Refused) => tally.refused += 1,
                Ok(Outcome::Taken) => tally.taken += 1,
                Ok(_) => {}
                Err(m) => tally.misjudged.push((
                    m.accepted,
                    format!(
                        "node {} misjudged byzantine user {u}'s {} message ({}): {}",
                        self.node,
                        a.kind.name(),
                        step.what,
                        m.what
                    ),
                )),
            }
        }
        // A session the node opened (for anyone) serves outputs from now
        // on, as the websocket server's would: the output checks then see
        // whatever a wrongly opened session receives.
        if session.user().is_some() && !session.is_closed() {
            self.sessions.insert(u, session);
        }
        let remembered = (challenge.clone(), helo_message(&key, &challenge, now_s));
        self.world.attacked(self.node, u, a.kind, tally, remembered);
    }
}

/// Starts each `[[byzantine_users]]` table's attackers: one attack every
/// `every_ms`, the users taking turns, each kind and plan drawn from a
/// stream of the run's seed.
pub fn spawn_attackers(world: &Arc<World>, s: &Scenario, seed: u64) {
    let all = s.byzantine_users();
    let first = s.users().len();
    for (gi, g) in s.byzantine_users.iter().enumerate() {
        let mine: Vec<usize> = (0..all.len())
            .filter(|&b| all[b].0 == gi)
            .map(|b| first + b)
            .collect();
        let kinds = if g.attacks.is_empty() {
            AttackKind::ALL.to_vec()
        } else {
            g.attacks.clone()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6279_7a75_7365_7273 ^ ((gi as u64) << 48));
        let (world, g) = (world.clone(), g.clone());
        madsim::task::spawn(async move {
            for (k, t) in g.schedule.times() {
                madsim::time::sleep_until(world.instant_at(t)).await;
                let u = mine[k as usize % mine.len()];
                let kind = kinds[(rng.next_u64() % kinds.len() as u64) as usize];
                world.attack(
                    u,
                    Attack {
                        kind,
                        seed: rng.next_u64(),
                    },
                );
            }
        });
    }
}
