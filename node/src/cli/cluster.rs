//! `hotpocket cluster`: N nodes with one UNL on loopback, each a child
//! process running `hotpocket run`, logging to its own directory.

use crate::cli::signals::{Stop, StopSignals};
use crate::crypto::Keypair;
use crate::real::config::Config;
use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub struct Plan {
    pub nodes: usize,
    pub dir: PathBuf,
    pub contract: PathBuf,
    pub roundtime: u64,
    pub peerport: u16,
    pub pubport: u16,
    /// Metrics port of node 0 (node i: this plus i), on loopback; none
    /// serves metrics without.
    pub metrics: Option<u16>,
}

/// Writes a new node directory: config, a self-signed TLS certificate for
/// its users' wss and an empty state directory.
pub fn create_node(dir: &Path, cfg: &Config) -> anyhow::Result<()> {
    if Config::path(dir).exists() {
        bail!("{} already holds a node", dir.display());
    }
    std::fs::create_dir_all(dir.join("state"))
        .with_context(|| format!("creating {}", dir.display()))?;
    cfg.save(dir)
        .with_context(|| format!("writing {}", Config::path(dir).display()))?;
    crate::real::tls::make_cert(dir)
}

pub fn node_dir(root: &Path, i: usize) -> PathBuf {
    root.join(format!("node-{i}"))
}

/// What the command line set, as opposed to the defaults: only these are
/// checked against a cluster that already exists.
#[derive(Default)]
pub struct Given {
    pub nodes: Option<usize>,
    /// Absolute.
    pub contract: Option<PathBuf>,
    pub roundtime: Option<u64>,
    pub peerport: Option<u16>,
    pub pubport: Option<u16>,
    pub metrics: Option<u16>,
}

pub const DEFAULT_NODES: usize = 5;
pub const DEFAULT_ROUNDTIME: u64 = 1000;
pub const DEFAULT_PEERPORT: u16 = 22860;
pub const DEFAULT_PUBPORT: u16 = 8080;

/// The plan for `dir`: the cluster already there, or else a new one from
/// `given` and the defaults (`default_contract` is only asked then).
///
/// An existing cluster keeps its settings: changing some nodes' contract,
/// round or ports under a running chain is not something to do silently,
/// so a flag that contradicts them is refused, by name, rather than
/// ignored.
pub fn plan(
    dir: PathBuf,
    given: &Given,
    default_contract: impl FnOnce() -> anyhow::Result<PathBuf>,
) -> anyhow::Result<Plan> {
    let first = node_dir(&dir, 0);
    if !Config::path(&first).exists() {
        let nodes = given.nodes.unwrap_or(DEFAULT_NODES);
        if !(1..=64).contains(&nodes) {
            bail!("--nodes must be 1..=64, got {nodes}");
        }
        return Ok(Plan {
            nodes,
            contract: match &given.contract {
                Some(c) => c.clone(),
                None => default_contract()?,
            },
            roundtime: given.roundtime.unwrap_or(DEFAULT_ROUNDTIME),
            peerport: given.peerport.unwrap_or(DEFAULT_PEERPORT),
            pubport: given.pubport.unwrap_or(DEFAULT_PUBPORT),
            metrics: given.metrics,
            dir,
        });
    }
    let cfg = Config::read(&first)?;
    // Every node of a cluster votes, so its UNL is the cluster.
    let nodes = cfg.unl.len();
    let contract = first.join(&cfg.binary);
    let mut clashes = Vec::new();
    if let Some(n) = given.nodes.filter(|n| *n != nodes) {
        clashes.push(format!("--nodes {n} (it has {nodes})"));
    }
    if let Some(c) = &given.contract {
        if std::fs::canonicalize(&contract).ok().as_ref() != Some(c) {
            clashes.push(format!(
                "--contract {} (it runs {})",
                c.display(),
                contract.display()
            ));
        }
    }
    if let Some(r) = given.roundtime.filter(|r| *r != cfg.roundtime) {
        clashes.push(format!("--roundtime {r} (it uses {})", cfg.roundtime));
    }
    if let Some(p) = given.peerport.filter(|p| *p != cfg.peerport) {
        clashes.push(format!("--peerport {p} (node 0 uses {})", cfg.peerport));
    }
    if let Some(p) = given.pubport.filter(|p| *p != cfg.pubport) {
        clashes.push(format!("--pubport {p} (node 0 uses {})", cfg.pubport));
    }
    let metrics = cfg.metrics_addr().ok().flatten().map(|a| a.port());
    if let Some(p) = given.metrics.filter(|p| Some(*p) != metrics) {
        let has = metrics.map_or("none".into(), |m| m.to_string());
        clashes.push(format!("--metricsport {p} (node 0 uses {has})"));
    }
    if !clashes.is_empty() {
        bail!(
            "{} already holds a cluster, which keeps its own settings; not applied: {}. Run `hotpocket cluster --dir {}` \
             without them to resume it, or pick a new --dir (or remove this one) for a new cluster",
            dir.display(),
            clashes.join(", "),
            dir.display()
        );
    }
    Ok(Plan {
        nodes,
        contract,
        roundtime: cfg.roundtime,
        peerport: cfg.peerport,
        pubport: cfg.pubport,
        metrics,
        dir,
    })
}

