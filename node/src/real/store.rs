//! The ledger in SQLite: one row per ledger, readable with `sqlite3`.
//!
//! Appends and truncations open a transaction; `sync` commits it with
//! `synchronous=FULL`, so a ledger is durable exactly when the node's
//! `Sync` action returns, and a crash loses whole ledgers, never half of one.

use crate::beacon::{Beacon, FraudProof};
use crate::crypto::{Hash, PubKey};
use crate::env::{Store, StoreError};
use crate::ledger::{ExecResult, LedgerRecord, Verdict};
use crate::users::hp_ledger::Found;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Reads the stored chain beside the node's own connection (SQLite's WAL
/// lets a reader go on while the node writes), for users' ledger queries:
/// what it reads is durable, so a query never shows a ledger a crash could
/// take back.
pub struct LedgerReader {
    conn: Mutex<Connection>,
}

/// Ledgers after a run's own in which its verdict is looked for: a verdict
/// comes a ledger or two later, or never (`Verdict::result` none).
const VERDICT_WINDOW: i64 = 64;

impl LedgerReader {
    pub fn open(path: &Path) -> Result<LedgerReader, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(io)?;
        conn.busy_timeout(Duration::from_secs(2)).map_err(io)?;
        Ok(LedgerReader {
            conn: Mutex::new(conn),
        })
    }

    /// The last stored ledger: (seq, hash as stored, close time in ms), or
    /// `None` before any.
    pub fn tip(&self) -> Result<Option<(u64, String, u64)>, StoreError> {
        let conn = self.conn.lock().expect("not poisoned");
        let row: Option<(i64, String, i64)> = conn
            .query_row(
                "SELECT seq, hash, time FROM ledgers ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(io)?;
        let Some((seq, hash, time)) = row else {
            return Ok(None);
        };
        Ok(Some((seq as u64, hash, time as u64)))
    }

    /// Ledger `seq`, with its run's certified result if a later stored
    /// ledger carries one; `None` if no ledger `seq` is stored.
    pub fn ledger(&self, seq: u64) -> Result<Option<Found>, StoreError> {
        let conn = self.conn.lock().expect("not poisoned");
        // No ledger is stored that far: a user's query is not an error.
        let Ok(at) = i64::try_from(seq) else {
            return Ok(None);
        };
        let blob: Option<Vec<u8>> = conn
            .query_row("SELECT record FROM ledgers WHERE seq = ?1", [at], |r| {
                r.get(0)
            })
            .optional()
            .map_err(io)?;
        let Some(blob) = blob else {
            return Ok(None);
        };
        let record: LedgerRecord = postcard::from_bytes(&blob)
            .map_err(|e| StoreError::Corrupt(format!("ledger {seq}: {e}")))?;
        let mut q = conn
            .prepare("SELECT verdicts FROM ledgers WHERE seq > ?1 AND seq <= ?2 ORDER BY seq")
            .map_err(io)?;
        let rows = q
            .query_map([at, at.saturating_add(VERDICT_WINDOW)], |r| {
                r.get::<_, String>(0)
            })
            .map_err(io)?;
        let mut certified = None;
        for verdicts in rows {
            let list: serde_json::Value = serde_json::from_str(&verdicts.map_err(io)?)
                .map_err(|e| StoreError::Corrupt(format!("verdicts after {seq}: {e}")))?;
            let mine = (list.as_array().into_iter().flatten()).find(|v| v["seq"] == seq);
            if let Some(v) = mine {
                let hash = |k: &str| {
                    let bytes = hex::decode(v[k].as_str()?).ok()?;
                    Some(Hash(bytes.try_into().ok()?))
                };
                certified = hash("state")
                    .zip(hash("output"))
                    .map(|(state, output)| ExecResult { state, output });
                break;
            }
        }
        Ok(Some(Found { record, certified }))
    }
}

impl Store for SqliteStore {
    fn tip(&mut self) -> Result<u64, StoreError> {
        let tip: Option<i64> = (self.conn)
            .query_row("SELECT MAX(seq) FROM ledgers", [], |r| r.get(0))
            .map_err(io)?;
        Ok(tip.map_or(0, |t| t as u64))
    }

    fn read(
        &mut self,
        from: u64,
        count: u64,
        max_bytes: usize,
    ) -> Result<Vec<LedgerRecord>, StoreError> {
        let mut q = (self.conn)
            .prepare_cached(
                "SELECT seq, hash, record FROM ledgers WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(io)?;
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let mut rows = q.query(params![from, count]).map_err(io)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(io)? {
            let seq = row.get::<_, i64>(0).map_err(io)? as u64;
            let hash: String = row.get(1).map_err(io)?;
            let blob: Vec<u8> = row.get(2).map_err(io)?;
            bytes = bytes.saturating_add(blob.len());
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
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
        assert_eq!(s.tip().unwrap(), 1);
        assert_eq!(s.read(1, 10, usize::MAX).unwrap(), vec![a.clone()]);
        s.append(Arc::new(b)).unwrap();
        s.sync().unwrap();
        assert_eq!(s.hashes().unwrap().len(), 2);
        s.truncate(1).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.read(0, u64::MAX, usize::MAX).unwrap(), vec![a.clone()]);
        // Reads from a seq, a count at most.
        s.append(Arc::new(record(2, a.hash))).unwrap();
        s.append(Arc::new(record(3, a.hash))).unwrap();
        let seqs = |v: Vec<LedgerRecord>| v.iter().map(|r| r.ledger.seq).collect::<Vec<_>>();
        assert_eq!(seqs(s.read(2, 1, usize::MAX).unwrap()), [2], "unsynced too");
        // A byte budget: the first ledger whatever its size, then what fits.
        assert_eq!(seqs(s.read(1, 3, 1).unwrap()), [1]);
        assert_eq!(seqs(s.read(1, 3, usize::MAX).unwrap()), [1, 2, 3]);
        assert_eq!(s.tip().unwrap(), 3);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_reader_finds_a_stored_ledger_and_its_certified_result() {
        let path = std::env::temp_dir().join(format!("hp-reader-{}.sqlite", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = record(1, LedgerRecord::genesis().hash);
        let mut b = record(2, a.hash);
        let result = ExecResult {
            state: Hash([7; 32]),
            output: Hash([8; 32]),
        };
        b.ledger.verdicts = vec![Verdict {
            seq: 1,
            result: Some(result),
        }];
        let mut s = SqliteStore::open(&path).unwrap();
        s.append(Arc::new(a.clone())).unwrap();
        s.append(Arc::new(b)).unwrap();
        s.sync().unwrap();
        let reader = LedgerReader::open(&path).unwrap();
        let found = reader.ledger(1).unwrap().expect("stored");
        assert_eq!((found.record, found.certified), (a, Some(result)));
        assert!(reader.ledger(2).unwrap().unwrap().certified.is_none());
        assert!(reader.ledger(3).unwrap().is_none());
        drop(s);
        let _ = std::fs::remove_file(&path);
    }
}
