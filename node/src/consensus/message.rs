//! Messages between nodes and their wire encoding.

use super::output_sigs::OutputSig;
use crate::crypto::{Hash, PubKey, Sig};
use crate::ledger::LedgerId;
use crate::ledger::LedgerRecord;
use crate::ledger::SignedProposal;
use crate::npl::NplEnvelope;
use crate::sync::state_transfer::{StateRequest, StateResponse};
use crate::wire::MAX_FRAME_BYTES;
use serde::{Deserialize, Serialize};

const WIRE_VERSION: u8 = 1;
/// `PeerMessage::Proposal`'s index, its first byte after the version.
const PROPOSAL_VARIANT: u8 = 0;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    Proposal(Box<SignedProposal>),
    /// Input bodies circulated so every node can run every agreed input.
    Inputs(Vec<Vec<u8>>),
    /// "Send me ledgers `from_seq ..` (at most `count`)."
    HistoryRequest {
        from_seq: u64,
        count: u64,
    },
    HistoryResponse(Vec<LedgerRecord>),
    /// "Send me the bodies of these inputs."
    BodyRequest(Vec<Hash>),
    BodyResponse(Vec<Vec<u8>>),
    /// State sync: a directory listing or file piece, asked for by hash.
    StateRequest(StateRequest),
    StateResponse(StateResponse),
    /// A signed chunk of a contract's node party line output.
    Npl(Box<NplEnvelope>),
    /// A node's signature over a delivered run's output tree root.
    OutputSig(OutputSig),
}

/// What `PeerMessage::proposal_head` reads of a proposal frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposalHead {
    pub round: u64,
    pub stage: u8,
    pub lcl: LedgerId,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown wire version {0}")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl PeerMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        postcard::to_io(self, &mut out).expect("encoding into a Vec cannot fail");
        out
    }

    /// `PeerMessage::Proposal(sp).encode()`, made from the bytes `sp`'s
    /// author signed (`Proposal::sign_keeping_bytes`) and its signature
    /// without copying or encoding the proposal again: a signed proposal
    /// encodes as its proposal, then its signature, after the variant.
    pub fn proposal_frame(signed: &[u8], sig: &Sig) -> Vec<u8> {
        let mut out = Vec::with_capacity(signed.len() + 70);
        out.extend_from_slice(&[WIRE_VERSION, PROPOSAL_VARIANT]);
        out.extend_from_slice(signed);
        postcard::to_io(sig, &mut out).expect("encoding into a Vec cannot fail");
        out
    }

    /// A proposal frame's round, stage and lcl, read from its head without
    /// decoding the rest: for watchers of traffic that only route by them
    /// (the simulator's round- and stage-scoped cuts, its vote tracking).
    /// `None` for any other message or a head that does not parse.
    pub fn proposal_head(frame: &[u8]) -> Option<ProposalHead> {
        let body = frame.strip_prefix(&[WIRE_VERSION, PROPOSAL_VARIANT])?;
        // A proposal's fields in order, as far as the lcl (`Proposal`).
        let ((_author, round, stage, _time, lcl), _rest): ((PubKey, u64, u8, u64, LedgerId), _) =
            postcard::take_from_bytes(body).ok()?;
        Some(ProposalHead { round, stage, lcl })
    }

    /// Where the signed bytes and the signature would lie if `frame` were a
    /// `proposal_frame`: the frame is `proposal_frame(signed, sig)` exactly
    /// when it is that long and those parts are those bytes. Nothing is
    /// decoded or checked: a caller compares the parts with bytes it knows.
    pub fn proposal_parts(frame: &[u8]) -> Option<(&[u8], Sig)> {
        let (head, sig) = frame.split_last_chunk::<64>()?;
        let (head, &[sig_len]) = head.split_last_chunk::<1>()?;
        let signed = head.strip_prefix(&[WIRE_VERSION, PROPOSAL_VARIANT])?;
        (usize::from(sig_len) == sig.len()).then_some((signed, Sig(*sig)))
    }

    pub fn decode(bytes: &[u8]) -> Result<PeerMessage, WireError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
        if version != WIRE_VERSION {
            return Err(WireError::Version(version));
        }
        let (msg, rest) =
            postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let m = PeerMessage::HistoryRequest {
            from_seq: 3,
            count: 64,
        };
        assert_eq!(PeerMessage::decode(&m.encode()), Ok(m));
        let m = PeerMessage::Inputs(vec![b"abc".to_vec(), vec![]]);
        assert_eq!(PeerMessage::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn a_proposal_frame_is_the_proposal_message_encoded() {
        use crate::beacon::SignedCommit;
        use crate::crypto::Keypair;
        use crate::ledger::{Beacon, LedgerId, Proposal};
        let k = Keypair::from_seed([4; 32]);
        let lcl = LedgerId {
            seq: 300,
            hash: Hash([6; 32]),
        };
        let p = Proposal {
            author: k.public(),
            round: 1 << 20,
            stage: 2,
            time: 1_700_000_000_000,
            lcl,
            inputs: vec![Hash([1; 32]), Hash([2; 32])],
            results: vec![],
            beacon: Beacon {
                commits: vec![SignedCommit::new(&k, lcl)],
                ..Beacon::default()
            },
        };
        let (sp, signed) = p.sign_keeping_bytes(&k);
        let whole = PeerMessage::Proposal(Box::new(sp.clone())).encode();
        assert_eq!(PeerMessage::proposal_frame(&signed, &sp.sig), whole);
        assert_eq!(
            PeerMessage::proposal_parts(&whole),
            Some((&signed[..], sp.sig))
        );
        assert_eq!(PeerMessage::proposal_parts(&whole[1..]), None);
        assert_eq!(PeerMessage::proposal_parts(&whole[..whole.len() - 1]), None);
        let other = PeerMessage::Inputs(vec![vec![0; 70]]).encode();
        assert_eq!(PeerMessage::proposal_parts(&other), None);
        let head = ProposalHead {
            round: 1 << 20,
            stage: 2,
            lcl,
        };
        assert_eq!(PeerMessage::proposal_head(&whole), Some(head));
        assert_eq!(PeerMessage::proposal_head(&other), None);
        assert_eq!(PeerMessage::proposal_head(&whole[..40]), None);
        assert_eq!(
            PeerMessage::decode(&whole),
            Ok(PeerMessage::Proposal(Box::new(sp)))
        );
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(PeerMessage::decode(&[]), Err(WireError::Empty));
        assert_eq!(PeerMessage::decode(&[9, 0]), Err(WireError::Version(9)));
        let mut ok = PeerMessage::Inputs(vec![]).encode();
        ok.push(0);
        assert!(matches!(
            PeerMessage::decode(&ok),
            Err(WireError::Malformed(_))
        ));
        let big = vec![1u8; MAX_FRAME_BYTES + 1];
        assert_eq!(
            PeerMessage::decode(&big),
            Err(WireError::TooLarge(big.len()))
        );
    }

    proptest! {
        // Untrusted bytes never panic the decoder.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = PeerMessage::decode(&bytes);
        }
    }
}
