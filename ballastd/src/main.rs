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
//!
//! With `--save-config PATH` (checked before anything starts: its directory must exist and
//! take a new file), the configuration is written to PATH once the start-up configuration is
//! applied (not at all if it fails to apply, so a `-c PATH` that fails part-way is kept), and
//! then after every RPC that changed it, before that RPC is answered.
//!
//! Transport options, highest precedence first: what a config's `nvmf_create_transport`
//! sets; the transport flags (`--max-queue-depth`, `--in-capsule-data-size`,
//! `--max-io-size`, `--no-c2h-success`); the built-in defaults. The embedded default's flags
//! (`-l`, `--default-*`) are refused with `-c`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_nvme::target::{Target, TransportOpts};
use ballast_reactor::{parse_core_mask, Runtime, RuntimeConfig};
use ballast_rpc::server::BoundSocket;
use clap::{CommandFactory, Parser};
use serde_json::Value;

/// The embedded default subsystem's NQN.
pub const DEFAULT_NQN: &str = "nqn.2026-11.io.ballast:default";
/// The embedded default subsystem's listen address.
const DEFAULT_LISTEN: &str = "127.0.0.1:4420";
/// Size of the embedded default's RAM namespace (MiB).
const DEFAULT_SIZE_MIB: u64 = 1024;
/// Block size of the embedded default's RAM namespace.
const DEFAULT_BLOCK_SIZE: u32 = 512;

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
    /// Keep the configuration in this file (mode 0600): written once the start-up config is
    /// applied, then after every RPC that changed it (what save_config returns). Usually the
    /// -c file.
    #[arg(long = "save-config", value_name = "PATH")]
    save_config: Option<std::path::PathBuf>,
    /// Listen address of the embedded default subsystem [default: 127.0.0.1:4420]. Not
    /// with -c.
    #[arg(short = 'l', long)]
    listen: Option<SocketAddr>,
    /// Size of the default RAM namespace in MiB (0: no default subsystem) [default: 1024].
    /// Not with -c.
    #[arg(long)]
    default_size_mib: Option<u64>,
    /// Block size of the default RAM namespace [default: 512]. Not with -c.
    #[arg(long)]
    default_block_size: Option<u32>,
    /// NQN of the default subsystem [default: nqn.2026-11.io.ballast:default]. Not with -c.
    #[arg(long)]
    default_nqn: Option<String>,
    /// Transport: maximum queue depth per queue pair [default: 128]. With -c, applies unless
    /// the config's nvmf_create_transport sets it.
    #[arg(long)]
    max_queue_depth: Option<u16>,
    /// Transport: in-capsule data size of I/O queues (bytes) [default: 8192]. With -c,
    /// applies unless the config's nvmf_create_transport sets it.
    #[arg(long)]
    in_capsule_data_size: Option<u32>,
    /// Transport: maximum I/O size (bytes) [default: 131072]. With -c, applies unless the
    /// config's nvmf_create_transport sets it.
    #[arg(long)]
    max_io_size: Option<u32>,
    /// Transport: never set the C2HData SUCCESS flag (always send a CapsuleResp). With -c,
    /// applies unless the config's nvmf_create_transport sets c2h_success.
    #[arg(long)]
    no_c2h_success: bool,
}

impl Args {
    /// Refuses the embedded default's flags together with `-c` (exit 2, clap's usage error).
    /// Done by hand rather than with clap's `conflicts_with` so the message can say why.
    fn check(&self) {
        if self.config.is_none() {
            return;
        }
        let given = [
            ("-l", self.listen.is_some(), "the listeners"),
            (
                "--default-size-mib",
                self.default_size_mib.is_some(),
                "the bdevs",
            ),
            (
                "--default-block-size",
                self.default_block_size.is_some(),
                "the bdevs",
            ),
            (
                "--default-nqn",
                self.default_nqn.is_some(),
                "the subsystems",
            ),
        ];
        if let Some((flag, _, what)) = given.into_iter().find(|g| g.1) {
            Args::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "{flag} applies to the embedded default only; with -c {what} come \
                         from the config file"
                    ),
                )
                .exit();
        }
    }

    /// The transport options the flags ask for, built-in defaults for the rest.
    fn transport_opts(&self) -> TransportOpts {
        let d = TransportOpts::default();
        let max_io_size = self.max_io_size.unwrap_or(d.max_io_size);
        TransportOpts {
            max_queue_depth: self.max_queue_depth.unwrap_or(d.max_queue_depth),
            in_capsule_data_size: self.in_capsule_data_size.unwrap_or(d.in_capsule_data_size),
            max_io_size,
            max_h2c_data: max_io_size,
            io_unit_size: max_io_size,
            c2h_success: !self.no_c2h_success,
            ..d
        }
    }
}

