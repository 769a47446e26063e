//! The node's side of its user connections, shared by the websocket server
//! and the simulated users so the two cannot drift: how a connection is
//! challenged, how a session's replies become inputs for the node, and which
//! outputs of a run go to which connection.

use super::hp::{self, HpNode, Refused, View};
use super::hp_ledger;
use super::{Reply, Session, SessionLimits};
use crate::contract::{RunResult, Stamper};
use crate::crypto::PubKey;
use crate::env::Entropy;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a connection must do for one session reply, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnAction {
    /// Send this text message to the user.
    Send(String),
    /// Hand this input body (an encoded `UserInput`) to the node.
    Submit(Vec<u8>),
    /// Send this text message, then close the connection.
    Close(String),
    /// Send this hpcore message (JSON) in a binary frame.
    SendHp(String),
    /// Hand this signed input's body to the node; its user knows it as
    /// `name` and is owed a status for it by ledger `max_ledger`.
    SubmitSigned {
        body: Vec<u8>,
        name: String,
        max_ledger: u64,
    },
    /// Answer `user`'s `ledger_query` from the node's chain
    /// (`hp_ledger::result`).
    QueryLedger {
        user: PubKey,
        query: hp_ledger::Query,
    },
    /// Send this connection `ledger_event` notifications, or stop.
    LedgerEvents(bool),
    /// Run `user`'s read request and answer it (`hp::read_response`).
    Read {
        user: PubKey,
        id: String,
        content: String,
    },
}

/// Opens sessions and stamps their inputs for every user connection of one
/// node. One per node, not per connection: nonces must grow across all of
/// the node's users for the inputs to stay distinct.
#[derive(Debug)]
pub struct Intake<E> {
    limits: SessionLimits,
    entropy: E,
    stamper: Stamper,
    /// Who the node is in hpcore's protocol, and its view of the chain,
    /// when it serves that protocol.
    hp: Option<(Arc<HpNode>, View)>,
    /// Each hpcore user's latest input taken here, as hpcore's nonce map:
    /// the next must have a higher nonce while this one's last ledger is
    /// ahead (consensus holds the same rule over the chain).
    nonces: BTreeMap<PubKey, Taken>,
}

#[derive(Debug)]
struct Taken {
    nonce: u64,
    max_ledger: u64,
    name: String,
    /// The (nonce, last ledger) it replaced, put back if it is untaken.
    before: Option<(u64, u64)>,
}

/// Users whose latest input is remembered at once; past it, new users'
/// inputs are refused as `round_inputs_overflow` until some expire.
pub const MAX_NONCE_USERS: usize = 1 << 16;

impl<E: Entropy> Intake<E> {
    pub fn new(limits: SessionLimits, entropy: E) -> Self {
        Intake {
            limits,
            entropy,
            stamper: Stamper::default(),
            hp: None,
            nonces: BTreeMap::new(),
        }
    }

    /// Serves hpcore's protocol beside the prototype's: each session is
    /// offered both (see `Session::open_hp`).
    pub fn serving_hp(mut self, node: HpNode, view: View) -> Self {
        self.hp = Some((Arc::new(node), view));
        self
    }

    /// Whether new sessions are first sent hpcore's `user_challenge`,
    /// which goes in a binary frame.
    pub fn offers_hp(&self) -> bool {
        self.hp.is_some()
    }

    /// The chain as `stat` and `lcl` report it and inputs are checked
    /// against; `None` unless serving hpcore's protocol.
    pub fn view_mut(&mut self) -> Option<&mut View> {
        self.hp.as_mut().map(|(_, v)| v)
    }

    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// A new connection's session, challenged with fresh entropy, and the
    /// challenge message to send it first.
    pub fn open(&mut self) -> (Session, String) {
        self.open_with(self.limits.clone())
    }

    /// As [`open`](Self::open), but the session keeps `limits` instead of
    /// the intake's: an operator may let its own tools (or a simulator its
    /// load generator) past the public rate limits. The challenge comes
    /// from the same entropy and inputs from the same stamper.
    pub fn open_with(&mut self, limits: SessionLimits) -> (Session, String) {
        let mut challenge = [0u8; 16];
        self.entropy.fill(&mut challenge);
        match &self.hp {
            Some((node, _)) => Session::open_hp(limits, challenge, node.clone()),
            None => Session::open(limits, challenge),
        }
    }

