//! Hot Pocket contract SDK.
//!
//! Implement [`Contract`] once. As a real binary, `fn main() {
//! hotpocket_contract::main(MyContract) }` reads the run description from
//! stdin (JSON or the old text format), each user's inputs from their fds,
//! runs the contract with the working directory as its state, and writes each
//! user's output to their fd. In-process (the simulator), [`Run::in_memory`]
//! gives the same contract the same inputs over an in-memory state.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Component, Path, PathBuf};

/// What the node tells the contract about this run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// Hash of the ledger being run, hex (empty in the text format).
    pub lcl: String,
    pub seq: u64,
    /// Ledger time, unix seconds.
    pub time: u64,
    /// This node's public key, hex.
    pub pubkey: String,
    pub unl: Vec<String>,
    /// The agreed random value, hex, when the beacon gives one.
    pub rand: Option<String>,
    /// Users with inputs in this ledger: pubkey hex -> (input fd, output fd).
    pub users: BTreeMap<String, (i32, i32)>,
}

#[derive(Debug)]
pub enum SdkError {
    Io(io::Error),
    Description(String),
}

impl std::fmt::Display for SdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdkError::Io(e) => write!(f, "I/O: {e}"),
            SdkError::Description(m) => write!(f, "bad run description: {m}"),
        }
    }
}

impl std::error::Error for SdkError {}

impl From<io::Error> for SdkError {
    fn from(e: io::Error) -> Self {
        SdkError::Io(e)
    }
}

/// Parses the description the node wrote on stdin, in either format.
pub fn parse_description(text: &str) -> Result<Description, SdkError> {
    let bad = |m: &str| SdkError::Description(m.to_string());
    if let Some(rest) = text.strip_prefix("HOTPOCKET 0.1") {
        let mut users = BTreeMap::new();
        for line in rest.lines().filter(|l| !l.trim().is_empty()) {
            let (key, fds) = line
                .split_once('=')
                .ok_or_else(|| bad("text line without '='"))?;
            let (i, o) = fds
                .split_once(':')
                .ok_or_else(|| bad("text line without ':'"))?;
            let fd = |s: &str| {
                s.trim()
                    .parse::<i32>()
                    .map_err(|_| bad("fd is not a number"))
            };
            users.insert(key.to_string(), (fd(i)?, fd(o)?));
        }
        return Ok(Description {
            users,
            ..Description::default()
        });
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut users = BTreeMap::new();
    if let Some(m) = v.get("user").and_then(|u| u.as_object()) {
        for (k, fds) in m {
            let pair = fds
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| bad("user fds are not a pair"))?;
            let fd = |x: &serde_json::Value| {
                x.as_i64()
                    .map(|n| n as i32)
                    .ok_or_else(|| bad("fd is not a number"))
            };
            users.insert(k.clone(), (fd(&pair[0])?, fd(&pair[1])?));
        }
    }
    Ok(Description {
        lcl: s("lcl"),
        seq: v.get("seq").and_then(|x| x.as_u64()).unwrap_or_default(),
        time: s("time").parse().unwrap_or_default(),
        pubkey: s("pubkey"),
        unl: v
            .get("unl")
            .and_then(|u| u.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        rand: v.get("rand").and_then(|x| x.as_str()).map(String::from),
        users,
    })
}

/// The contract's persistent state: files under relative paths.
pub trait State {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    fn remove(&mut self, path: &str) -> io::Result<()>;
}

/// Refuses absolute paths and `..`, so a contract cannot leave its state.
fn checked(path: &str) -> io::Result<&Path> {
    let p = Path::new(path);
    if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("state path {path:?} must be relative and plain"),
        ));
    }
    Ok(p)
}

/// State in a directory on disk (the real node's state directory).
pub struct DirState(pub PathBuf);

