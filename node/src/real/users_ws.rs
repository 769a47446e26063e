//! The websocket server users connect to. It speaks DESIGN §6 through the
//! sans-IO `users::Session` and decides nothing itself: the session says
//! what to send, what to close and what is an input.
//!
//! Certified outputs go back as binary messages on every connection the
//! user has open to this node.

use crate::contract::{RunResult, Stamper};
use crate::crypto::PubKey;
use crate::env::Users;
use crate::users::{Reply, Session, SessionLimits};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Outputs queued for one connection before it counts as too slow and is
/// closed.
const OUT_QUEUE: usize = 1024;

type Conns = Arc<Mutex<BTreeMap<PubKey, BTreeMap<u64, mpsc::Sender<Message>>>>>;

pub struct WsUsers {
    inputs: mpsc::Receiver<Vec<u8>>,
    conns: Conns,
}

#[derive(Clone)]
struct Shared {
    limits: SessionLimits,
    inputs: mpsc::Sender<Vec<u8>>,
    conns: Conns,
    stamper: Arc<Mutex<Stamper>>,
    next_id: Arc<AtomicU64>,
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
        let shared = Shared {
            limits,
            inputs: tx,
            conns: conns.clone(),
            stamper: Default::default(),
            next_id: Default::default(),
        };
        tokio::spawn(accept_loop(shared, listener, shutdown));
        WsUsers { inputs: rx, conns }
    }
}

impl Users for WsUsers {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        self.inputs.recv().await
    }

    fn deliver(&mut self, seq: u64, run: &RunResult) {
        let conns = self.conns.lock().expect("not poisoned");
        for (user, out) in &run.outputs {
            if out.is_empty() {
                continue;
            }
            for tx in conns.get(user).into_iter().flat_map(|m| m.values()) {
                if tx.try_send(Message::Binary(out.clone())).is_err() {
                    tracing::warn!(user = %user.short(), seq, "user too slow: output dropped");
                }
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
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
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
    let cap = shared.limits.max_message_bytes.saturating_mul(2) + 4096;
    config.max_message_size = Some(cap);
    config.max_frame_size = Some(cap);
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let mut challenge = [0u8; 16];
    getrandom::getrandom(&mut challenge).expect("the OS has randomness");
    let (mut session, hello) = Session::open(shared.limits.clone(), challenge);
    ws.send(Message::Text(hello)).await?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUT_QUEUE);
    let mut registered: Option<PubKey> = None;
    let result = loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            Some(out) = out_rx.recv() => {
                if let Err(e) = ws.send(out).await {
                    break Err(e);
                }
                continue;
            }
            _ = shutdown.changed() => {
                let _ = ws.close(None).await;
                break Ok(());
            }
        };
        let (bytes, text) = match msg {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(Message::Text(t))) => (t.into_bytes(), true),
            Some(Ok(Message::Binary(b))) => (b, false),
            Some(Ok(Message::Close(_))) => break Ok(()),
            Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings
        };
        let mut close = false;
        for reply in session.on_message(now_ms(), &bytes, text) {
            match reply {
                Reply::Send(m) => ws.send(Message::Text(m)).await?,
                Reply::Close(m) => {
                    tracing::info!(user = ?session.user().map(|u| u.short()), reason = %m, "closing a user connection");
                    ws.send(Message::Text(m)).await?;
                    close = true;
                }
                Reply::Input { user, body } => {
                    let body =
                        shared
                            .stamper
                            .lock()
                            .expect("not poisoned")
                            .stamp(now_ms(), user, body);
                    if shared.inputs.try_send(body).is_err() {
                        let busy = serde_json::json!({"hotpocket": crate::users::PROTOCOL_VERSION, "type": "error", "error": "node busy: input dropped, send it again later"});
                        ws.send(Message::Text(busy.to_string())).await?;
                    }
                }
            }
        }
        if close {
            let _ = ws.close(None).await;
            break Ok(());
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
                registered = Some(user);
            }
        }
    };
    if let Some(user) = registered {
        let mut conns = shared.conns.lock().expect("not poisoned");
        if let Some(m) = conns.get_mut(&user) {
            m.remove(&id);
            if m.is_empty() {
                conns.remove(&user);
            }
        }
    }
    result
}
