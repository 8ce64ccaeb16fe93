//! `ballast-csi controller|node --endpoint unix:///csi/csi.sock ...`: see csi/README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use ballast_csi::config::{Config, Node, NODE_TOPOLOGY_KEY};
use ballast_csi::rpc::DEFAULT_SOCKET;
use ballast_csi::server::{self, Mode};
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
        /// The CSI socket the sidecars connect to.
        #[arg(long, default_value = "unix:///csi/csi.sock")]
        endpoint: String,
        /// The nodes (JSON; see csi/README.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Identity service for one node (the Node service is not built yet).
    Node {
        #[arg(long, default_value = "unix:///csi/csi.sock")]
        endpoint: String,
        /// This node's id (Kubernetes: the node name).
        #[arg(long)]
        node_id: String,
        /// The local ballastd's JSON-RPC socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        rpc_socket: PathBuf,
    },
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

fn run(args: Args) -> ballast_csi::Result<()> {
    let (mode, endpoint, cfg) = match args.cmd {
        Cmd::Controller { endpoint, config } => {
            (Mode::Controller, endpoint, Config::load(&config)?)
        }
        Cmd::Node {
            endpoint,
            node_id,
            rpc_socket,
        } => {
            let cfg = Config {
                nodes: vec![Node {
                    id: node_id.clone(),
                    rpc_socket,
                    lvs: "lvs0".into(),
                    nvmf: None,
                    topology: [(NODE_TOPOLOGY_KEY.to_string(), node_id)].into(),
                    mirror_host_nqn: None,
                }],
            }
            .validated()
            .map_err(|detail| ballast_csi::Error::Config {
                path: "--node-id".into(),
                detail,
            })?;
            (Mode::Node, endpoint, cfg)
        }
    };
    let path = server::socket_path(&endpoint)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ballast_csi::Error::io("tokio runtime", e))?;
    rt.block_on(async {
        let listener = server::bind(&path)?;
        tracing::info!(
            mode = ?mode,
            endpoint = %path.display(),
            nodes = cfg.nodes.len(),
            version = ballast_csi::PLUGIN_VERSION,
            "ballast-csi serving"
        );
        if mode == Mode::Node {
            tracing::warn!(
                "node mode serves the Identity service only: the Node service is not built yet"
            );
        }
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
        let r = server::serve(mode, &cfg, listener, shutdown).await;
        let _ = std::fs::remove_file(&path);
        r
    })
}
