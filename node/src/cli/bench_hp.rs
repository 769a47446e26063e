//! `hotpocket bench --protocol hpcore`: the bench's users speaking hpcore's
//! protocol. Each signs its inputs (nonce the clock, last ledger 10 past
//! the lcl it last heard of) and reads statuses: `round_inputs_overflow`
//! is the node refusing at once (counted as refused), any other rejection
//! an input that will not run (counted apart); an input is answered when
//! its `contract_output` comes, with the UNL's signatures (not checked
//! here: the tests do, and the check would load the machine measured).

use super::bench::Tally;
use crate::real::users_ws::now_ms;
use crate::real::{random_key, OsEntropy};
use crate::users::hp::MAX_LEDGER_OFFSET;
use crate::users::hp_client;
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// How often a client asks for the lcl its inputs' last ledger counts from.
const LCL_EVERY: Duration = Duration::from_millis(500);

/// What one hpcore user keeps of its inputs in flight.
#[derive(Default)]
struct InFlight {
    /// Input name -> (kv key, send time), until a status or output.
    by_name: BTreeMap<String, (String, u64)>,
    /// kv key -> send times of its inputs not yet answered, oldest first.
    by_key: BTreeMap<String, std::collections::VecDeque<u64>>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.by_key.values().map(|q| q.len()).sum()
    }

    /// The input named `name` will not run: its send time; None for a
    /// name this user never sent.
    fn drop_named(&mut self, name: &str) -> Option<u64> {
        let (key, at) = self.by_name.remove(name)?;
        let q = self.by_key.entry(key).or_default();
        match q.iter().position(|t| *t == at) {
            Some(i) => q.remove(i),
            // An output names only its key: it was taken as this input's,
            // and was a later one's. That one is answered, this one not.
            None => q.pop_front().map(|_| at),
        }
    }
}

/// One hpcore user, as `bench::client` is one prototype user.
pub(super) async fn client(
    port: u16,
    id: usize,
    (rate, window): (u64, usize),
    stop: Instant,
    tally: Arc<Mutex<Tally>>,
) -> anyhow::Result<()> {
    let key = random_key(&mut OsEntropy);
    let mut ws = super::client::connect(&format!("ws://127.0.0.1:{port}")).await?;
    let Some(Ok(first)) = ws.next().await else {
        bail!("no challenge");
    };
    let c = hp_client::read_challenge(&first.into_data(), None)?;
    let ours = format!("{:032x}", id as u128 + 1);
    let answer = hp_client::challenge_response(&key, &c, &ours);
    ws.send(Message::Binary(answer.into_bytes())).await?;
    let Some(Ok(m)) = ws.next().await else {
        bail!("no handshake answer");
    };
    hp_client::check_server(&m.into_data(), &c, &ours, &[]).context("handshake")?;
    let mut flight = InFlight::default();
    let (mut lcl, mut nonce, mut k) = (0u64, 0u64, 0u64);
    let every = Duration::from_micros(1_000_000 / rate.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ask_lcl = tokio::time::interval(LCL_EVERY);
    let drained = stop + super::bench::DRAIN;
    loop {
        let now_i = Instant::now();
        if now_i >= drained || (now_i >= stop && flight.len() == 0) {
            break;
        }
        let sending = now_i < stop && lcl > 0;
        tokio::select! {
            _ = ask_lcl.tick() => {
                let m = hp_client::plain_request("lcl");
                ws.send(Message::Binary(m.into_bytes())).await?;
            }
            _ = tick.tick(), if sending => {
                if flight.len() >= window {
                    continue;
                }
                let kv = format!("c{id}-{}", k % 16);
                k += 1;
                let now = now_ms();
                nonce = hp_client::next_nonce(nonce, now);
                let cmd = format!("set {kv} {k}\n");
                let (m, name) = hp_client::input_message(&key, &cmd, nonce, lcl + MAX_LEDGER_OFFSET);
                flight.by_name.insert(name, (kv.clone(), now));
                flight.by_key.entry(kv).or_default().push_back(now);
                ws.send(Message::Binary(m.into_bytes())).await?;
            }
            _ = tokio::time::sleep_until(drained.into()), if now_i >= stop => {}
            msg = ws.next() => {
                let bytes = match msg {
                    Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => m.into_data(),
                    Some(Ok(_)) => continue,
                    other => bail!("client {id}: connection ended: {other:?}"),
                };
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let now = now_ms();
                let mut t = tally.lock().expect("not poisoned");
                match (v["type"].as_str(), v["status"].as_str()) {
                    (Some("lcl_response"), _) => lcl = lcl.max(v["ledger_seq_no"].as_u64().unwrap_or(0)),
                    (Some("contract_input_status"), Some("accepted")) => {
                        let name = v["input_hash"].as_str().unwrap_or_default();
                        flight.by_name.remove(name);
                    }
                    (Some("contract_input_status"), _) => {
                        let name = v["input_hash"].as_str().unwrap_or_default();
                        let Some(at) = flight.drop_named(name) else {
                            bail!("client {id}: a status for no input of its own: {v}");
                        };
                        match v["reason"].as_str() {
                            Some("round_inputs_overflow") => t.refused.push(at),
                            other => {
                                let reason = other.unwrap_or("(none)").to_string();
                                *t.rejected.entry(reason).or_default() += 1;
                                t.unanswered.push(at);
                            }
                        }
                    }
                    (Some("contract_output"), _) => {
                        let outputs = v["outputs"].as_array().cloned().unwrap_or_default();
                        for line in outputs.iter().filter_map(Value::as_str).flat_map(str::lines) {
                            let sent = line.strip_prefix("ok ").and_then(|kv| flight.by_key.get_mut(kv));
                            if let Some(at) = sent.and_then(|q| q.pop_front()) {
                                t.answered.push((at, now.saturating_sub(at)));
                            }
                        }
                    }
                    _ => bail!("client {id}: node said {v}"),
                }
            }
        }
    }
    let mut t = tally.lock().expect("not poisoned");
    for q in flight.by_key.values() {
        t.unanswered.extend(q.iter().copied());
    }
    Ok(())
}
