//! Two real process hosts and a fetch between them, for the state sync
//! tests and bench.

use hotpocket_node::contract::ExecResult;
use hotpocket_node::contract::{FdlistFormat, RunLimits, UserIo};
use hotpocket_node::crypto::{Hash, Keypair};
use hotpocket_node::env::ContractHost;
use hotpocket_node::real::contract_host::ProcessHost;
use hotpocket_node::real::process::{ProcessRunner, Workdir};
use hotpocket_node::sync::state_transfer::{FetchStats, StateFetch, StatePatch, Step};
use std::path::{Path, PathBuf};

/// A new, empty state directory.
pub fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hp-sync-{tag}-{}", std::process::id()));
    remove(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes a state directory and everything the host keeps beside it.
pub fn remove(d: &Path) {
    for suffix in ["", ".prev", ".ran", ".rolledback"] {
        let p = PathBuf::from(format!("{}{suffix}", d.display()));
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
    }
}

pub fn sibling(d: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}.{suffix}", d.display()))
}

pub fn open(d: &Path) -> ProcessHost {
    let host = ProcessRunner {
        binary: "true".into(),
        args: vec![],
        state_dir: d.to_path_buf(),
        format: FdlistFormat::Json,
        workdir: Workdir::State,
        io: UserIo::Raw,
        limits: RunLimits::default(),
    };
    let me = Keypair::from_seed([1; 32]).public();
    ProcessHost::open(host, me, vec![me]).unwrap()
}

pub fn write(d: &Path, path: &str, bytes: &[u8]) {
    let p = d.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Fetches what `from` holds into a patch for `to`, as a node would.
pub fn fetch(from: &mut ProcessHost, to: &mut ProcessHost, seq: u64) -> (StatePatch, FetchStats) {
    let result = ExecResult {
        state: from.ran().state,
        output: Hash([4; 32]),
    };
    let mut f = StateFetch::new(seq, result, &to.state_tree());
    for _ in 0..100_000 {
        match f.step() {
            Step::Done(p) => return (p, f.stats),
            Step::Want(reqs) => {
                for r in reqs {
                    let resp = from.serve_state(&r);
                    f.on_response(&r, resp).expect("the serving host is honest");
                }
            }
        }
    }
    panic!("the fetch did not finish");
}
