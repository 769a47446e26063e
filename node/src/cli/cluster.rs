//! `hotpocket cluster`: N nodes with one UNL on loopback, each a child
//! process running `hotpocket run`, logging to its own directory.

use crate::cli::signals::{Stop, StopSignals};
use crate::crypto::Keypair;
use crate::real::config::Config;
use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

pub struct Plan {
    pub nodes: usize,
    pub dir: PathBuf,
    pub contract: PathBuf,
    pub roundtime: u64,
    pub peerport: u16,
    pub pubport: u16,
}

/// Writes a new node directory: config and an empty state directory.
pub fn create_node(dir: &Path, cfg: &Config) -> anyhow::Result<()> {
    if Config::path(dir).exists() {
        bail!("{} already holds a node", dir.display());
    }
    std::fs::create_dir_all(dir.join("state"))
        .with_context(|| format!("creating {}", dir.display()))?;
    cfg.save(dir)
        .with_context(|| format!("writing {}", Config::path(dir).display()))
}

pub fn node_dir(root: &Path, i: usize) -> PathBuf {
    root.join(format!("node-{i}"))
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
        cfg.peers = (0..plan.nodes)
            .filter(|j| *j != i)
            .map(|j| Ok(format!("127.0.0.1:{}", port(plan.peerport, j)?)))
            .collect::<anyhow::Result<_>>()?;
        create_node(&node_dir(&plan.dir, i), &cfg)?;
    }
    Ok(())
}

/// Starts `hotpocket run` (this binary) for nodes `0..nodes` under `root`,
/// each logging to its `node.log`; `log_level` sets their `RUST_LOG`, else
/// they inherit ours. Each node gets SIGTERM, its clean shutdown, when this
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
        cmd.arg("run")
            .arg(&dir)
            .stdin(Stdio::null())
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

/// Asks every node to stop (SIGTERM: a clean shutdown) and waits for it.
pub async fn stop_nodes(children: &mut [tokio::process::Child]) {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            // SAFETY: signalling a child process we started.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }
    for c in children.iter_mut() {
        let _ = c.wait().await;
    }
}

/// Runs the cluster until SIGINT, SIGTERM or SIGHUP, or until a node exits,
/// then stops every node cleanly.
pub async fn run(plan: &Plan, new_key: impl FnMut() -> Keypair) -> anyhow::Result<()> {
    prepare(plan, new_key)?;
    // Before any node exists, so no stop signal can end this process by its
    // default action while nodes are running.
    let mut stop = StopSignals::install(&[Stop::Int, Stop::Term, Stop::Hup])?;
    let mut children = spawn_nodes(&plan.dir, plan.nodes, None)?;
    let first = Config::load(&node_dir(&plan.dir, 0))?;
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
        "then type lines like `set greeting hello` and `get greeting`; Ctrl-C stops the cluster"
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
    stop_nodes(&mut children).await;
    let _ = writeln!(std::io::stdout(), "cluster stopped");
    Ok(())
}
