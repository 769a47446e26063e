//! One user connection, from the challenge to the close: frames in, the
//! session's replies out, inputs handed to the node.

use super::outbox::{Outbox, Registration, Unsent, Writing};
use super::{now_ms, Shared, MAX_QUEUED_BYTES, QUIET};
use crate::contract::input_hash;
use crate::crypto::PubKey;
use crate::gate::Slot;
use crate::users::hp::{self, Reason, Refused};
use crate::users::hp_ledger::{self, Query, QueryError};
use crate::users::{busy_reason, error_message, refused_message, ConnAction};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// What a user connection runs over: TCP, or TLS on TCP.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Io for S {}

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
async fn send<S: Io>(ws: &mut WebSocketStream<S>, m: Message, t: Duration) -> Result<(), WsError> {
    match tokio::time::timeout(t, ws.send(m)).await {
        Ok(sent) => sent,
        Err(_) => Err(WsError::Io(std::io::ErrorKind::TimedOut.into())),
    }
}

async fn close<S: Io>(
    ws: &mut WebSocketStream<S>,
    frame: Option<CloseFrame<'static>>,
    t: Duration,
) {
    let _ = tokio::time::timeout(t, ws.close(frame)).await;
}

/// Longest a ledger query may take: its client waits without a timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to `user`'s ledger query, read from the stored chain.
async fn query_ledger(shared: &Shared, user: PubKey, q: Query) -> String {
    let (reader, seq) = match (&shared.backends.ledgers, q.seq) {
        (None, _) => return hp_ledger::result(&q, &user, Err(QueryError::NotSupported)),
        (_, None) => return hp_ledger::result(&q, &user, Err(QueryError::BadQuery)),
        (Some(reader), Some(seq)) => (reader.clone(), seq),
    };
    let failed = hp_ledger::result(&q, &user, Err(QueryError::Failed));
    // Reading and answering (which checks the caller's own input
    // signatures) stay off the threads that serve connections.
    let answer = tokio::task::spawn_blocking(move || {
        let found = reader.ledger(seq)?;
        Ok::<_, crate::env::StoreError>(hp_ledger::result(&q, &user, Ok(found.as_ref())))
    });
    let why = match tokio::time::timeout(QUERY_TIMEOUT, answer).await {
        Ok(Ok(Ok(answer))) => return answer,
        Ok(Ok(Err(e))) => e.to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("took over {QUERY_TIMEOUT:?}"),
    };
    tracing::warn!(seq, error = %why, "a user's ledger query failed");
    failed
}

/// Read requests one connection may have running at once; more are
/// answered at once with an error. The node's own bound is
/// `reads::READS_AT_ONCE`, across connections.
const READS_PER_CONNECTION: usize = 2;

/// A read request's answer, for the connection's `reads` to send on.
type ReadAnswer = (String, Result<Vec<Vec<u8>>, String>);

/// Starts `user`'s read request `id` on `reads`, or answers it at once
/// when the node runs no reads or this connection has enough running.
fn start_read(
    shared: &Shared,
    reads: &mut JoinSet<ReadAnswer>,
    (user, id, content): (PubKey, String, String),
) -> Option<String> {
    let Some(contract) = shared.backends.reads.clone() else {
        let why = "this node does not run read requests".to_string();
        return Some(hp::read_response(&id, Err(why)));
    };
    if reads.len() >= READS_PER_CONNECTION {
        let why = format!("at most {READS_PER_CONNECTION} reads at once on one connection");
        return Some(hp::read_response(&id, Err(why)));
    }
    reads.spawn(async move {
        let answer = contract.read(user, content.into_bytes()).await;
        (id, answer.map_err(|e| e.to_string()))
    });
    None
}

