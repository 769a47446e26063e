//! The statuses a node owes hpcore users for their signed inputs, sans-IO.
//! An input is `accepted` once the ledger holding it is final (the next
//! ledger closed on it), naming that ledger: a status never names a ledger
//! that is then rolled back. It is `rejected` as `max_ledger_expired` once
//! a final ledger reaches its last ledger without it, or holds it too late
//! (every node skips it there). Every input taken is answered one way or
//! the other, as long as the chain goes on.

use super::hp::{self, Reason, Refused, View};
use crate::consensus::Event;
use crate::crypto::Hash;
use crate::ledger::LedgerId;
use std::collections::BTreeMap;

/// Most inputs owed a status at once, from all users together: a user
/// past it is refused with `round_inputs_overflow`.
pub const MAX_OWED: usize = 1 << 16;

/// Ledgers an input may take from its submission to the ledger that holds
/// it before the node counts itself overloaded: while the inputs that
/// landed last took this long (the median), new ones are refused at once
/// with `round_inputs_overflow`, so much of a flood is told at once rather
/// than left to expire.
pub const OVERLOAD_LEDGERS: u64 = 5;

/// Ledgers' worth of inputs the node holds unlanded: once the inputs
/// owed a status reach what the latest final ledgers landed of ours (the
/// mean of `LANDING_WINDOW`) times this, a new input would wait longer
/// than the ones before it, so it is refused at once, before the wait
/// shows in `OVERLOAD_LEDGERS`. Smaller than that, or a backlog held at
/// the bound would trip the wait rule too; 4 by measurement
/// (docs/performance.md). Only inputs submitted in the last
/// `OVERLOAD_LEDGERS` ledgers count: one that never lands (its nonce lost
/// to a twin another node took) stops counting long before it expires,
/// so a user cannot hold the node shut with such inputs for long.
pub const BACKLOG_LEDGERS: usize = 4;

/// Final ledgers whose landings say how many of ours a ledger takes.
pub const LANDING_WINDOW: usize = 8;

/// What a ledger is taken to land of ours at least: before any landed
/// (or while few come), the backlog may grow to `BACKLOG_LEDGERS` times it.
pub const LANDING_FLOOR: usize = 64;

struct Pending<C> {
    conn: C,
    name: String,
    max_ledger: u64,
    /// The lcl when it was submitted.
    at: u64,
}

/// Owed statuses, for connections named `C`.
pub struct Statuses<C> {
    /// By the input's hash in ledgers (of its signed body).
    pending: BTreeMap<Hash, Pending<C>>,
    /// The newest ledger closed, not yet final, and the inputs it holds.
    newest: Option<(LedgerId, Vec<Hash>)>,
    /// The lcl, as the events tell it.
    lcl: u64,
    /// Ledgers the inputs in the latest final ledger holding some of ours
    /// took from their submission (the median).
    delay: u64,
    /// How many of ours each of the latest final ledgers landed.
    landed: std::collections::VecDeque<usize>,
    /// Inputs owed a status, by the lcl they were submitted at.
    by_lcl: BTreeMap<u64, usize>,
}

impl<C> Default for Statuses<C> {
    fn default() -> Self {
        Statuses {
            pending: BTreeMap::new(),
            newest: None,
            lcl: 0,
            delay: 0,
            landed: Default::default(),
            by_lcl: BTreeMap::new(),
        }
    }
}

impl<C: Clone> Statuses<C> {
    /// Input `ours` (the hash ledgers name it by) goes to the node from
    /// connection `conn`, whose user calls it `name`. False, and nothing
    /// kept, when `MAX_OWED` are owed already (while no ledger closes,
    /// nothing is answered, and users must not make the node keep more),
    /// or while the node is overloaded (`OVERLOAD_LEDGERS`,
    /// `BACKLOG_LEDGERS`).
    pub fn submitted(&mut self, ours: Hash, conn: C, name: String, max_ledger: u64) -> bool {
        if self.pending.len() >= MAX_OWED || self.overloaded() {
            return false;
        }
        let at = self.lcl;
        let p = Pending {
            conn,
            name,
            max_ledger,
            at,
        };
        self.take(&ours);
        self.pending.insert(ours, p);
        *self.by_lcl.entry(at).or_default() += 1;
        true
    }

    /// Whether the latest inputs to land waited `OVERLOAD_LEDGERS` or
    /// more, or the young inputs owed reach `BACKLOG_LEDGERS` ledgers'
    /// worth.
    pub fn overloaded(&self) -> bool {
        self.delay >= OVERLOAD_LEDGERS || self.young() >= self.backlog_bound()
    }

