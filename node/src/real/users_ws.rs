//! The websocket server users connect to. It speaks the user protocol through the
//! sans-IO `users::Session` and decides nothing itself: the session says
//! what to send, what to close and what is an input.
//!
//! Certified outputs go back as binary messages on every connection the
//! user has open to this node.

use crate::consensus::Withheld;
use crate::contract::{RunOutcome, RunResult};
use crate::crypto::PubKey;
use crate::env::Users;
use crate::gate::{Gate, GateConfig, LogThrottle, Slot};
use crate::real::OsEntropy;
use crate::users::{
    busy_reason, error_message, failed_message, outputs_for, refused_message, withheld_message,
    ConnAction, Intake, SessionLimits,
};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

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

/// A connection's queue of outputs, and the bytes in it.
struct Outbox {
    tx: mpsc::Sender<Message>,
    bytes: Arc<AtomicUsize>,
}

impl Outbox {
    /// Queues `m` if `fits(queued here, queued for all)` says so, counting
    /// its bytes first (the connection's task takes them off as it writes)
    /// and giving them back if it is not queued. Whether it was.
    fn offer(&self, m: Message, total: &AtomicUsize, fits: impl Fn(usize, usize) -> bool) -> bool {
        let len = m.len();
        let mine = self.bytes.fetch_add(len, Ordering::Relaxed);
        let all = total.fetch_add(len, Ordering::Relaxed);
        if fits(mine, all) && self.tx.try_send(m).is_ok() {
            return true;
        }
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        total.fetch_sub(len, Ordering::Relaxed);
        false
    }
}

type Conns = Arc<Mutex<BTreeMap<PubKey, BTreeMap<u64, Outbox>>>>;

pub struct WsUsers {
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
}

#[derive(Clone)]
struct Shared {
    inputs: mpsc::Sender<Vec<u8>>,
    conns: Conns,
    intake: Arc<Mutex<Intake<OsEntropy>>>,
    next_id: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    queued: Arc<AtomicUsize>,
    behind: Arc<AtomicU64>,
    out_total: Arc<AtomicUsize>,
    pending: Arc<Mutex<Gate>>,
    limits: ConnLimits,
}

/// Removes a connection from the registry however `serve` ends.
struct Registration {
    conns: Conns,
    user: PubKey,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut conns = self.conns.lock().expect("not poisoned");
        if let Some(m) = conns.get_mut(&self.user) {
            m.remove(&self.id);
            if m.is_empty() {
                conns.remove(&self.user);
            }
        }
    }
}

/// Counts an open connection until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Gives the bytes a connection never sent back to the total when it ends.
struct Unsent {
    mine: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Drop for Unsent {
    fn drop(&mut self) {
        let n = self.mine.swap(0, Ordering::Relaxed);
        self.total.fetch_sub(n, Ordering::Relaxed);
    }
}

/// An output a connection is writing: its bytes leave the total when the
/// write ends, however it ends.
struct Writing<'a> {
    total: &'a AtomicUsize,
    len: usize,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(self.len, Ordering::Relaxed);
    }
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
        let (tx, rx) = mpsc::channel(64 * 1024);
        let conns: Conns = Default::default();
        let queued = Arc::new(AtomicUsize::new(0));
        let behind = Arc::new(AtomicU64::new(0));
        let out_total = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            intake: Arc::new(Mutex::new(Intake::new(limits, OsEntropy))),
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
        };
        tokio::spawn(accept_loop(shared, listener, shutdown));
        WsUsers {
            inputs: rx,
            conns,
            queued,
            behind,
            out_total,
            limits: conn_limits,
            too_slow: LogThrottle::new(WARN_EVERY_MS),
        }
    }

    /// Output bytes queued or being written for all connections now.
    pub fn queued_output_bytes(&self) -> usize {
        self.out_total.load(Ordering::Relaxed)
    }

    /// Connections of authenticated users open now.
    pub fn connections(&self) -> usize {
        let conns = self.conns.lock().expect("not poisoned");
        conns.values().map(BTreeMap::len).sum()
    }
}