    /// What to do for `replies`, a session's answer to a message that
    /// arrived at node time `now_ms`.
    pub fn act(&mut self, now_ms: u64, replies: Vec<Reply>) -> Vec<ConnAction> {
        let mut out = Vec::with_capacity(replies.len());
        for reply in replies {
            let hp_answer = |hp: &Option<(Arc<HpNode>, View)>,
                             f: &dyn Fn(&HpNode, &View) -> String| {
                hp.as_ref()
                    .map(|(node, view)| ConnAction::SendHp(f(node, view)))
            };
            let action = match reply {
                Reply::Send(m) => Some(ConnAction::Send(m)),
                Reply::Close(m) => Some(ConnAction::Close(m)),
                Reply::SendHp(m) => Some(ConnAction::SendHp(m)),
                Reply::Input { user, body } => {
                    Some(ConnAction::Submit(self.stamper.stamp(now_ms, user, body)))
                }
                Reply::Signed {
                    input,
                    name,
                    nonce,
                    max_ledger,
                } => {
                    let lcl = self.hp.as_ref().map_or(0, |(_, v)| v.lcl.seq);
                    let checked = hp::check_max_ledger(max_ledger, lcl)
                        .and_then(|()| self.take_nonce(input.user, nonce, max_ledger, &name, lcl));
                    Some(match checked {
                        Ok(()) => ConnAction::SubmitSigned {
                            body: input.encode(),
                            name,
                            max_ledger,
                        },
                        Err(reason) => {
                            ConnAction::SendHp(hp::rejected(&Refused { reason, hash: name }))
                        }
                    })
                }
                Reply::Stat => hp_answer(&self.hp, &hp::stat_response),
                Reply::Lcl => hp_answer(&self.hp, &|_, v| hp::lcl_response(v)),
                Reply::LedgerQuery { user, query } => Some(ConnAction::QueryLedger { user, query }),
                Reply::Read { user, id, content } => Some(ConnAction::Read { user, id, content }),
                Reply::LedgerEvents(on) => Some(ConnAction::LedgerEvents(on)),
            };
            out.extend(action);
        }
        out
    }
}

impl<E> Intake<E> {
    /// Takes `user`'s input `name` of `nonce` if its nonce is above the
    /// last one taken from it whose last ledger is ahead of `lcl`.
    fn take_nonce(
        &mut self,
        user: PubKey,
        nonce: u64,
        max_ledger: u64,
        name: &str,
        lcl: u64,
    ) -> Result<(), hp::Reason> {
        match self.nonces.get(&user) {
            Some(t) if t.max_ledger > lcl && nonce == t.nonce && name == t.name => {
                return Err(hp::Reason::AlreadySubmitted)
            }
            Some(t) if t.max_ledger > lcl && nonce <= t.nonce => {
                return Err(hp::Reason::NonceExpired)
            }
            Some(_) => {}
            None if self.nonces.len() >= MAX_NONCE_USERS => {
                self.nonces.retain(|_, t| t.max_ledger > lcl);
                if self.nonces.len() >= MAX_NONCE_USERS {
                    return Err(hp::Reason::RoundInputsOverflow);
                }
            }
            None => {}
        }
        let before = (self.nonces.get(&user)).map(|t| (t.nonce, t.max_ledger));
        let taken = Taken {
            nonce,
            max_ledger,
            name: name.to_string(),
            before,
        };
        self.nonces.insert(user, taken);
        Ok(())
    }

    /// The node refused the signed input `name` (hash `ours`) that
    /// `session` gave after all (too busy): the same input again is a new
    /// try, neither a repeat to the session nor already submitted here.
    pub fn unsubmit(
        &mut self,
        session: &mut super::Session,
        ours: crate::crypto::Hash,
        name: &str,
    ) {
        session.unsubmit(ours);
        if let Some(user) = session.user() {
            self.untake(&user, name);
        }
    }

    fn untake(&mut self, user: &PubKey, name: &str) {
        let Some(t) = self.nonces.get_mut(user).filter(|t| t.name == name) else {
            return;
        };
        match t.before {
            Some((nonce, max_ledger)) => {
                *t = Taken {
                    nonce,
                    max_ledger,
                    name: String::new(),
                    before: None,
                }
            }
            None => {
                self.nonces.remove(user);
            }
        }
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
