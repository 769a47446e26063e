//! Scenario files: who runs, on what network, with which faults, expecting what.
//! The format is documented in `scenarios/README.md`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

pub use consensus::ConsensusSettings;

mod attacks;
pub mod clock;
mod consensus;
pub mod latency;
mod ranges;
mod role;
mod schedule;
pub mod twins;
mod uptime;
pub use attacks::{AttackKind, ByzantineUsers};
pub use latency::Latency;
pub use ranges::Ranges;
pub use role::Role;
pub use schedule::Schedule;
pub use uptime::Uptime;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated run length.
    pub duration_ms: u64,
    /// Number of nodes; they are numbered from 0.
    pub nodes: usize,
    /// UNL members by node number; all nodes when absent.
    #[serde(default)]
    pub unl: Option<Vec<usize>>,
    #[serde(default)]
    pub consensus: ConsensusSettings,
    #[serde(default)]
    pub network: NetworkSettings,
    #[serde(default, skip_serializing_if = "ContractSettings::is_default")]
    pub contract: ContractSettings,
    #[serde(default, rename = "link")]
    pub links: Vec<LinkOverride>,
    #[serde(default, rename = "node")]
    pub node_settings: Vec<NodeSettings>,
    #[serde(default)]
    pub workload: Vec<Workload>,
    /// Users that attack the nodes' user sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byzantine_users: Vec<ByzantineUsers>,
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
    #[serde(default, rename = "expect")]
    pub expectations: Vec<Expectation>,
    /// Perturbs this scenario per seed; see `ranges.rs`.
    #[serde(default)]
    pub fuzz: Option<Ranges>,
    /// Draws the whole world per seed; see `ranges.rs` and `fuzz/swarm.rs`.
    #[serde(default)]
    pub swarm: Option<Ranges>,
    /// Runs a second copy of one node under its key; see `twins.rs`.
    #[serde(default)]
    pub twins: Option<twins::Twins>,
    /// The peer handshake the nodes run; only tests plant an old one.
    #[serde(default, skip_serializing_if = "HandshakeKind::is_default")]
    pub handshake: HandshakeKind,
}

/// How the simulated contract behaves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContractSettings {
    /// How long each run takes, drawn per run (same forms as a link's
    /// latency); absent, a run takes no simulated time at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<Latency>,
    /// Which contract the nodes run.
    pub kind: ContractKind,
    /// The multisig contract's wait for the others' signatures, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npl_timeout_ms: Option<u64>,
}

/// The example contracts the simulator runs in-process, on the SDK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractKind {
    /// The key-value store: deterministic, so copies never diverge, and a
    /// run that differs from the certified one is a bug.
    #[default]
    Kv,
    /// The seed's multisig over the node party line: what each copy heard
    /// before its timeout may differ, so divergence is allowed, and every
    /// diverged node must take the certified state.
    Multisig,
}

impl ContractSettings {
    fn is_default(&self) -> bool {
        *self == ContractSettings::default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSettings {
    pub latency_ms: Latency,
    pub loss_pct: f64,
    pub duplicate_pct: f64,
    /// Percent of messages held back an extra `reorder_extra_ms` at most, so
    /// they overtake each other.
    pub reorder_pct: f64,
    pub reorder_extra_ms: u64,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            latency_ms: Latency::Uniform { min: 5, max: 30 },
            loss_pct: 0.0,
            duplicate_pct: 0.0,
            reorder_pct: 0.0,
            reorder_extra_ms: 100,
        }
    }
}

/// Overrides the network settings for messages from `from` to `to`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkOverride {
    pub from: usize,
    pub to: usize,
    #[serde(default)]
    pub latency_ms: Option<Latency>,
    #[serde(default)]
    pub loss_pct: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    pub id: usize,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub clock_offset_ms: i64,
    #[serde(default)]
    pub clock_drift_ppm: i64,
}

