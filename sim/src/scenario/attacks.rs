//! What a scenario's byzantine users try on the nodes' user sessions.

use serde::{Deserialize, Serialize};

/// What a byzantine user tries on a node's user session; each is described
/// at its plan below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    BadSignature,
    ReplayedChallenge,
    WrongChallenge,
    Impersonation,
    MessageFlood,
    InputFlood,
    Oversize,
    Malformed,
}

impl AttackKind {
    pub const ALL: [AttackKind; 8] = [
        AttackKind::BadSignature,
        AttackKind::ReplayedChallenge,
        AttackKind::WrongChallenge,
        AttackKind::Impersonation,
        AttackKind::MessageFlood,
        AttackKind::InputFlood,
        AttackKind::Oversize,
        AttackKind::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttackKind::BadSignature => "bad_signature",
            AttackKind::ReplayedChallenge => "replayed_challenge",
            AttackKind::WrongChallenge => "wrong_challenge",
            AttackKind::Impersonation => "impersonation",
            AttackKind::MessageFlood => "message_flood",
            AttackKind::InputFlood => "input_flood",
            AttackKind::Oversize => "oversize",
            AttackKind::Malformed => "malformed",
        }
    }
}

/// Byzantine users on a [`super::Schedule`] (its fields are this table's
/// first five), each action an attack drawn from `attacks` (all kinds when
/// empty).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByzantineUsers {
    #[serde(default)]
    pub nodes: Vec<usize>,
    #[serde(default)]
    pub users: Option<usize>,
    pub every_ms: u64,
    #[serde(default)]
    pub start_ms: u64,
    pub stop_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attacks: Vec<AttackKind>,
}

impl ByzantineUsers {
    pub fn schedule(&self) -> super::Schedule {
        super::Schedule {
            nodes: self.nodes.clone(),
            users: self.users,
            every_ms: self.every_ms,
            start_ms: self.start_ms,
            stop_ms: self.stop_ms,
        }
    }
}