impl Users for WsUsers {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let body = self.inputs.recv().await?;
        self.queued.fetch_sub(body.len(), Ordering::Relaxed);
        Some(body)
    }

    fn deliver(&mut self, seq: u64, run: &RunResult) {
        self.send_to_output_owners(seq, run, "output", |out| Message::Binary(out.to_vec()));
    }

    fn withhold(&mut self, seq: u64, run: &RunResult, why: Withheld) {
        let notice = withheld_message(seq, why);
        self.send_to_output_owners(seq, run, "notice", |_| Message::Text(notice.clone()));
    }

    fn run_failed(&mut self, seq: u64, users: &[PubKey], outcome: &RunOutcome) {
        let notice = Message::Text(failed_message(seq, outcome));
        let conns = self.conns.lock().expect("not poisoned");
        for user in users {
            for outbox in conns.get(user).into_iter().flat_map(BTreeMap::values) {
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
        msg: impl Fn(&[u8]) -> Message,
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
            let m = msg(out);
            let len = m.len();
            // An output bigger than the per-connection bound (the contract
            // may write up to its own output limit) goes to an empty queue.
            let (per, all) = (self.limits.out_queue_bytes, self.limits.out_total_bytes);
            let fits =
                |mine: usize, total: usize| (mine == 0 || mine + len <= per) && total + len <= all;
            if !outbox.offer(m, &self.out_total, fits) {
                slow.push((user, id));
            }
        }
        for (user, id) in slow {
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
                    if let Err(e) = serve(shared, stream, slot, shutdown).await {
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

/// A websocket close frame's reason is at most 123 bytes.
fn close_frame(code: CloseCode, reason: &str) -> Option<CloseFrame<'static>> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Some(CloseFrame {
        code,
        reason: reason[..end].to_string().into(),
    })
}

/// A write to a user that takes longer than `t` means it stopped reading
/// (or reads a byte at a time): the connection ends, whatever it was
/// sending, so no task waits on such a user for ever.
async fn send(ws: &mut WebSocketStream<TcpStream>, m: Message, t: Duration) -> Result<(), WsError> {
    match tokio::time::timeout(t, ws.send(m)).await {
        Ok(sent) => sent,
        Err(_) => Err(WsError::Io(std::io::ErrorKind::TimedOut.into())),
    }
}

async fn close(
    ws: &mut WebSocketStream<TcpStream>,
    frame: Option<CloseFrame<'static>>,
    t: Duration,
) {
    let _ = tokio::time::timeout(t, ws.close(frame)).await;
}

/// One user connection, from the challenge to the close.
async fn serve(
    shared: Shared,
    stream: TcpStream,
    slot: Slot,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WsError> {
    let mut config = WebSocketConfig::default();
    // Twice the session's limit: the session answers a moderately oversized
    // message with a clear error; anything beyond this never gets buffered.
    let max_message_bytes = shared
        .intake
        .lock()
        .expect("not poisoned")
        .limits()
        .max_message_bytes;
    let cap = max_message_bytes.saturating_mul(2).saturating_add(4096);
    config.max_message_size = Some(cap);
    config.max_frame_size = Some(cap);
    let helo_timeout = shared.limits.helo_timeout;
    let timeout = shared.limits.write_timeout;
    let upgrade = tokio_tungstenite::accept_async_with_config(stream, Some(config));
    let Ok(ws) = tokio::time::timeout(helo_timeout, upgrade).await else {
        return Ok(()); // never finished the websocket handshake
    };
    let mut ws = ws?;
    let helo_by = tokio::time::Instant::now() + helo_timeout;
    let (mut session, hello) = shared.intake.lock().expect("not poisoned").open();
    send(&mut ws, Message::Text(hello), timeout).await?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    // The registry holds the only sender once the user is in: when it
    // drops the connection as too slow, `out_rx` ends and so does this.
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(shared.limits.out_queue);
    let mut out_tx = Some(out_tx);
    let out_bytes = Arc::new(AtomicUsize::new(0));
    // Declared before the registration, so dropped after it: by then no
    // output can be queued here, and what was never sent leaves the total.
    let _unsent = Unsent {
        mine: out_bytes.clone(),
        total: shared.out_total.clone(),
    };
    let mut registered: Option<Registration> = None;
    let mut slot = Some(slot);
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(helo_by), if registered.is_none() => {
                send(&mut ws, Message::Text(error_message("no valid helo in time")), timeout).await?;
                close(&mut ws, close_frame(CloseCode::Policy, "no valid helo in time"), timeout).await;
                return Ok(());
            }
            out = out_rx.recv(), if registered.is_some() => {
                let Some(out) = out else {
                    let why = "too slow to read its outputs: closed (reconnect to go on)";
                    close(&mut ws, close_frame(CloseCode::Again, why), timeout).await;
                    return Ok(());
                };
                let len = out.len();
                out_bytes.fetch_sub(len, Ordering::Relaxed);
                // The websocket holds the output until it is written (up
                // to the write timeout), so it stays in the total until
                // then: counted only while queued, every connection that
                // never reads held one output beyond the bound for all.
                let _writing = Writing {
                    total: &shared.out_total,
                    len,
                };
                // Not reading: the connection ends, its queue with it.
                send(&mut ws, out, timeout).await?;
                continue;
            }
            _ = shutdown.changed() => {
                close(&mut ws, close_frame(CloseCode::Away, "node shutting down"), timeout).await;
                return Ok(());
            }
        };
        let (bytes, text) = match msg {
            None => return Ok(()),
            Some(Err(WsError::Capacity(e))) => {
                // Bigger than even the buffer allows: say so before closing,
                // as for a message the session itself finds too large.
                let why = format!("message exceeds the {max_message_bytes}-byte limit ({e})");
                let _ = send(&mut ws, Message::Text(error_message(&why)), timeout).await;
                close(&mut ws, close_frame(CloseCode::Size, &why), timeout).await;
                // The rest of the message is still coming: closing on it
                // would reset the connection, and the user would lose the
                // error and the close frame already sent. Read it away
                // (bounded in time and bytes), then close.
                let mut sink = [0u8; 16 * 1024];
                let mut left = 8usize << 20;
                let drain = async {
                    while left > 0 {
                        match tokio::io::AsyncReadExt::read(ws.get_mut(), &mut sink).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => left = left.saturating_sub(n),
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                return Ok(());
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(Message::Text(t))) => (t.into_bytes(), true),
            Some(Ok(Message::Binary(b))) => (b, false),
            Some(Ok(Message::Close(_))) => return Ok(()),
            Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings
        };
        let mut closing = None;
        let now = now_ms();
        // The session forgets its user when it closes: keep it for the log.
        let user = session.user();
        // The session runs outside the lock: it verifies signatures and
        // hashes inputs, which other connections need not wait for.
        let replies = session.on_message(now, &bytes, text);
        let actions = shared
            .intake
            .lock()
            .expect("not poisoned")
            .act(now, replies);
        for action in actions {
            match action {
                ConnAction::Send(m) => send(&mut ws, Message::Text(m), timeout).await?,
                ConnAction::Close(m) => {
                    let user = user.or(session.user()).map(|u| u.short());
                    tracing::info!(user = user.as_deref().unwrap_or("(no helo yet)"), reason = %m, "closing a user connection");
                    send(&mut ws, Message::Text(m.clone()), timeout).await?;
                    closing = Some(m);
                }
                ConnAction::Submit(body) => {
                    let behind = shared.behind.load(Ordering::Relaxed);
                    let len = body.len();
                    let why = if behind > 0 {
                        busy_reason(behind)
                    } else if shared.queued.fetch_add(len, Ordering::Relaxed) + len
                        > MAX_QUEUED_BYTES
                        || shared.inputs.try_send(body).is_err()
                    {
                        shared.queued.fetch_sub(len, Ordering::Relaxed);
                        "node busy: too many inputs waiting; input refused, send it again later"
                            .to_string()
                    } else {
                        continue;
                    };
                    // Not submitted: the same bytes again are a new try.
                    session.unsubmit(&bytes);
                    let refused = Message::Text(refused_message(&bytes, &why));
                    send(&mut ws, refused, timeout).await?;
                }
            }
        }
        if let Some(m) = closing {
            // The reason is in the message just sent; the frame has a short
            // one, as websocket clients show the close code and reason.
            close(&mut ws, close_frame(CloseCode::Policy, &m), timeout).await;
            return Ok(());
        }
        if registered.is_none() {
            if let (Some(user), Some(tx)) = (session.user(), out_tx.take()) {
                tracing::info!(user = %user.short(), "user connected");
                drop(slot.take()); // authenticated: no longer pending
                let outbox = Outbox {
                    tx,
                    bytes: out_bytes.clone(),
                };
                shared
                    .conns
                    .lock()
                    .expect("not poisoned")
                    .entry(user)
                    .or_default()
                    .insert(id, outbox);
                registered = Some(Registration {
                    conns: shared.conns.clone(),
                    user,
                    id,
                });
            }
        }
    }
}