/// Simulated users sending key-value commands on a [`Schedule`]; each
/// input is `size` bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Workload {
    #[serde(flatten)]
    pub schedule: Schedule,
    #[serde(default = "default_input_size")]
    pub size: usize,
    /// Each user cycles through this many keys, which bounds the contract
    /// state at users x keys x size.
    #[serde(default = "default_keys")]
    pub keys: u64,
    #[serde(flatten, skip_serializing)]
    pub unknown: schedule::Unknown,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn default_input_size() -> usize {
    64
}

fn default_keys() -> u64 {
    100
}

/// (`deny_unknown_fields` does not work through `flatten`; `Fault` itself
/// rejects unknown fields.)
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub at_ms: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Symmetric partition: nodes in different groups cannot talk. Nodes in
    /// no group keep all their links.
    Partition {
        groups: Vec<Vec<usize>>,
    },
    /// One-way partition: messages from `from` to `to` are lost (with
    /// `npl_only`, only node party line chunks: consensus still flows).
    /// With `rounds` (first and last, inclusive), only proposals of those
    /// rounds are lost, and only of `stages` when given: a cut aimed at
    /// consensus steps whatever the clocks say, over once those rounds are.
    Block {
        from: Vec<usize>,
        to: Vec<usize>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        npl_only: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rounds: Option<[u64; 2]>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stages: Vec<u8>,
    },
    /// Removes every partition and block.
    Heal,
    /// Kills a node; what its store had not synced is lost.
    Crash {
        node: usize,
    },
    /// Kills a node in the middle of its next ledger write: that write and
    /// everything after it in the same batch (the sync, the sends) never
    /// happen.
    CrashMidWrite {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Pause {
        node: usize,
    },
    Resume {
        node: usize,
    },
    Clock {
        node: usize,
        offset_ms: i64,
        #[serde(default)]
        drift_ppm: i64,
    },
    /// Replaces the default network settings.
    Network(NetworkSettings),
    /// For `for_ms`, each message the `mutator` `node` sends to a peer in
    /// `to` (every peer when empty) is mutated, drawn from `seed`.
    Mutate {
        node: usize,
        #[serde(default)]
        to: Vec<usize>,
        seed: u64,
        for_ms: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        any_scope: bool,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    /// Every listed node (every honest node when empty) reaches `seq` by `by_ms`.
    ReachSeq {
        seq: u64,
        by_ms: u64,
        #[serde(default)]
        nodes: Vec<usize>,
    },
    /// No honest node closes a ledger during the window.
    NoProgress { from_ms: u64, to_ms: u64 },
    /// At the end, honest nodes are at most `ledgers` apart.
    MaxLag { ledgers: u64 },
    /// Every honest node closes at least `ledgers` ledgers after `from_ms`
    /// (liveness once the faults are over).
    Progress { from_ms: u64, ledgers: u64 },
    /// Every input sent by `sent_by_ms` to an honest node that never
    /// crashed has been answered: its output reached its user.
    AllAnswered {
        sent_by_ms: u64,
        /// Only inputs sent from then on (a run uncertified while nodes
        /// were down is withheld, and its users told so).
        #[serde(default, skip_serializing_if = "is_zero")]
        sent_from_ms: u64,
    },
    /// `node` installed a state fetched from peers at least once, and all
    /// its state syncs together fetched at most `max_bytes`.
    StateSynced { node: usize, max_bytes: u64 },
    /// Every output an honest node delivered carries at least `min` valid
    /// signatures (the multisig contract).
    Signatures { min: usize },
    /// Honest nodes withheld no outputs: every run they made was certified.
    NoneWithheld,
    /// At least one honest node withheld outputs (its copy diverged) and
    /// took the certified state instead.
    Diverged,
    /// The random beacon: each node in `absent` is recorded absent, and
    /// each in `convicted` convicted of fraud, in some final ledger; at
    /// least `min_random_pct` of final ledgers with an outcome are random.
    Beacon {
        #[serde(default)]
        absent: Vec<usize>,
        #[serde(default)]
        convicted: Vec<usize>,
        #[serde(default)]
        min_random_pct: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path}: {err}")]
    Parse {
        path: String,
        err: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|err| ScenarioError::Read {
            path: path.display().to_string(),
            err,
        })?;
        let s: Scenario = toml::from_str(&text).map_err(|err| ScenarioError::Parse {
            path: path.display().to_string(),
            err: Box::new(err),
        })?;
        s.validate()?;
        Ok(s)
    }

    pub fn role(&self, id: usize) -> Role {
        self.node_settings
            .iter()
            .find(|n| n.id == id)
            .map_or(Role::Honest, |n| n.role)
    }

    pub fn unl(&self) -> Vec<usize> {
        self.unl
            .clone()
            .unwrap_or_else(|| (0..self.nodes).collect())
    }

    /// Every simulated user, in order: (its workload, the node it uses).
    pub fn users(&self) -> Vec<(usize, usize)> {
        schedule::expand(self.workload.iter().map(|w| w.schedule.clone()), self.nodes)
    }

    /// Every byzantine user, in order: (its `[[byzantine_users]]` table,
    /// the node it uses). They are numbered after the honest users.
    pub fn byzantine_users(&self) -> Vec<(usize, usize)> {
        let tables = self.byzantine_users.iter().map(|g| g.schedule.clone());
        schedule::expand(tables, self.nodes)
    }

    pub fn honest(&self) -> Vec<usize> {
        (0..self.nodes)
            .filter(|&i| self.role(i) == Role::Honest)
            .collect()
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        if self.nodes == 0 || self.nodes > 100 {
            return bad(format!("nodes must be 1..=100, got {}", self.nodes));
        }
        if self.duration_ms == 0 {
            return bad("duration_ms must be positive".into());
        }
        if !self.consensus.prototype_users && !self.byzantine_users.is_empty() {
            return bad(
                "byzantine users speak the prototype's protocol, which prototype_users = false turns off"
                    .into(),
            );
        }
        let node_ok = |i: usize, what: &str| -> Result<(), ScenarioError> {
            if i >= self.nodes {
                return Err(ScenarioError::Invalid(format!(
                    "{what} names node {i}, but there are only {} nodes (0..{})",
                    self.nodes,
                    self.nodes - 1
                )));
            }
            Ok(())
        };
        let unl = self.unl();
        if unl.is_empty() {
            return bad("unl is empty".into());
        }
        for &i in &unl {
            node_ok(i, "unl")?;
        }
        if unl.iter().collect::<BTreeSet<_>>().len() != unl.len() {
            return bad("unl lists a node twice".into());
        }
        let mut seen = BTreeSet::new();
        for n in &self.node_settings {
            node_ok(n.id, "[[node]]")?;
            if !seen.insert(n.id) {
                return bad(format!("[[node]] id {} appears twice", n.id));
            }
        }
        for l in &self.links {
            node_ok(l.from, "[[link]]")?;
            node_ok(l.to, "[[link]]")?;
        }
        check_network(&self.network)?;
        let n = self.nodes;
        for w in &self.workload {
            (w.schedule.check("workload", &w.unknown, n)).map_err(ScenarioError::Invalid)?;
        }
        for g in &self.byzantine_users {
            let unknown = &g.unknown;
            (g.schedule.check("byzantine_users", unknown, n)).map_err(ScenarioError::Invalid)?;
        }
        for ev in &self.timeline {
            match &ev.fault {
                Fault::Partition { groups } => {
                    for &i in groups.iter().flatten() {
                        node_ok(i, "partition")?;
                    }
                }
                Fault::Block {
                    from,
                    to,
                    npl_only,
                    rounds,
                    stages,
                } => {
                    for &i in from.iter().chain(to) {
                        node_ok(i, "block")?;
                    }
                    let run_rounds = self.duration_ms / self.consensus.roundtime_ms.max(1) + 1;
                    if rounds.is_some_and(|[_, b]| b > run_rounds) {
                        return bad(format!(
                            "block rounds {rounds:?}: the run has {run_rounds} rounds"
                        ));
                    }
                    if rounds.is_some_and(|[a, b]| a > b) {
                        return bad(format!(
                            "block rounds {rounds:?}: the first is after the last"
                        ));
                    }
                    if (rounds.is_some() || !stages.is_empty()) && *npl_only {
                        return bad("block: npl_only cannot be scoped to rounds or stages".into());
                    }
                    if !stages.is_empty() && rounds.is_none() {
                        return bad("block: stages need rounds".into());
                    }
                    if let Some(s) = stages.iter().find(|&&s| s > 3) {
                        return bad(format!("block: stage {s} does not exist (0-3)"));
                    }
                }
                Fault::Crash { node }
                | Fault::CrashMidWrite { node }
                | Fault::Restart { node }
                | Fault::Pause { node }
                | Fault::Resume { node }
                | Fault::Clock { node, .. } => node_ok(*node, "timeline")?,
                Fault::Network(n) => check_network(n)?,
                Fault::Heal => {}
                Fault::Mutate { node, to, .. } => {
                    node_ok(*node, "mutate")?;
                    if self.role(*node) != Role::Mutator {
                        return bad(format!("mutate names node {node}, which is not a mutator"));
                    }
                    for &i in to {
                        node_ok(i, "mutate")?;
                    }
                }
            }
        }
        if let Some(t) = &self.twins {
            t.validate(self)?;
        }
        if self.fuzz.is_some() && self.swarm.is_some() {
            return bad(
                "a scenario has [fuzz] or [swarm], not both: [swarm] draws everything [fuzz] would"
                    .into(),
            );
        }
        if let Some(f) = &self.fuzz {
            let world = f.world_knobs();
            if !world.is_empty() {
                return bad(format!(
                    "[fuzz] keeps the world the file wrote; {} can be drawn only under [swarm]",
                    world.join(", ")
                ));
            }
            f.check(self.nodes, "fuzz")
                .map_err(ScenarioError::Invalid)?;
        }
        if let Some(r) = &self.swarm {
            r.check(self.nodes, "swarm")
                .map_err(ScenarioError::Invalid)?;
        }
        for e in &self.expectations {
            if let Expectation::ReachSeq { nodes, .. } = e {
                for &i in nodes {
                    node_ok(i, "expect")?;
                }
            }
        }
        let key = hotpocket_node::crypto::PubKey([0; 32]);
        let cfg = self.consensus.config(vec![key]);
        cfg.validate()
            .map_err(|e| ScenarioError::Invalid(format!("[consensus]: {e}")))?;
        Ok(())
    }
}

fn check_network(n: &NetworkSettings) -> Result<(), ScenarioError> {
    for (name, v) in [
        ("loss_pct", n.loss_pct),
        ("duplicate_pct", n.duplicate_pct),
        ("reorder_pct", n.reorder_pct),
    ] {
        if !(0.0..=100.0).contains(&v) {
            return Err(ScenarioError::Invalid(format!(
                "{name} must be 0..=100, got {v}"
            )));
        }
    }
    match n.latency_ms {
        Latency::Uniform { min, max } | Latency::Tail { min, max, .. } if min > max => Err(
            ScenarioError::Invalid(format!("latency min {min} is above max {max}")),
        ),
        _ => Ok(()),
    }
}

/// The handshake the nodes run. Only tests choose another: the planted
/// versions are the protocol's known holes, kept so that a test can show
/// the relay adversary and the session check find them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandshakeKind {
    #[default]
    V2,
    /// Version 2 with dialers that take whatever key answers.
    V2Unpinned,
    /// Version 1: each side signs "your challenge, my key, your key" for
    /// anyone claiming a UNL key, before the other proved anything.
    V1,
}

impl HandshakeKind {
    pub fn is_default(&self) -> bool {
        *self == HandshakeKind::V2
    }
}
