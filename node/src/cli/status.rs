//! `hotpocket status DIR`: one screen on a node: who it is, its chain on
//! disk and, when it serves metrics, what the running node is doing.

use crate::real::config::Config;
use crate::real::store::LedgerReader;
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// How long the metrics endpoint gets to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// The status of the node in `dir`, as text.
pub fn render(dir: &Path, now_ms: u64) -> anyhow::Result<String> {
    let cfg = Config::read(dir)?;
    let mut out = String::new();
    let votes = cfg.unl.contains(&cfg.pubkey);
    line(&mut out, "node", &cfg.pubkey);
    line(&mut out, "dir", &dir.display().to_string());
    line(
        &mut out,
        "unl",
        &format!(
            "{} members ({})",
            cfg.unl.len(),
            if votes {
                "this node votes"
            } else {
                "this node is not in it"
            }
        ),
    );
    line(&mut out, "contract", &cfg.binary);
    line(
        &mut out,
        "listens",
        &format!(
            "peers {ip}:{}, users {ip}:{}",
            cfg.peerport,
            cfg.pubport,
            ip = cfg.ip
        ),
    );
    line(&mut out, "chain", &chain(dir, now_ms));
    let live = match &cfg.metrics {
        None => "unknown: hp.cfg sets no `metrics` address to ask the running node".to_string(),
        Some(addr) => match scrape(addr) {
            Ok(text) => live(addr, &parse(&text)),
            Err(e) => format!(
                "not running, or not answering at {addr} ({})",
                crate::cli::report(&e)
            ),
        },
    };
    line(&mut out, "live", &live);
    Ok(out)
}

fn line(out: &mut String, key: &str, value: &str) {
    out.push_str(&format!("{key:<9} {value}\n"));
}

/// The last ledger on disk, read beside the node (SQLite's WAL).
fn chain(dir: &Path, now_ms: u64) -> String {
    let path = dir.join("ledger.sqlite");
    if !path.exists() {
        return "no ledger yet (the node has not run)".into();
    }
    match LedgerReader::open(&path).and_then(|r| r.tip()) {
        Ok(Some((seq, hash, time))) => format!(
            "lcl {seq} {}, closed {} ago (on disk)",
            hash.chars().take(12).collect::<String>(),
            human_ms(now_ms.saturating_sub(time))
        ),
        Ok(None) => "no ledger closed yet".into(),
        Err(e) => format!("cannot read {}: {e}", path.display()),
    }
}

fn human_ms(ms: u64) -> String {
    match ms {
        0..=9_999 => format!("{:.1} s", ms as f64 / 1e3),
        10_000..=7_199_999 => format!("{} s", ms / 1000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

/// `GET /metrics` from `addr`, the body.
fn scrape(addr: &str) -> anyhow::Result<String> {
    let sock: SocketAddr = addr.parse().context("the `metrics` address")?;
    let mut s = TcpStream::connect_timeout(&sock, SCRAPE_TIMEOUT).context("connecting")?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    // The endpoint answers in well under a megabyte; more is not ours.
    s.take(16 << 20).read_to_string(&mut body)?;
    let (head, body) = body.split_once("\r\n\r\n").context("not an HTTP answer")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "answered {:?}",
        head.lines().next()
    );
    Ok(body.to_string())
}

/// Samples by their full name (labels included), e.g.
/// `hotpocket_ledgers_closed_total{via="consensus"}`.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of `name` (all its label sets).
fn sum(m: &BTreeMap<String, f64>, name: &str) -> u64 {
    let full = format!("hotpocket_{name}");
    let total: f64 = (m.iter())
        .filter(|(k, _)| k.as_str() == full || k.starts_with(&format!("{full}{{")))
        .map(|(_, v)| *v)
        .sum();
    // `as` saturates: a wild value from a wrong address cannot panic.
    total as u64
}

fn value(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(&format!("hotpocket_{name}")).copied().unwrap_or(0.0)
}

fn one(m: &BTreeMap<String, f64>, name: &str) -> u64 {
    value(m, name) as u64
}

fn live(addr: &str, m: &BTreeMap<String, f64>) -> String {
    let get = |k: &str| value(m, k);
    let runs = get("contract_run_seconds_count{phase=\"run\"}");
    let mean_ms = if runs > 0.0 {
        get("contract_run_seconds_sum{phase=\"run\"}") / runs * 1e3
    } else {
        0.0
    };
    let intake = match one(m, "intake_open") {
        1 => "intake open".to_string(),
        _ => format!(
            "intake closed (contract {} ledgers behind)",
            one(m, "contract_behind_ledgers")
        ),
    };
    [
        format!("running (metrics at {addr})"),
        format!(
            "round {} · {} · {intake} · inputs pooled {}",
            one(m, "round"),
            if one(m, "synced") == 1 {
                "synced"
            } else {
                "not synced"
            },
            one(m, "inputs_pooled"),
        ),
        format!(
            "peers connected {} · users connected {}",
            one(m, "peers_connected"),
            one(m, "users_connected")
        ),
        format!(
            "ledgers closed {} ({} by consensus, {} from history) · rollbacks {} · forks seen {}",
            sum(m, "ledgers_closed_total"),
            get("ledgers_closed_total{via=\"consensus\"}") as u64,
            get("ledgers_closed_total{via=\"history\"}") as u64,
            sum(m, "rollbacks_total"),
            one(m, "forks_seen_total"),
        ),
        format!(
            "inputs in ledgers {} · state syncs {} · run mismatches {} · outputs withheld {}",
            one(m, "inputs_closed_total"),
            one(m, "state_syncs_total"),
            sum(m, "run_mismatches_total"),
            sum(m, "outputs_withheld_total"),
        ),
        format!("contract runs {runs} (mean {mean_ms:.1} ms)"),
    ]
    .join("\n          ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_and_summed_over_labels() {
        let text = "# TYPE hotpocket_round gauge\nhotpocket_round 12\n\
            hotpocket_ledgers_closed_total{via=\"consensus\"} 5\n\
            hotpocket_ledgers_closed_total{via=\"history\"} 2\n# EOF\n";
        let m = parse(text);
        assert_eq!(one(&m, "round"), 12);
        assert_eq!(sum(&m, "ledgers_closed_total"), 7);
        assert_eq!(sum(&m, "ledgers_closed"), 0, "a prefix is not a name");
        let shown = live("x", &m);
        assert!(
            shown.contains("ledgers closed 7 (5 by consensus, 2 from history)"),
            "{shown}"
        );
    }
}
