//! `cfg/hp.cfg`: the node's JSON config, with the prototype's field names
//! and ours. Every field is checked at start and a bad one is named.

use crate::consensus::ConsensusConfig;
use crate::contract::{FdlistFormat, RunLimits, UserIo};
use crate::crypto::{Keypair, PubKey};
use crate::real::process::Workdir;
use crate::users::SessionLimits;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's ed25519 public key, 64 hex.
    pub pubkey: String,
    /// Its secret key: the 32-byte seed (64 hex) or seed + public key (128
    /// hex, libsodium's layout, as the prototype stored it).
    pub seckey: String,
    #[serde(default = "default_keytype")]
    pub keytype: String,
    /// The contract executable; a relative path is from the node directory.
    pub binary: String,
    /// Its arguments, split on whitespace.
    #[serde(default)]
    pub binargs: String,
    /// Peers to connect to, `host:port`, or `KEY@host:port` to take only
    /// that UNL key at that address.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Public keys of the UNL, this node's included if it votes.
    pub unl: Vec<String>,
    /// Address to listen on, for peers and users.
    #[serde(default = "default_ip")]
    pub ip: String,
    pub peerport: u16,
    /// Round length, ms.
    #[serde(default = "default_roundtime")]
    pub roundtime: u64,
    /// Websocket port for users.
    pub pubport: u16,
    /// Largest user message, bytes.
    #[serde(default = "default_pubmaxsize")]
    pub pubmaxsize: usize,
    /// Most messages a user may send a minute.
    #[serde(default = "default_pubmaxcpm")]
    pub pubmaxcpm: u32,

    /// Percent of the round for each of stages 1-3.
    #[serde(default = "default_stage_slice")]
    pub stage_slice: u64,
    /// Input thresholds of stages 1-3, percent of the UNL.
    #[serde(default = "default_thresholds")]
    pub stage_thresholds: [u64; 3],
    /// Close threshold, percent of the UNL.
    #[serde(default = "default_close_threshold")]
    pub close_threshold: u64,
    /// A contract run over this is killed, ms.
    #[serde(default = "default_contract_time_limit")]
    pub contract_time_limit_ms: u64,
    /// A contract writing more than this to its users is killed, bytes.
    #[serde(default = "default_contract_max_output")]
    pub contract_max_output_bytes: usize,
    /// `json` (the default) or `text`, the prototype's first format.
    #[serde(default)]
    pub fdlist: FdlistFormat,
    /// A contract more than this many ledgers behind fetches the certified
    /// state from peers instead of running them all. At least 1: 0 once
    /// meant "never", which read as "always"; a large value is "never".
    #[serde(default = "default_state_sync_gap")]
    pub state_sync_gap: u64,
    /// Recent ledgers kept whole in memory (at least 4); older ones are
    /// read from the database when a peer asks for them. A node-local
    /// setting: memory use, not agreement.
    #[serde(default = "default_memory_ledgers")]
    pub memory_ledgers: u64,
    /// The contract's id and version as hpcore's handshake reports them
    /// (its client may check both). Without an id, one is made from the
    /// UNL, so every node of a network reports the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<String>,
    #[serde(default = "default_contract_version")]
    pub contract_version: String,
    /// Whether the seed prototype's user sessions are served. Their inputs
    /// are vouched for by the node that took them, so any UNL member can
    /// make some up in a user's name; off, every input must be signed by
    /// its user (hpcore's protocol). A network setting: every node the same.
    #[serde(default = "default_true")]
    pub prototype_users: bool,
    /// What a user's fds carry: `raw` (the default), one stream each way,
    /// or `framed`, messages each with a 4-byte big-endian length, whose
    /// boundaries reach the user (docs/contracts.md). A network setting:
    /// every node the same.
    #[serde(default)]
    pub user_io: UserIo,
    /// Where the contract starts: `state` (the default), its state
    /// directory, or `contract`, this node directory, the prototype's
    /// layout: `binargs` relative to it and the state under `state/`.
    #[serde(default)]
    pub workdir: Workdir,
    /// Where to serve Prometheus metrics (`GET /metrics`), `host:port`,
    /// e.g. `127.0.0.1:9460`; absent, there is no metrics endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

