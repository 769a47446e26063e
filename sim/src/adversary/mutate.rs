//! The mutating adversary (ByzzFuzz, Winter et al. 2023): inside a
//! `mutate` window, each message the node sends to a chosen peer gets one
//! mutation, and a proposal is re-signed with the node's own key, so it
//! passes the signature check and meets the checks behind it. Small-scope
//! mutations (a field ±1, a value reused from an earlier message, one
//! element dropped or doubled) find more than random ones in ByzzFuzz's
//! measurements; any-scope ones draw a field anew.

use super::Byzantine;
use crate::world::mutate::MutationFault;
use hotpocket_node::consensus::{ExecResult, PeerMessage};
use hotpocket_node::crypto::Hash;
use hotpocket_node::ledger::{LedgerRecord, Proposal};
use hotpocket_node::npl::NplEnvelope;
use hotpocket_node::sync::state_transfer::{StateRequest, StateResponse};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use std::collections::VecDeque;

/// Earlier proposals (its own and those it received), for the mutations
/// that reuse a value seen before.
#[derive(Default)]
pub struct Memory {
    proposals: VecDeque<Proposal>,
    records: VecDeque<LedgerRecord>,
}

const MEMORY: usize = 48;

impl Memory {
    pub fn proposal(&mut self, p: &Proposal) {
        if self.proposals.len() == MEMORY {
            self.proposals.pop_front();
        }
        self.proposals.push_back(p.clone());
    }

    fn record(&mut self, r: &LedgerRecord) {
        if self.records.len() == MEMORY {
            self.records.pop_front();
        }
        self.records.push_back(r.clone());
    }
}

fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn hash(rng: &mut ChaCha8Rng) -> Hash {
    let mut h = [0u8; 32];
    rng.fill_bytes(&mut h);
    Hash(h)
}

/// ±1, wrapping at neither end.
fn nudge(rng: &mut ChaCha8Rng, v: u64) -> u64 {
    if rng.next_u64().is_multiple_of(2) {
        v.saturating_add(1)
    } else {
        v.saturating_sub(1)
    }
}

impl Byzantine {
    /// Applies `fault` to one outgoing frame; an empty result drops it.
    pub(super) fn mutate(&mut self, bytes: Vec<u8>, fault: MutationFault) -> Vec<Vec<u8>> {
        let mut rng = self.mutation_rng(fault.seed);
        let out = match PeerMessage::decode(&bytes) {
            Ok(PeerMessage::Proposal(sp)) => {
                let p = sp.proposal;
                self.memory.proposal(&p);
                if rng.next_u64().is_multiple_of(16) {
                    return vec![]; // dropping is a mutation too
                }
                let p = if fault.any_scope {
                    any_scope(&mut rng, p)
                } else {
                    self.small_scope(&mut rng, p)
                };
                PeerMessage::Proposal(Box::new(p.sign(&self.key))).encode()
            }
            Ok(PeerMessage::HistoryResponse(records)) => {
                let records = self.mutate_history(&mut rng, records, fault.any_scope);
                PeerMessage::HistoryResponse(records).encode()
            }
            Ok(PeerMessage::HistoryRequest { from_seq, count }) => PeerMessage::HistoryRequest {
                from_seq: nudge(&mut rng, from_seq),
                count: nudge(&mut rng, count),
            }
            .encode(),
            Ok(PeerMessage::BodyResponse(mut bodies)) if !bodies.is_empty() => {
                let k = below(&mut rng, bodies.len());
                match rng.next_u64() % 3 {
                    0 => {
                        bodies.remove(k);
                    }
                    1 => bodies.push(bodies[k].clone()),
                    _ => bodies[k].push(b'x'),
                }
                PeerMessage::BodyResponse(bodies).encode()
            }
            Ok(PeerMessage::StateResponse(resp)) => {
                PeerMessage::StateResponse(mutate_state(&mut rng, resp)).encode()
            }
            Ok(PeerMessage::Npl(env)) => {
                let mut c = env.chunk.chunk;
                match rng.next_u64() % 3 {
                    0 => c.seq = nudge(&mut rng, c.seq),
                    1 => c.index = nudge(&mut rng, c.index),
                    _ => c.data.truncate(c.data.len() / 2),
                }
                let env = NplEnvelope {
                    hops: env.hops,
                    chunk: c.sign(&self.key),
                };
                PeerMessage::Npl(Box::new(env)).encode()
            }
            _ => bytes,
        };
        self.mutation_rngs.insert(fault.seed, rng);
        vec![out]
    }

    /// One stream per window, so a window's mutations do not depend on
    /// what other windows drew.
    fn mutation_rng(&mut self, seed: u64) -> ChaCha8Rng {
        use rand_core::SeedableRng;
        self.mutation_rngs
            .remove(&seed)
            .unwrap_or_else(|| ChaCha8Rng::seed_from_u64(seed))
    }

    fn earlier(&self, rng: &mut ChaCha8Rng) -> Option<Proposal> {
        let n = self.memory.proposals.len();
        (n > 0).then(|| self.memory.proposals[below(rng, n)].clone())
    }

