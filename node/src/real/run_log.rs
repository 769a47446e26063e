//! Warnings about failed contract runs, without a line per ledger for ever:
//! a contract that fails every run would otherwise write one each round.
//!
//! The first failure of a streak is logged, and so is a failure of another
//! kind than the last one logged; repeats of the same kind are counted and
//! logged with their count once `EVERY` has passed; the first success after
//! failures says how many there were.

use std::time::{Duration, Instant};

/// Least time between two lines about failures of the same kind.
pub const EVERY: Duration = Duration::from_secs(10);

/// Most bytes of the contract's stderr a warning quotes.
pub const EXCERPT_BYTES: usize = 1024;

#[derive(Debug)]
pub struct FailureLog {
    /// Failed runs since the last success.
    failing: u64,
    /// Failures since the last line about one, not logged themselves.
    unlogged: u64,
    /// When the last line about a failure was, and about which kind.
    last: Option<(Instant, String)>,
}

/// What to log about one run.
#[derive(Debug, PartialEq, Eq)]
pub enum Say {
    Nothing,
    /// Log this failure; `repeats` failures went unlogged since the last.
    Failure {
        repeats: u64,
    },
    /// A success after `failures` failed runs.
    Recovered {
        failures: u64,
    },
}

impl FailureLog {
    pub const fn new() -> FailureLog {
        FailureLog {
            failing: 0,
            unlogged: 0,
            last: None,
        }
    }

    /// Records a run at `now`: `failure` names its kind if it failed.
    pub fn record(&mut self, now: Instant, failure: Option<&str>) -> Say {
        let Some(kind) = failure else {
            let failures = std::mem::take(&mut self.failing);
            self.unlogged = 0;
            self.last = None;
            return match failures {
                0 => Say::Nothing,
                failures => Say::Recovered { failures },
            };
        };
        self.failing += 1;
        let due = match &self.last {
            None => true,
            Some((at, last)) => last != kind || now.saturating_duration_since(*at) >= EVERY,
        };
        if !due {
            self.unlogged += 1;
            return Say::Nothing;
        }
        self.last = Some((now, kind.to_string()));
        Say::Failure {
            repeats: std::mem::take(&mut self.unlogged),
        }
    }
}

/// The end of `text` (where a traceback says what went wrong), at most
/// `EXCERPT_BYTES`, as one line of text for a log field.
pub fn excerpt(text: &[u8]) -> String {
    let cut = text.len() > EXCERPT_BYTES;
    let tail = &text[text.len().saturating_sub(EXCERPT_BYTES)..];
    let s = String::from_utf8_lossy(tail);
    let s = s.trim();
    if cut {
        format!("…{s}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_of_failures_is_logged_first_then_counted_every_ten_seconds() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = FailureLog::new();
        assert_eq!(log.record(at(0), None), Say::Nothing);
        assert_eq!(
            log.record(at(0), Some("exit 1")),
            Say::Failure { repeats: 0 }
        );
        for s in 1..10 {
            assert_eq!(log.record(at(s), Some("exit 1")), Say::Nothing);
        }
        assert_eq!(
            log.record(at(10), Some("exit 1")),
            Say::Failure { repeats: 9 }
        );
        // Another kind is news at once.
        assert_eq!(
            log.record(at(11), Some("timed out")),
            Say::Failure { repeats: 0 }
        );
        assert_eq!(log.record(at(12), Some("timed out")), Say::Nothing);
        assert_eq!(log.record(at(13), None), Say::Recovered { failures: 13 });
        assert_eq!(log.record(at(14), None), Say::Nothing);
        // A new streak starts afresh.
        assert_eq!(
            log.record(at(15), Some("exit 1")),
            Say::Failure { repeats: 0 }
        );
    }

    #[test]
    fn an_excerpt_is_the_bounded_end_of_stderr() {
        assert_eq!(excerpt(b"  boom\n"), "boom");
        let long: Vec<u8> = std::iter::repeat_n(b'x', 5000).chain(*b"the end").collect();
        let e = excerpt(&long);
        assert!(e.starts_with('…') && e.ends_with("the end"), "{e}");
        assert!(e.len() <= EXCERPT_BYTES + '…'.len_utf8());
        // Hostile bytes are replaced, never a panic.
        assert_eq!(excerpt(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
    }
}
