//! The ledger in SQLite: one row per ledger, readable with `sqlite3`.
//!
//! Appends and truncations open a transaction; `sync` commits it with
//! `synchronous=FULL`, so a ledger is durable exactly when the node's
//! `Sync` action returns, and a crash loses whole ledgers, never half of one.

use crate::beacon::{Beacon, FraudProof};
use crate::crypto::PubKey;
use crate::env::{Store, StoreError};
use crate::ledger::{LedgerRecord, Verdict};
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::Arc;

pub struct SqliteStore {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledgers (
    seq     INTEGER PRIMARY KEY,
    hash    TEXT NOT NULL,
    prev    TEXT NOT NULL,
    time    INTEGER NOT NULL,
    -- agreed input hashes, a JSON array of hex strings
    inputs  TEXT NOT NULL,
    -- verdicts on earlier runs, a JSON array of {seq, state, output}
    -- (hex; both null when the run went uncertified)
    verdicts TEXT NOT NULL,
    -- the random beacon's outcome, a JSON object: rand (hex, null when no
    -- secret went in, as before ledger 2), and the nodes revealed, absent
    -- and convicted of fraud (with the kind of fraud), by key in hex
    beacon  TEXT NOT NULL,
    -- the whole record (close proof and input bodies), postcard-encoded
    record  BLOB NOT NULL
);
";

fn verdicts_json(verdicts: &[Verdict]) -> String {
    let list: Vec<serde_json::Value> = verdicts
        .iter()
        .map(|v| {
            serde_json::json!({
                "seq": v.seq,
                "state": v.result.map(|r| r.state.to_string()),
                "output": v.result.map(|r| r.output.to_string()),
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn beacon_json(b: &Beacon) -> String {
    let keys = |ks: &[PubKey]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    let v = match &b.outcome {
        None => serde_json::json!({"rand": null, "revealed": [], "absent": [], "fraud": []}),
        Some(o) => serde_json::json!({
            "rand": o.is_random().then(|| o.value.to_string()),
            "revealed": keys(&o.revealed),
            "absent": keys(&o.absent),
            "fraud": o.fraud.iter().map(|p| serde_json::json!({
                "node": p.accused().to_string(),
                "kind": match p {
                    FraudProof::DoubleCommit(..) => "double-commit",
                    FraudProof::BadReveal(..) => "bad-reveal",
                },
            })).collect::<Vec<_>>(),
        }),
    };
    v.to_string()
}

fn io(e: rusqlite::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(io)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(io)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(io)?;
        conn.execute_batch(SCHEMA).map_err(io)?;
        Ok(SqliteStore { conn })
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(io)?;
        }
        Ok(())
    }

    /// (seq, hash hex) of every stored ledger, for tests and tools.
    pub fn hashes(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT seq, hash FROM ledgers ORDER BY seq")
            .map_err(io)?;
        let rows = q
            .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .map_err(io)?;
        rows.collect::<Result<_, _>>().map_err(io)
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Vec<LedgerRecord>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT seq, hash, record FROM ledgers ORDER BY seq")
            .map_err(io)?;
        let mut rows = q.query([]).map_err(io)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(io)? {
            let seq = row.get::<_, i64>(0).map_err(io)? as u64;
            let hash: String = row.get(1).map_err(io)?;
            let blob: Vec<u8> = row.get(2).map_err(io)?;
            let rec: LedgerRecord = postcard::from_bytes(&blob)
                .map_err(|e| StoreError::Corrupt(format!("ledger {seq}: {e}")))?;
            if rec.ledger.seq != seq || rec.hash.to_string() != hash {
                return Err(StoreError::Corrupt(format!(
                    "row {seq} holds ledger {} {:?}",
                    rec.ledger.seq, rec.hash
                )));
            }
            out.push(rec);
        }
        Ok(out)
    }

    fn append(&mut self, r: Arc<LedgerRecord>) -> Result<(), StoreError> {
        self.begin()?;
        let inputs: Vec<String> = r.ledger.inputs.iter().map(|h| h.to_string()).collect();
        let blob = postcard::to_allocvec(&*r).map_err(|e| StoreError::Io(e.to_string()))?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ledgers
                 (seq, hash, prev, time, inputs, verdicts, beacon, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    r.ledger.seq as i64,
                    r.hash.to_string(),
                    r.ledger.prev.to_string(),
                    r.ledger.time as i64,
                    serde_json::to_string(&inputs).expect("strings serialize"),
                    verdicts_json(&r.ledger.verdicts),
                    beacon_json(&r.ledger.beacon),
                    blob,
                ],
            )
            .map_err(io)?;
        Ok(())
    }

    fn truncate(&mut self, keep_through: u64) -> Result<(), StoreError> {
        self.begin()?;
        self.conn
            .execute(
                "DELETE FROM ledgers WHERE seq > ?1",
                params![keep_through as i64],
            )
            .map_err(io)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("COMMIT").map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Hash;

    fn record(seq: u64, prev: Hash) -> LedgerRecord {
        let mut r = LedgerRecord::genesis();
        r.ledger.seq = seq;
        r.ledger.prev = prev;
        r.ledger.inputs = vec![Hash([seq as u8; 32])];
        r.bodies.insert(Hash([seq as u8; 32]), vec![1, 2, 3]);
        r.hash = r.ledger.hash();
        r
    }

    #[test]
    fn only_synced_ledgers_survive_and_truncation_is_durable() {
        let path = std::env::temp_dir().join(format!("hp-store-{}.sqlite", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = record(1, LedgerRecord::genesis().hash);
        let b = record(2, a.hash);
        {
            let mut s = SqliteStore::open(&path).unwrap();
            s.append(Arc::new(a.clone())).unwrap();
            s.sync().unwrap();
            s.append(Arc::new(b.clone())).unwrap();
            // dropped without sync: a crash before the durability point
        }
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.load().unwrap(), vec![a.clone()]);
        s.append(Arc::new(b)).unwrap();
        s.sync().unwrap();
        assert_eq!(s.hashes().unwrap().len(), 2);
        s.truncate(1).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.load().unwrap(), vec![a]);
        let _ = std::fs::remove_file(&path);
    }
}
