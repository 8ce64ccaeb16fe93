//! `ballast-csi controller|node|call ...`: see csi/README.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ballast_csi::config::{Config, NODE_TOPOLOGY_KEY};
use ballast_csi::node::NodeOptions;
use ballast_csi::publish::is_host_nqn;
use ballast_csi::server::{self, Endpoint, Listener, Mode};
use ballast_csi::Error;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ballast-csi",
    version,
    about = "Kubernetes CSI driver for ballast (CSI v1)"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Identity + Controller services: provisions volumes on the ballastd nodes of --config.
    Controller {
        /// The CSI socket the sidecars connect to (tcp://ADDR:PORT for tests and tools).
        #[arg(long, default_value = "unix:///csi/csi.sock")]
        endpoint: String,
        /// The nodes (JSON; see csi/README.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Identity + Node services: attaches published volumes to this machine (NVMe/TCP),
    /// formats and mounts them.
    Node {
        #[arg(long, default_value = "unix:///csi/csi.sock")]
        endpoint: String,
        /// This machine's name (Kubernetes: the node name): its topology segment
        /// topology.csi.ballast.io/node.
        #[arg(long)]
        node_name: String,
        /// The NVMe host NQN (the node id ControllerPublish allows on a volume); default:
        /// the one in --host-nqn-file, made and written there when the file is missing.
        #[arg(long)]
        host_nqn: Option<String>,
        #[arg(long, default_value = "/etc/nvme/hostnqn")]
        host_nqn_file: PathBuf,
        /// More topology segments, KEY=VALUE (repeatable).
        #[arg(long = "topology", value_parser = parse_kv)]
        topology: Vec<(String, String)>,
        /// NodeGetInfo's max_volumes_per_node (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_volumes: i64,
        /// Seconds the kernel keeps reconnecting to a lost volume before failing its I/O
        /// (-1: forever).
        #[arg(long, default_value_t = 600, allow_hyphen_values = true)]
        ctrl_loss_tmo: i32,
        #[arg(long, default_value_t = 2)]
        reconnect_delay: u32,
        #[arg(long, default_value_t = 5)]
        keep_alive_tmo: u32,
    },
    /// One CSI call, request and answer as JSON (see csi/README.md).
    Call {
        #[arg(long, default_value = "unix:///csi/csi.sock")]
        endpoint: String,
        /// The method, e.g. NodeGetInfo or CreateVolume.
        method: String,
        /// The request as JSON (default {}).
        #[arg(default_value = "{}")]
        request: String,
        /// Seconds before the call is given up (connect included).
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BALLAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The host NQN in `file`, or a new `nqn.2014-08.org.nvmexpress:uuid:<uuid>` written there
/// (what nvme-cli's `gen-hostnqn` makes) when the file does not exist.
fn host_nqn_from(file: &Path) -> ballast_csi::Result<String> {
    match std::fs::read_to_string(file) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let nqn = format!("nqn.2014-08.org.nvmexpress:uuid:{}", uuid::Uuid::new_v4());
            if let Some(d) = file.parent() {
                std::fs::create_dir_all(d)
                    .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
            }
            std::fs::write(file, format!("{nqn}\n"))
                .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
            tracing::info!(file = %file.display(), %nqn, "made a host NQN");
            Ok(nqn)
        }
        Err(e) => Err(Error::io(format!("reading {}", file.display()), e)),
    }
}

fn run(args: Args) -> ballast_csi::Result<()> {
    let (mode, endpoint) = match args.cmd {
        Cmd::Controller { endpoint, config } => {
            (Mode::Controller(Config::load(&config)?), endpoint)
        }
        Cmd::Node {
            endpoint,
            node_name,
            host_nqn,
            host_nqn_file,
            topology,
            max_volumes,
            ctrl_loss_tmo,
            reconnect_delay,
            keep_alive_tmo,
        } => {
            ballast_csi::config::check_node_id(&node_name).map_err(|detail| Error::Config {
                path: "--node-name".into(),
                detail,
            })?;
            let host_nqn = match host_nqn {
                Some(h) => h,
                None => host_nqn_from(&host_nqn_file)?,
            };
            if !is_host_nqn(&host_nqn) || host_nqn.len() > 192 {
                return Err(Error::Config {
                    path: "--host-nqn".into(),
                    detail: format!(
                        "{host_nqn:?} is not an NVMe host NQN (nqn.…, at most 192 bytes here)"
                    ),
                });
            }
            let mut t: BTreeMap<String, String> = topology.into_iter().collect();
            t.insert(NODE_TOPOLOGY_KEY.into(), node_name);
            let opts = NodeOptions {
                host_nqn,
                topology: t,
                max_volumes,
                ctrl_loss_tmo,
                reconnect_delay,
                keep_alive_tmo,
                root: "/".into(),
            };
            (Mode::Node(opts), endpoint)
        }
        Cmd::Call {
            endpoint,
            method,
            request,
            timeout,
        } => return call(&endpoint, &method, &request, timeout),
    };
    let endpoint = Endpoint::parse(&endpoint)?;
    if matches!(mode, Mode::Node(_)) && matches!(endpoint, Endpoint::Tcp(_)) {
        // The node service mounts and unmounts as root: only kubelet's Unix socket (file
        // permissions) may reach it.
        return Err(Error::InvalidArgument(
            "node mode serves a unix:// endpoint only (it mounts as root)".into(),
        ));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let listener = Listener::bind(&endpoint).await?;
        tracing::info!(
            mode = if matches!(mode, Mode::Controller(_)) { "controller" } else { "node" },
            %endpoint,
            version = ballast_csi::PLUGIN_VERSION,
            "ballast-csi serving"
        );
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("signal: shutting down");
        };
        let r = server::serve(mode, listener, shutdown).await;
        if let Endpoint::Unix(p) = &endpoint {
            let _ = std::fs::remove_file(p);
        }
        r
    })
}

fn runtime() -> ballast_csi::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))
}

/// `ballast-csi call`: prints the answer as JSON on stdout; a failed call prints its status
/// on stderr and exits 1.
fn call(endpoint: &str, method: &str, request: &str, timeout: u64) -> ballast_csi::Result<()> {
    let body: serde_json::Value = serde_json::from_str(request)
        .map_err(|e| Error::InvalidArgument(format!("request is not JSON: {e}")))?;
    let e = Endpoint::parse(endpoint)?;
    let rt = runtime()?;
    let v = rt.block_on(async {
        let work = async {
            let ch = ballast_csi::client::connect(&e).await?;
            ballast_csi::client::call(ch, method, body).await
        };
        tokio::time::timeout(std::time::Duration::from_secs(timeout), work)
            .await
            .map_err(|_| Error::Call {
                code: "DeadlineExceeded".into(),
                message: format!("no answer from {e} within {timeout} s"),
            })?
    })?;
    println!("{v}");
    Ok(())
}