/// What to tell the user to type, for the contract in use.
fn typing_hint(contract: &str) -> String {
    let name = Path::new(contract).file_name().map_or_else(
        || contract.to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    if name == "kv-contract" {
        "then type lines like `set greeting hello` and `get greeting`".into()
    } else {
        format!("then type lines: each is one input to the contract `{name}`")
    }
}

/// Creates the cluster's node directories, unless they exist already.
pub fn prepare(plan: &Plan, mut new_key: impl FnMut() -> Keypair) -> anyhow::Result<()> {
    let exists: Vec<bool> = (0..plan.nodes)
        .map(|i| Config::path(&node_dir(&plan.dir, i)).exists())
        .collect();
    if exists.iter().all(|e| *e) {
        return Ok(());
    }
    if exists.iter().any(|e| *e) {
        bail!(
            "{} holds some of the {} nodes but not all; remove it or pick another --dir",
            plan.dir.display(),
            plan.nodes
        );
    }
    let keys: Vec<Keypair> = (0..plan.nodes).map(|_| new_key()).collect();
    let unl: Vec<String> = keys.iter().map(|k| k.public().to_hex()).collect();
    let port = |base: u16, i: usize| -> anyhow::Result<u16> {
        u16::try_from(base as usize + i).context("port numbers run past 65535")
    };
    for (i, key) in keys.iter().enumerate() {
        let mut cfg = Config::new_node(key, plan.contract.display().to_string(), String::new());
        cfg.unl = unl.clone();
        cfg.peerport = port(plan.peerport, i)?;
        cfg.pubport = port(plan.pubport, i)?;
        cfg.roundtime = plan.roundtime;
        cfg.metrics = (plan.metrics)
            .map(|base| Ok::<_, anyhow::Error>(format!("127.0.0.1:{}", port(base, i)?)))
            .transpose()?;
        cfg.peers = (0..plan.nodes)
            .filter(|j| *j != i)
            .map(|j| Ok(format!("{}@127.0.0.1:{}", unl[j], port(plan.peerport, j)?)))
            .collect::<anyhow::Result<_>>()?;
        create_node(&node_dir(&plan.dir, i), &cfg)?;
    }
    Ok(())
}

/// Starts `hotpocket run` (this binary) for nodes `0..nodes` under `root`,
/// each logging to its `node.log` (as JSON lines with `json_logs`);
/// `log_level` sets their `RUST_LOG`, else they inherit ours. Each node gets SIGTERM, its clean shutdown, when this
/// process dies, however it dies.
///
/// Must run on the main thread: the kernel sends `PR_SET_PDEATHSIG` when the
/// *thread* that forked the child exits, not the process, so a node forked
/// from a tokio worker or blocking thread would be stopped whenever the
/// runtime retires that thread. The main thread lives exactly as long as the
/// process; callers awaiting this directly in `Runtime::block_on` are on it.
pub fn spawn_nodes(
    root: &Path,
    nodes: usize,
    log_level: Option<&str>,
    json_logs: bool,
) -> anyhow::Result<Vec<tokio::process::Child>> {
    // SAFETY: getpid and gettid have no preconditions.
    let (parent, thread) = unsafe { (libc::getpid(), libc::gettid()) };
    if parent != thread {
        bail!("cluster nodes must be started from the main thread, so they are not stopped when the starting thread exits");
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut children = Vec::new();
    for i in 0..nodes {
        let dir = node_dir(root, i);
        let log = std::fs::File::create(dir.join("node.log"))
            .with_context(|| format!("creating {}/node.log", dir.display()))?;
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("run").arg(&dir);
        if json_logs {
            cmd.args(["--log-format", "json"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(level) = log_level {
            cmd.env("RUST_LOG", level);
        }
        // SAFETY: runs in the forked child before exec; prctl and getppid
        // are async-signal-safe and nothing here allocates.
        unsafe {
            cmd.pre_exec(move || die_with_parent(parent));
        }
        children.push(cmd.spawn().with_context(|| format!("starting node {i}"))?);
    }
    Ok(children)
}

/// In a just-forked child: have the kernel send SIGTERM (which `hotpocket
/// run` takes as a request for a clean shutdown) when the parent dies.
fn die_with_parent(parent: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes nothing but
    // this process's own death signal.
    let set = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if set == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // A parent that died between fork and prctl will never send the signal:
    // this child has already been handed to another process. Refusing to
    // exec makes it exit at once instead of running on unwatched.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// How long `stop_nodes` gives the nodes to shut down cleanly before it
/// kills what is left.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Asks every node to stop (SIGTERM: a clean shutdown) and waits up to
/// `grace` for all of them; a node still running then (stuck, or stopped
/// by SIGSTOP) is killed with SIGKILL, so a cluster always ends. Returns
/// the indexes of the nodes it had to kill.
pub async fn stop_nodes(children: &mut [tokio::process::Child], grace: Duration) -> Vec<usize> {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            // SAFETY: signalling a child process we started.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    let mut killed = Vec::new();
    for (i, c) in children.iter_mut().enumerate() {
        if tokio::time::timeout_at(deadline, c.wait()).await.is_err() {
            // A stopped process takes SIGKILL too; its ledger is as safe as
            // after any crash.
            let _ = c.start_kill();
            let _ = c.wait().await;
            killed.push(i);
        }
    }
    killed
}

/// Runs the cluster until SIGINT, SIGTERM or SIGHUP, or until a node exits,
/// then stops every node: cleanly, or killed when it is not gone `grace`
/// after it was asked.
pub async fn run(
    plan: &Plan,
    grace: Duration,
    json_logs: bool,
    new_key: impl FnMut() -> Keypair,
) -> anyhow::Result<()> {
    prepare(plan, new_key)?;
    // Every node checked before any starts: a bad config (a contract that
    // cannot run, say) stops the command here, not one node a moment later.
    let mut configs = Vec::new();
    for i in 0..plan.nodes {
        configs.push(Config::load(&node_dir(&plan.dir, i)).with_context(|| format!("node {i}"))?);
    }
    let first = configs
        .first()
        .context("the cluster has no nodes (an empty `unl` in node-0's hp.cfg?)")?;
    // Before any node exists, so no stop signal can end this process by its
    // default action while nodes are running.
    let mut stop = StopSignals::install(&[Stop::Int, Stop::Term, Stop::Hup])?;
    let mut children = spawn_nodes(&plan.dir, plan.nodes, None, json_logs)?;
    println!(
        "{} nodes running in {} (logs: {}/node-*/node.log)",
        plan.nodes,
        plan.dir.display(),
        plan.dir.display()
    );
    println!(
        "connect a user:  hotpocket client ws://127.0.0.1:{}",
        first.cfg.pubport
    );
    println!(
        "  or, signed and over TLS:  hotpocket client --protocol hpcore --trust {} wss://127.0.0.1:{}",
        first.key.public().to_hex(),
        first.cfg.pubport
    );
    if let Some(m) = &first.cfg.metrics {
        println!(
            "metrics:  curl http://{m}/metrics   or at a glance:  hotpocket status {}",
            node_dir(&plan.dir, 0).display()
        );
    }
    println!(
        "{}; Ctrl-C stops the cluster",
        typing_hint(&first.cfg.binary)
    );
    let mut exited = Box::pin(futures_util::future::select_all(
        children.iter_mut().map(|c| Box::pin(c.wait())),
    ));
    // From here on writes ignore errors rather than panic (as `println!`
    // does): after a SIGHUP the terminal is gone and writes to it fail, and
    // a panic would drop the children, which kills them instead of letting
    // them shut down.
    let why = tokio::select! {
        signal = stop.recv() => format!("{signal}: stopping the nodes"),
        (status, i, _) = &mut exited => format!(
            "node {i} exited ({status:?}); see {}/node.log",
            node_dir(&plan.dir, i).display()
        ),
    };
    let _ = writeln!(std::io::stderr(), "{why}");
    drop(exited);
    for i in stop_nodes(&mut children, grace).await {
        let _ = writeln!(
            std::io::stderr(),
            "node {i} did not stop within {grace:?}: killed (SIGKILL); its ledger restarts as after a crash"
        );
    }
    let _ = writeln!(std::io::stdout(), "cluster stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hp-plan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn made(dir: &Path, nodes: usize) -> Plan {
        let given = Given {
            nodes: Some(nodes),
            contract: Some(PathBuf::from("/bin/true")),
            ..Given::default()
        };
        let plan = plan(dir.to_path_buf(), &given, || bail!("not asked")).unwrap();
        let mut seed = 0u8;
        prepare(&plan, || {
            seed += 1;
            Keypair::from_seed([seed; 32])
        })
        .unwrap();
        plan
    }

    #[test]
    fn a_new_cluster_takes_the_default_contract() {
        let dir = scratch("new");
        let p = plan(dir, &Given::default(), || Ok(PathBuf::from("/x/kv"))).unwrap();
        assert_eq!(
            (p.nodes, p.contract),
            (DEFAULT_NODES, PathBuf::from("/x/kv"))
        );
        let e = plan(scratch("none"), &Given::default(), || bail!("kv not built"));
        assert!(e.is_err());
    }

    #[test]
    fn an_existing_cluster_resumes_without_flags_and_never_asks_for_the_default() {
        let dir = scratch("resume");
        made(&dir, 3);
        let p = plan(dir.clone(), &Given::default(), || {
            bail!("the default kv-contract is not built")
        })
        .unwrap();
        assert_eq!(p.nodes, 3);
        assert_eq!(p.contract, PathBuf::from("/bin/true"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_hint_fits_the_contract_in_use() {
        assert!(typing_hint("/x/target/release/kv-contract").contains("set greeting hello"));
        let echo = typing_hint("/x/fixtures/contracts/echo.py");
        assert!(!echo.contains("set greeting"), "{echo}");
        assert!(echo.contains("`echo.py`"), "{echo}");
    }
}
