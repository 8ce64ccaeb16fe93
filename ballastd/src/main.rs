//! `ballastd`: the ballast storage daemon.
//!
//! Claims its JSON-RPC socket first (refusing one a live daemon serves, replacing a stale
//! one; failing at once, before anything listens, if it cannot), starts the reactors, builds
//! the NVMe-oF/TCP target, applies a configuration (a file in SPDK's save_config format given
//! with `-c`, or else the embedded default: a RAM namespace in
//! `nqn.2026-11.io.ballast:default` on 127.0.0.1:4420), serves JSON-RPC on the socket, and
//! runs until SIGINT/SIGTERM or `spdk_kill_instance`, when it shuts down in order: RPC stops,
//! listeners stop, controllers disconnect, in-flight I/O drains, pollers unregister, bdevs
//! close. A configuration that fails to apply is torn down in the same order, so the daemon
//! exits at once rather than after the reactors' drain timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_nvme::target::{Target, TransportOpts};
use ballast_reactor::{parse_core_mask, Runtime, RuntimeConfig};
use ballast_rpc::server::BoundSocket;
use clap::Parser;
use serde_json::Value;

/// The embedded default subsystem's NQN.
pub const DEFAULT_NQN: &str = "nqn.2026-11.io.ballast:default";

#[derive(Parser, Debug)]
#[command(
    name = "ballastd",
    version,
    about = "ballast: a polled-mode NVMe/TCP storage engine"
)]
struct Args {
    /// Reactor cores: a hex mask (0x3) or a list ([0,1], 0-1). The first is the main reactor.
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    cpumask: String,
    /// Do not pin reactor threads to their cores.
    #[arg(long)]
    no_pin: bool,
    /// Spin this long without work before a reactor sleeps (microseconds).
    #[arg(long, default_value_t = 1000)]
    idle_threshold_us: u64,
    /// JSON-RPC socket path.
    #[arg(short = 'r', long = "rpc-socket", default_value = ballast_rpc::DEFAULT_SOCKET)]
    rpc_socket: std::path::PathBuf,
    /// Configuration to apply at start (SPDK save_config JSON); replaces the embedded default.
    #[arg(short = 'c', long = "config")]
    config: Option<std::path::PathBuf>,
    /// Listen address of the embedded default subsystem.
    #[arg(short = 'l', long, default_value = "127.0.0.1:4420")]
    listen: SocketAddr,
    /// Size of the default RAM namespace in MiB (0: no default subsystem).
    #[arg(long, default_value_t = 1024)]
    default_size_mib: u64,
    /// Block size of the default RAM namespace.
    #[arg(long, default_value_t = 512)]
    default_block_size: u32,
    /// NQN of the default subsystem.
    #[arg(long, default_value = DEFAULT_NQN)]
    default_nqn: String,
    /// Transport: maximum queue depth per queue pair.
    #[arg(long, default_value_t = 128)]
    max_queue_depth: u16,
    /// Transport: in-capsule data size of I/O queues (bytes).
    #[arg(long, default_value_t = 8192)]
    in_capsule_data_size: u32,
    /// Transport: maximum I/O size (bytes).
    #[arg(long, default_value_t = 131072)]
    max_io_size: u32,
    /// Transport: never set the C2HData SUCCESS flag (always send a CapsuleResp).
    #[arg(long)]
    no_c2h_success: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BALLAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("ballastd: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let cores = parse_core_mask(&args.cpumask).map_err(|e| e.to_string())?;
    let opts = TransportOpts {
        max_queue_depth: args.max_queue_depth,
        in_capsule_data_size: args.in_capsule_data_size,
        max_io_size: args.max_io_size,
        max_h2c_data: args.max_io_size,
        io_unit_size: args.max_io_size,
        c2h_success: !args.no_c2h_success,
        ..Default::default()
    };
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("config {}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?
        }
        None if args.default_size_mib > 0 => ballast_rpc::config::embedded_default(
            &args.default_nqn,
            args.listen,
            args.default_size_mib,
            args.default_block_size,
            ballast_rpc::methods::transport_json(&opts),
        ),
        None => serde_json::json!({"subsystems": []}),
    };
    // SIGINT/SIGTERM are caught from here on; one that comes while the config is applied
    // stops the daemon as soon as it is up.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| e.to_string())?;
    // The RPC socket is claimed before anything else: a daemon that cannot have it (a live
    // one serves it, its directory is missing) exits at once, before it listens anywhere.
    let socket = ballast_rpc::RpcServer::bind(&args.rpc_socket).map_err(|e| e.to_string())?;
    let rt = Runtime::start(RuntimeConfig {
        cores,
        pin: !args.no_pin,
        idle_threshold: Duration::from_micros(args.idle_threshold_us),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let target = Target::new(rt.handle(), opts).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = ballast_rpc::Context::new(rt.handle(), target.clone(), stop.clone());
    let res = serve(ctx, socket, &config, &mut signals);
    stop.store(true, Ordering::Release);
    tracing::info!("shutting down");
    teardown(&rt, &target);
    tracing::info!("ballastd stopped");
    res
}

/// Applies `config`, serves RPC on `socket`, and waits for a signal; stops the RPC server
/// before returning.
fn serve(
    ctx: Arc<ballast_rpc::Context>,
    socket: BoundSocket,
    config: &Value,
    signals: &mut signal_hook::iterator::Signals,
) -> Result<(), String> {
    ballast_rpc::config::load(&ctx, config).map_err(|e| format!("configuration: {}", e.message))?;
    let server = socket.serve(ctx).map_err(|e| e.to_string())?;
    // The main thread blocks until SIGINT/SIGTERM (spdk_kill_instance raises one too): no
    // periodic wake-ups, so an idle daemon costs no CPU.
    tracing::info!("ballastd ready");
    if let Some(sig) = signals.forever().next() {
        tracing::info!(sig, "signal received");
    }
    server.stop();
    Ok(())
}

/// Stops everything the target runs, in order: listeners and controllers, connections, the
/// reactors (draining in-flight I/O), then subsystems and bdevs. Listeners must be gone before
/// the reactors stop, or their pollers hold shutdown for the whole drain timeout.
fn teardown(rt: &Runtime, target: &Target) {
    target.shutdown();
    for core in rt.cores() {
        let _ = rt.send_retry(core, || {
            ballast_nvme::target::tcp::close_all_local("daemon shutting down")
        });
    }
    rt.shutdown();
    for s in target.subsystems() {
        let _ = target.delete_subsystem(&s.nqn);
    }
    for b in ballast_engine::bdev::list() {
        let _ = ballast_engine::bdev::delete(b.name());
    }
}
