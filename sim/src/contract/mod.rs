//! The example key-value contract, run in-process: the same code the
//! `kv-contract` binary runs under the real host, over an in-memory state.
//!
//! Its state is the simulated node's state directory: it lives in the world,
//! so it survives a crash like a disk does. A run is written at once, at
//! its end (a run that takes time sleeps first), so a crash cannot split
//! one.

use crate::latency::sample;
use crate::npl_host::{run_multisig, SimTransport};
use crate::scenario::{ContractKind, Latency};
use crate::world::World;
use hotpocket_contract::{parse_description, Contract, MemState, Run};
use hotpocket_kv_contract::Kv;
use hotpocket_node::contract::{describe, ExecResult, FdlistFormat};
use hotpocket_node::contract::{RunOutcome, RunReport, RunRequest, RunResult, StateNode};
use hotpocket_node::crypto::{Hash, PubKey};
use hotpocket_node::env::{ContractHost, InstallError, RollbackError, RunLink};
use hotpocket_node::ledger::LedgerRecord;
use hotpocket_node::sync::state_transfer::{
    apply_to_files, serve, StateIndex, StatePatch, StateRequest, StateResponse,
};
use madsim::time::Duration;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// Runs kept, so the contract can step back; the protocol asks for one.
const KEPT_RUNS: usize = 3;

/// The state one run left, with its tree, so the next run hashes only the
/// files it changed (states of several MiB are hashed after every run).
#[derive(Clone)]
pub struct Kept {
    pub state: MemState,
    pub tree: StateNode,
    pub result: ExecResult,
}

impl Kept {
    /// `state` as a new run left it; `before` is what it started from.
    fn new(state: MemState, before: Option<&Kept>, output: Hash) -> Kept {
        use sha2::Digest;
        let tree = StateNode::from_digests(state.0.iter().map(|(k, v)| {
            let same = before
                .filter(|b| b.state.0.get(k) == Some(v))
                .and_then(|b| b.tree.digest_at(k));
            let digest = same
                .copied()
                .unwrap_or_else(|| sha2::Sha256::digest(v).into());
            (k.as_str(), v.len() as u64, digest)
        }));
        let result = ExecResult {
            state: tree.hash(),
            output,
        };
        Kept {
            state,
            tree,
            result,
        }
    }
}

/// A node's contract state directory: the state after each recent run.
#[derive(Clone)]
pub struct ContractDisk {
    /// seq -> what running it left.
    runs: BTreeMap<u64, Kept>,
}

impl Default for ContractDisk {
    fn default() -> Self {
        ContractDisk {
            runs: BTreeMap::from([(0, Kept::new(MemState::default(), None, Hash::ZERO))]),
        }
    }
}

impl ContractDisk {
    /// Where the state is: the ledger whose run left it, and that result.
    pub fn latest(&self) -> (u64, ExecResult) {
        let (seq, k) = self.runs.last_key_value().expect("never empty");
        (*seq, k.result)
    }

    fn latest_kept(&self) -> &Kept {
        self.runs.last_key_value().expect("never empty").1
    }

    fn keep(&mut self, seq: u64, kept: Kept) {
        self.runs.insert(seq, kept);
        while self.runs.len() > KEPT_RUNS {
            self.runs.pop_first();
        }
    }

    /// Steps back to what running `seq` left. A contract that has not run
    /// `seq` yet has nothing to undo; one that no longer keeps that state
    /// stays as it is and says so, like the process host.
    pub fn rollback(&mut self, seq: u64) -> Result<(), RollbackError> {
        let (ran, _) = self.latest();
        if ran <= seq {
            return Ok(());
        }
        if !self.runs.contains_key(&seq) {
            return Err(RollbackError::NoSnapshot { want: seq, ran });
        }
        self.runs.retain(|s, _| *s <= seq);
        Ok(())
    }
}

