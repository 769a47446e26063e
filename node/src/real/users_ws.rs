//! The websocket server users connect to. It speaks DESIGN §6 through the
//! sans-IO `users::Session` and decides nothing itself: the session says
//! what to send, what to close and what is an input.
//!
//! Certified outputs go back as binary messages on every connection the
//! user has open to this node.

use crate::consensus::Withheld;
use crate::contract::RunResult;
use crate::crypto::PubKey;
use crate::env::Users;
use crate::real::OsEntropy;
use crate::users::{
    busy_reason, outputs_for, refused_message, withheld_message, Action, Intake, SessionLimits,
};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Outputs queued for one connection before it counts as too slow and is
/// closed.
const OUT_QUEUE: usize = 1024;
/// Open user connections beyond which new ones are turned away: every one
/// holds a file descriptor that peers and the contract also need.
const MAX_CONNECTIONS: usize = 1024;
/// Time a connection has to complete the handshake.
const HELO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bytes of inputs waiting for the node, from all users together, beyond
/// which a user is told the node is busy.
const MAX_QUEUED_BYTES: usize = 64 << 20;

type Conns = Arc<Mutex<BTreeMap<PubKey, BTreeMap<u64, mpsc::Sender<Message>>>>>;

pub struct WsUsers {
    inputs: mpsc::Receiver<Vec<u8>>,
    conns: Conns,
    queued: Arc<AtomicUsize>,
    /// 0 while the node takes inputs; else how many ledgers its contract
    /// runs are behind (intake paused).
    behind: Arc<AtomicU64>,
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
        let (tx, rx) = mpsc::channel(64 * 1024);
        let conns: Conns = Default::default();
        let queued = Arc::new(AtomicUsize::new(0));
        let behind = Arc::new(AtomicU64::new(0));
        let shared = Shared {
            intake: Arc::new(Mutex::new(Intake::new(limits, OsEntropy))),
            inputs: tx,
            conns: conns.clone(),
            next_id: Default::default(),
            open: Default::default(),
            queued: queued.clone(),
            behind: behind.clone(),
        };
        tokio::spawn(accept_loop(shared, listener, shutdown));
        WsUsers {
            inputs: rx,
            conns,
            queued,
            behind,
        }
    }
}

impl Users for WsUsers {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let body = self.inputs.recv().await?;
        self.queued.fetch_sub(body.len(), Ordering::Relaxed);
        Some(body)
    }

    fn deliver(&mut self, seq: u64, run: &RunResult) {
        self.to_output_owners(seq, run, "output", |out| Message::Binary(out.to_vec()));
    }

    fn withhold(&mut self, seq: u64, run: &RunResult, why: Withheld) {
        let notice = withheld_message(seq, why);
        self.to_output_owners(seq, run, "notice", |_| Message::Text(notice.clone()));
    }

    fn intake(&mut self, open: bool, behind: u64) {
        let v = if open { 0 } else { behind.max(1) };
        self.behind.store(v, Ordering::Relaxed);
    }
}

impl WsUsers {
    /// Sends `msg(output)` to every connection of each user with an output
    /// in `run`; a connection too slow to take it loses it (`what`, logged).
    fn to_output_owners(
        &self,
        seq: u64,
        run: &RunResult,
        what: &str,
        msg: impl Fn(&[u8]) -> Message,
    ) {
        let conns = self.conns.lock().expect("not poisoned");
        let here = conns
            .iter()
            .flat_map(|(user, m)| m.values().map(move |tx| ((user, tx), *user)));
        for ((user, tx), out) in outputs_for(run, here) {
            if tx.try_send(msg(out)).is_err() {
                tracing::warn!(user = %user.short(), seq, "user too slow: {what} dropped");
            }
        }
    }
}

async fn accept_loop(shared: Shared, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                if shared.open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
                    shared.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(%addr, "too many user connections: turned away");
                    continue;
                }
                let open = Open(shared.open.clone());
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _open = open;
                    if let Err(e) = serve(shared, stream, shutdown).await {
                        tracing::debug!(%addr, error = %e, "user connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One user connection, from the challenge to the close.
async fn serve(
    shared: Shared,
    stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
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
    let upgrade = tokio_tungstenite::accept_async_with_config(stream, Some(config));
    let Ok(ws) = tokio::time::timeout(HELO_TIMEOUT, upgrade).await else {
        return Ok(()); // never finished the websocket handshake
    };
    let mut ws = ws?;
    let helo_by = tokio::time::Instant::now() + HELO_TIMEOUT;
    let (mut session, hello) = shared.intake.lock().expect("not poisoned").open();
    ws.send(Message::Text(hello)).await?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUT_QUEUE);
    let mut registered: Option<Registration> = None;
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(helo_by), if registered.is_none() => {
                let e = serde_json::json!({"hotpocket": crate::users::PROTOCOL_VERSION, "type": "error", "error": "no valid helo in time"});
                ws.send(Message::Text(e.to_string())).await?;
                let _ = ws.close(None).await;
                return Ok(());
            }
            Some(out) = out_rx.recv() => {
                ws.send(out).await?;
                continue;
            }
            _ = shutdown.changed() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
        };
        let (bytes, text) = match msg {
            None => return Ok(()),
            Some(Err(e)) => return Err(e),
            Some(Ok(Message::Text(t))) => (t.into_bytes(), true),
            Some(Ok(Message::Binary(b))) => (b, false),
            Some(Ok(Message::Close(_))) => return Ok(()),
            Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings
        };
        let mut close = false;
        let now = now_ms();
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
                Action::Send(m) => ws.send(Message::Text(m)).await?,
                Action::Close(m) => {
                    tracing::info!(user = ?session.user().map(|u| u.short()), reason = %m, "closing a user connection");
                    ws.send(Message::Text(m)).await?;
                    close = true;
                }
                Action::Submit(body) => {
                    let behind = shared.behind.load(Ordering::Relaxed);
                    if behind > 0 {
                        let why = busy_reason(behind);
                        ws.send(Message::Text(refused_message(&bytes, &why)))
                            .await?;
                        continue;
                    }
                    let len = body.len();
                    let room =
                        shared.queued.fetch_add(len, Ordering::Relaxed) + len <= MAX_QUEUED_BYTES;
                    if !room || shared.inputs.try_send(body).is_err() {
                        shared.queued.fetch_sub(len, Ordering::Relaxed);
                        let why = "node busy: too many inputs waiting; input refused, send it again later";
                        ws.send(Message::Text(refused_message(&bytes, why))).await?;
                    }
                }
            }
        }
        if close {
            let _ = ws.close(None).await;
            return Ok(());
        }
        if registered.is_none() {
            if let Some(user) = session.user() {
                tracing::info!(user = %user.short(), "user connected");
                shared
                    .conns
                    .lock()
                    .expect("not poisoned")
                    .entry(user)
                    .or_default()
                    .insert(id, out_tx.clone());
                registered = Some(Registration {
                    conns: shared.conns.clone(),
                    user,
                    id,
                });
            }
        }
    }
}
