//! The node's side of its user connections, shared by the websocket server
//! and the simulated users so the two cannot drift: how a connection is
//! challenged, how a session's replies become inputs for the node, and which
//! outputs of a run go to which connection.

use super::{Reply, Session, SessionLimits};
use crate::contract::{RunResult, Stamper};
use crate::crypto::PubKey;
use crate::env::Entropy;

/// What a connection must do for one session reply, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnAction {
    /// Send this text message to the user.
    Send(String),
    /// Hand this input body (an encoded `UserInput`) to the node.
    Submit(Vec<u8>),
    /// Send this text message, then close the connection.
    Close(String),
}

/// Opens sessions and stamps their inputs for every user connection of one
/// node. One per node, not per connection: nonces must grow across all of
/// the node's users for the inputs to stay distinct.
#[derive(Debug)]
pub struct Intake<E> {
    limits: SessionLimits,
    entropy: E,
    stamper: Stamper,
}

impl<E: Entropy> Intake<E> {
    pub fn new(limits: SessionLimits, entropy: E) -> Self {
        Intake {
            limits,
            entropy,
            stamper: Stamper::default(),
        }
    }

    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// A new connection's session, challenged with fresh entropy, and the
    /// challenge message to send it first.
    pub fn open(&mut self) -> (Session, String) {
        let mut challenge = [0u8; 16];
        self.entropy.fill(&mut challenge);
        Session::open(self.limits.clone(), challenge)
    }

    /// As [`open`](Self::open), but the session keeps `limits` instead of
    /// the intake's: an operator may let its own tools (or a simulator its
    /// load generator) past the public rate limits. The challenge comes
    /// from the same entropy and inputs from the same stamper.
    pub fn open_with(&mut self, limits: SessionLimits) -> (Session, String) {
        let mut challenge = [0u8; 16];
        self.entropy.fill(&mut challenge);
        Session::open(limits, challenge)
    }

    /// What to do for `replies`, a session's answer to a message that
    /// arrived at node time `now_ms`.
    pub fn act(&mut self, now_ms: u64, replies: Vec<Reply>) -> Vec<ConnAction> {
        replies
            .into_iter()
            .map(|reply| match reply {
                Reply::Send(m) => ConnAction::Send(m),
                Reply::Close(m) => ConnAction::Close(m),
                Reply::Input { user, body } => {
                    ConnAction::Submit(self.stamper.stamp(now_ms, user, body))
                }
            })
            .collect()
    }
}

/// The outputs of `run` for the connections here, given as (connection, its
/// user) in the order they should be served. A user connected twice gets
/// its output on both. Empty outputs are left out: the contract wrote
/// nothing for that user, and an empty message would tell them nothing.
pub fn outputs_for<C>(
    run: &RunResult,
    connected: impl IntoIterator<Item = (C, PubKey)>,
) -> Vec<(C, &[u8])> {
    connected
        .into_iter()
        .filter_map(|(conn, user)| {
            let out = run.outputs.get(&user)?;
            (!out.is_empty()).then_some((conn, out.as_slice()))
        })
        .collect()
}

#[cfg(test)]
#[path = "intake_tests.rs"]
mod tests;