/// The contract host of simulated node `node`.
pub struct SimContract {
    pub world: Arc<World>,
    pub node: usize,
    pub key: PubKey,
    pub unl: Vec<PubKey>,
    /// How long a run takes (none: no simulated time at all), drawn from
    /// `rng`, which nothing else draws from.
    pub run_ms: Option<Latency>,
    pub rng: ChaCha8Rng,
    pub kind: ContractKind,
    /// The multisig contract's wait for signatures.
    pub npl_timeout_ms: u64,
    /// The contract's signing seed on this node (`Keypair::contract_seed`).
    pub contract_seed: [u8; 32],
}

impl SimContract {
    /// The state the next run starts from.
    fn current_state(&self) -> MemState {
        let g = self.world.lock();
        g.nodes[self.node].contract.latest_kept().state.clone()
    }

    /// Keeps what run `seq` left, all at once, as the process host's
    /// snapshot does.
    fn finish(&self, seq: u64, state: MemState, run: RunResult) -> RunReport {
        let mut g = self.world.lock();
        let (ran, _) = g.nodes[self.node].contract.latest();
        if ran + 1 != seq {
            drop(g);
            self.world.violation(format!(
                "node {} ran ledger {seq} on the state of ledger {ran}",
                self.node
            ));
            g = self.world.lock();
        }
        let disk = &mut g.nodes[self.node].contract;
        let kept = Kept::new(state, Some(disk.latest_kept()), run.output_hash());
        let result = kept.result;
        disk.keep(seq, kept);
        RunReport {
            state: result.state,
            run,
        }
    }
}

/// In-process runs have no file descriptors: the inputs and outputs are
/// handed over directly, so the description names none.
const NO_FD: i32 = -1;

/// The run an SDK contract sees for `req`, as in a process: the
/// description the real host writes, in the default format, parsed as the
/// SDK parses it. `None` if it does not parse.
pub(crate) fn sdk_run<'a>(req: &RunRequest, state: &'a mut MemState) -> Option<Run<'a>> {
    let fds = req.inputs.keys().map(|k| (*k, (NO_FD, NO_FD))).collect();
    let text = describe(FdlistFormat::default(), req, (NO_FD, NO_FD), &fds);
    let description = parse_description(&text).ok()?;
    let inputs = req
        .inputs
        .iter()
        .map(|(user, ins)| (user.to_hex(), ins.concat()))
        .collect();
    Some(Run::in_memory(description, inputs, state))
}

/// What the node gets from a finished SDK run: its outputs, or (`None`,
/// the contract failed) nothing, as the SDK's binary exits 1 before
/// writing any output.
pub(crate) fn sdk_result(run: Option<Run<'_>>) -> RunResult {
    let Some(run) = run else {
        return RunResult {
            outcome: RunOutcome::Exited(Some(1)),
            outputs: BTreeMap::new(),
        };
    };
    let outputs = run
        .into_outputs()
        .into_iter()
        .filter_map(|(user, out)| PubKey::from_hex(&user).ok().map(|k| (k, out)))
        .collect();
    RunResult {
        outcome: RunOutcome::Exited(Some(0)),
        outputs,
    }
}

/// One run of the kv contract.
fn run_kv(req: &RunRequest, state: &mut MemState) -> RunResult {
    let run = sdk_run(req, state).and_then(|mut run| Kv.run(&mut run).is_ok().then_some(run));
    sdk_result(run)
}

impl ContractHost for SimContract {
    fn ran(&self) -> (u64, ExecResult) {
        self.world.lock().nodes[self.node].contract.latest()
    }