impl State for DirState {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.0.join(checked(path)?)) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let p = self.0.join(checked(path)?);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(p, data)
    }
    fn remove(&mut self, path: &str) -> io::Result<()> {
        match std::fs::remove_file(self.0.join(checked(path)?)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// State in memory: relative path -> bytes (the simulator's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemState(pub BTreeMap<String, Vec<u8>>);

impl State for MemState {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        checked(path)?;
        Ok(self.0.get(path).cloned())
    }
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        checked(path)?;
        self.0.insert(path.to_string(), data.to_vec());
        Ok(())
    }
    fn remove(&mut self, path: &str) -> io::Result<()> {
        checked(path)?;
        self.0.remove(path);
        Ok(())
    }
}

/// One run as the contract sees it.
pub struct Run<'a> {
    pub description: Description,
    inputs: BTreeMap<String, Vec<u8>>,
    outputs: BTreeMap<String, Vec<u8>>,
    pub state: &'a mut dyn State,
}

impl<'a> Run<'a> {
    /// A run with these inputs (user pubkey hex -> bytes) over `state`, as
    /// the simulator gives it.
    pub fn in_memory(
        description: Description,
        inputs: BTreeMap<String, Vec<u8>>,
        state: &'a mut dyn State,
    ) -> Run<'a> {
        Run {
            description,
            inputs,
            outputs: BTreeMap::new(),
            state,
        }
    }

    /// Users with inputs in this run, in key order.
    pub fn users(&self) -> Vec<String> {
        self.inputs.keys().cloned().collect()
    }

    /// Everything `user` sent for this ledger.
    pub fn input(&self, user: &str) -> &[u8] {
        self.inputs.get(user).map_or(&[], |v| v.as_slice())
    }

    /// Appends to what `user` receives once the run is certified.
    pub fn output(&mut self, user: &str, data: &[u8]) {
        self.outputs
            .entry(user.to_string())
            .or_default()
            .extend_from_slice(data);
    }

    pub fn into_outputs(self) -> BTreeMap<String, Vec<u8>> {
        self.outputs
    }
}

pub trait Contract {
    fn run(&mut self, run: &mut Run<'_>) -> Result<(), SdkError>;
}

/// Runs `contract` as the node's child process and exits.
pub fn main<C: Contract>(contract: C) -> ! {
    match run_process(contract) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("contract failed: {e}");
            std::process::exit(1)
        }
    }
}

fn run_process<C: Contract>(mut contract: C) -> Result<(), SdkError> {
    let mut text = String::new();
    io::stdin().read_to_string(&mut text)?;
    let description = parse_description(&text)?;
    let mut inputs = BTreeMap::new();
    for (user, &(fd_in, _)) in &description.users {
        // SAFETY: the node opened these fds for this process, one per user.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd_in) };
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        inputs.insert(user.clone(), data);
    }
    let fds: BTreeMap<String, i32> = description
        .users
        .iter()
        .map(|(u, &(_, o))| (u.clone(), o))
        .collect();
    let mut state = DirState(PathBuf::from("."));
    let mut run = Run::in_memory(description, inputs, &mut state);
    contract.run(&mut run)?;
    for (user, data) in run.into_outputs() {
        if let Some(&fd) = fds.get(&user) {
            // SAFETY: as above, the user's output fd is ours to write and close.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            f.write_all(&data)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        let d = parse_description(
            r#"{"hotpocket":0.1,"type":"binexec","lcl":"ab","seq":3,"time":"1568193881","pubkey":"cd","unl":["cd"],"npl":[29,28],"user":{"ee":[33,32]}}"#,
        )
        .unwrap();
        assert_eq!((d.seq, d.time, d.users["ee"]), (3, 1_568_193_881, (33, 32)));
        let d = parse_description("HOTPOCKET 0.1\nee=30:29\nff=34:33\n").unwrap();
        assert_eq!(d.users.len(), 2);
        assert_eq!(d.users["ff"], (34, 33));
        assert!(parse_description("{nope").is_err());
        assert!(parse_description("HOTPOCKET 0.1\nee=x:1\n").is_err());
    }

    #[test]
    fn state_paths_cannot_escape() {
        let mut m = MemState::default();
        for p in ["../x", "/etc/passwd", "", "a/../../b"] {
            assert!(m.write(p, b"x").is_err(), "{p}");
        }
        m.write("kv/a", b"1").unwrap();
        assert_eq!(m.read("kv/a").unwrap(), Some(b"1".to_vec()));
    }
}
