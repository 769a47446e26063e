//! A coalition with one plan. Every colluder is handed the same plan seed,
//! so without talking they split the honest nodes the same way each round
//! and show one half the real proposal and the other half one alternative
//! candidate (no inputs, a millisecond earlier), at every stage, each
//! validly signed. Against one half the coalition votes as one block for a
//! ledger the other half never sees: the split a fork needs. Below the
//! safety bound it must still fail.

use super::Byzantine;
use hotpocket_node::consensus::PeerMessage;

/// splitmix64: a fixed mixing function, so every colluder computes the
/// same split from the same plan.
pub(super) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Byzantine {
    /// Whether peer `to` is in the half shown the alternative for the
    /// round on ledger `seq`.
    fn other_half(&self, seq: u64, to: usize) -> bool {
        mix(self.plan ^ mix(seq) ^ (to as u64).wrapping_mul(0x1000_0000_01b3)) & 1 == 1
    }

    pub(super) fn collude(&mut self, to: usize, bytes: Vec<u8>) -> Vec<u8> {
        let Ok(PeerMessage::Proposal(sp)) = PeerMessage::decode(&bytes) else {
            return bytes;
        };
        if !self.other_half(sp.proposal.lcl.seq, to) {
            return bytes;
        }
        let mut p = sp.proposal;
        p.inputs.clear();
        p.time = p.time.saturating_sub(1);
        PeerMessage::Proposal(Box::new(p.sign(&self.key))).encode()
    }
}

#[cfg(test)]
mod tests {
    use super::mix;

    #[test]
    fn mix_spreads_both_ways() {
        let ones = (0..1000u64).filter(|&i| mix(i) & 1 == 1).count();
        assert!((400..600).contains(&ones), "{ones}");
    }
}