    /// A run that takes time sleeps first and then runs: a crash meanwhile
    /// leaves the state as it was, as the process host's `open` does. The
    /// multisig contract talks over `link` while it runs.
    fn execute(&mut self, record: &LedgerRecord, link: RunLink) -> impl Future<Output = RunReport> {
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
        let delay = self.run_ms.map_or(0, |l| sample(&mut self.rng, l));
        let mut req = RunRequest::for_ledger(record, self.key, &self.unl);
        req.contract_seed = Some(self.contract_seed);
        async move {
            if delay > 0 {
                madsim::time::sleep(Duration::from_millis(delay)).await;
            }
            let mut state = self.current_state();
            let run = match self.kind {
                ContractKind::Kv => run_kv(&req, &mut state),
                ContractKind::Multisig => {
                    self.world.npl_run_opened(self.node, req.seq);
                    let transport = SimTransport {
                        link,
                        world: self.world.clone(),
                        node: self.node,
                        seq: req.seq,
                    };
                    run_multisig(&req, &mut state, transport, self.npl_timeout_ms).await
                }
            };
            self.finish(req.seq, state, run)
        }
    }

    fn rollback(&mut self, seq: u64) -> Result<(), RollbackError> {
        self.world.lock().nodes[self.node].contract.rollback(seq)
    }

    fn state_tree(&mut self) -> StateNode {
        self.world.lock().nodes[self.node]
            .contract
            .latest_kept()
            .tree
            .clone()
    }

    /// Serves from the latest run and the one before, as the real host.
    fn serve_state(&mut self, req: &StateRequest) -> StateResponse {
        let g = self.world.lock();
        let kept: Vec<&Kept> = g.nodes[self.node]
            .contract
            .runs
            .values()
            .rev()
            .take(2)
            .collect();
        let indexes: Vec<StateIndex> = kept.iter().map(|k| StateIndex::new(&k.tree)).collect();
        let refs: Vec<&StateIndex> = indexes.iter().collect();
        serve(&refs, req, |i, path, offset, len| {
            let path = std::str::from_utf8(path).map_err(|_| ())?;
            let bytes = kept[i].state.0.get(path).ok_or(())?;
            let end = offset as usize + len as usize;
            bytes
                .get(offset as usize..end)
                .map(<[u8]>::to_vec)
                .ok_or(())
        })
    }

    /// All at once, like the atomic swap of the real host: a crash falls
    /// before or after it.
    fn install_state(
        &mut self,
        patch: StatePatch,
    ) -> impl Future<Output = Result<(), InstallError>> {
        let mut g = self.world.lock();
        let disk = &mut g.nodes[self.node].contract;
        let before = disk.latest_kept();
        let mut files = before.state.0.clone();
        apply_to_files(&mut files, &patch);
        let mut kept = Kept::new(MemState(files), Some(before), patch.result.output);
        let got = kept.result.state;
        let result = if got == patch.result.state {
            kept.result = patch.result;
            disk.runs = BTreeMap::from([(patch.seq, kept)]);
            Ok(())
        } else {
            drop(g);
            // Every piece was checked against the certified root: a patch
            // that misses it is a protocol bug.
            self.world.violation(format!(
                "node {} fetched a state for ledger {} that hashes to {got}, not {}",
                self.node, patch.seq, patch.result.state
            ));
            Err(InstallError::Hash {
                want: patch.result.state,
                got,
            })
        };
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_runs(seqs: &[u64]) -> ContractDisk {
        let mut disk = ContractDisk::default();
        for &seq in seqs {
            let mut state = MemState::default();
            state.0.insert(format!("kv/{seq}"), vec![seq as u8]);
            let kept = Kept::new(state, Some(disk.latest_kept()), Hash::ZERO);
            disk.keep(seq, kept);
        }
        disk
    }

    #[test]
    fn rolls_back_to_a_kept_run_and_refuses_past_it_like_the_process_host() {
        let mut disk = disk_with_runs(&[1, 2, 3, 4]);
        let third = disk.runs[&3].result;
        assert!(
            disk.rollback(5).is_ok(),
            "not run that far: nothing to undo"
        );
        assert_eq!(disk.latest().0, 4);
        disk.rollback(3).unwrap();
        assert_eq!(disk.latest(), (3, third));
        // Run 1 is no longer kept: the state stays as it is.
        assert!(matches!(
            disk.rollback(1),
            Err(RollbackError::NoSnapshot { want: 1, ran: 3 })
        ));
        assert_eq!(disk.latest(), (3, third));
    }
}