    /// Most inputs owed before new ones are refused (`BACKLOG_LEDGERS`).
    pub fn backlog_bound(&self) -> usize {
        // The mean, empty ledgers included: what ledgers land, not what
        // one big ledger after a stall did.
        let per_ledger = self.landed.iter().sum::<usize>() / self.landed.len().max(1);
        per_ledger.max(LANDING_FLOOR) * BACKLOG_LEDGERS
    }

    /// Input `ours` never reached the node after all: nothing is owed.
    pub fn forget(&mut self, ours: &Hash) {
        self.take(ours);
    }

    /// Removes `ours` from what is owed.
    fn take(&mut self, ours: &Hash) -> Option<Pending<C>> {
        let p = self.pending.remove(ours)?;
        if let Some(n) = self.by_lcl.get_mut(&p.at) {
            *n -= 1;
            if *n == 0 {
                self.by_lcl.remove(&p.at);
            }
        }
        Some(p)
    }

    /// Inputs owed a status that were submitted in the last
    /// `OVERLOAD_LEDGERS` ledgers.
    fn young(&self) -> usize {
        let from = (self.lcl + 1).saturating_sub(OVERLOAD_LEDGERS);
        self.by_lcl.range(from..).map(|(_, n)| n).sum()
    }

    /// Inputs owed a status.
    pub fn owed(&self) -> usize {
        self.pending.len()
    }

    /// Takes an event of the node's: keeps `view` up to date and returns
    /// the statuses now due, each for its connection.
    pub fn on_event(&mut self, event: &Event, view: Option<&mut View>) -> Vec<(C, String)> {
        let mut due = Vec::new();
        match event {
            Event::Started { lcl } => {
                self.lcl = lcl.seq;
                set_lcl(view, *lcl);
                self.newest = None;
            }
            Event::LedgerClosed { ledger, hash, .. } => {
                let id = LedgerId {
                    seq: ledger.seq,
                    hash: *hash,
                };
                if let Some((below, inputs)) = self.newest.take() {
                    if below.hash == ledger.prev && below.seq + 1 == ledger.seq {
                        self.final_ledger(below, &inputs, &mut due);
                    }
                }
                self.newest = Some((id, ledger.inputs.clone()));
                self.lcl = id.seq;
                set_lcl(view, id);
            }
            Event::RolledBack { to, .. } => {
                // `to` was final already: its inputs were answered when the
                // dropped ledger closed on it.
                self.newest = None;
                self.lcl = to.seq;
                set_lcl(view, *to);
            }
            Event::Status(status) => {
                if let Some(v) = view {
                    v.vote_status = hp::vote_status_name(*status);
                }
            }
            _ => {}
        }
        due
    }

    /// Ledger `id`, holding `inputs`, is final: its inputs are answered,
    /// and so is every input whose last ledger it reached.
    fn final_ledger(&mut self, id: LedgerId, inputs: &[Hash], due: &mut Vec<(C, String)>) {
        let mut waits = Vec::new();
        for h in inputs {
            let Some(p) = self.take(h) else {
                continue;
            };
            waits.push(id.seq.saturating_sub(p.at));
            let status = if id.seq <= p.max_ledger {
                hp::accepted(&p.name, id)
            } else {
                expired(p.name)
            };
            due.push((p.conn, status));
        }
        let late: Vec<Hash> = (self.pending.iter())
            .filter(|(_, p)| p.max_ledger <= id.seq)
            .map(|(h, _)| *h)
            .collect();
        for h in late {
            let p = self.take(&h).expect("listed");
            due.push((p.conn, expired(p.name)));
        }
        // The median wait of the inputs that landed here. Expiries do not
        // count: a user can send inputs that never land (a nonce another
        // node already saw), and must not close the node to the rest. A
        // ledger that lands none of ours says nothing of the wait; nothing
        // left waiting at all says it is over.
        if self.landed.len() == LANDING_WINDOW {
            self.landed.pop_front();
        }
        self.landed.push_back(waits.len());
        if !waits.is_empty() {
            waits.sort_unstable();
            self.delay = waits[waits.len() / 2];
        } else if self.pending.is_empty() {
            self.delay = 0;
        }
    }
}

fn expired(name: String) -> String {
    hp::rejected(&Refused {
        reason: Reason::MaxLedgerExpired,
        hash: name,
    })
}

