//! The websocket server users connect to. It speaks the user protocol through the
//! sans-IO `users::Session` and decides nothing itself: the session says
//! what to send, what to close and what is an input.
//!
//! Certified outputs go back as binary messages on every connection the
//! user has open to this node: raw to prototype sessions, as hpcore's
//! `contract_output` with its proof to hpcore ones.

mod conn;
mod outbox;

use crate::consensus::{Event, Withheld};
use crate::contract::{leaf, output_texts, OutputTree, RunOutcome, RunResult, B3};
use crate::crypto::{Hash, PubKey, Sig};
use crate::env::Users;
use crate::gate::{Gate, GateConfig, LogThrottle, Slot};
use crate::real::reads::ContractReads;
use crate::real::store::LedgerReader;
use crate::real::tls::{is_tls, TlsAcceptor};
use crate::real::OsEntropy;
use crate::users::hp::{HpNode, View};
use crate::users::hp_ledger;
use crate::users::hp_outputs::contract_output;
use crate::users::statuses::Statuses;
use crate::users::{failed_message, outputs_for, withheld_message, Intake, SessionLimits};
use outbox::{Open, Outbox};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

/// Limits on user connections: every one holds a file descriptor that
/// peers and the contract also need, and memory for what it has not read.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// Open connections beyond which new ones are turned away.
    pub max_connections: usize,
    /// Connections without a valid helo yet, in total and from one address:
    /// sockets that never finish the handshake must not keep users out.
    pub max_pending: usize,
    pub max_pending_per_ip: usize,
    /// Time a connection has to complete the handshake.
    pub helo_timeout: Duration,
    /// Output messages and bytes queued for one connection, and bytes for
    /// all together (queued or being written), beyond which a connection
    /// counts as too slow and is closed: a user that never reads must not
    /// make the node hold its outputs without bound.
    pub out_queue: usize,
    pub out_queue_bytes: usize,
    pub out_total_bytes: usize,
    /// A write of an output that takes longer means the user stopped
    /// reading: the connection is closed and its queue freed.
    pub write_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            max_pending: 256,
            max_pending_per_ip: 32,
            helo_timeout: Duration::from_secs(10),
            out_queue: 1024,
            out_queue_bytes: 8 << 20,
            out_total_bytes: 256 << 20,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Warnings an outsider can cause: one line per interval, with a count.
const WARN_EVERY_MS: u64 = 10_000;

/// Bytes of inputs waiting for the node, from all users together, beyond
/// which a user is told the node is busy.
const MAX_QUEUED_BYTES: usize = 64 << 20;

type Conns = Arc<Mutex<BTreeMap<PubKey, BTreeMap<u64, Outbox>>>>;

/// The statuses owed hpcore users, each for (user, connection).
type Owed = Arc<Mutex<Statuses<(PubKey, u64)>>>;

/// Runs behind the one just handed whose outputs may still wait for their
/// signatures: the node hands each 16 ledgers after delivering it at the
/// latest, and delivers a run well within 48 ledgers of the next.
const HELD_RUNS: u64 = 64;

/// How long a connection offered hpcore's `user_challenge` may stay silent
/// before it is offered the prototype's `public_challenge` too: hpcore's
/// client answers within milliseconds and gives up after 5 s.
const QUIET: Duration = Duration::from_millis(1500);

/// What a node serving hpcore's protocol brings: who it is in it, its TLS
/// certificate (wss beside ws), its stored chain (ledger queries) and its
/// contract (read requests).
pub struct HpServing {
    pub node: HpNode,
    pub tls: Option<TlsAcceptor>,
    pub ledgers: Option<LedgerReader>,
    pub reads: Option<ContractReads>,
}

/// What connections use besides the sessions: see [`HpServing`].
#[derive(Clone, Default)]
struct Backends {
    /// wss beside ws on the same port, when the node has a certificate.
    tls: Option<TlsAcceptor>,
    /// The stored chain, for hpcore users' ledger queries.
    ledgers: Option<Arc<LedgerReader>>,
    /// The contract, for hpcore users' read requests.
    reads: Option<Arc<ContractReads>>,
}