const MAX_PUBMAXSIZE: usize = 2 << 20;

fn default_keytype() -> String {
    "ed25519".into()
}
fn default_ip() -> String {
    "127.0.0.1".into()
}
fn default_true() -> bool {
    true
}
fn default_contract_version() -> String {
    "1.0".into()
}
fn default_state_sync_gap() -> u64 {
    32
}
fn default_memory_ledgers() -> u64 {
    64
}
fn default_roundtime() -> u64 {
    1000
}
fn default_pubmaxsize() -> usize {
    1 << 20
}
fn default_pubmaxcpm() -> u32 {
    600
}
fn default_stage_slice() -> u64 {
    25
}
fn default_thresholds() -> [u64; 3] {
    [50, 65, 80]
}
fn default_close_threshold() -> u64 {
    80
}
fn default_contract_time_limit() -> u64 {
    RunLimits::default().time_limit_ms
}
fn default_contract_max_output() -> usize {
    RunLimits::default().max_output_bytes
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    // The sources are left out of the messages: reports print the chain
    // of causes, and a cause in both places printed it twice.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid config")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: field `{field}`: {why}")]
    Field {
        path: PathBuf,
        field: &'static str,
        why: String,
    },
}

/// A config checked field by field, with its keys and settings parsed.
pub struct Checked {
    pub cfg: Config,
    pub key: Keypair,
    pub consensus: ConsensusConfig,
    pub limits: RunLimits,
    pub session: SessionLimits,
    /// The contract binary, resolved against the node directory.
    pub binary: PathBuf,
    /// What is legal but likely a mistake; `load` has logged each already.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cfg").join("hp.cfg")
    }

    /// Reads `DIR/cfg/hp.cfg` without checking its fields.
    pub fn read(dir: &Path) -> Result<Config, ConfigFileError> {
        let path = Config::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigFileError::Parse { path, source })
    }

    /// Reads and checks `DIR/cfg/hp.cfg`.
    pub fn load(dir: &Path) -> Result<Checked, ConfigFileError> {
        let path = Config::path(dir);
        let cfg = Config::read(dir)?;
        let mut checked = cfg
            .check(dir)
            .map_err(|(field, why)| ConfigFileError::Field {
                path: path.clone(),
                field,
                why,
            })?;
        if let Some(w) = exposed_secret(&path) {
            checked.warnings.insert(0, w);
        }
        for w in &checked.warnings {
            tracing::warn!("{}: {w}", path.display());
        }
        Ok(checked)
    }

    /// The `metrics` address, checked: an IP address and port, apart from
    /// the peer and user ports.
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let Some(m) = &self.metrics else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr =
            (m.parse()).map_err(|_| format!("{m:?} is not an address like 127.0.0.1:9460"))?;
        if addr.port() == self.peerport || addr.port() == self.pubport {
            return Err("must not use the peer or user port".into());
        }
        Ok(Some(addr))
    }

    fn check(self, dir: &Path) -> Result<Checked, (&'static str, String)> {
        if self.keytype != "ed25519" {
            return Err((
                "keytype",
                format!("only ed25519 is supported, got {:?}", self.keytype),
            ));
        }
        let pubkey = PubKey::from_hex(&self.pubkey).map_err(|e| ("pubkey", e.to_string()))?;
        let key = parse_secret(&self.seckey).map_err(|why| ("seckey", why))?;
        if key.public() != pubkey {
            return Err(("seckey", "does not belong to pubkey".into()));
        }
        let mut unl = Vec::new();
        for k in &self.unl {
            unl.push(PubKey::from_hex(k).map_err(|e| ("unl", format!("{k:?}: {e}")))?);
        }
        if unl.is_empty() {
            return Err(("unl", "is empty".into()));
        }
        for p in &self.peers {
            let peer: crate::real::peers::PeerAddr =
                p.parse().map_err(|e| ("peers", format!("{p:?}: {e}")))?;
            if peer.key.is_some_and(|k| !unl.contains(&k)) {
                return Err(("peers", format!("{p:?} names a key that is not in the unl")));
            }
        }
        self.metrics_addr().map_err(|why| ("metrics", why))?;
        if self.ip.parse::<std::net::IpAddr>().is_err() {
            return Err(("ip", format!("{:?} is not an IP address", self.ip)));
        }
        if self.peerport == 0 || self.pubport == 0 || self.peerport == self.pubport {
            return Err((
                "pubport",
                "peerport and pubport must be distinct and non-zero".into(),
            ));
        }
        // An input must fit in a ledger's input budget (4 MiB) with room.
        if !(1..=MAX_PUBMAXSIZE).contains(&self.pubmaxsize) {
            return Err(("pubmaxsize", format!("must be 1..={MAX_PUBMAXSIZE} bytes")));
        }
        if self.roundtime > 3_600_000 {
            return Err(("roundtime", "must be at most an hour".into()));
        }
        if self.pubmaxcpm == 0 {
            return Err(("pubmaxcpm", "must be positive".into()));
        }
        if self.contract_time_limit_ms == 0 {
            return Err(("contract_time_limit_ms", "must be positive".into()));
        }
        if self.contract_max_output_bytes == 0 {
            return Err((
                "contract_max_output_bytes",
                "must be positive: at 0 every run that writes to a user is killed".into(),
            ));
        }
        if self.state_sync_gap == 0 {
            return Err((
                "state_sync_gap",
                "must be at least 1 ledger; to never fetch state when behind, set it large (e.g. 1000000)".into(),
            ));
        }
        if self.user_io == UserIo::Framed && self.fdlist == FdlistFormat::Text {
            return Err((
                "user_io",
                "framed needs `fdlist: json`: the text format cannot tell the contract".into(),
            ));
        }
        if self.binary.trim().is_empty() {
            return Err(("binary", "is empty".into()));
        }
        let consensus = ConsensusConfig {
            roundtime_ms: self.roundtime,
            stage_slice_pct: self.stage_slice,
            stage_thresholds_pct: self.stage_thresholds,
            close_threshold_pct: self.close_threshold,
            max_input_bytes: self.pubmaxsize,
            state_sync_gap: self.state_sync_gap,
            memory_ledgers: self.memory_ledgers,
            vouched_inputs: self.prototype_users,
            ..ConsensusConfig::new(unl)
        };
        consensus.validate().map_err(|e| {
            let field = match e {
                crate::consensus::ConfigError::Roundtime(_) => "roundtime",
                crate::consensus::ConfigError::StageSlice(_) => "stage_slice",
                crate::consensus::ConfigError::Threshold(_) => "stage_thresholds",
                crate::consensus::ConfigError::CloseThreshold(_) => "close_threshold",
                crate::consensus::ConfigError::EmptyUnl => "unl",
                crate::consensus::ConfigError::MemoryLedgers(_) => "memory_ledgers",
                crate::consensus::ConfigError::Npl(_) => "npl",
            };
            (field, e.to_string())
        })?;
        // Each stage keeps what at least its threshold of the UNL proposed
        // in the stage before: a threshold that drops lets back in inputs
        // the previous stage filtered out, so proposals need not converge.
        if self.stage_thresholds.windows(2).any(|w| w[0] > w[1]) {
            return Err((
                "stage_thresholds",
                format!(
                    "must not decrease from stage 1 to stage 3, got {:?}",
                    self.stage_thresholds
                ),
            ));
        }
        let limits = RunLimits {
            time_limit_ms: self.contract_time_limit_ms,
            max_output_bytes: self.contract_max_output_bytes,
            ..RunLimits::default()
        }
        .with_npl(&consensus.npl);
        let session = SessionLimits {
            max_message_bytes: self.pubmaxsize,
            max_messages_per_minute: self.pubmaxcpm,
            roundtime_ms: self.roundtime,
            prototype_sessions: self.prototype_users,
            ..SessionLimits::default()
        };
        // Absolute: the contract starts in another directory, where a
        // relative path (a node directory given as one) names nothing.
        let binary = std::path::absolute(dir.join(&self.binary))
            .map_err(|e| ("binary", format!("{}: {e}", self.binary)))?;
        check_binary(&binary).map_err(|why| ("binary", why))?;
        let mut warnings = Vec::new();
        if !consensus.in_unl(&key.public()) {
            warnings.push(format!(
                "this node's key {} is not in its `unl`: peers drop its proposals, so it never \
                 votes and reports itself Unreliable (observer nodes are not supported); add the \
                 key to `unl` on every node if it is meant to vote",
                self.pubkey
            ));
        }
        Ok(Checked {
            cfg: self,
            key,
            consensus,
            limits,
            session,
            binary,
            warnings,
        })
    }

    /// Writes the config as pretty JSON to `DIR/cfg/hp.cfg`, readable by
    /// its owner only: it holds the node's secret key.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = Config::path(dir);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let text = serde_json::to_string_pretty(self).expect("config serializes");
        // Created 0600 rather than narrowed after, so the key is never
        // readable by others, not even for a moment; written beside and
        // renamed over, so an existing file of a wider mode goes too and a
        // crash never leaves half a config.
        let tmp = path.with_extension("cfg.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// A config for a new node with `key`, listening on `ip`.
    pub fn new_node(key: &Keypair, binary: String, binargs: String) -> Config {
        Config {
            pubkey: key.public().to_hex(),
            seckey: key.secret_hex(),
            keytype: default_keytype(),
            binary,
            binargs,
            peers: vec![],
            unl: vec![key.public().to_hex()],
            ip: default_ip(),
            peerport: 22860,
            roundtime: default_roundtime(),
            pubport: 8080,
            pubmaxsize: default_pubmaxsize(),
            pubmaxcpm: default_pubmaxcpm(),
            stage_slice: default_stage_slice(),
            stage_thresholds: default_thresholds(),
            close_threshold: default_close_threshold(),
            contract_time_limit_ms: default_contract_time_limit(),
            contract_max_output_bytes: default_contract_max_output(),
            fdlist: FdlistFormat::Json,
            state_sync_gap: default_state_sync_gap(),
            memory_ledgers: default_memory_ledgers(),
            contract_id: None,
            contract_version: default_contract_version(),
            prototype_users: true,
            user_io: UserIo::Raw,
            workdir: Workdir::State,
            metrics: None,
        }
    }
}