fn set_lcl(view: Option<&mut View>, lcl: LedgerId) {
    if let Some(v) = view {
        v.lcl = lcl;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::CloseVia;
    use crate::ledger::Ledger;

    fn closed(seq: u64, prev: Hash, inputs: &[Hash]) -> (Event, Hash) {
        let mut ledger = Ledger::genesis();
        ledger.seq = seq;
        ledger.prev = prev;
        ledger.inputs = inputs.to_vec();
        let hash = Hash([seq as u8 + 100; 32]);
        let e = Event::LedgerClosed {
            ledger,
            hash,
            via: CloseVia::Consensus,
        };
        (e, hash)
    }

    /// Closes ledgers one on another from seq 1, `genesis` below the
    /// first, and hands each to `s`: the statuses due.
    fn closer(genesis: Hash) -> impl FnMut(&mut Statuses<u8>, &[Hash]) -> Vec<(u8, String)> {
        let (mut prev, mut seq) = (genesis, 1);
        move |s, inputs| {
            let (e, hash) = closed(seq, prev, inputs);
            (prev, seq) = (hash, seq + 1);
            s.on_event(&e, None)
        }
    }

    /// A distinct input hash for each `i`.
    fn nth(i: u64) -> Hash {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&i.to_le_bytes());
        Hash(h)
    }

    /// (connection, input name, status or reason, and for an accepted
    /// one the seq of the ledger it names).
    fn status(due: &[(u8, String)]) -> Vec<(u8, String, String)> {
        (due.iter())
            .map(|(c, m)| {
                let v: serde_json::Value = serde_json::from_str(m).unwrap();
                let what = match v["reason"].as_str() {
                    Some(r) => r.to_string(),
                    None => format!("accepted {}", v["ledger_seq_no"]),
                };
                (*c, v["input_hash"].as_str().unwrap().into(), what)
            })
            .collect()
    }

    #[test]
    fn an_input_is_accepted_when_its_ledger_is_final_and_expired_past_its_last() {
        let (a, b, c) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
        let mut s: Statuses<u8> = Statuses::default();
        assert!(s.submitted(a, 1, "A".into(), 5));
        assert!(s.submitted(b, 2, "B".into(), 5));
        assert!(s.submitted(c, 3, "C".into(), 6));
        let (e4, h4) = closed(4, Hash([0; 32]), &[a]);
        assert!(
            s.on_event(&e4, None).is_empty(),
            "ledger 4 is not final yet"
        );
        let (e5, h5) = closed(5, h4, &[]);
        assert_eq!(
            status(&s.on_event(&e5, None)),
            [(1, "A".into(), "accepted 4".into())]
        );
        // Ledger 5 is final once 6 closes on it: B's last ledger passed.
        let (e6, h6) = closed(6, h5, &[c]);
        assert_eq!(
            status(&s.on_event(&e6, None)),
            [(2, "B".into(), "max_ledger_expired".into())]
        );
        assert_eq!(s.owed(), 1);
        let (e7, _) = closed(7, h6, &[]);
        assert_eq!(
            status(&s.on_event(&e7, None)),
            [(3, "C".into(), "accepted 6".into())]
        );
        assert_eq!(s.owed(), 0);
    }

    #[test]
    fn an_input_held_past_its_last_ledger_is_expired_not_accepted() {
        let a = Hash([1; 32]);
        let mut s: Statuses<u8> = Statuses::default();
        assert!(s.submitted(a, 1, "A".into(), 3));
        let (e4, h4) = closed(4, Hash([0; 32]), &[a]);
        s.on_event(&e4, None);
        let (e5, _) = closed(5, h4, &[]);
        let due = status(&s.on_event(&e5, None));
        assert_eq!(due, [(1, "A".into(), "max_ledger_expired".into())]);
    }

    #[test]
    fn inputs_are_refused_while_the_latest_to_land_waited_too_long() {
        let h = |i: u8| Hash([i; 32]);
        let mut s: Statuses<u8> = Statuses::default();
        let mut close = closer(Hash([0; 32]));
        assert!(s.submitted(h(1), 1, "A".into(), 50));
        for _ in 0..OVERLOAD_LEDGERS {
            close(&mut s, &[]);
        }
        // A lands 5 ledgers after it was submitted; final a ledger later.
        close(&mut s, &[h(1)]);
        assert!(s.submitted(h(2), 1, "B".into(), 50), "not known yet");
        assert_eq!(close(&mut s, &[h(2)]).len(), 1);
        assert!(s.overloaded());
        assert!(!s.submitted(h(3), 1, "C".into(), 50));
        // B landed at once: once its ledger is final, the node takes more.
        close(&mut s, &[]);
        assert!(!s.overloaded());
        assert!(s.submitted(h(3), 1, "C".into(), 50));
        // An input that never lands expires without closing the node.
        // (submitted at lcl 8, it expires 7 ledgers later, alone)
        assert!(s.submitted(h(4), 1, "D".into(), 15));
        let mut answered = 0;
        for _ in 0..8 {
            answered += close(&mut s, &[]).len();
        }
        assert_eq!(answered, 1);
        assert!(!s.overloaded(), "an expiry is no sign of load");
    }

    #[test]
    fn a_backlog_past_what_ledgers_land_is_refused_at_once() {
        let h = |i: usize| nth(i as u64);
        let mut s: Statuses<u8> = Statuses::default();
        let mut close = closer(Hash([0xee; 32]));
        // From a standing start, the floor's worth.
        let bound = LANDING_FLOOR * BACKLOG_LEDGERS;
        assert_eq!(s.backlog_bound(), bound);
        for i in 0..bound {
            assert!(s.submitted(h(i), 1, format!("{i}"), 1_000), "{i}");
        }
        assert!(!s.submitted(h(bound), 1, "over".into(), 1_000));
        assert!(
            s.overloaded(),
            "no ledger has waited yet: the backlog alone"
        );
        // Two ledgers landing half of them each.
        let half = bound / 2;
        close(&mut s, &(0..half).map(h).collect::<Vec<_>>());
        close(&mut s, &(half..bound).map(h).collect::<Vec<_>>());
        close(&mut s, &[]);
        let room = half.max(LANDING_FLOOR) * BACKLOG_LEDGERS;
        assert_eq!((s.owed(), s.backlog_bound()), (0, room));
        for i in 0..room {
            assert!(s.submitted(h(10_000 + i), 1, String::new(), 1_000));
        }
        assert!(!s.submitted(h(20_000), 1, String::new(), 1_000));
        // Inputs that do not land stop counting after `OVERLOAD_LEDGERS`
        // (they are still owed a status), and ledgers that land nothing
        // count toward the rate: the bound falls back to the floor.
        for _ in 0..OVERLOAD_LEDGERS {
            close(&mut s, &[]);
        }
        assert_eq!(s.owed(), room);
        assert!(!s.overloaded());
        assert_eq!(
            s.backlog_bound(),
            (2 * half / (OVERLOAD_LEDGERS as usize + 2)).max(LANDING_FLOOR) * BACKLOG_LEDGERS
        );
        assert!(s.submitted(h(20_000), 1, String::new(), 1_000));
    }

    #[test]
    fn no_more_than_max_owed_are_kept() {
        let mut s: Statuses<u8> = Statuses::default();
        // Ledgers that landed more than the node may owe.
        s.landed.push_back(MAX_OWED);
        for i in 0..MAX_OWED as u64 {
            assert!(s.submitted(nth(i), 0, String::new(), 5));
        }
        assert!(!s.submitted(Hash([0xff; 32]), 0, String::new(), 5));
        assert_eq!(s.owed(), MAX_OWED);
    }

    #[test]
    fn a_rolled_back_ledger_never_answers_and_its_inputs_wait_for_their_next() {
        let a = Hash([1; 32]);
        let mut s: Statuses<u8> = Statuses::default();
        assert!(s.submitted(a, 1, "A".into(), 9));
        let (e4, h4) = closed(4, Hash([0; 32]), &[]);
        s.on_event(&e4, None);
        let (e5, _) = closed(5, h4, &[a]);
        s.on_event(&e5, None);
        let back = Event::RolledBack {
            from: LedgerId {
                seq: 5,
                hash: Hash([105; 32]),
            },
            to: LedgerId { seq: 4, hash: h4 },
            proven: None,
        };
        let mut view = View {
            lcl: LedgerId {
                seq: 0,
                hash: Hash([0; 32]),
            },
            vote_status: "unknown",
            roundtime_ms: 1000,
            read_requests: false,
        };
        assert!(s.on_event(&back, Some(&mut view)).is_empty());
        assert_eq!(view.lcl.seq, 4);
        // Another ledger 5, without it, then 6 with it.
        let (mut other5, _) = closed(5, h4, &[]);
        if let Event::LedgerClosed { hash, .. } = &mut other5 {
            *hash = Hash([55; 32]);
        }
        assert!(s.on_event(&other5, None).is_empty());
        let (e6, h6) = closed(6, Hash([55; 32]), &[a]);
        assert!(s.on_event(&e6, None).is_empty());
        let (e7, _) = closed(7, h6, &[]);
        assert_eq!(
            status(&s.on_event(&e7, None)),
            [(1, "A".into(), "accepted 6".into())]
        );
    }
}
