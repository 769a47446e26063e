//! What a simulated node plays: honest, or one of the byzantine roles.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Honest,
    /// Sends different validly signed proposals to different peers.
    Equivocator,
    /// Sends proposals with broken or misattributed signatures, and garbage.
    Forger,
    /// Re-sends old and others' proposals.
    Replayer,
    /// Sends nothing.
    Silent,
    /// Honest, except that it answers history requests with forged,
    /// stripped or truncated ledgers.
    HistoryLiar,
    /// Lies in every answer to a state sync request.
    StateLiar,
    /// Honest, but with every party line chunk it also floods: chunks
    /// past the limits, oversize ones, chunks in another node's name and
    /// replays for an older ledger.
    NplSpammer,
    /// Sends different party line data to different peers, validly signed.
    NplEquivocator,
    /// Commits, then holds its stage-0 proposals until it has seen the
    /// others' reveals and reveals only if that gives a value it likes
    /// (lowest bit clear): the one-bit bias commit-reveal allows.
    BeaconWithholder,
    /// Commits to one secret with its odd peers, another with the rest.
    BeaconEquivocator,
    /// Reveals a secret that does not open its commitment.
    BeaconLiar,
    /// Plays with the beacon's signed entries: forged copies of the
    /// others' reveals and commits, a flood of its own commitments, other
    /// proofs against itself; to all peers or some.
    BeaconForger,
    /// Honest, except inside its `mutate` timeline windows: then each
    /// message it sends to the named peers gets one small-scope (or
    /// any-scope) mutation, re-signed with its own key (ByzzFuzz).
    Mutator,
    /// One of a coalition with one plan: every colluder splits the honest
    /// nodes the same way each round and shows one half the real
    /// candidate, the other half one without inputs, at every stage.
    Colluder,
    /// Sends its victim stage-3 votes for a candidate nobody else sees,
    /// in the other members' names, signed with its own key: each fails
    /// the signature check and nothing else.
    VoteForger,
    /// The same votes, validly signed by keys outside the UNL: each fails
    /// the membership check and nothing else.
    Sybil,
    /// Answers every history request with a chain of its own, each ledger
    /// proven by its own vote alone: fails the proof threshold only.
    HistoryForger,
    /// Answers every history request with a chain of its own, each ledger
    /// proven by as many votes as the real one, in the real voters' names,
    /// each carrying the real vote's signature over other bytes: fails
    /// the signature check only.
    ProofForger,
    /// Answers history with the real ledgers and proofs, every input's
    /// body swapped for another real one: fails the body hash check only.
    BodySwapper,
    /// Answers history with the real ledgers and proofs, the second one
    /// left out: the next does not follow the first, and fails the link
    /// check only.
    HistorySkipper,
    /// After an honest node closed a ledger alone, tells half the other
    /// nodes it is past that ledger and answers their history requests
    /// with it and its real proof: a genuine ledger that nobody built on,
    /// so no proof that their lcl lost (`adversary/lcl.rs`).
    LclLiar,
    /// Honest on its own links; beside them it splices, claims and
    /// replays peer handshakes between honest nodes.
    Relay,
    /// Names inputs in users' names in its proposals and sends their
    /// bodies: vouched ones, ones with its own signature or a changed
    /// container, and replays of signed ones it saw (`adversary/inputs.rs`).
    /// Meant for networks that take signed inputs only.
    InputForger,
    /// Runs as two honest copies under one key (`[twins]`), each with its
    /// own state, the other nodes split between them round by round: the
    /// equivocation and forgetting a real fault produces, from correct code.
    Twin,
}

impl Role {
    /// Whether liveness may count on a node in this role to vote: honest
    /// code that serves real history. A byzantine node may close a ledger
    /// alone and then withhold it, as any BFT protocol assumes; twins run
    /// correct code and serve what they closed.
    pub fn counted_for_liveness(self) -> bool {
        matches!(self, Role::Honest | Role::Twin)
    }
}
