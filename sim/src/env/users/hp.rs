//! Simulated users of hpcore's protocol, on a network that takes signed
//! inputs only (`prototype_users = false`): each proves the node's key in
//! the handshake, signs its inputs (nonces growing, last ledger 10 past
//! the node's lcl, as hpcore's client does) and is owed a status for each,
//! which the checks compare with where the input landed.

use super::SimUsers;
use crate::check::outputs::Source;
use crate::check::violation::Kind;
use hotpocket_node::contract::input_hash;
use hotpocket_node::crypto::Hash;
use hotpocket_node::users::hp::MAX_LEDGER_OFFSET;
use hotpocket_node::users::hp_client;
use hotpocket_node::users::statuses::Statuses;
use hotpocket_node::users::{ConnAction, Session};

/// What hpcore's side of a node's user sessions keeps here.
#[derive(Default)]
pub struct HpUsers {
    /// Statuses owed, each for (user, the input's hash in ledgers).
    pub owed: Statuses<(usize, Hash)>,
    /// The last nonce given: the next is above it, whatever the clock.
    last_nonce: u64,
}

impl SimUsers {
    /// hpcore's handshake for user `u`: the node signs the user's challenge
    /// with its key, which the user checks.
    pub(super) fn connect_hp(&mut self, u: usize, now: u64) -> Option<Session> {
        let (mut session, msg) = self.intake.open_with(self.honest_limits.clone());
        let key = self.world.user_key(u);
        let (world, node) = (self.world.clone(), self.node);
        let fail = |what: String| {
            let what = format!("node {node} to user {u}: {what}");
            world.violation(Kind::Users, node, what);
        };
        let c = match hp_client::read_challenge(msg.as_bytes(), None) {
            Ok(c) => c,
            Err(e) => {
                fail(e.to_string());
                return None;
            }
        };
        // Any 32 hex digits the node cannot guess: the user's key and the
        // time will do in a simulation.
        let ours = hex::encode(
            &Hash::of("sim/user-challenge", &[&key.public().0, &now.to_le_bytes()]).0[..16],
        );
        let answer = hp_client::challenge_response(&key, &c, &ours);
        let replies = session.on_message(now, answer.as_bytes(), false);
        let node_key = self.world.key(self.node);
        for action in self.intake.act(now, replies) {
            let ConnAction::SendHp(m) = action else {
                fail(format!("answered the handshake with {action:?}"));
                return None;
            };
            if let Err(e) = hp_client::check_server(m.as_bytes(), &c, &ours, &[node_key]) {
                fail(e.to_string());
                return None;
            }
        }
        if session.user() != Some(key.public()) {
            fail("refused the handshake".into());
            return None;
        }
        Some(session)
    }

    /// User `u`'s command `payload`, signed, through its session; returns
    /// the body to submit.
    pub(super) fn take_signed(
        &mut self,
        u: usize,
        key: String,
        payload: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let now = self.now_ms();
        if !self.sessions.contains_key(&u) {
            let s = self.connect_hp(u, now)?;
            self.sessions.insert(u, s);
        }
        let lcl = self.intake.view_mut().map_or(0, |v| v.lcl.seq);
        let hp = &mut self.hp;
        hp.last_nonce = hp_client::next_nonce(hp.last_nonce, now);
        let input = String::from_utf8_lossy(&payload);
        let user_key = self.world.user_key(u);
        let (msg, _) =
            hp_client::input_message(&user_key, &input, hp.last_nonce, lcl + MAX_LEDGER_OFFSET);
        let session = self.sessions.get_mut(&u).expect("inserted above");
        let replies = session.on_message(now, msg.as_bytes(), false);
        for action in self.intake.act(now, replies) {
            match action {
                ConnAction::SubmitSigned {
                    body,
                    name,
                    max_ledger,
                } => {
                    let ours = input_hash(&body);
                    // Refused as the websocket server refuses: the node is
                    // behind, or overloaded (`Statuses::submitted`).
                    if self.refusing
                        || !(self.hp.owed).submitted(ours, (u, ours), name.clone(), max_ledger)
                    {
                        self.intake.unsubmit(session, ours, &name);
                        return None;
                    }
                    (self.world).input_taken(self.node, u, key, &body, Source::Honest);
                    return Some(body);
                }
                other => {
                    let what = format!(
                        "node {} answered user {u}'s input with {other:?}",
                        self.node
                    );
                    self.world.violation(Kind::Users, self.node, what);
                }
            }
        }
        None
    }

    /// The statuses a node event makes due, judged by the checks.
    pub(super) fn statuses(&mut self, event: &hotpocket_node::consensus::Event) {
        let due = self.hp.owed.on_event(event, self.intake.view_mut());
        for ((u, ours), status) in due {
            self.world.input_status(self.node, u, ours, &status);
        }
    }
}