pub struct WsUsers {
    intake: Arc<Mutex<Intake<OsEntropy>>>,
    owed: Owed,
    /// Who the node is in hpcore's protocol, when it serves it: it signs
    /// the proofs of outputs.
    hp: Option<Arc<HpNode>>,
    /// Runs delivered with outputs for hpcore users here, waiting for the
    /// UNL's signatures: (ledger hash, run) by seq.
    signing: BTreeMap<u64, (Hash, RunResult)>,
    inputs: mpsc::Receiver<Vec<u8>>,
    conns: Conns,
    queued: Arc<AtomicUsize>,
    /// 0 while the node takes inputs; else how many ledgers its contract
    /// runs are behind (intake paused).
    behind: Arc<AtomicU64>,
    /// Output bytes queued or being written, for all connections.
    out_total: Arc<AtomicUsize>,
    limits: ConnLimits,
    too_slow: LogThrottle,
    counts: Arc<UserCounts>,
}

/// What the users' side counted, for the metrics endpoint.
#[derive(Debug, Default)]
struct UserCounts {
    /// Input bodies handed to the node.
    inputs: AtomicU64,
    /// Output messages queued for users' connections (notices of
    /// withheld or failed runs not counted).
    outputs: AtomicU64,
    /// Connections closed for being too slow to take their outputs.
    too_slow: AtomicU64,
}

/// A view of the users' side that stays with the caller once `WsUsers`
/// has moved into the driver (the metrics endpoint reads it).
#[derive(Clone)]
pub struct UsersWatch {
    conns: Conns,
    counts: Arc<UserCounts>,
    queued: Arc<AtomicUsize>,
}

impl UsersWatch {
    /// Connections of authenticated users open now.
    pub fn connections(&self) -> usize {
        let conns = self.conns.lock().expect("not poisoned");
        conns.values().map(BTreeMap::len).sum()
    }
    pub fn inputs(&self) -> u64 {
        self.counts.inputs.load(Ordering::Relaxed)
    }
    pub fn outputs(&self) -> u64 {
        self.counts.outputs.load(Ordering::Relaxed)
    }
    pub fn too_slow(&self) -> u64 {
        self.counts.too_slow.load(Ordering::Relaxed)
    }
    /// Input bytes taken from users and not yet handed to the node.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Shared {
    inputs: mpsc::Sender<Vec<u8>>,
    conns: Conns,
    intake: Arc<Mutex<Intake<OsEntropy>>>,
    owed: Owed,
    next_id: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    queued: Arc<AtomicUsize>,
    behind: Arc<AtomicU64>,
    out_total: Arc<AtomicUsize>,
    pending: Arc<Mutex<Gate>>,
    limits: ConnLimits,
    backends: Backends,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl WsUsers {
    pub fn start(
        listener: TcpListener,
        limits: SessionLimits,
        shutdown: watch::Receiver<bool>,
    ) -> WsUsers {
        WsUsers::start_with(listener, limits, ConnLimits::default(), shutdown)
    }

    pub fn start_with(
        listener: TcpListener,
        limits: SessionLimits,
        conn_limits: ConnLimits,
        shutdown: watch::Receiver<bool>,
    ) -> WsUsers {
        let intake = Intake::new(limits, OsEntropy);
        let none = Backends::default();
        WsUsers::serve_intake(listener, intake, None, conn_limits, none, shutdown)
    }

    /// Serves hpcore's protocol as well as the prototype's (see
    /// [`HpServing`]); `limits.roundtime_ms` is what `stat` reports.
    pub fn start_hp(
        listener: TcpListener,
        limits: SessionLimits,
        serving: HpServing,
        shutdown: watch::Receiver<bool>,
    ) -> WsUsers {
        let HpServing {
            node,
            tls,
            ledgers,
            reads,
        } = serving;
        let view = View::starting(limits.roundtime_ms, reads.is_some());
        let hp = Arc::new(node.clone());
        let intake = Intake::new(limits, OsEntropy).serving_hp(node, view);
        let limits = ConnLimits::default();
        let backends = Backends {
            tls,
            ledgers: ledgers.map(Arc::new),
            reads: reads.map(Arc::new),
        };
        WsUsers::serve_intake(listener, intake, Some(hp), limits, backends, shutdown)
    }

    fn serve_intake(
        listener: TcpListener,
        intake: Intake<OsEntropy>,
        hp: Option<Arc<HpNode>>,
        conn_limits: ConnLimits,
        backends: Backends,
        shutdown: watch::Receiver<bool>,
    ) -> WsUsers {
        let (tx, rx) = mpsc::channel(64 * 1024);
        let intake = Arc::new(Mutex::new(intake));
        let owed: Owed = Default::default();
        let conns: Conns = Default::default();
        let queued = Arc::new(AtomicUsize::new(0));
        let behind = Arc::new(AtomicU64::new(0));
        let out_total = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            intake: intake.clone(),
            owed: owed.clone(),
            inputs: tx,
            conns: conns.clone(),
            next_id: Default::default(),
            open: Default::default(),
            queued: queued.clone(),
            behind: behind.clone(),
            out_total: out_total.clone(),
            pending: Arc::new(Mutex::new(Gate::new(GateConfig {
                max_pending: conn_limits.max_pending,
                max_pending_per_source: conn_limits.max_pending_per_ip,
            }))),
            limits: conn_limits.clone(),
            backends,
        };
        tokio::spawn(accept_loop(shared, listener, shutdown));
        WsUsers {
            intake,
            owed,
            hp,
            signing: BTreeMap::new(),
            inputs: rx,
            conns,
            queued,
            behind,
            out_total,
            limits: conn_limits,
            counts: Default::default(),
            too_slow: LogThrottle::new(WARN_EVERY_MS),
        }
    }

