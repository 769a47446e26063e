//! The simulated calendar: the unix time runs start at, and where a run's
//! rounds fall. The protocol numbers rounds from the unix epoch; scenario
//! files count them from the run's first one.

use super::Fault;

/// Unix time the simulation starts at, so node clocks look like real ones.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// The protocol's number of a run's round 0: the first round that starts
/// at or after the run does (rounds are aligned to unix time).
pub fn round_zero(roundtime_ms: u64) -> u64 {
    EPOCH_MS.div_ceil(roundtime_ms.max(1))
}

/// The simulated time (ms from the run's start) at which the run's round
/// `round` starts, on a clock without offset.
pub fn round_start_ms(round: u64, roundtime_ms: u64) -> u64 {
    let rt = roundtime_ms.max(1);
    (round_zero(rt).saturating_add(round))
        .saturating_mul(rt)
        .saturating_sub(EPOCH_MS)
}

/// When `fault` ends by itself, if it is a cut scoped to rounds: at the
/// start of the round after its last.
pub fn scoped_end_ms(fault: &Fault, roundtime_ms: u64) -> Option<u64> {
    match fault {
        Fault::Block {
            rounds: Some([_, last]),
            ..
        } => Some(round_start_ms(last.saturating_add(1), roundtime_ms)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_zero_starts_at_or_after_the_run() {
        // 1_700_000_000_000 is a multiple of 1000 but not of 300.
        assert_eq!(round_start_ms(0, 1000), 0);
        assert_eq!(round_start_ms(10, 1000), 10_000);
        assert_eq!(round_start_ms(0, 300), 100);
        assert_eq!(round_start_ms(2, 300), 700);
        assert_eq!(
            (EPOCH_MS + round_start_ms(2, 300)) / 300,
            round_zero(300) + 2
        );
        assert_eq!(round_start_ms(u64::MAX, 300), u64::MAX - EPOCH_MS);
    }
}