/// Why the contract at `path` cannot be started by this user, if it cannot:
/// caught at load, a node would otherwise start and fail every run.
pub fn check_binary(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("the contract {shown} does not exist"),
        _ => format!("the contract {shown} cannot be read: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("the contract {shown} is not a file"));
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("the contract path {shown} holds a NUL byte"))?;
    // access(2) answers for this process's user and groups (and root),
    // which the mode bits alone do not.
    // SAFETY: `c_path` is a valid NUL-terminated string for the call.
    if unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } != 0 {
        return Err(format!(
            "the contract {shown} is not executable by this user (mode {:o}); chmod +x it",
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// A warning if the config at `path` (which holds the secret key) can be
/// read or written by its group or by others.
fn exposed_secret(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "holds the node's secret key but has mode {mode:o}, open to other users; \
             run `chmod 600 {}`",
            path.display()
        )
    })
}

/// A secret key from 64 hex (seed) or 128 hex (seed then public key).
pub fn parse_secret(hex_key: &str) -> Result<Keypair, String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("not hex: {e}"))?;
    let seed: [u8; 32] = match bytes.len() {
        32 | 64 => bytes[..32].try_into().expect("length checked"),
        n => return Err(format!("expected 32 or 64 bytes, got {n}")),
    };
    let key = Keypair::from_seed(seed);
    if bytes.len() == 64 && bytes[32..] != key.public().0 {
        return Err("the public half does not match the seed".into());
    }
    Ok(key)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
