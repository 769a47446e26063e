//! Back-pressure on user intake: when the contract falls behind the chain,
//! the node refuses new inputs until it catches up, instead of letting runs
//! (and the users waiting on them) fall further behind.

use super::{Action, Event};

/// Ledgers the contract may be behind the lcl before intake pauses. One is
/// the steady state: the lcl's run starts when it closes.
pub const PAUSE_BEHIND: u64 = 4;
/// Intake opens again once the contract is this close to the lcl, so it
/// does not flap on every ledger.
pub const RESUME_BEHIND: u64 = 2;

#[derive(Debug, Default)]
pub struct Backlog {
    paused: bool,
}

impl Backlog {
    /// The contract has run through `ran` (None: nothing yet) with the lcl
    /// at `lcl`: on a change of mind, what to tell the users and the logs.
    pub fn update(&mut self, lcl: u64, ran: Option<u64>) -> Vec<Action> {
        let behind = lcl.saturating_sub(ran.unwrap_or(0));
        let paused = if self.paused {
            behind > RESUME_BEHIND
        } else {
            behind >= PAUSE_BEHIND
        };
        if paused == self.paused {
            return vec![];
        }
        self.paused = paused;
        let open = !paused;
        vec![
            Action::Intake { open, behind },
            Action::Notify(Event::Intake { open, behind }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(actions: &[Action]) -> Option<bool> {
        actions.iter().find_map(|a| match a {
            Action::Intake { open, .. } => Some(*open),
            _ => None,
        })
    }

    #[test]
    fn pauses_when_runs_fall_behind_and_opens_once_caught_up() {
        let mut b = Backlog::default();
        assert_eq!(open(&b.update(10, Some(9))), None, "one behind is normal");
        assert_eq!(open(&b.update(10, Some(7))), None);
        assert_eq!(open(&b.update(11, Some(7))), Some(false));
        assert_eq!(open(&b.update(12, Some(7))), None, "said once");
        assert_eq!(open(&b.update(12, Some(9))), None, "3 behind: still paused");
        assert_eq!(open(&b.update(12, Some(10))), Some(true));
        // A node that has run nothing yet, on a long chain, is behind.
        assert_eq!(open(&b.update(40, None)), Some(false));
    }
}
