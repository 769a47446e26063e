//! The example key-value contract, run in-process: the same code the
//! `kv-contract` binary runs under the real host, over an in-memory state.
//!
//! Its state is the simulated node's state directory: it lives in the world,
//! so it survives a crash like a disk does. A run is written at once (a run
//! is synchronous here, so a crash cannot split one).

use crate::world::World;
use hotpocket_contract::{Contract, Description, MemState, Run};
use hotpocket_kv_contract::Kv;
use hotpocket_node::consensus::ExecResult;
use hotpocket_node::contract::{RunOutcome, RunReport, RunRequest, RunResult, StateNode};
use hotpocket_node::crypto::{Hash, PubKey};
use hotpocket_node::env::ContractHost;
use hotpocket_node::ledger::LedgerRecord;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// Runs kept, so the contract can step back; the protocol asks for one.
const KEPT_RUNS: usize = 8;

/// A node's contract state directory: the state after each recent run.
#[derive(Clone)]
pub struct ContractDisk {
    /// seq -> state that running it left, and that run's result.
    runs: BTreeMap<u64, (MemState, ExecResult)>,
}

impl Default for ContractDisk {
    fn default() -> Self {
        let empty = MemState::default();
        let initial = ExecResult {
            state: state_hash(&empty),
            output: Hash::ZERO,
        };
        ContractDisk {
            runs: BTreeMap::from([(0, (empty, initial))]),
        }
    }
}

fn state_hash(m: &MemState) -> Hash {
    StateNode::from_files(m.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).hash()
}

impl ContractDisk {
    /// Where the state is: the ledger whose run left it, and that result.
    pub fn latest(&self) -> (u64, ExecResult) {
        let (seq, (_, r)) = self.runs.last_key_value().expect("never empty");
        (*seq, *r)
    }

    /// Steps back to what running `seq` left; to the initial state if that
    /// is older than what is kept (the node then runs everything again).
    /// A contract that has not run `seq` yet has nothing to undo.
    pub fn rollback(&mut self, seq: u64) {
        if self.latest().0 <= seq {
            return;
        }
        self.runs.retain(|s, _| *s <= seq);
        if self.runs.last_key_value().is_none_or(|(s, _)| *s != seq) {
            *self = ContractDisk::default();
        }
    }
}

/// The contract host of simulated node `node`.
pub struct SimContract {
    pub world: Arc<World>,
    pub node: usize,
    pub key: PubKey,
    pub unl: Vec<PubKey>,
}

impl SimContract {
    fn run(&self, record: &LedgerRecord) -> RunReport {
        let req = RunRequest::for_ledger(record, self.key, &self.unl);
        let mut g = self.world.lock();
        let disk = &mut g.nodes[self.node].contract;
        let (ran, _) = disk.latest();
        if ran + 1 != req.seq {
            drop(g);
            self.world.violation(format!(
                "node {} ran ledger {} on the state of ledger {ran}",
                self.node, req.seq
            ));
            g = self.world.lock();
        }
        let disk = &mut g.nodes[self.node].contract;
        let mut state = disk
            .runs
            .last_key_value()
            .expect("never empty")
            .1
             .0
            .clone();
        let run = run_kv(&req, &mut state);
        let result = ExecResult {
            state: state_hash(&state),
            output: run.output_hash(),
        };
        disk.runs.insert(req.seq, (state, result));
        while disk.runs.len() > KEPT_RUNS {
            disk.runs.pop_first();
        }
        RunReport {
            state: result.state,
            run,
        }
    }
}

/// One run of the kv contract, as the SDK runs it in a process.
fn run_kv(req: &RunRequest, state: &mut MemState) -> RunResult {
    let description = Description {
        lcl: req.lcl.to_string(),
        seq: req.seq,
        time: req.time_ms / 1000,
        pubkey: req.node.to_hex(),
        unl: req.unl.iter().map(|k| k.to_hex()).collect(),
        rand: req.rand.map(|r| r.to_string()),
        users: BTreeMap::new(),
    };
    let inputs = req
        .inputs
        .iter()
        .map(|(user, ins)| (user.to_hex(), ins.concat()))
        .collect();
    let mut run = Run::in_memory(description, inputs, state);
    let failed = Kv.run(&mut run).is_err();
    if failed {
        // As the SDK's binary exits before writing any output.
        return RunResult {
            outcome: RunOutcome::Exited(Some(1)),
            outputs: BTreeMap::new(),
        };
    }
    let outcome = RunOutcome::Exited(Some(0));
    let outputs = run
        .into_outputs()
        .into_iter()
        .filter_map(|(user, out)| PubKey::from_hex(&user).ok().map(|k| (k, out)))
        .collect();
    RunResult { outcome, outputs }
}

impl ContractHost for SimContract {
    fn execute(&mut self, record: &LedgerRecord) -> impl Future<Output = RunReport> {
        let missing = record
            .ledger
            .inputs
            .iter()
            .filter(|h| !record.bodies.contains_key(h))
            .count();
        let honest = self.world.lock().nodes[self.node].role == crate::scenario::Role::Honest;
        if missing > 0 && honest {
            self.world.violation(format!(
                "node {} ran ledger {} with {missing} input bodies missing",
                self.node, record.ledger.seq
            ));
        }
        std::future::ready(self.run(record))
    }

    fn rollback(&mut self, seq: u64) {
        self.world.lock().nodes[self.node].contract.rollback(seq);
    }
}