    /// Output bytes queued or being written for all connections now.
    pub fn queued_output_bytes(&self) -> usize {
        self.out_total.load(Ordering::Relaxed)
    }

    /// hpcore's `ledger_event` for `event`, if it makes one, to every
    /// connection that asked for them; one too slow to take it misses it.
    fn ledger_event(&mut self, event: &Event) {
        let m = match event {
            Event::LedgerClosed { ledger, hash, .. } => hp_ledger::ledger_created(ledger, hash),
            Event::Status(status) => hp_ledger::vote_status_event(*status),
            _ => return,
        };
        let conns = self.conns.lock().expect("not poisoned");
        let asked = conns.values().flat_map(|m| m.values());
        for outbox in asked.filter(|o| o.hp && o.ledger_events.load(Ordering::Relaxed)) {
            let m = Message::Binary(m.clone().into_bytes());
            if !outbox.offer(m, &self.out_total, |_, _| true) {
                if let Some(n) = self.too_slow.event(now_ms()) {
                    tracing::warn!(
                        count = n,
                        "user connection too slow to take a ledger event: dropped"
                    );
                }
            }
        }
    }

    /// Connections of authenticated users open now.
    pub fn connections(&self) -> usize {
        self.watch().connections()
    }

    pub fn watch(&self) -> UsersWatch {
        UsersWatch {
            conns: self.conns.clone(),
            counts: self.counts.clone(),
            queued: self.queued.clone(),
        }
    }
}