/// One user connection, from the challenge to the close.
pub(super) async fn serve<S: Io>(
    shared: Shared,
    stream: S,
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
    let (mut session, hello, mut quiet) = {
        let mut intake = shared.intake.lock().expect("not poisoned");
        let hp = intake.offers_hp();
        let (session, hello) = intake.open();
        (session, hello, hp)
    };
    let first = match quiet {
        // hpcore's client in a browser decodes binary frames only.
        true => Message::Binary(hello.into_bytes()),
        false => Message::Text(hello),
    };
    send(&mut ws, first, timeout).await?;
    let quiet_at = tokio::time::Instant::now() + QUIET;
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
    let ledger_events = Arc::new(AtomicBool::new(false));
    let mut registered: Option<Registration> = None;
    let mut slot = Some(slot);
    // Dropped with the connection: a read whose user left is abandoned.
    let mut reads: JoinSet<ReadAnswer> = JoinSet::new();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            Some(done) = reads.join_next(), if !reads.is_empty() => {
                // A read that panicked has no id to answer; its user's
                // client gives up after its own timeout.
                // One response a message, as hpcore answers a framed
                // contract's read.
                if let Ok((id, answer)) = done {
                    let answers: Vec<Result<&[u8], String>> = match &answer {
                        Ok(msgs) => msgs.iter().map(|m| Ok(m.as_slice())).collect(),
                        Err(why) => vec![Err(why.clone())],
                    };
                    for a in answers {
                        let m = hp::read_response(&id, a);
                        send(&mut ws, Message::Binary(m.into_bytes()), timeout).await?;
                    }
                }
                continue;
            }
            _ = tokio::time::sleep_until(quiet_at), if quiet => {
                quiet = false;
                let replies = session.on_quiet();
                let actions = shared.intake.lock().expect("not poisoned").act(now_ms(), replies);
                for action in actions {
                    if let ConnAction::Send(m) = action {
                        send(&mut ws, Message::Text(m), timeout).await?;
                    }
                }
                continue;
            }
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
        quiet = false;
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
                ConnAction::SendHp(m) => {
                    send(&mut ws, Message::Binary(m.into_bytes()), timeout).await?
                }
                // One at a time per connection: this one waits for it.
                ConnAction::QueryLedger { user, query } => {
                    let answer = query_ledger(&shared, user, query).await;
                    send(&mut ws, Message::Binary(answer.into_bytes()), timeout).await?
                }
                ConnAction::LedgerEvents(on) => ledger_events.store(on, Ordering::Relaxed),
                ConnAction::Read { user, id, content } => {
                    if let Some(m) = start_read(&shared, &mut reads, (user, id, content)) {
                        send(&mut ws, Message::Binary(m.into_bytes()), timeout).await?
                    }
                }
                ConnAction::Submit(body) => {
                    let Err(why) = submit(&shared, body) else {
                        continue;
                    };
                    // Not submitted: the same bytes again are a new try.
                    session.unsubmit(input_hash(&bytes));
                    let refused = Message::Text(refused_message(&bytes, &why));
                    send(&mut ws, refused, timeout).await?;
                }
                ConnAction::SubmitSigned {
                    body,
                    name,
                    max_ledger,
                } => {
                    let ours = input_hash(&body);
                    let user = session.user().expect("an hpcore session is open");
                    // Owed before it can close: the status may be due
                    // before this task runs again.
                    let owed = (shared.owed.lock().expect("not poisoned")).submitted(
                        ours,
                        (user, id),
                        name.clone(),
                        max_ledger,
                    );
                    if owed && submit(&shared, body).is_ok() {
                        continue;
                    }
                    if owed {
                        shared.owed.lock().expect("not poisoned").forget(&ours);
                    }
                    (shared.intake.lock().expect("not poisoned")).unsubmit(
                        &mut session,
                        ours,
                        &name,
                    );
                    let refused = Refused {
                        reason: Reason::RoundInputsOverflow,
                        hash: name,
                    };
                    let m = Message::Binary(hp::rejected(&refused).into_bytes());
                    send(&mut ws, m, timeout).await?;
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
                    hp: session.is_hp(),
                    ledger_events: ledger_events.clone(),
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

/// Hands an input body to the node, or says why the node is too busy.
fn submit(shared: &Shared, body: Vec<u8>) -> Result<(), String> {
    let behind = shared.behind.load(Ordering::Relaxed);
    let len = body.len();
    if behind > 0 {
        return Err(busy_reason(behind));
    }
    if shared.queued.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED_BYTES
        || shared.inputs.try_send(body).is_err()
    {
        shared.queued.fetch_sub(len, Ordering::Relaxed);
        return Err(
            "node busy: too many inputs waiting; input refused, send it again later".to_string(),
        );
    }
    Ok(())
}
