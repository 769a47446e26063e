//! A memory of the proposal frames the nodes of one process broadcast,
//! with the proposal each decodes to.
//!
//! In the simulator every proposal frame reaches every other node, and each
//! decoded it and encoded its proposal again to check the signature: at 16
//! nodes a sixth of the run. [`SentProposals`] keeps, for each proposal a
//! sharing node signed, the bytes it signed (its proposal's encoding) and
//! the signed proposal. A frame whose signature and signed bytes are
//! exactly those is that proposal's frame byte for byte
//! (`PeerMessage::proposal_parts`), so the receiver shares the sender's
//! proposal (and its books and close proofs hold that one copy) and takes
//! its encoding from memory; any other frame, a byzantine peer's altered
//! copy included, is decoded as before. The signature is still checked
//! (through the key ring, and its own memory): this memory only saves the
//! decoding and the encoding.
//!
//! A capability like the key ring's memory: the simulator hands one to
//! every node it runs (`Node::share_frames`); the real node holds none.

use super::message::PeerMessage;
use crate::crypto::Sig;
use crate::ledger::SignedProposal;
use crate::memo::Generations;
use std::sync::{Arc, Mutex};

/// Proposals a generation holds: at 25 nodes about 10 rounds' worth.
const GENERATION: usize = 1024;
/// And signed bytes (each entry holds its proposal decoded, too).
const GENERATION_BYTES: usize = 8 << 20;

/// How often a frame shaped like a proposal's was found in memory (the
/// bench prints it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    pub hits: u64,
    pub misses: u64,
}

/// Proposal frames sent by sharing nodes, shared by cloning.
#[derive(Clone)]
pub struct SentProposals(Arc<Mutex<Generations<Sig, Arc<SignedProposal>>>>);

impl Default for SentProposals {
    fn default() -> Self {
        let sent = Generations::new(GENERATION, GENERATION_BYTES);
        SentProposals(Arc::new(Mutex::new(sent)))
    }
}

impl SentProposals {
    pub fn new() -> SentProposals {
        SentProposals::default()
    }

    /// A node broadcasts `PeerMessage::proposal_frame(signed, &sp.sig)`:
    /// `signed` must be `sp.proposal.signing_bytes()`, as
    /// `Proposal::sign_keeping_bytes` returns them.
    pub(crate) fn sent(&self, sp: &Arc<SignedProposal>, signed: Arc<[u8]>) {
        self.lock().put(sp.sig, signed, sp.clone());
    }

    /// What `frame` decodes to, and its proposal's signed bytes, if it is
    /// exactly a frame a sharing node sent.
    pub(crate) fn received(&self, frame: &[u8]) -> Option<(Arc<SignedProposal>, Arc<[u8]>)> {
        // Other messages are not counted: they are never here.
        let (signed, sig) = PeerMessage::proposal_parts(frame)?;
        let mut sent = self.lock();
        (sent.find(&sig, signed)).map(|(bytes, sp)| (sp.clone(), bytes.clone()))
    }

    pub fn stats(&self) -> FrameStats {
        let sent = self.lock();
        FrameStats {
            hits: sent.hits(),
            misses: sent.misses(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<Sig, Arc<SignedProposal>>> {
        // Each insert or swap is one call, so a panicking holder leaves the
        // maps consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Hash, Keypair};
    use crate::ledger::{LedgerId, Proposal};

    fn proposal(k: &Keypair, round: u64) -> Proposal {
        Proposal {
            author: k.public(),
            round,
            stage: 1,
            time: 1000 * round,
            lcl: LedgerId {
                seq: round,
                hash: Hash([round as u8; 32]),
            },
            inputs: vec![Hash([1; 32])],
            results: vec![],
            beacon: Default::default(),
        }
    }

    #[test]
    fn answers_a_sent_frame_exactly_as_decoding_it() {
        let k = Keypair::from_seed([3; 32]);
        let memo = SentProposals::new();
        let (sp, signed) = proposal(&k, 5).sign_keeping_bytes(&k);
        let frame = PeerMessage::proposal_frame(&signed, &sp.sig);
        assert!(memo.received(&frame).is_none(), "nothing sent yet");
        memo.sent(&Arc::new(sp), signed.clone().into());
        let (got, bytes) = memo.received(&frame).expect("sent");
        assert_eq!(
            PeerMessage::decode(&frame),
            Ok(PeerMessage::Proposal(Box::new((*got).clone())))
        );
        assert_eq!(&*bytes, &signed[..]);
        assert_eq!(memo.stats(), FrameStats { hits: 1, misses: 1 });
        // Other messages are neither found nor counted.
        assert!(memo
            .received(&PeerMessage::Inputs(vec![]).encode())
            .is_none());
        assert_eq!(memo.stats(), FrameStats { hits: 1, misses: 1 });
    }

    #[test]
    fn any_other_frame_is_not_found() {
        let k = Keypair::from_seed([3; 32]);
        let memo = SentProposals::new();
        let (sp, signed) = proposal(&k, 5).sign_keeping_bytes(&k);
        let sp = Arc::new(sp);
        memo.sent(&sp, signed.clone().into());
        let frame = PeerMessage::proposal_frame(&signed, &sp.sig);
        // Every single flipped bit: in the signed bytes, the signature,
        // the header.
        for i in 0..frame.len() {
            let mut f = frame.clone();
            f[i] ^= 1;
            assert!(memo.received(&f).is_none(), "bit flipped at byte {i}");
        }
        // Another proposal under the same signature, and the same bytes
        // under another signature (an equivocator's or a forger's).
        let (other, other_signed) = proposal(&k, 6).sign_keeping_bytes(&k);
        let f = PeerMessage::proposal_frame(&other_signed, &sp.sig);
        assert!(memo.received(&f).is_none());
        let f = PeerMessage::proposal_frame(&signed, &other.sig);
        assert!(memo.received(&f).is_none());
        // Extra bytes, or fewer.
        let mut f = frame.clone();
        f.push(0);
        assert!(memo.received(&f).is_none());
        assert!(memo.received(&frame[..frame.len() - 1]).is_none());
        assert!(memo.received(&[]).is_none());
    }
}