impl Users for WsUsers {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let body = self.inputs.recv().await?;
        self.queued.fetch_sub(body.len(), Ordering::Relaxed);
        self.counts.inputs.fetch_add(1, Ordering::Relaxed);
        Some(body)
    }

    fn deliver(&mut self, seq: u64, ledger: &Hash, run: &RunResult) {
        // hpcore's users wait for the UNL's signatures (`outputs_signed`).
        // A framed run's messages go one frame each.
        self.send_to_output_owners(seq, run, "output", |_, out, hp_conn| match hp_conn {
            true => vec![],
            false => (run.io.messages(out).into_iter())
                .map(|m| Message::Binary(m.to_vec()))
                .collect(),
        });
        if self.hp.is_some() && self.hp_owner_here(run) {
            self.signing.insert(seq, (*ledger, run.clone()));
        }
    }

    fn outputs_signed(&mut self, seq: u64, root: &B3, sigs: &[(PubKey, Sig)]) {
        // The node hands every delivered run once, not always in order (a
        // run's signatures may come after a later run's); one still here
        // far behind this was never handed (a restart of the node's
        // consensus state): it goes.
        self.signing = self.signing.split_off(&seq.saturating_sub(HELD_RUNS));
        let Some((ledger, run)) = self.signing.remove(&seq) else {
            return;
        };
        let tree = OutputTree::of(&run, seq, &ledger);
        if tree.root() != *root {
            tracing::error!(
                seq,
                "the signed output root is not the one of the delivered run: outputs not sent"
            );
            return;
        }
        self.send_to_output_owners(seq, &run, "output", |user, _, hp_conn| {
            if !hp_conn {
                return vec![];
            }
            let texts = output_texts(&run, &user);
            let mine = leaf(&user, &texts);
            let Some(view) = tree.for_user(&mine) else {
                return vec![];
            };
            let m = contract_output(seq, &ledger, &texts, &mine, view, sigs);
            vec![Message::Binary(m.into_bytes())]
        });
    }

    fn withhold(&mut self, seq: u64, run: &RunResult, why: Withheld) {
        // hpcore's protocol has no such notice, and its client in a browser
        // fails on a text frame: only prototype sessions hear it.
        let notice = withheld_message(seq, why);
        // Framed, bytes with no whole message are no output to withhold.
        self.send_to_output_owners(seq, run, "notice", |user, _, hp_conn| {
            (!hp_conn && !run.messages(&user).is_empty())
                .then(|| Message::Text(notice.clone()))
                .into_iter()
                .collect()
        });
    }

    fn notify(&mut self, event: &Event) {
        let due = {
            let mut intake = self.intake.lock().expect("not poisoned");
            let mut owed = self.owed.lock().expect("not poisoned");
            owed.on_event(event, intake.view_mut())
        };
        self.ledger_event(event);
        if due.is_empty() {
            return;
        }
        let conns = self.conns.lock().expect("not poisoned");
        for ((user, id), status) in due {
            // A user gone since is told nothing: hpcore's client forgets
            // its inputs when its connection drops.
            let Some(outbox) = conns.get(&user).and_then(|m| m.get(&id)) else {
                continue;
            };
            let m = Message::Binary(status.into_bytes());
            if !outbox.offer(m, &self.out_total, |_, _| true) {
                if let Some(n) = self.too_slow.event(now_ms()) {
                    tracing::warn!(user = %user.short(), count = n, "user connection too slow to take an input status: dropped");
                }
            }
        }
    }

    fn run_failed(&mut self, seq: u64, users: &[PubKey], outcome: &RunOutcome) {
        let notice = Message::Text(failed_message(seq, outcome));
        let conns = self.conns.lock().expect("not poisoned");
        for user in users {
            let outboxes = conns.get(user).into_iter().flat_map(BTreeMap::values);
            for outbox in outboxes.filter(|o| !o.hp) {
                // A notice is small and not held back by the byte bounds;
                // a queue too full even for it loses it (logged).
                if !outbox.offer(notice.clone(), &self.out_total, |_, _| true) {
                    if let Some(n) = self.too_slow.event(now_ms()) {
                        tracing::warn!(user = %user.short(), seq, count = n, "user connection too slow to take a failure notice: dropped");
                    }
                }
            }
        }
    }

    fn intake(&mut self, open: bool, behind: u64) {
        let v = if open { 0 } else { behind.max(1) };
        self.behind.store(v, Ordering::Relaxed);
    }
}

impl WsUsers {
    /// Whether a user with an output in `run` has an hpcore connection here.
    fn hp_owner_here(&self, run: &RunResult) -> bool {
        let conns = self.conns.lock().expect("not poisoned");
        (run.outputs.keys())
            .filter_map(|user| conns.get(user))
            .any(|m| m.values().any(|o| o.hp))
    }

