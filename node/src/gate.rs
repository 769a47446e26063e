//! What an unauthenticated connection may cost a node, peer or user: a
//! bounded number of them at once, in total and per source address, and a
//! bounded number of log lines about them. Sans-IO: the transport asks and
//! reports, and passes the time in.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateConfig {
    /// Connections not yet authenticated, from everyone together.
    pub max_pending: usize,
    /// Connections not yet authenticated from one source address. A UNL
    /// peer needs one at a time (it dials each node once), plus one while a
    /// reconnection overlaps a dying link.
    pub max_pending_per_source: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            max_pending: 256,
            max_pending_per_source: 8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Over `max_pending`: close at once.
    Full,
    /// Over `max_pending_per_source`: close at once.
    SourceFull,
}

/// Counts connections between accept and authentication.
#[derive(Debug, Default)]
pub struct Gate {
    config: GateConfig,
    total: usize,
    per_source: BTreeMap<IpAddr, usize>,
}

impl Gate {
    pub fn new(config: GateConfig) -> Gate {
        Gate {
            config,
            total: 0,
            per_source: BTreeMap::new(),
        }
    }

    /// Takes a slot for a connection from `source`, which must be
    /// `release`d once it is authenticated or closed.
    pub fn admit(&mut self, source: IpAddr) -> Admission {
        let source = bucket(source);
        if self.total >= self.config.max_pending {
            return Admission::Full;
        }
        let n = self.per_source.entry(source).or_insert(0);
        if *n >= self.config.max_pending_per_source {
            return Admission::SourceFull;
        }
        *n += 1;
        self.total += 1;
        Admission::Admitted
    }

    pub fn release(&mut self, source: IpAddr) {
        let source = bucket(source);
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                // Kept small by source addresses in flight, not ever seen.
                self.per_source.remove(&source);
            }
        }
    }

    pub fn pending(&self) -> usize {
        self.total
    }
}

/// The source a connection counts against: its address, or for IPv6 its
/// /64, which one holder commonly has whole (counted per address it would
/// be no limit at all).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

/// A connection's place in a shared gate, given back however the
/// connection ends (or earlier, by dropping it once authenticated).
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Mutex<Gate>>,
    source: IpAddr,
}

impl Slot {
    /// A slot for a connection from `source`, or why there is none.
    pub fn take(gate: &Arc<Mutex<Gate>>, source: IpAddr) -> Result<Slot, Admission> {
        match lock(gate).admit(source) {
            Admission::Admitted => Ok(Slot {
                gate: gate.clone(),
                source,
            }),
            refused => Err(refused),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.gate).release(self.source);
    }
}

/// A gate whose holder panicked is still the right count.
fn lock(gate: &Mutex<Gate>) -> std::sync::MutexGuard<'_, Gate> {
    gate.lock().unwrap_or_else(|e| e.into_inner())
}

/// One log line per interval for a kind of event a peer can cause at will,
/// carrying how many happened since the last line, instead of one line per
/// event (thousands of idle connections once produced tens of thousands of
/// warnings).
#[derive(Clone, Debug)]
pub struct LogThrottle {
    interval_ms: u64,
    last_line_ms: Option<u64>,
    unlogged: u64,
}

impl LogThrottle {
    pub const fn new(interval_ms: u64) -> LogThrottle {
        LogThrottle {
            interval_ms,
            last_line_ms: None,
            unlogged: 0,
        }
    }

    /// Counts one event at `now_ms`. Returns how many events the line
    /// logged now should report, or `None` if no line is due.
    pub fn event(&mut self, now_ms: u64) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_line_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= self.interval_ms);
        if !due {
            return None;
        }
        self.last_line_ms = Some(now_ms);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn an_ipv6_64_counts_as_one_source() {
        let mut g = Gate::new(GateConfig {
            max_pending: 10,
            max_pending_per_source: 2,
        });
        let v6 =
            |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, last));
        assert_eq!(g.admit(v6(1)), Admission::Admitted);
        assert_eq!(g.admit(v6(2)), Admission::Admitted);
        assert_eq!(g.admit(v6(3)), Admission::SourceFull, "same /64");
        let other = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 8, 0, 0, 0, 1));
        assert_eq!(g.admit(other), Admission::Admitted);
        g.release(v6(2));
        assert_eq!(g.admit(v6(9)), Admission::Admitted, "given back");
        // An IPv4-mapped address is its IPv4 address.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(g.admit(mapped), Admission::Admitted);
        assert_eq!(g.admit(ip(1)), Admission::Admitted);
        assert_eq!(g.admit(ip(1)), Admission::SourceFull);
    }

    #[test]
    fn gate_caps_per_source_and_in_total() {
        let mut g = Gate::new(GateConfig {
            max_pending: 3,
            max_pending_per_source: 2,
        });
        assert_eq!(g.admit(ip(1)), Admission::Admitted);
        assert_eq!(g.admit(ip(1)), Admission::Admitted);
        assert_eq!(g.admit(ip(1)), Admission::SourceFull);
        assert_eq!(g.admit(ip(2)), Admission::Admitted);
        assert_eq!(g.admit(ip(3)), Admission::Full);
        assert_eq!(g.pending(), 3);
        g.release(ip(1));
        assert_eq!(g.admit(ip(3)), Admission::Admitted);
        // A release for a source with nothing pending changes nothing.
        g.release(ip(9));
        assert_eq!(g.pending(), 3);
        for s in [1, 2, 3] {
            g.release(ip(s));
        }
        assert_eq!(g.pending(), 0);
        assert!(g.per_source.is_empty());
    }

    #[test]
    fn throttle_logs_once_per_interval_with_the_count() {
        let mut t = LogThrottle::new(1000);
        assert_eq!(t.event(0), Some(1));
        let lines: Vec<_> = (1..1000).filter_map(|ms| t.event(ms)).collect();
        assert!(lines.is_empty());
        // The next line reports the 999 unlogged events and this one.
        assert_eq!(t.event(1000), Some(1000));
        assert_eq!(t.event(1500), None);
        assert_eq!(t.event(2000), Some(2));
    }
}
