//! Warnings an attacker can trigger at will (a refused connection, a peer
//! over its rate) are logged once per interval with a count, not once per
//! event: 1 100 stalled sockets must not write 49 MB of log.

use std::time::{Duration, Instant};

/// How often a repeating warning may be logged.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Counts events of one kind; says when to log and how many it stands for.
#[derive(Debug)]
pub struct WarnLimit {
    last: Option<Instant>,
    every: Duration,
    pending: u64,
}

impl Default for WarnLimit {
    fn default() -> Self {
        WarnLimit::new(WARN_EVERY)
    }
}

impl WarnLimit {
    pub fn new(every: Duration) -> Self {
        WarnLimit {
            last: None,
            every,
            pending: 0,
        }
    }

    /// One more event at `now`: Some(n) when a line should be logged now,
    /// for the n events since the last line (this one included).
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_what_it_stands_for() {
        let mut w = WarnLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.hit(t0), Some(1), "the first is logged at once");
        for i in 1..1000 {
            assert_eq!(w.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(w.hit(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(w.hit(t0 + Duration::from_secs(11)), None);
        assert_eq!(w.hit(t0 + Duration::from_secs(30)), Some(2));
    }
}
