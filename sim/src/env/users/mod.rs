//! Simulated users: each connects to one node, passes the real challenge
//! handshake (`users::Session`), sends key-value commands and receives the
//! certified outputs. The node side here is what the websocket server is to
//! the real node; the checks on what users receive live in `outputs`.
//! Byzantine users (`byzantine`) go through the same sessions.

pub mod attack;
pub mod byzantine;
pub mod hp;
pub mod signed;

use crate::check::outputs::Source;
use crate::check::violation::Kind;
use crate::world::entropy::SimEntropy;
use crate::world::users::UserMsg;
use crate::world::{World, EPOCH_MS};
use hotpocket_node::consensus::Withheld;
use hotpocket_node::contract::{input_hash, RunOutcome, RunResult, B3};
use hotpocket_node::crypto::{Hash, PubKey, Sig};
use hotpocket_node::env::Users;
use hotpocket_node::users::{
    answer_challenge, outputs_for, ConnAction, Intake, Session, SessionLimits,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// A node's user-facing side: one session per user that connected to it
/// since it booted.
pub struct SimUsers {
    pub world: Arc<World>,
    pub node: usize,
    pub rx: UnboundedReceiver<UserMsg>,
    pub sessions: BTreeMap<usize, Session>,
    /// What the websocket server also does: challenges and stamps. Its
    /// limits are the node's; byzantine users meet them.
    pub intake: Intake<SimEntropy>,
    /// Honest users' sessions are let past the rate limits: the scenarios
    /// load the nodes to test consensus, not a user's rate limit.
    pub honest_limits: SessionLimits,
    /// Inputs taken and not yet handed to the node (an attack may give
    /// several at once).
    pub pending: VecDeque<Vec<u8>>,
    /// The node's contract runs are behind: honest users' new inputs are
    /// refused at the door, as the websocket server refuses them (the user
    /// is told; the input is never taken, so no answer is owed).
    pub refusing: bool,
    /// The UNL signatures the node hands with each run's outputs.
    pub signed: signed::SignedCheck,
    /// hpcore's sessions, when the intake serves them (signed inputs only).
    pub hp: hp::HpUsers,
}

impl SimUsers {
    /// (connection, its user) for every session past its handshake.
    fn connected(&self) -> impl Iterator<Item = (usize, PubKey)> + '_ {
        self.sessions
            .iter()
            .filter_map(|(u, s)| Some((*u, s.user()?)))
    }

    fn now_ms(&self) -> u64 {
        self.world.local_now(self.node)
    }

    /// Connects user `u`: the node challenges, the user signs, the node
    /// checks. Any refusal is a violation: these users are honest.
    fn connect(&mut self, u: usize, now: u64) -> Option<Session> {
        let (mut session, msg) = self.intake.open_with(self.honest_limits.clone());
        let key = self.world.user_key(u);
        let Ok(helo) = answer_challenge(&key, &msg, (EPOCH_MS + self.world.now()) / 1000) else {
            self.world.violation(
                Kind::Users,
                self.node,
                format!(
                    "node {} sent user {u} a challenge it cannot answer: {msg}",
                    self.node
                ),
            );
            return None;
        };
        let replies = session.on_message(now, helo.as_bytes(), true);
        if session.user() != Some(key.public()) {
            self.world.violation(
                Kind::Users,
                self.node,
                format!("node {} refused user {u}'s helo: {replies:?}", self.node),
            );
            return None;
        }
        self.world.overhear_helo(u, helo);
        Some(session)
    }

    /// Feeds one message through the user's session; returns the body to
    /// submit, if the session made it an input.
    fn take(&mut self, u: usize, key: String, payload: Vec<u8>) -> Option<Vec<u8>> {
        if self.intake.offers_hp() {
            return self.take_signed(u, key, payload);
        }
        let now = self.now_ms();
        if !self.sessions.contains_key(&u) {
            let s = self.connect(u, now)?;
            self.sessions.insert(u, s);
        }
        let session = self.sessions.get_mut(&u).expect("inserted above");
        let replies = session.on_message(now, &payload, false);
        for action in self.intake.act(now, replies) {
            match action {
                ConnAction::Submit(_) if self.refusing => {
                    // Refused, not submitted: a later try is a new input.
                    session.unsubmit(input_hash(&payload));
                    return None;
                }
                ConnAction::Submit(body) => {
                    self.world
                        .input_taken(self.node, u, key, &body, Source::Honest);
                    return Some(body);
                }
                ConnAction::Send(m) | ConnAction::Close(m) | ConnAction::SendHp(m) => {
                    let what = format!("node {} answered user {u}: {m}", self.node);
                    self.world.violation(Kind::Users, self.node, what);
                }
                // Simulated users speak the prototype's protocol.
                ConnAction::SubmitSigned { name, .. } => {
                    let what = format!("node {} took user {u}'s input {name} as signed", self.node);
                    self.world.violation(Kind::Users, self.node, what);
                }
                ConnAction::QueryLedger { .. }
                | ConnAction::Read { .. }
                | ConnAction::LedgerEvents(_) => {
                    let what = format!("node {} took user {u}'s input as a query", self.node);
                    self.world.violation(Kind::Users, self.node, what);
                }
            }
        }
        None
    }
}

impl Users for SimUsers {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(body) = self.pending.pop_front() {
                return Some(body);
            }
            let msg = self.rx.recv().await?;
            // Everything after the await is synchronous: cancel-safe.
            match msg {
                UserMsg::Input { user, key, payload } => {
                    if let Some(body) = self.take(user, key, payload) {
                        return Some(body);
                    }
                }
                UserMsg::Attack { user, attack } => self.attack(user, attack),
            }
        }
    }

    fn deliver(&mut self, seq: u64, ledger: &Hash, run: &RunResult) {
        self.signed.delivered(seq, ledger, run);
        let here = outputs_for(run, self.connected())
            .into_iter()
            .map(|(u, out)| (u, out.to_vec()))
            .collect();
        self.world.outputs_delivered(self.node, seq, run, here);
    }

    fn outputs_signed(&mut self, seq: u64, root: &B3, sigs: &[(PubKey, Sig)]) {
        match self.signed.signed(seq, root, sigs) {
            Ok(full) => self.world.outputs_signed(full),
            Err(what) => {
                let what = format!("node {} {what}", self.node);
                self.world.violation(Kind::Outputs, self.node, what);
            }
        }
    }

    fn withhold(&mut self, seq: u64, run: &RunResult, _why: Withheld) {
        let told = outputs_for(run, self.connected())
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        self.world.outputs_withheld(self.node, seq, told);
    }

    /// The simulated kv contract never fails a run; its users would be
    /// told as the websocket server tells them (`users::failed_message`).
    fn run_failed(&mut self, _seq: u64, _users: &[PubKey], _outcome: &RunOutcome) {}

    fn intake(&mut self, open: bool, _behind: u64) {
        self.refusing = !open;
    }

    fn notify(&mut self, event: &hotpocket_node::consensus::Event) {
        if self.intake.offers_hp() {
            self.statuses(event);
        }
    }
}

#[cfg(test)]
mod tests;
