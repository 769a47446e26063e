//! `cfg/hp.cfg`: the node's JSON config, with the prototype's field names
//! and ours. Every field is checked at start and a bad one is named.

use crate::consensus::ConsensusConfig;
use crate::contract::{FdlistFormat, RunLimits};
use crate::crypto::{Keypair, PubKey};
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
    /// Peers to connect to, `host:port`.
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
    /// state from peers instead of running them all; 0 never does.
    #[serde(default = "default_state_sync_gap")]
    pub state_sync_gap: u64,
}

const MAX_PUBMAXSIZE: usize = 2 << 20;

fn default_keytype() -> String {
    "ed25519".into()
}
fn default_ip() -> String {
    "127.0.0.1".into()
}
fn default_state_sync_gap() -> u64 {
    32
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
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid config: {source}")]
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
}

impl Config {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cfg").join("hp.cfg")
    }

    /// Reads and checks `DIR/cfg/hp.cfg`.
    pub fn load(dir: &Path) -> Result<Checked, ConfigFileError> {
        let path = Config::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
            path: path.clone(),
            source,
        })?;
        let cfg: Config = serde_json::from_str(&text).map_err(|source| ConfigFileError::Parse {
            path: path.clone(),
            source,
        })?;
        cfg.check(dir)
            .map_err(|(field, why)| ConfigFileError::Field {
                path: path.clone(),
                field,
                why,
            })
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
            if p.rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                return Err(("peers", format!("{p:?} is not host:port")));
            }
        }
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
            ..ConsensusConfig::new(unl)
        };
        consensus.validate().map_err(|e| {
            let field = match e {
                crate::consensus::ConfigError::Roundtime(_) => "roundtime",
                crate::consensus::ConfigError::StageSlice(_) => "stage_slice",
                crate::consensus::ConfigError::Threshold(_) => "stage_thresholds",
                crate::consensus::ConfigError::CloseThreshold(_) => "close_threshold",
                crate::consensus::ConfigError::EmptyUnl => "unl",
                crate::consensus::ConfigError::Npl(_) => "npl",
            };
            (field, e.to_string())
        })?;
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
            ..SessionLimits::default()
        };
        let binary = dir.join(&self.binary);
        Ok(Checked {
            cfg: self,
            key,
            consensus,
            limits,
            session,
            binary,
        })
    }

    /// Writes the config as pretty JSON to `DIR/cfg/hp.cfg`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let path = Config::path(dir);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let text = serde_json::to_string_pretty(self).expect("config serializes");
        std::fs::write(path, text + "\n")
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
        }
    }
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
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hp-cfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_saved_config_loads_and_a_bad_field_is_named() {
        let d = dir("roundtrip");
        let key = Keypair::from_seed([5; 32]);
        let cfg = Config::new_node(&key, "contract".into(), "--x 1".into());
        cfg.save(&d).unwrap();
        let c = Config::load(&d).unwrap();
        assert_eq!(c.key.public(), key.public());
        assert_eq!(c.binary, d.join("contract"));

        let mut bad = cfg.clone();
        bad.roundtime = 5;
        bad.save(&d).unwrap();
        let e = Config::load(&d).err().unwrap().to_string();
        assert!(e.contains("field `roundtime`"), "{e}");

        let mut bad = cfg.clone();
        bad.seckey = Keypair::from_seed([6; 32]).secret_hex();
        bad.save(&d).unwrap();
        let e = Config::load(&d).err().unwrap().to_string();
        assert!(e.contains("field `seckey`"), "{e}");

        std::fs::write(Config::path(&d), r#"{"pubkey": "x", "surprise": 1}"#).unwrap();
        let e = Config::load(&d).err().unwrap().to_string();
        assert!(e.contains("not a valid config"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn both_secret_key_layouts_parse() {
        let key = Keypair::from_seed([7; 32]);
        let long = format!("{}{}", key.secret_hex(), key.public().to_hex());
        assert_eq!(
            parse_secret(&key.secret_hex()).unwrap().public(),
            key.public()
        );
        assert_eq!(parse_secret(&long).unwrap().public(), key.public());
        let wrong = format!(
            "{}{}",
            key.secret_hex(),
            Keypair::from_seed([8; 32]).public().to_hex()
        );
        assert!(parse_secret(&wrong).is_err());
        assert!(parse_secret("abc").is_err());
    }
}