    fn small_scope(&mut self, rng: &mut ChaCha8Rng, mut p: Proposal) -> Proposal {
        let earlier = self.earlier(rng);
        match rng.next_u64() % 12 {
            0 => p.stage = nudge(rng, p.stage as u64).min(255) as u8,
            1 => p.round = nudge(rng, p.round),
            2 => p.lcl.seq = nudge(rng, p.lcl.seq),
            3 => p.lcl = earlier.map_or(p.lcl, |e| e.lcl),
            4 => {
                p.time = if rng.next_u64().is_multiple_of(2) {
                    nudge(rng, p.time)
                } else {
                    p.time + self.roundtime_ms
                }
            }
            5 if !p.inputs.is_empty() => {
                p.inputs.remove(below(rng, p.inputs.len()));
            }
            6 if !p.inputs.is_empty() => {
                let k = below(rng, p.inputs.len());
                p.inputs.insert(k, p.inputs[k]);
            }
            7 => p.inputs = earlier.map_or(p.inputs, |e| e.inputs),
            8 if !p.results.is_empty() => {
                p.results.remove(below(rng, p.results.len()));
            }
            9 => {
                let k = below(rng, p.results.len());
                match (
                    earlier.and_then(|e| e.results.first().copied()),
                    p.results.get_mut(k),
                ) {
                    (Some(e), Some(v)) => v.result = e.result,
                    (Some(e), None) => p.results.push(e),
                    (None, Some(v)) => v.seq = nudge(rng, v.seq),
                    (None, None) => {}
                }
            }
            10 => p.beacon = earlier.map_or(p.beacon, |e| e.beacon),
            _ => {
                let b = &mut p.beacon;
                match rng.next_u64() % 5 {
                    0 if !b.commits.is_empty() => {
                        b.commits.remove(below(rng, b.commits.len()));
                    }
                    1 if !b.reveals.is_empty() => {
                        b.reveals.remove(below(rng, b.reveals.len()));
                    }
                    2 if !b.commits.is_empty() => {
                        let k = below(rng, b.commits.len());
                        b.commits.insert(k, b.commits[k].clone());
                    }
                    3 if !b.reveals.is_empty() => {
                        let k = below(rng, b.reveals.len());
                        b.reveals.insert(k, b.reveals[k].clone());
                    }
                    _ => b.outcome = None,
                }
            }
        }
        p
    }

    fn mutate_history(
        &mut self,
        rng: &mut ChaCha8Rng,
        mut records: Vec<LedgerRecord>,
        any: bool,
    ) -> Vec<LedgerRecord> {
        if records.is_empty() {
            return records;
        }
        let k = below(rng, records.len());
        let earlier = {
            let n = self.memory.records.len();
            (n > 0).then(|| self.memory.records[below(rng, n)].clone())
        };
        for r in &records {
            self.memory.record(r);
        }
        if any {
            let r = &mut records[k];
            match rng.next_u64() % 3 {
                0 => r.hash = hash(rng),
                1 => r.ledger.prev = hash(rng),
                _ => r.ledger.inputs = vec![hash(rng)],
            }
            return records;
        }
        match rng.next_u64() % 7 {
            0 => {
                records.remove(k);
            }
            1 => records.insert(k, records[k].clone()),
            2 => records[k].ledger.seq = nudge(rng, records[k].ledger.seq),
            // A proof cut to fewer signers than the threshold wants.
            3 => {
                let cut = records[k].proof.len().saturating_sub(1 + below(rng, 2));
                records[k].proof.truncate(cut);
            }
            4 => {
                if let Some(e) = earlier {
                    records[k].proof = e.proof;
                }
            }
            5 => {
                if let Some(e) = earlier {
                    let r = &mut records[k];
                    r.ledger.verdicts = e.ledger.verdicts;
                    r.hash = r.ledger.hash();
                }
            }
            _ => {
                let last = records.len() - 1;
                records.swap(0, last);
            }
        }
        records
    }
}

/// A listing with an entry dropped or doubled, a piece at the next offset
/// or a byte short, or "missing" for what it has.
fn mutate_state(rng: &mut ChaCha8Rng, resp: StateResponse) -> StateResponse {
    match resp {
        StateResponse::Dir { hash, mut entries } if !entries.is_empty() => {
            let k = below(rng, entries.len());
            if rng.next_u64().is_multiple_of(2) {
                entries.remove(k);
            } else {
                entries.insert(k, entries[k].clone());
            }
            StateResponse::Dir { hash, entries }
        }
        StateResponse::Chunk {
            digest,
            offset,
            mut bytes,
        } => {
            if rng.next_u64().is_multiple_of(2) {
                bytes.pop();
                StateResponse::Chunk {
                    digest,
                    offset,
                    bytes,
                }
            } else {
                StateResponse::Chunk {
                    digest,
                    offset: nudge(rng, offset),
                    bytes,
                }
            }
        }
        StateResponse::Dir { hash, .. } => StateResponse::Missing(StateRequest::Dir(hash)),
        other => other,
    }
}

/// One field drawn anew.
fn any_scope(rng: &mut ChaCha8Rng, mut p: Proposal) -> Proposal {
    match rng.next_u64() % 7 {
        0 => p.stage = rng.next_u64() as u8,
        1 => p.round = rng.next_u64() % (p.round.saturating_mul(2) + 2),
        2 => p.lcl.hash = hash(rng),
        3 => p.time = rng.next_u64() % (p.time.saturating_mul(2) + 1),
        4 => {
            let mut inputs: Vec<Hash> = (0..1 + below(rng, 4)).map(|_| hash(rng)).collect();
            inputs.sort();
            p.inputs = inputs;
        }
        5 => {
            let h = hash(rng);
            for v in p.results.iter_mut() {
                v.result = Some(ExecResult {
                    state: h,
                    output: h,
                });
            }
        }
        _ => {
            if let Some(o) = p.beacon.outcome.as_mut() {
                o.value = hash(rng);
            } else {
                p.lcl.seq = rng.next_u64() % (p.lcl.seq.saturating_mul(2) + 2);
            }
        }
    }
    p
}
