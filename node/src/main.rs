//! `hotpocket`: run a node, create one, run a local network, or talk to a
//! node as a user.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use hotpocket_node::cli::signals::{Stop, StopSignals};
use hotpocket_node::cli::{bench, bench_memory, client, client_hp, cluster, status};
use hotpocket_node::real::config::{check_binary, Config};
use hotpocket_node::real::{random_key, runtime, OsEntropy};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "hotpocket",
    version,
    about = "Hot Pocket node: UNL consensus on a contract's inputs, state and outputs",
    long_about = "Hot Pocket node: runs a contract (any executable) on a set of nodes that agree, \
round by round, on its inputs, state and outputs. Logs go to stderr; set RUST_LOG (e.g. \
RUST_LOG=debug) to change how much."
)]
struct Cli {
    /// How log lines (stderr) are written: `text` for people, `json` (one
    /// object per line) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    /// The seed prototype's: `helo`, inputs vouched for by the node.
    Prototype,
    /// hpcore's (what its official JS client speaks): signed inputs,
    /// statuses, outputs proved by the UNL's signatures, reads.
    Hpcore,
}

#[derive(Subcommand)]
enum Command {
    /// Create a node directory: a key pair, cfg/hp.cfg, a self-signed TLS certificate for
    /// users' wss (cfg/tlscert.pem, cfg/tlskey.pem) and the contract's state directory.
    New {
        /// The node directory to create.
        dir: PathBuf,
        /// The contract executable (default: the kv example contract,
        /// `kv-contract` beside this binary).
        #[arg(long, value_name = "PATH")]
        contract: Option<PathBuf>,
        /// Port for peers.
        #[arg(long, default_value_t = cluster::DEFAULT_PEERPORT)]
        peerport: u16,
        /// Websocket port for users.
        #[arg(long, default_value_t = cluster::DEFAULT_PUBPORT)]
        pubport: u16,
        /// Serve Prometheus metrics (GET /metrics) at this address, e.g.
        /// 127.0.0.1:9460; `hotpocket status` reads them [default: none].
        #[arg(long, value_name = "HOST:PORT")]
        metrics: Option<String>,
        /// Arguments for the contract, after a literal `--`, so they are
        /// never taken for this command's flags: `hotpocket new DIR
        /// --contract c.py -- --verbose`. None may hold whitespace (hp.cfg's
        /// `binargs` is split on it).
        #[arg(last = true, value_name = "CONTRACT_ARGS")]
        contract_args: Vec<String>,
    },
    /// Run the node in DIR until Ctrl-C (or SIGTERM or SIGHUP), then shut down cleanly.
    Run {
        /// A directory made by `hotpocket new` or `hotpocket cluster`.
        dir: PathBuf,
    },
    /// Show a node at a glance: its key, UNL, chain on disk and, when its hp.cfg sets a
    /// `metrics` address, what the running node is doing (round, sync, peers, users, closes,
    /// rollbacks, contract runs).
    Status {
        /// The node directory.
        dir: PathBuf,
    },
    /// Print a new ed25519 key pair as JSON ({"pubkey", "seckey"}).
    Keygen,
    /// Connect to a node as a user: each stdin line is one input, each output is printed.
    ///
    /// In the prototype's protocol (the default) each stdin line is one
    /// input, vouched for by the node, and outputs are printed as they come.
    /// With `--protocol hpcore` each line is an input the client signs,
    /// unless it is `/read TEXT` (the contract answers on the node's state,
    /// changing nothing), `/stat`, `/lcl` or `/ledger SEQ`; outputs are
    /// printed only when 80% of the UNL signed them, and statuses go to
    /// stderr.
    Client {
        /// The node's user endpoint, e.g. ws://127.0.0.1:8080 or
        /// wss://127.0.0.1:8080 (any certificate is taken: a node's is
        /// self-signed; with hpcore's protocol `--trust` says who the node
        /// must be).
        url: String,
        /// The user protocol to speak.
        #[arg(long, value_enum, default_value_t = Protocol::Prototype)]
        protocol: Protocol,
        /// With hpcore's protocol: a node key ("ed" and 64 hex, or 64 hex)
        /// the node must prove it holds; repeat for several. Without one,
        /// any node is taken and the UNL it reports decides which outputs
        /// are.
        #[arg(long)]
        trust: Vec<String>,
        /// With hpcore's protocol: the contract id the node must serve.
        #[arg(long)]
        contract: Option<String>,
        /// A file holding the user's secret key (hex, or `hotpocket keygen` output);
        /// a fresh key is made when omitted.
        #[arg(long)]
        key: Option<PathBuf>,
        /// After stdin ends, exit once no message has come for this many seconds.
        #[arg(long, default_value_t = 5)]
        linger: u64,
    },
    /// Create N nodes with one UNL on loopback, run them, and say how to connect.
    ///
    /// Run again on the same --dir, it resumes that cluster as it is on
    /// disk; a flag that contradicts it is refused, not ignored.
    Cluster {
        /// How many nodes [default: 5, or as many as the existing cluster has].
        #[arg(long)]
        nodes: Option<usize>,
        /// Where the node directories go (resumed if they exist).
        #[arg(long, default_value = "hp-cluster")]
        dir: PathBuf,
        /// The contract executable [default: the kv example contract].
        #[arg(long)]
        contract: Option<PathBuf>,
        /// Round length, ms [default: 1000].
        #[arg(long)]
        roundtime: Option<u64>,
        /// Peer port of node 0; node i uses this plus i [default: 22860].
        #[arg(long)]
        peerport: Option<u16>,
        /// User port of node 0; node i uses this plus i [default: 8080].
        #[arg(long)]
        pubport: Option<u16>,
        /// Serve Prometheus metrics: node 0 on 127.0.0.1 at this port, node i at
        /// this plus i (`hotpocket status` reads them) [default: none].
        #[arg(long)]
        metricsport: Option<u16>,
        /// Seconds a node gets to shut down cleanly when the cluster stops;
        /// one still running then is killed (SIGKILL).
        #[arg(long, value_name = "SECS", default_value_t = cluster::STOP_GRACE.as_secs(),
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        stop_timeout: u64,
    },
    /// Measure a local cluster under load from concurrent users (build with --release).
    Bench {
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Round length, ms.
        #[arg(long, default_value_t = 100)]
        roundtime: u64,
        /// Percent of the round for each of stages 1-3 (stage 0, which also
        /// holds the contract run, gets the rest).
        #[arg(long, default_value_t = 25)]
        stage_slice: u64,
        /// Concurrent users, spread over the nodes.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Inputs each user sends a second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Most unanswered inputs a user lets pile up.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Send `get` commands (the contract only reads) instead of `set`.
        #[arg(long)]
        reads: bool,
        /// Seconds of load before measuring (the contract creates its files).
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Seconds measured.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// The contract (default: the kv example contract).
        #[arg(long)]
        contract: Option<PathBuf>,
        #[arg(long, default_value_t = 24860)]
        peerport: u16,
        #[arg(long, default_value_t = 10080)]
        pubport: u16,
        /// The users' protocol: hpcore's signs every input and is told its
        /// status (`round_inputs_overflow` when the node is busy).
        #[arg(long, value_enum, default_value_t = Protocol::Prototype)]
        protocol: Protocol,
        /// Ledgers each node keeps whole in memory (hp.cfg's
        /// `memory_ledgers`): a large value keeps every ledger, to compare.
        #[arg(long, default_value_t = 64)]
        memory_ledgers: u64,
    },
    /// Measure a node's memory (RSS) under two attacks, and check it against a bound (build with --release).
    ///
    /// Starts a local cluster whose contract answers each user with a large
    /// output every run, and measures node 0's RSS (/proc: VmRSS sampled,
    /// and VmHWM reset per phase) idle, then under each attack:
    ///
    /// A, stalled frames: an insider holding node 1's key (from its hp.cfg)
    /// keeps --stall-sessions proven peer sessions open on node 0, each
    /// declaring a 16 MiB frame and stalling. The node holds at most a 64
    /// KiB read chunk per session until the body's bytes arrive, and cuts
    /// the session after 10 s: 30 sessions' buffers come to about 2 MiB.
    /// The bound, 64 MiB over the baseline, is far under the 480 MiB the
    /// declared frames would take if the node reserved what is declared.
    ///
    /// B, output amplification: one user with --connections connections
    /// that never read asks for an output each round. The node queues at
    /// most 8 MiB (or one larger output) per connection, and 256 MiB of
    /// outputs queued or being written for all users; a connection too slow
    /// for that is closed. The bound is those 256 MiB plus 128 MiB, eight
    /// outputs at the 16 MiB contract output limit, for the node's own
    /// copies (the run being read, results waiting for their verdict, the
    /// one being handed out, the copy a websocket frames) and what the
    /// allocator keeps of freed ones: 384 MiB over the baseline. Before
    /// it, a reference phase (B0) sends the same outputs to a user that
    /// reads them: what they cost the node without an attack.
    ///
    /// A stalled session that sends most of its frame first
    /// (--stall-fill-kib) is held as it arrives, up to 16 MiB for 10 s;
    /// a key has one such session at a time (a newly proven one ends the
    /// one before), so that variant is bounded by the UNL's size, not by
    /// the attacker's connections, but is over the +64 MiB meant for
    /// stalls that send nothing (about +100 MiB with one key).
    ///
    /// Exits non-zero if a peak is over its bound (or --max-rss-mib).
    BenchMemory(bench_memory::Options),
}

