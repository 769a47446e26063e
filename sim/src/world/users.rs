//! The users the world routes messages for: who each is and which node it
//! talks to, what reaches a node's user side, and the account of what
//! byzantine users tried.

use super::World;
use crate::check::violation::Kind;
use crate::scenario::AttackKind;
use hotpocket_node::crypto::{Keypair, PubKey};
use serde::Serialize;
use std::collections::BTreeMap;

pub struct SimUser {
    pub(super) key: Keypair,
    /// The node this user connects to.
    pub(super) node: usize,
    pub(super) byzantine: bool,
    /// A byzantine user's latest challenge, with a helo answering it.
    pub(super) seen: Option<(String, String)>,
}

pub enum UserMsg {
    /// An honest user's command, setting kv key `key`.
    Input {
        user: usize,
        key: String,
        payload: Vec<u8>,
    },
    Attack {
        user: usize,
        attack: Attack,
    },
}

/// One attack, to be planned at the node once its challenge is known. The
/// seed fixes every choice the plan makes.
#[derive(Clone, Copy, Debug)]
pub struct Attack {
    pub kind: AttackKind,
    pub seed: u64,
}

/// What byzantine users may learn of honest ones: a helo each sent (for
/// its own challenge) and a kv key each wrote.
#[derive(Default)]
pub struct Overheard {
    pub(super) helos: BTreeMap<usize, String>,
    pub(super) keys: BTreeMap<usize, String>,
}

/// The run report's account of byzantine users, by attack kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ByzUserStats {
    pub attacks: BTreeMap<String, u64>,
    /// Attacks on a node that was down.
    pub not_delivered: u64,
    /// Messages the nodes refused, as they should.
    pub refused: BTreeMap<String, u64>,
    /// Inputs the nodes rightly took: in the sender's own key, within the
    /// limits.
    pub inputs_taken: u64,
    /// Messages a node took or let pass that it should have refused.
    pub wrongly_accepted: u64,
    /// Messages a node misjudged otherwise: refused for another reason
    /// than expected, or refused when it should have taken them.
    pub misjudged: u64,
}

impl ByzUserStats {
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// One line for the text report.
    pub fn line(&self) -> String {
        let kinds: Vec<String> = self
            .refused
            .iter()
            .map(|(k, n)| format!("{} {n}", k.replace('_', " ")))
            .collect();
        format!(
            "byzantine users: {} attacks ({} on a node that was down), {} messages refused ({}), {} wrongly accepted, {} misjudged; {} inputs taken within the limits",
            self.attacks.values().sum::<u64>(),
            self.not_delivered,
            self.refused_total(),
            kinds.join(", "),
            self.wrongly_accepted,
            self.misjudged,
            self.inputs_taken,
        )
    }
}

/// What one attack came to.
#[derive(Default)]
pub struct Tally {
    pub refused: u64,
    pub taken: u64,
    /// (accepted, violation) for each misjudged message.
    pub misjudged: Vec<(bool, String)>,
}

impl World {
    /// Byzantine user `u`'s attack of `kind` at node `i` came to `tally`;
    /// the user remembers `seen`, its challenge and a helo answering it.
    pub fn attacked(
        &self,
        i: usize,
        u: usize,
        kind: AttackKind,
        tally: Tally,
        seen: (String, String),
    ) {
        let t = self.now();
        let mut g = self.lock();
        let mut tag = vec![b'a', kind as u8];
        tag.extend_from_slice(&(u as u64).to_le_bytes());
        tag.extend_from_slice(&tally.refused.to_le_bytes());
        tag.extend_from_slice(&tally.taken.to_le_bytes());
        self.record(&mut g, i, &tag);
        let s = &mut g.byz_users;
        *s.attacks.entry(kind.name().into()).or_default() += 1;
        if tally.refused > 0 {
            *s.refused.entry(kind.name().into()).or_default() += tally.refused;
        }
        s.inputs_taken += tally.taken;
        for (accepted, _) in &tally.misjudged {
            if *accepted {
                s.wrongly_accepted += 1;
            } else {
                s.misjudged += 1;
            }
        }
        let misjudged = tally.misjudged.into_iter().map(|(_, v)| v).collect();
        g.checker.violate_all(t, Kind::Users, i, misjudged);
        g.users[u].seen = Some(seen);
    }
}

/// What byzantine users may know of an honest user.
pub struct Heard {
    pub key: PubKey,
    /// A kv key it wrote, and a helo it sent, if overheard.
    pub kv_key: Option<String>,
    pub helo: Option<String>,
}

impl World {
    pub fn user_key(&self, u: usize) -> Keypair {
        self.lock().users[u].key.clone()
    }

    pub fn honest_users(&self) -> Vec<usize> {
        let g = self.lock();
        (0..g.users.len())
            .filter(|&v| !g.users[v].byzantine)
            .collect()
    }

    pub fn heard_of(&self, v: usize) -> Heard {
        let g = self.lock();
        let heard = g.overheard.as_ref();
        Heard {
            key: g.users[v].key.public(),
            kv_key: heard.and_then(|o| o.keys.get(&v).cloned()),
            helo: heard.and_then(|o| o.helos.get(&v).cloned()),
        }
    }

    /// The challenge and helo byzantine user `u` remembers from its last
    /// attack, to replay.
    pub fn seen_by(&self, u: usize) -> Option<(String, String)> {
        self.lock().users[u].seen.clone()
    }

    /// Honest user `u` sent `helo`, which byzantine users may overhear.
    pub fn overhear_helo(&self, u: usize, helo: String) {
        if let Some(o) = &mut self.lock().overheard {
            o.helos.insert(u, helo);
        }
    }
}
