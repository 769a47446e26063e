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

/// Byzantine users on a [`super::Schedule`], each action an attack drawn
/// from `attacks` (all kinds when empty).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ByzantineUsers {
    #[serde(flatten)]
    pub schedule: super::Schedule,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attacks: Vec<AttackKind>,
    #[serde(flatten, skip_serializing)]
    pub unknown: super::schedule::Unknown,
}