/// Logs to stderr through a filter (`BALLAST_LOG`, default info) that `log_set_print_level`
/// can swap at run time.
fn install_logging() {
    use tracing_subscriber::{fmt, prelude::*, reload, EnvFilter};
    let filter = EnvFilter::try_from_env("BALLAST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    ballast_rpc::log::install_hook(Box::new(move |directive: &str| {
        handle
            .reload(EnvFilter::new(directive))
            .map_err(|e| format!("cannot change the log filter: {e}"))
    }));
}

fn main() {
    install_logging();
    let args = Args::parse();
    args.check();
    if let Err(e) = run(args) {
        eprintln!(
            "ballastd: {}",
            ballast_rpc::server::cap(&e.to_string(), ballast_rpc::server::MAX_ERROR_MESSAGE)
        );
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let cores = parse_core_mask(&args.cpumask).map_err(|e| e.to_string())?;
    // A file that could never be written is refused now, before anything starts.
    let keep = match &args.save_config {
        Some(path) => Some(ballast_rpc::ConfigFile::new(path).map_err(|e| e.to_string())?),
        None => None,
    };
    if let Some(file) = &keep {
        let same = |c: &std::path::Path| {
            let id = |p: &std::path::Path| std::fs::canonicalize(p).ok();
            id(c).is_some() && id(c) == id(file.path())
        };
        if file.path().exists() && !args.config.as_deref().is_some_and(same) {
            tracing::warn!(
                path = %file.path().display(),
                "--save-config replaces the configuration in this file (it is not the -c file)"
            );
        }
    }
    let opts = args.transport_opts();
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("config {}: {e}", path.display()))?;
            // The transport flags reach the config's nvmf_create_transport through the
            // target's default options (`opts`), which fill what the entry leaves out.
            serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("config {}: {e}", path.display()))?
        }
        None => match args.default_size_mib.unwrap_or(DEFAULT_SIZE_MIB) {
            0 => serde_json::json!({"subsystems": []}),
            size_mib => ballast_rpc::config::embedded_default(
                args.default_nqn.as_deref().unwrap_or(DEFAULT_NQN),
                args.listen
                    .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a socket address")),
                size_mib,
                args.default_block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
                ballast_rpc::methods::transport_json(&opts),
            ),
        },
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
    // A bdev that holds an lvol store brings it back when it appears (config replay, attach).
    ballast_engine::backend::lvol::enable_examine(Some(&rt.handle()));
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = ballast_rpc::Context::new(rt.handle(), target.clone(), stop.clone());
    let res = serve(ctx, socket, &config, keep, &mut signals);
    stop.store(true, Ordering::Release);
    tracing::info!("shutting down");
    teardown(&rt, &target);
    tracing::info!("ballastd stopped");
    res
}

/// Applies `config`, writes it to `keep` (if given) once all of it is applied, serves RPC on
/// `socket` (keeping the configuration in `keep` as it changes), and waits for a signal;
/// stops the RPC server before returning.
fn serve(
    ctx: Arc<ballast_rpc::Context>,
    socket: BoundSocket,
    config: &Value,
    keep: Option<ballast_rpc::ConfigFile>,
    signals: &mut signal_hook::iterator::Signals,
) -> Result<(), String> {
    if let Err(e) = ballast_rpc::config::load(&ctx, config) {
        // The file may be the one replayed: what failed to apply is not written over it.
        if let Some(file) = &keep {
            tracing::error!(
                path = %file.path().display(),
                "the configuration failed to apply; the saved configuration is kept as it was"
            );
        }
        return Err(format!("configuration: {}", e.message));
    }
    let socket = match keep {
        Some(file) => {
            file.save(&ctx);
            socket.keep_config(file)
        }
        None => socket,
    };
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
    // Lvol stores write what is queued and stop their committers while the reactors run.
    ballast_engine::backend::lvol::enable_examine(None);
    ballast_engine::backend::lvol::close_all();
    rt.shutdown();
    for s in target.subsystems() {
        let _ = target.delete_subsystem(&s.nqn);
    }
    for b in ballast_engine::bdev::list() {
        let _ = ballast_engine::bdev::delete(b.name());
    }
}