fn main() {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = rt.block_on(real_main(cli)) {
        eprintln!("error: {}", hotpocket_node::cli::report(&e));
        std::process::exit(1);
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let mut entropy = OsEntropy;
    let log_format = cli.log_format;
    match cli.command {
        Command::New {
            dir,
            contract,
            peerport,
            pubport,
            metrics,
            contract_args,
        } => {
            let binary = contract_or_default(contract)?;
            check_binary(&binary).map_err(anyhow::Error::msg)?;
            if let Some(a) = contract_args
                .iter()
                .find(|a| a.is_empty() || a.contains(char::is_whitespace))
            {
                bail!("contract argument {a:?} is empty or holds whitespace, which hp.cfg's `binargs` (split on whitespace) cannot keep");
            }
            let key = random_key(&mut entropy);
            let mut cfg =
                Config::new_node(&key, binary.display().to_string(), contract_args.join(" "));
            cfg.peerport = peerport;
            cfg.pubport = pubport;
            cfg.metrics = metrics;
            cfg.metrics_addr()
                .map_err(|why| anyhow::anyhow!("--metrics: {why}"))?;
            cluster::create_node(&dir, &cfg)?;
            println!(
                "created node {} in {}",
                key.public().to_hex(),
                dir.display()
            );
            println!("run it with: hotpocket run {}", dir.display());
            Ok(())
        }
        Command::Run { dir } => {
            // Registered before the node starts, so a stop that comes while
            // it starts up is still a clean one.
            let mut stop = StopSignals::install(&[Stop::Int, Stop::Term, Stop::Hup])?;
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                let signal = stop.recv().await;
                tracing::info!(%signal, "shutting down");
                let _ = tx.send(true);
            });
            runtime::run_node(&dir, rx).await
        }
        Command::Status { dir } => {
            let now = hotpocket_node::real::users_ws::now_ms();
            let dir2 = dir.clone();
            let text = tokio::task::spawn_blocking(move || status::render(&dir2, now))
                .await?
                .with_context(|| format!("{} is not a node directory", dir.display()))?;
            print!("{text}");
            Ok(())
        }
        Command::Keygen => {
            let key = random_key(&mut entropy);
            println!(
                "{}",
                serde_json::json!({"pubkey": key.public().to_hex(), "seckey": key.secret_hex()})
            );
            Ok(())
        }
        Command::Client {
            url,
            protocol,
            trust,
            contract,
            key,
            linger,
        } => {
            let key = match key {
                Some(path) => client::read_key(&path)?,
                None => {
                    let k = random_key(&mut entropy);
                    eprintln!("user key {}", k.public().to_hex());
                    k
                }
            };
            let linger = std::time::Duration::from_secs(linger);
            match protocol {
                Protocol::Prototype => {
                    if !trust.is_empty() || contract.is_some() {
                        bail!("--trust and --contract are for --protocol hpcore");
                    }
                    client::run(&url, &key, linger).await
                }
                Protocol::Hpcore => {
                    let trust = (trust.iter())
                        .map(|t| client::parse_node_key(t))
                        .collect::<anyhow::Result<_>>()?;
                    let opts = client_hp::Options { trust, contract };
                    client_hp::run(&url, &key, linger, opts).await
                }
            }
        }
        Command::Cluster {
            nodes,
            dir,
            contract,
            roundtime,
            peerport,
            pubport,
            metricsport,
            stop_timeout,
        } => {
            let given = cluster::Given {
                nodes,
                contract: contract.map(|c| absolute(&c)).transpose()?,
                roundtime,
                peerport,
                pubport,
                metrics: metricsport,
            };
            let plan = cluster::plan(dir, &given, default_contract)?;
            let grace = std::time::Duration::from_secs(stop_timeout);
            let json = matches!(log_format, LogFormat::Json);
            cluster::run(&plan, grace, json, || random_key(&mut entropy)).await
        }
        Command::Bench {
            nodes,
            roundtime,
            stage_slice,
            clients,
            rate,
            window,
            reads,
            warmup,
            seconds,
            contract,
            peerport,
            pubport,
            protocol,
            memory_ledgers,
        } => {
            let contract = contract_or_default(contract)?;
            let hpcore = matches!(protocol, Protocol::Hpcore);
            if hpcore && reads {
                bail!("--reads is for the prototype's protocol: hpcore's bench sends `set`s");
            }
            let o = bench::Options {
                nodes,
                roundtime,
                stage_slice,
                clients,
                rate,
                window,
                write: !reads,
                warmup,
                seconds,
                contract,
                peerport,
                pubport,
                hpcore,
                memory_ledgers,
            };
            bench::run(&o).await
        }
        Command::BenchMemory(o) => bench_memory::run(&o).await,
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("contract {}", p.display()))
}

/// `--contract`, made absolute, or the kv example contract.
fn contract_or_default(contract: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match contract {
        Some(c) => absolute(&c),
        None => default_contract(),
    }
}

/// The kv example contract, built beside this binary by `cargo build`.
fn default_contract() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let kv = exe.with_file_name("kv-contract");
    if !kv.is_file() {
        bail!(
            "the example contract {} is not built; run `cargo build --release` in the workspace, or pass --contract",
            kv.display()
        );
    }
    Ok(kv)
}
