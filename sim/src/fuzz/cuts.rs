//! Cuts scoped to rounds and stages, after ByzzFuzz's network faults: how
//! the swarm makes one node close a ledger alone, and so runs the rollback
//! rules, in a good share of runs rather than by luck.

use super::{pick_u, swarm::ev};
use crate::scenario::clock::round_start_ms;
use crate::scenario::{Fault, Ranges, Scenario};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// Adds the drawn cuts to `s`'s timeline, all over by `fault_end`:
/// - `lone_closes` (default 0 to 1): round R's stage-3 votes reach one
///   honest node only, which may close alone; three times in four it is
///   then cut off both ways for one or two rounds while the others may
///   close another ledger at that seq;
/// - `stage_cuts` (default 0 to 2): the proposals of a random set of
///   stages 0-2 over one or two rounds are lost between random sets of
///   nodes. Never stage 3: a second cut of stage-3 votes at the seq of a
///   lone close can make a second lone closer, and honest nodes catching
///   up from the two then split between two proven ledgers that neither
///   side may leave: a stall the protocol does not survive yet
///   (`scenarios/regressions/split-lone-closes.toml`).
///
/// Draws at most `spare` lone closes, and returns how many it drew: each
/// may lock one honest node out of consensus until the others finalise
/// another ledger without it.
pub(super) fn draw(
    rng: &mut ChaCha8Rng,
    r: &Ranges,
    s: &mut Scenario,
    fault_end: u64,
    spare: usize,
) -> usize {
    let (n, roundtime) = (s.nodes, s.consensus.roundtime_ms.max(1));
    let last = (fault_end / roundtime).saturating_sub(3);
    if n < 2 || last < 3 {
        return 0;
    }
    let mut lone_closes = 0;
    let honest = s.honest();
    let all: Vec<usize> = (0..n).collect();
    // Armed half a round early: a cut names its rounds, not a time.
    let arm = |round: u64| round_start_ms(round, roundtime).saturating_sub(roundtime / 2);
    let drawn = pick_u(rng, r.lone_closes.unwrap_or([0, 1]));
    for _ in 0..drawn.min(spare as u64) {
        let round = pick_u(rng, [3, last]);
        if honest.is_empty() {
            break;
        }
        let lone = honest[(rng.next_u64() % honest.len() as u64) as usize];
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != lone).collect();
        let cut = |from: Vec<usize>, to: Vec<usize>, rounds, stages| Fault::Block {
            from,
            to,
            npl_only: false,
            rounds: Some(rounds),
            stages,
        };
        let votes = cut(all.clone(), others.clone(), [round, round], vec![3]);
        s.timeline.push(ev(arm(round), votes));
        lone_closes += 1;
        if !rng.next_u64().is_multiple_of(4) {
            let alone = [round + 1, round + pick_u(rng, [1, 2])];
            s.timeline.push(ev(
                arm(round),
                cut(vec![lone], others.clone(), alone, vec![]),
            ));
            s.timeline
                .push(ev(arm(round), cut(others, vec![lone], alone, vec![])));
        }
    }
    for _ in 0..pick_u(rng, r.stage_cuts.unwrap_or([0, 2])) {
        let round = pick_u(rng, [3, last]);
        let rounds = [round, round + pick_u(rng, [0, 1])];
        let some = |rng: &mut ChaCha8Rng| -> Vec<usize> {
            (0..n)
                .filter(|_| rng.next_u64().is_multiple_of(2))
                .collect()
        };
        let (from, to) = (some(rng), some(rng));
        let stages: Vec<u8> = (0..3)
            .filter(|_| rng.next_u64().is_multiple_of(2))
            .collect();
        if from.is_empty() || to.is_empty() || stages.is_empty() {
            continue;
        }
        let fault = Fault::Block {
            from,
            to,
            npl_only: false,
            rounds: Some(rounds),
            stages,
        };
        s.timeline.push(ev(arm(round), fault));
    }
    s.timeline.sort_by_key(|e| e.at_ms);
    lone_closes
}

#[cfg(test)]
mod tests {
    use crate::fuzz::swarm;
    use crate::scenario::{Fault, Scenario};

    #[test]
    fn the_swarm_draws_lone_closes_within_the_fault_window() {
        let base: Scenario = toml::from_str(
            "name = \"s\"\nduration_ms = 1000\nnodes = 4\n[swarm]\nbyzantine = [0, 0]\n",
        )
        .unwrap();
        let r = base.swarm.clone().unwrap();
        let mut lone = 0;
        for seed in 0..40 {
            let s = swarm::draw(&base, &r, seed);
            let roundtime = s.consensus.roundtime_ms;
            for e in &s.timeline {
                if let Fault::Block {
                    rounds: Some([first, last]),
                    stages,
                    to,
                    ..
                } = &e.fault
                {
                    let start = |r| crate::scenario::clock::round_start_ms(r, roundtime);
                    assert!(first <= last && e.at_ms < start(*first), "{e:?}");
                    assert!(start(last + 1) <= s.duration_ms, "{e:?}");
                    lone += usize::from(*stages == [3] && to.len() == s.nodes - 1);
                }
            }
        }
        // One run in two, about.
        assert!((10..=30).contains(&lone), "{lone} lone closes in 40 runs");
    }
}
