//! Where a node-local time falls in the round/stage grid.
//!
//! Rounds are aligned to `floor((now - offset) / roundtime)`, so nodes whose
//! clocks agree within a fraction of a stage agree on the round without
//! talking. Stage 0 gets what stages 1-3 leave.

use super::ConsensusConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    pub round: u64,
    pub stage: u8,
}

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    roundtime: u64,
    offset: u64,
    /// Offsets of stages 1, 2, 3 from the round start.
    stage_starts: [u64; 3],
}

impl Timing {
    pub fn new(cfg: &ConsensusConfig) -> Timing {
        let slice = cfg.stage_ms();
        let stage0 = cfg.roundtime_ms - 3 * slice;
        Timing {
            roundtime: cfg.roundtime_ms,
            offset: cfg.round_offset_ms % cfg.roundtime_ms,
            stage_starts: [stage0, stage0 + slice, stage0 + 2 * slice],
        }
    }

    pub fn slot(&self, now: u64) -> Slot {
        let t = now.saturating_sub(self.offset);
        let round = t / self.roundtime;
        let within = t % self.roundtime;
        let stage = self.stage_starts.iter().filter(|&&s| within >= s).count() as u8;
        Slot { round, stage }
    }

    pub fn round_start(&self, round: u64) -> u64 {
        round * self.roundtime + self.offset
    }

    pub fn slot_start(&self, slot: Slot) -> u64 {
        let within = match slot.stage {
            0 => 0,
            s => self.stage_starts[s as usize - 1],
        };
        self.round_start(slot.round) + within
    }

    /// The first instant of the slot after the one `now` is in.
    pub fn next_boundary(&self, now: u64) -> u64 {
        let s = self.slot(now);
        let next = if s.stage == 3 {
            Slot {
                round: s.round + 1,
                stage: 0,
            }
        } else {
            Slot {
                round: s.round,
                stage: s.stage + 1,
            }
        };
        self.slot_start(next).max(now + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PubKey;

    fn timing(roundtime: u64, slice: u64, offset: u64) -> Timing {
        let mut c = ConsensusConfig::new(vec![PubKey([1; 32])]);
        c.roundtime_ms = roundtime;
        c.stage_slice_pct = slice;
        c.round_offset_ms = offset;
        Timing::new(&c)
    }

    #[test]
    fn stages_split_the_round() {
        let t = timing(1000, 25, 0);
        let at = |ms| t.slot(ms);
        assert_eq!(at(5_000), Slot { round: 5, stage: 0 });
        assert_eq!(at(5_249), Slot { round: 5, stage: 0 });
        assert_eq!(at(5_250), Slot { round: 5, stage: 1 });
        assert_eq!(at(5_500), Slot { round: 5, stage: 2 });
        assert_eq!(at(5_750), Slot { round: 5, stage: 3 });
        assert_eq!(at(5_999), Slot { round: 5, stage: 3 });
        // A smaller slice leaves the remainder to stage 0.
        let t = timing(1000, 20, 0);
        assert_eq!(t.slot(399), Slot { round: 0, stage: 0 });
        assert_eq!(t.slot(400), Slot { round: 0, stage: 1 });
    }

    #[test]
    fn offset_shifts_boundaries() {
        let t = timing(1000, 25, 300);
        assert_eq!(t.slot(5_299), Slot { round: 4, stage: 3 });
        assert_eq!(t.slot(5_300), Slot { round: 5, stage: 0 });
        assert_eq!(t.round_start(5), 5_300);
    }

    #[test]
    fn next_boundary_walks_every_stage() {
        let t = timing(1000, 25, 0);
        let mut now = 10_000;
        let mut seen = vec![];
        for _ in 0..8 {
            now = t.next_boundary(now);
            seen.push((now, t.slot(now)));
        }
        assert_eq!(
            seen[0],
            (
                10_250,
                Slot {
                    round: 10,
                    stage: 1
                }
            )
        );
        assert_eq!(
            seen[3],
            (
                11_000,
                Slot {
                    round: 11,
                    stage: 0
                }
            )
        );
        assert_eq!(
            seen[7],
            (
                12_000,
                Slot {
                    round: 12,
                    stage: 0
                }
            )
        );
    }
}