    /// Sends `msg(output)` to every connection of each user with an output
    /// in `run`. A connection too slow to take it (its queue full, in
    /// messages or bytes, or all queues together full) is closed: its user
    /// sees the close and may reconnect, instead of the node holding ever
    /// more for it.
    fn send_to_output_owners(
        &mut self,
        seq: u64,
        run: &RunResult,
        what: &str,
        msg: impl Fn(PubKey, &[u8], bool) -> Vec<Message>,
    ) {
        let mut conns = self.conns.lock().expect("not poisoned");
        let here: Vec<((PubKey, u64), PubKey)> = conns
            .iter()
            .flat_map(|(user, m)| m.keys().map(move |id| ((*user, *id), *user)))
            .collect();
        let mut slow = Vec::new();
        for ((user, id), out) in outputs_for(run, here) {
            let Some(outbox) = conns.get(&user).and_then(|m| m.get(&id)) else {
                continue;
            };
            for m in msg(user, out, outbox.hp) {
                let len = m.len();
                // An output bigger than the per-connection bound (the
                // contract may write up to its own output limit) goes to an
                // empty queue.
                let (per, all) = (self.limits.out_queue_bytes, self.limits.out_total_bytes);
                let fits = |mine: usize, total: usize| {
                    (mine == 0 || mine + len <= per) && total + len <= all
                };
                if !outbox.offer(m, &self.out_total, fits) {
                    slow.push((user, id));
                    break;
                }
                if what == "output" {
                    self.counts.outputs.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for (user, id) in slow {
            self.counts.too_slow.fetch_add(1, Ordering::Relaxed);
            // Dropping its queue's sender ends the connection (`serve`).
            if let Some(m) = conns.get_mut(&user) {
                m.remove(&id);
                if m.is_empty() {
                    conns.remove(&user);
                }
            }
            if let Some(n) = self.too_slow.event(now_ms()) {
                tracing::warn!(user = %user.short(), seq, count = n, "user connection too slow to take its {what}: closed");
            }
        }
    }
}

/// A connection whose first byte opens a TLS handshake is served over TLS
/// when the node has a certificate; any other as plain ws.
async fn serve_tls_or_plain(
    shared: Shared,
    stream: TcpStream,
    slot: Slot,
    shutdown: watch::Receiver<bool>,
) -> Result<(), WsError> {
    let Some(tls) = shared.backends.tls.clone() else {
        return conn::serve(shared, stream, slot, shutdown).await;
    };
    let wait = shared.limits.helo_timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return Ok(()), // silent, or gone, before its first byte
    }
    if !is_tls(first[0]) {
        return conn::serve(shared, stream, slot, shutdown).await;
    }
    let Ok(accepted) = tokio::time::timeout(wait, tls.accept(stream)).await else {
        return Ok(()); // never finished the TLS handshake
    };
    conn::serve(shared, accepted?, slot, shutdown).await
}

async fn accept_loop(shared: Shared, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let mut full = LogThrottle::new(WARN_EVERY_MS);
    let mut crowded = LogThrottle::new(WARN_EVERY_MS);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                if shared.open.fetch_add(1, Ordering::Relaxed) >= shared.limits.max_connections {
                    shared.open.fetch_sub(1, Ordering::Relaxed);
                    if let Some(n) = full.event(now_ms()) {
                        tracing::warn!(%addr, count = n, "too many user connections: turned away");
                    }
                    continue;
                }
                let open = Open(shared.open.clone());
                let Ok(slot) = Slot::take(&shared.pending, addr.ip()) else {
                    if let Some(n) = crowded.event(now_ms()) {
                        tracing::warn!(%addr, count = n, "too many user connections still in the handshake: turned away");
                    }
                    continue;
                };
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _open = open;
                    if let Err(e) = serve_tls_or_plain(shared, stream, slot, shutdown).await {
                        tracing::debug!(%addr, error = %e, "user connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
