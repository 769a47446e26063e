//! The real node: the same driver the simulator runs, over the system
//! clock, TCP peers, websocket users, SQLite and a child-process contract.

use crate::consensus::Event;
use crate::crypto::{Hash, PubKey};
use crate::driver::{self, Env};
use crate::env::{Clock, Observer};
use crate::real::config::Config;
use crate::real::contract_host::ProcessHost;
use crate::real::metrics::{self, Metrics, MetricsObserver};
use crate::real::peers::{PeerTls, TcpPeers};
use crate::real::process::{ProcessRunner, Workdir};
use crate::real::reads::ContractReads;
use crate::real::reaper;
use crate::real::store::{LedgerReader, SqliteStore};
use crate::real::users_ws::{now_ms, HpServing, WsUsers};
use crate::users::hp::HpNode;
use anyhow::Context;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    async fn sleep_until(&self, local_ms: u64) {
        let wait = local_ms.saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// The node's events, as log lines.
pub struct LogObserver;

impl Observer for LogObserver {
    fn notify(&mut self, event: &Event) {
        match event {
            Event::Started { lcl } => {
                tracing::info!(seq = lcl.seq, hash = %lcl.hash.short(), "node started")
            }
            Event::LedgerClosed { ledger, hash, via } => tracing::info!(
                seq = ledger.seq,
                hash = %hash.short(),
                inputs = ledger.inputs.len(),
                rand = %ledger.beacon.outcome.as_ref()
                    .filter(|o| o.is_random())
                    .map_or_else(|| "none".to_string(), |o| o.value.short()),
                ?via,
                "ledger closed"
            ),
            Event::Status(s) => tracing::info!(status = ?s, "vote status"),
            Event::ForkSeen { seq, ours, theirs } => tracing::warn!(
                seq,
                ours = %ours.short(),
                theirs = %theirs.short(),
                "the UNL closed another ledger at our seq"
            ),
            Event::RolledBack { from, to, proven } => {
                tracing::warn!(
                    from = from.seq,
                    to = to.seq,
                    proven_elsewhere = proven.is_some(),
                    "rolled back an unfinal ledger"
                )
            }
            Event::StateMismatch { seq } => tracing::warn!(
                seq,
                "our contract run differs from what the UNL certified; fetching that state"
            ),
            Event::OutputMismatch { seq } => tracing::warn!(
                seq,
                "our contract run's outputs differ from what the UNL certified"
            ),
            Event::OutputsWithheld { seq, why } => tracing::warn!(
                seq,
                why = why.as_str(),
                "outputs not certified on this node; users told"
            ),
            Event::HistoryRejected { peer, reason } => {
                tracing::warn!(peer = %peer.short(), reason, "rejected history")
            }
            Event::StateSyncStarted { seq, behind } => tracing::info!(
                seq,
                behind,
                "contract state far behind: fetching the certified state"
            ),
            Event::StateSyncAbandoned { seq } => tracing::warn!(
                seq,
                "no peer could serve the certified state; running the ledgers instead"
            ),
            Event::StateSynced { seq, fetched, .. } => tracing::info!(
                seq,
                bytes = fetched.bytes,
                files = fetched.files,
                dirs = fetched.dirs,
                "contract state fetched and installed"
            ),
            Event::Intake {
                open: false,
                behind,
            } => tracing::warn!(
                behind,
                "contract runs behind the chain: refusing new user inputs"
            ),
            Event::Intake { open: true, behind } => {
                tracing::info!(behind, "contract runs caught up: taking user inputs again")
            }
            // The events around it say what happened; this names the path.
            Event::Reached(path) => tracing::debug!(path = path.name(), "rare path reached"),
        }
    }
}

/// Runs the node in `dir` until `shutdown` turns true.
///
/// Makes this process a child subreaper (`reaper`), so that everything a
/// contract starts can be killed with its run, even what left its process
/// group: only for a process that runs nothing but the node, as
/// `hotpocket run` does, since orphans reparented to it are killed.
pub async fn run_node(dir: &Path, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    if let Err(e) = reaper::become_subreaper() {
        // Runs still end with their contract's group; only processes that
        // left it outlive them.
        tracing::warn!(error = %e, "cannot become a child subreaper: processes a contract detaches will outlive its runs");
    }
    let ran = run_until_shutdown(dir, shutdown).await;
    // A run cut short killed its contract's processes as it was dropped;
    // this catches what a sweep gave up on.
    reaper::sweep();
    ran
}

async fn run_until_shutdown(dir: &Path, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let checked = Config::load(dir)?;
    let cfg = &checked.cfg;
    let key = checked.key.clone();
    let unl = checked.consensus.unl.clone();

    let ledger_path = dir.join("ledger.sqlite");
    let mut store = SqliteStore::open(&ledger_path).context("opening the ledger")?;
    let host = ProcessRunner {
        binary: checked.binary.clone(),
        args: cfg.binargs.split_whitespace().map(String::from).collect(),
        state_dir: dir.join("state"),
        workdir: cfg.workdir,
        format: cfg.fdlist,
        io: cfg.user_io,
        limits: checked.limits.clone(),
    };
    let read_runner = host.clone();
    let mut contract =
        ProcessHost::open(host, key.public(), unl.clone()).context("opening the contract state")?;
    // A read's copy of the state has no contract directory around it.
    let reads = match cfg.workdir {
        Workdir::State => Some(
            ContractReads::new(
                read_runner,
                (contract.serve_reads()).context("copying the contract state for read requests")?,
                contract.reads_scratch(),
                key.public(),
                unl.clone(),
            )
            .context("making room for read requests")?,
        ),
        Workdir::Contract => {
            tracing::info!(
                "read requests are off: the contract starts in its contract directory (`workdir`)"
            );
            None
        }
    };
    // Contracts that sign over the party line (the multisig example) sign
    // with this, never with the node key.
    contract.contract_seed = Some(key.contract_seed());
    contract.vouched_inputs = checked.consensus.vouched_inputs;
    let mut node = driver::boot(
        checked.consensus.clone(),
        key.clone(),
        &mut store,
        &mut contract,
    )
    .context("starting the node")?;
    let lcl = node.lcl().seq;

    let peer_addr = format!("{}:{}", cfg.ip, cfg.peerport);
    let peer_listener = TcpListener::bind(&peer_addr)
        .await
        .with_context(|| format!("listening for peers on {peer_addr}"))?;
    let user_addr = format!("{}:{}", cfg.ip, cfg.pubport);
    let user_listener = TcpListener::bind(&user_addr)
        .await
        .with_context(|| format!("listening for users on {user_addr}"))?;
    let tls = crate::real::tls::acceptor(dir)?;
    if tls.is_none() {
        tracing::warn!(
            "no {}: users connect over plain ws only (unencrypted); `hotpocket new` makes a certificate",
            crate::real::tls::cert_path(dir).display()
        );
    }
    let schemes = if tls.is_some() {
        "wss:// or ws://"
    } else {
        "ws://"
    };
    tracing::info!(
        key = %key.public().to_hex(),
        peers = %peer_addr,
        users = %format!("{schemes}{user_addr}"),
        lcl,
        "node listening"
    );
    // An empty id and version would make the handshake's signature one
    // over the user's 32 hex digits alone: what a helo signs.
    anyhow::ensure!(
        !cfg.contract_version.is_empty(),
        "cfg/hp.cfg: field `contract_version` must not be empty"
    );
    let hp = HpNode {
        key: key.clone(),
        contract_id: (cfg.contract_id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| contract_id_of(&unl)),
        contract_version: cfg.contract_version.clone(),
        unl: unl.clone(),
    };
    let scrapes = match &cfg.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics scrapes on {addr}"))?,
        ),
        None => None,
    };
    let peer_tls = PeerTls::new(&key, &unl).context("setting up TLS for peer links")?;
    let peers = cfg.peers.clone();
    let net = TcpPeers::start(
        key,
        unl,
        peer_listener,
        peers,
        shutdown.clone(),
        Some(peer_tls),
    );
    let ledgers =
        LedgerReader::open(&ledger_path).context("opening the ledger for users' queries")?;
    let serving = HpServing {
        node: hp,
        tls,
        ledgers: Some(ledgers),
        reads,
    };
    let users = WsUsers::start_hp(
        user_listener,
        checked.session.clone(),
        serving,
        shutdown.clone(),
    );
    let metrics = match scrapes {
        Some(listener) => {
            let mut m = Metrics::new();
            m.watch(net.watch(), users.watch());
            contract.run_seconds = Some(m.run_seconds.clone());
            let m = Arc::new(Mutex::new(m));
            tracing::info!(addr = %listener.local_addr()?, "serving metrics at /metrics");
            tokio::spawn(metrics::serve(listener, m.clone(), shutdown));
            Some(m)
        }
        None => None,
    };
    let mut env = Env {
        clock: SystemClock,
        net,
        users,
        store,
        contract,
        observer: MetricsObserver {
            inner: LogObserver,
            metrics,
        },
    };
    driver::run(&mut node, &mut env)
        .await
        .context("the node stopped")?;
    tracing::info!(seq = node.lcl().seq, "node shut down cleanly");
    Ok(())
}

/// A contract id for a network that set none: the same on every node of
/// one UNL, in the UUID layout hpcore's ids have.
fn contract_id_of(unl: &[PubKey]) -> String {
    let mut sorted = unl.to_vec();
    sorted.sort();
    let keys: Vec<&[u8]> = sorted.iter().map(|k| &k.0[..]).collect();
    let h = hex::encode(&Hash::of("hotpocket/contract-id/v1", &keys).0[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
