//! `hotpocket client --protocol hpcore`: a user speaking hpcore's protocol
//! (`users::hp_client`). Each stdin line is one signed input, unless it is
//! a command: `/read TEXT`, `/stat`, `/lcl`, `/ledger SEQ`. Outputs whose
//! proof holds (80% of the UNL signed them) go to stdout; statuses, answers
//! and refused outputs go to stderr, one line each.

use super::client::{connect, Ws};
use crate::crypto::{Keypair, PubKey};
use crate::real::users_ws::now_ms;
use crate::real::OsEntropy;
use crate::users::hp::{ed_hex, MAX_LEDGER_OFFSET};
use crate::users::hp_client::{self as hp, Challenge, Server};
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// hpcore's client gives each handshake message 5 s.
const HANDSHAKE: Duration = Duration::from_secs(5);

pub struct Options {
    /// Node keys trusted: the handshake must come from one. Empty: any
    /// node, whose reported UNL then decides which outputs are taken.
    pub trust: Vec<PubKey>,
    /// The contract id the node must serve, if given.
    pub contract: Option<String>,
}

async fn next_message(ws: &mut Ws) -> anyhow::Result<Vec<u8>> {
    loop {
        match tokio::time::timeout(HANDSHAKE, ws.next()).await {
            Err(_) => bail!("the node said nothing for {HANDSHAKE:?} during the handshake"),
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => return Ok(m.into_data()),
            Ok(Some(Ok(Message::Close(f)))) => bail!("the node closed the connection: {f:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => bail!("the node closed the connection"),
        }
    }
}

/// hpcore's handshake: the node proves its key (one of `trust`) and
/// reports its UNL.
async fn handshake(ws: &mut Ws, key: &Keypair, opts: &Options) -> anyhow::Result<Server> {
    let c: Challenge = hp::read_challenge(&next_message(ws).await?, opts.contract.as_deref())?;
    let mut ours = [0u8; 16];
    crate::env::Entropy::fill(&mut OsEntropy, &mut ours);
    let ours = hex::encode(ours);
    let answer = hp::challenge_response(key, &c, &ours);
    ws.send(Message::Binary(answer.into_bytes())).await?;
    Ok(hp::check_server(
        &next_message(ws).await?,
        &c,
        &ours,
        &opts.trust,
    )?)
}

/// One line of stdin as a message for the node; None for an input, which
/// waits for the lcl its last ledger is counted from.
fn command(line: &str, next_id: &mut u64) -> anyhow::Result<Option<String>> {
    let Some(cmd) = line.strip_prefix('/') else {
        return Ok(None);
    };
    *next_id += 1;
    let id = next_id.to_string();
    let (word, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    Ok(Some(match word {
        "read" => hp::read_request(&id, rest),
        "stat" | "lcl" => hp::plain_request(word),
        "ledger" => {
            let seq = rest.trim().parse().context("/ledger takes a ledger seq")?;
            hp::ledger_query(&id, seq)
        }
        _ => bail!("unknown command /{word}: /read TEXT, /stat, /lcl or /ledger SEQ"),
    }))
}

/// What the user is told of one message from the node.
fn show(msg: &[u8], user: &PubKey, unl: &[PubKey]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(msg) else {
        return (
            None,
            Some(format!("node: {}", String::from_utf8_lossy(msg))),
        );
    };
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let short = |h: String| h.chars().take(12).collect::<String>();
    match s("type").as_str() {
        "contract_output" => match hp::verify_output(&v, user, unl) {
            Ok(out) => (Some(as_lines(&out.outputs)), None),
            Err(e) => {
                let seq = v.get("ledger_seq_no").and_then(Value::as_u64);
                (None, Some(format!("output of ledger {seq:?} refused: {e}")))
            }
        },
        "contract_input_status" if s("status") == "accepted" => {
            let seq = v.get("ledger_seq_no").and_then(Value::as_u64).unwrap_or(0);
            let line = format!("input {}: accepted in ledger {seq}", short(s("input_hash")));
            (None, Some(line))
        }
        "contract_input_status" => {
            let line = format!(
                "input {}: rejected, {}",
                short(s("input_hash")),
                s("reason")
            );
            (None, Some(line))
        }
        "contract_read_response" => match v.get("content") {
            Some(Value::String(c)) => (Some(as_lines(std::slice::from_ref(c))), None),
            _ => (
                None,
                Some(format!("read {} failed: {}", s("reply_for"), s("error"))),
            ),
        },
        _ => (None, Some(v.to_string())),
    }
}

/// Messages as stdout shows them: each ends a line, so a framed
/// contract's messages do not run together.
fn as_lines(msgs: &[String]) -> String {
    (msgs.iter())
        .map(|m| match m.ends_with('\n') {
            true => m.clone(),
            false => format!("{m}\n"),
        })
        .collect()
}

pub async fn run(url: &str, key: &Keypair, linger: Duration, opts: Options) -> anyhow::Result<()> {
    let mut ws = connect(url).await?;
    let server = handshake(&mut ws, key, &opts).await?;
    eprintln!(
        "connected to node {} (UNL of {}); user key {}",
        ed_hex(&server.node),
        server.unl.len(),
        ed_hex(&key.public())
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut stdin_open = true;
    // Inputs wait for an lcl from the node: their last ledger is counted
    // from it, as hpcore's client does.
    let mut waiting: VecDeque<String> = VecDeque::new();
    let (mut asked_lcl, mut nonce, mut next_id) = (false, 0u64, 0u64);
    loop {
        let idle = tokio::time::sleep(linger);
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line? {
                Some(l) => match command(&l, &mut next_id) {
                    Ok(Some(m)) => ws.send(Message::Binary(m.into_bytes())).await?,
                    Ok(None) => {
                        waiting.push_back(format!("{l}\n"));
                        if !asked_lcl {
                            asked_lcl = true;
                            let m = hp::plain_request("lcl");
                            ws.send(Message::Binary(m.into_bytes())).await?;
                        }
                    }
                    Err(e) => eprintln!("{e}"),
                },
                None => stdin_open = false,
            },
            msg = ws.next() => {
                let bytes = match msg {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m.into_data(),
                    Some(Ok(Message::Close(_))) | None => {
                        eprintln!("node closed the connection");
                        return Ok(());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                };
                let v: Option<Value> = serde_json::from_slice(&bytes).ok();
                let lcl = v.as_ref().filter(|v| v["type"] == "lcl_response");
                if let Some(seq) = lcl.and_then(|v| v["ledger_seq_no"].as_u64()) {
                    if asked_lcl {
                        asked_lcl = false;
                        while let Some(input) = waiting.pop_front() {
                            // Strictly growing, as hpcore requires.
                            nonce = hp::next_nonce(nonce, now_ms());
                            let max = seq + MAX_LEDGER_OFFSET;
                            let (m, name) = hp::input_message(key, &input, nonce, max);
                            eprintln!("input {}: sent", &name[..12]);
                            ws.send(Message::Binary(m.into_bytes())).await?;
                        }
                        continue;
                    }
                }
                let (out, err) = show(&bytes, &key.public(), &server.unl);
                if let Some(out) = out {
                    stdout.write_all(out.as_bytes()).await?;
                    stdout.flush().await?;
                }
                if let Some(err) = err {
                    eprintln!("{err}");
                }
            },
            _ = idle, if !stdin_open && waiting.is_empty() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
        }
    }
}
