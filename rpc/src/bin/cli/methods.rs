//! One subcommand per JSON-RPC method, with rpc.py's flag letters, and [`params_for`], the pure
//! mapping from a parsed subcommand to the method name and the `params` SPDK's schema expects.
//!
//! Keys that the operator did not give are left out rather than sent as `null`, as rpc.py does,
//! so the daemon applies its own defaults; a method whose params would be `{}` sends none.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Subcommand};
use serde_json::{Map, Value};

/// The well-known discovery NQN; rpc.py accepts `discovery` as a shortcut for it.
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// A JSON-RPC method and its arguments, as given on the command line.
#[derive(Debug, Subcommand)]
pub enum Method {
    /// List the methods the daemon serves.
    #[command(name = "rpc_get_methods")]
    RpcGetMethods {
        /// Only the methods callable in the current state.
        #[arg(short, long)]
        current: bool,
    },
    /// Show the daemon's version (in SPDK's shape).
    #[command(name = "spdk_get_version")]
    SpdkGetVersion,
    /// Show the reactors, their cores and the threads on them.
    #[command(name = "framework_get_reactors")]
    FrameworkGetReactors,
    /// Show per-thread busy/idle statistics.
    #[command(name = "thread_get_stats")]
    ThreadGetStats,
    /// Wait until the daemon has finished initialising.
    #[command(name = "framework_wait_init")]
    FrameworkWaitInit,
    /// Print the current configuration in SPDK's JSON config format. It holds crypto keys
    /// with their material, so it is written private: mode 0600 (also when stdout is
    /// redirected to a file).
    #[command(
        name = "save_config",
        after_help = "Examples:\n  ballast-rpc save_config -o ballast.json\n  \
                      ballast-rpc save_config > ballast.json"
    )]
    SaveConfig {
        /// Write the configuration to FILE (created or replaced with mode 0600), not stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Apply a JSON config (SPDK's format, as save_config prints it) read from stdin.
    #[command(
        name = "load_config",
        after_help = "Example: ballast-rpc load_config < config.json"
    )]
    LoadConfig,
    /// Shut the daemon down cleanly.
    #[command(name = "spdk_kill_instance")]
    SpdkKillInstance {
        /// Signal name, e.g. SIGTERM or SIGINT.
        sig_name: String,
    },

    /// Show bdevs (all, or the one named).
    #[command(name = "bdev_get_bdevs")]
    BdevGetBdevs {
        /// Name of the bdev to show.
        #[arg(short = 'b', long)]
        name: Option<String>,
        /// Milliseconds to wait for the named bdev to appear.
        #[arg(short, long, requires = "name")]
        timeout: Option<u64>,
    },
    /// Show bdev I/O statistics (all, or the one named).
    #[command(name = "bdev_get_iostat")]
    BdevGetIostat {
        /// Name of the bdev to show.
        #[arg(short = 'b', long)]
        name: Option<String>,
    },
    /// Create a RAM-backed bdev; prints its name.
    #[command(
        name = "bdev_malloc_create",
        after_help = "Example: ballast-rpc bdev_malloc_create -b Malloc0 64 512"
    )]
    BdevMallocCreate {
        /// Name of the bdev (default: chosen by the daemon, e.g. Malloc0).
        #[arg(short = 'b', long)]
        name: Option<String>,
        /// UUID of the bdev.
        #[arg(short, long)]
        uuid: Option<String>,
        /// Size in MiB (a number > 0; fractions allowed).
        #[arg(value_parser = parse_size_mb)]
        total_size: f64,
        /// Data block size in bytes.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        block_size: u32,
    },
    /// Delete a malloc bdev.
    #[command(name = "bdev_malloc_delete")]
    BdevMallocDelete {
        /// Name of the malloc bdev.
        name: String,
    },
    /// Create a bdev that discards writes and reads zeroes; prints its name.
    #[command(
        name = "bdev_null_create",
        after_help = "Example: ballast-rpc bdev_null_create Null0 1024 4096"
    )]
    BdevNullCreate {
        /// Name of the bdev.
        name: String,
        /// Size in MiB.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        total_size: u64,
        /// Data block size in bytes.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        block_size: u32,
        /// UUID of the bdev.
        #[arg(short, long)]
        uuid: Option<String>,
    },
    /// Delete a null bdev.
    #[command(name = "bdev_null_delete")]
    BdevNullDelete {
        /// Name of the null bdev.
        name: String,
    },
    /// Create a bdev on a file or block device through io_uring; prints its name.
    #[command(
        name = "bdev_uring_create",
        after_help = "Example: ballast-rpc bdev_uring_create /dev/nvme0n1 Uring0 4096"
    )]
    BdevUringCreate {
        /// Path to the device or file.
        filename: String,
        /// Name of the bdev.
        name: String,
        /// Block size in bytes (default: the device's logical block size).
        block_size: Option<u32>,
        /// UUID of the bdev.
        #[arg(short, long)]
        uuid: Option<String>,
    },
    /// Delete a uring bdev.
    #[command(name = "bdev_uring_delete")]
    BdevUringDelete {
        /// Name of the uring bdev.
        name: String,
    },

    /// Create a compressed bdev over a base bdev; prints its name. Opens the compressed
    /// volume the base holds, or formats the base as one.
    #[command(
        name = "bdev_compress_create",
        after_help = "Example: ballast-rpc bdev_compress_create -b Malloc0 -a zstd -L 3\n\n\
                      ballast keeps the volume's metadata on the base bdev: SPDK's pm_path is \
                      accepted and ignored."
    )]
    BdevCompressCreate {
        /// Name of the base bdev.
        #[arg(short = 'b', long)]
        base_bdev_name: String,
        /// Name of the compressed bdev (default: COMP_<base>).
        #[arg(short, long)]
        name: Option<String>,
        /// Compression algorithm: lz4 (default) or zstd.
        #[arg(short, long, alias = "comp-algo", value_parser = ["lz4", "zstd"])]
        algorithm: Option<String>,
        /// Zstd level, 1 (fastest) to 19.
        #[arg(short = 'L', long, alias = "comp-level")]
        level: Option<i32>,
        /// Chunk size in bytes: a power of two from 4096 to 131072 (default 16384).
        #[arg(long)]
        chunk_size: Option<u32>,
        /// Accepted for rpc.py compatibility and ignored by ballast.
        #[arg(short, long)]
        pm_path: Option<String>,
        /// rpc.py's logical block size: accepted and ignored (the compressed bdev has its
        /// base's block size).
        #[arg(short = 'l', long)]
        lb_size: Option<u32>,
        /// Format the base even if it holds data but no compressed volume.
        #[arg(long)]
        force: bool,
    },
    /// Delete a compressed bdev (the compressed data stays on its base).
    #[command(name = "bdev_compress_delete")]
    BdevCompressDelete {
        /// Name of the compressed bdev.
        name: String,
    },
    /// Register an encryption key (rpc.py's flags). The key material is never printed back.
    #[command(
        name = "accel_crypto_key_create",
        after_help = "Example: ballast-rpc accel_crypto_key_create -c AES_XTS -k <64 hex> -e <64 hex> -n k0"
    )]
    AccelCryptoKeyCreate {
        /// Cipher: AES_XTS.
        #[arg(short, long)]
        cipher: String,
        /// Key 1 in hex (32 hex digits for AES-XTS-128, 64 for AES-XTS-256).
        #[arg(short, long)]
        key: String,
        /// Key 2 (the tweak key) in hex, same length, different from key 1.
        #[arg(short = 'e', long)]
        key2: String,
        /// Key name.
        #[arg(short, long)]
        name: String,
        /// Tweak mode (only SIMPLE_LBA).
        #[arg(short, long)]
        tweak_mode: Option<String>,
    },
    /// List keys (names and ciphers, never the material).
    #[command(name = "accel_crypto_keys_get")]
    AccelCryptoKeysGet {
        /// Only this key.
        #[arg(short, long)]
        key_name: Option<String>,
    },
    /// Destroy a key (refused while a crypto bdev uses it).
    #[command(name = "accel_crypto_key_destroy")]
    AccelCryptoKeyDestroy {
        /// Key name.
        #[arg(short = 'n', long)]
        key_name: String,
    },
    /// Create an AES-XTS encrypted bdev over a base bdev; prints its name.
    #[command(name = "bdev_crypto_create")]
    BdevCryptoCreate {
        /// Name of the base bdev.
        base_bdev_name: String,
        /// Name of the crypto bdev.
        name: String,
        /// Name of a key made with accel_crypto_key_create.
        #[arg(short = 'n', long)]
        key_name: String,
    },
    /// Delete a crypto bdev (its ciphertext stays on the base).
    #[command(name = "bdev_crypto_delete")]
    BdevCryptoDelete {
        /// Name of the crypto bdev.
        name: String,
    },
    /// Show compressed bdevs and their space figures (all, or the one named).
    #[command(name = "bdev_compress_get_stats")]
    BdevCompressGetStats {
        /// Name of the compressed bdev.
        #[arg(short, long)]
        name: Option<String>,
    },

    /// Create an NVMe-oF transport (TCP).
    #[command(
        name = "nvmf_create_transport",
        after_help = "Example: ballast-rpc nvmf_create_transport -t TCP -c 8192 -q 128"
    )]
    NvmfCreateTransport {
        /// Transport type.
        #[arg(short = 't', long)]
        trtype: String,
        /// Maximum outstanding I/O per queue.
        #[arg(short = 'q', long)]
        max_queue_depth: Option<u32>,
        /// Maximum I/O queue pairs per controller.
        #[arg(short = 'm', long)]
        max_io_qpairs_per_ctrlr: Option<u32>,
        /// Maximum in-capsule data size in bytes.
        #[arg(short = 'c', long)]
        in_capsule_data_size: Option<u32>,
        /// Maximum I/O size in bytes.
        #[arg(short = 'i', long)]
        max_io_size: Option<u32>,
        /// I/O unit size in bytes.
        #[arg(short = 'u', long)]
        io_unit_size: Option<u32>,
        /// Disable the C2H success optimisation (sends "c2h_success": false).
        #[arg(short = 'o', long = "c2h-success")]
        disable_c2h_success: bool,
    },
    /// Show transports (all, or the one of the given type).
    #[command(name = "nvmf_get_transports")]
    NvmfGetTransports {
        /// Transport type.
        #[arg(long)]
        trtype: Option<String>,
    },
    /// Create an NVMe-oF subsystem.
    #[command(
        name = "nvmf_create_subsystem",
        after_help = "Example: ballast-rpc nvmf_create_subsystem \
                      nqn.2016-06.io.spdk:cnode1 -a -s SPDK00000000000001"
    )]
    NvmfCreateSubsystem {
        /// Subsystem NQN.
        nqn: String,
        /// Serial number (ASCII, up to 20 characters).
        #[arg(short, long)]
        serial_number: Option<String>,
        /// Model number (ASCII, up to 40 characters).
        #[arg(short = 'd', long)]
        model_number: Option<String>,
        /// Allow any host to connect (do not enforce the host list).
        #[arg(short, long)]
        allow_any_host: bool,
        /// Maximum number of namespaces.
        #[arg(short, long)]
        max_namespaces: Option<u32>,
    },
    /// Delete an NVMe-oF subsystem.
    #[command(name = "nvmf_delete_subsystem")]
    NvmfDeleteSubsystem {
        /// Subsystem NQN.
        subsystem_nqn: String,
    },
    /// Show subsystems (all, or the one given).
    #[command(name = "nvmf_get_subsystems")]
    NvmfGetSubsystems {
        /// Subsystem NQN.
        nqn: Option<String>,
    },
    /// Add a namespace backed by a bdev to a subsystem.
    #[command(
        name = "nvmf_subsystem_add_ns",
        after_help = "Example: ballast-rpc nvmf_subsystem_add_ns \
                      nqn.2016-06.io.spdk:cnode1 Malloc0 -n 1"
    )]
    NvmfSubsystemAddNs {
        /// Subsystem NQN.
        nqn: String,
        /// Name of the bdev that backs the namespace.
        bdev_name: String,
        /// Requested namespace ID (default: the lowest free one).
        #[arg(short, long)]
        nsid: Option<u32>,
        /// Namespace UUID.
        #[arg(short, long)]
        uuid: Option<String>,
        /// Namespace globally unique identifier (32 hex digits).
        #[arg(short = 'g', long)]
        nguid: Option<String>,
        /// Namespace EUI-64 (16 hex digits).
        #[arg(short, long)]
        eui64: Option<String>,
    },
    /// Remove a namespace from a subsystem.
    #[command(name = "nvmf_subsystem_remove_ns")]
    NvmfSubsystemRemoveNs {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace ID.
        nsid: u32,
    },
    /// Add a listener (transport address) to a subsystem.
    #[command(
        name = "nvmf_subsystem_add_listener",
        after_help = "Example: ballast-rpc nvmf_subsystem_add_listener \
                      nqn.2016-06.io.spdk:cnode1 -t tcp -a 127.0.0.1 -s 4420"
    )]
    NvmfSubsystemAddListener {
        #[command(flatten)]
        listener: Listener,
    },
    /// Remove a listener from a subsystem (disconnects the controllers on it).
    #[command(name = "nvmf_subsystem_remove_listener")]
    NvmfSubsystemRemoveListener {
        #[command(flatten)]
        listener: Listener,
    },
    /// Allow a host NQN to connect to a subsystem.
    #[command(name = "nvmf_subsystem_add_host")]
    NvmfSubsystemAddHost {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN to allow.
        host: String,
    },
    /// Remove a host NQN from a subsystem (disconnects its controllers).
    #[command(name = "nvmf_subsystem_remove_host")]
    NvmfSubsystemRemoveHost {
        /// Subsystem NQN.
        nqn: String,
        /// Host NQN to remove.
        host: String,
    },
    /// Allow or stop allowing any host to connect to a subsystem (default: allow).
    #[command(name = "nvmf_subsystem_allow_any_host")]
    #[command(group(ArgGroup::new("mode").args(["enable", "disable"])))]
    NvmfSubsystemAllowAnyHost {
        /// Subsystem NQN.
        nqn: String,
        /// Allow any host.
        #[arg(short, long)]
        enable: bool,
        /// Enforce the subsystem's host list.
        #[arg(short, long)]
        disable: bool,
    },
    /// Show the controllers of a subsystem.
    #[command(name = "nvmf_subsystem_get_controllers")]
    NvmfSubsystemGetControllers {
        /// Subsystem NQN.
        nqn: String,
    },
    /// Show the queue pairs of a subsystem.
    #[command(name = "nvmf_subsystem_get_qpairs")]
    NvmfSubsystemGetQpairs {
        /// Subsystem NQN.
        nqn: String,
    },
    /// Show the listeners of a subsystem.
    #[command(name = "nvmf_subsystem_get_listeners")]
    NvmfSubsystemGetListeners {
        /// Subsystem NQN.
        nqn: String,
    },

    /// Raw mode: call any method with a JSON params value.
    #[command(
        name = "call",
        after_help = "Examples:\n  ballast-rpc call bdev_get_bdevs '{\"name\":\"Malloc0\"}'\n  \
                      echo '{\"name\":\"Malloc0\"}' | ballast-rpc call bdev_get_bdevs -"
    )]
    Call {
        /// Method name.
        method: String,
        /// Params as JSON (an object, normally), or `-` to read them from stdin.
        params: Option<String>,
    },
}

/// The transport address of nvmf_subsystem_add_listener / remove_listener.
#[derive(Debug, clap::Args)]
pub struct Listener {
    /// Subsystem NQN (`discovery` is a shortcut for the discovery NQN).
    nqn: String,
    /// Transport type, e.g. tcp.
    #[arg(short = 't', long)]
    trtype: String,
    /// Transport address, e.g. an IP address.
    #[arg(short = 'a', long)]
    traddr: String,
    /// Transport service ID: the TCP port.
    #[arg(short = 's', long)]
    trsvcid: Option<String>,
    /// Address family: ipv4 or ipv6.
    #[arg(short = 'f', long)]
    adrfam: Option<String>,
}

impl Method {
    /// The file the result goes to instead of stdout (`save_config -o FILE`).
    pub fn output_file(&self) -> Option<&Path> {
        match self {
            Method::SaveConfig { output } => output.as_deref(),
            _ => None,
        }
    }

    /// Whether the result may hold secrets (keys), so that it is written with mode 0600.
    pub fn result_is_private(&self) -> bool {
        matches!(self, Method::SaveConfig { .. })
    }

    /// Whether this invocation takes input from stdin (read by the caller, handed to
    /// [`params_for`]), so the mapping itself stays pure.
    pub fn reads_stdin(&self) -> bool {
        match self {
            Method::LoadConfig => true,
            Method::Call { params, .. } => params.as_deref() == Some("-"),
            _ => false,
        }
    }
}

/// Maps a subcommand to the JSON-RPC method name and its params (`None`: send no params).
///
/// `stdin` is what the caller read from stdin when [`Method::reads_stdin`] says so. Fails, with a
/// message for the operator, only on JSON the operator supplied and on sizes that overflow.
pub fn params_for(method: &Method, stdin: Option<&str>) -> Result<(String, Option<Value>), String> {
    use Method as M;
    let (name, params) = match method {
        M::RpcGetMethods { current } => {
            ("rpc_get_methods", Params::new().flag("current", *current))
        }
        M::SpdkGetVersion => ("spdk_get_version", Params::new()),
        M::FrameworkGetReactors => ("framework_get_reactors", Params::new()),
        M::ThreadGetStats => ("thread_get_stats", Params::new()),
        M::FrameworkWaitInit => ("framework_wait_init", Params::new()),
        M::SaveConfig { output: _ } => ("save_config", Params::new()),
        M::LoadConfig => {
            let text = stdin.unwrap_or_default();
            if text.trim().is_empty() {
                let usage = "usage: ballast-rpc load_config < config.json";
                return Err(format!(
                    "load_config reads the config JSON from stdin, and stdin \
                     was empty ({usage})"
                ));
            }
            let config = parse_json(text, "config on stdin")?;
            return Ok(("load_config".into(), Some(config)));
        }
        M::SpdkKillInstance { sig_name } => (
            "spdk_kill_instance",
            Params::new().set("sig_name", sig_name.as_str()),
        ),

        M::BdevGetBdevs { name, timeout } => (
            "bdev_get_bdevs",
            Params::new()
                .opt("name", name.as_deref())
                .opt("timeout", *timeout),
        ),
        M::BdevGetIostat { name } => (
            "bdev_get_iostat",
            Params::new().opt("name", name.as_deref()),
        ),
        M::BdevMallocCreate {
            name,
            uuid,
            total_size,
            block_size,
        } => {
            // rpc.py's (total_size * 1024 * 1024) // block_size, with a float size.
            let num_blocks = (total_size * 1024.0 * 1024.0 / f64::from(*block_size)).floor();
            if num_blocks < 1.0 {
                return Err(format!(
                    "bdev_malloc_create: {total_size} MiB is less than one {block_size}-byte block"
                ));
            }
            if num_blocks >= u64::MAX as f64 {
                return Err(format!("bdev_malloc_create: {total_size} MiB is too large"));
            }
            let params = Params::new()
                .opt("name", name.as_deref())
                .opt("uuid", uuid.as_deref())
                .set("num_blocks", num_blocks as u64)
                .set("block_size", *block_size);
            ("bdev_malloc_create", params)
        }
        M::BdevMallocDelete { name } => (
            "bdev_malloc_delete",
            Params::new().set("name", name.as_str()),
        ),
        M::BdevNullCreate {
            name,
            total_size,
            block_size,
            uuid,
        } => {
            let num_blocks = total_size
                .checked_mul(1024 * 1024)
                .map(|bytes| bytes / u64::from(*block_size))
                .ok_or_else(|| format!("bdev_null_create: {total_size} MiB is too large"))?;
            let params = Params::new()
                .set("name", name.as_str())
                .set("num_blocks", num_blocks)
                .set("block_size", *block_size)
                .opt("uuid", uuid.as_deref());
            ("bdev_null_create", params)
        }
        M::BdevNullDelete { name } => {
            ("bdev_null_delete", Params::new().set("name", name.as_str()))
        }
        M::BdevUringCreate {
            filename,
            name,
            block_size,
            uuid,
        } => {
            let params = Params::new()
                .set("filename", filename.as_str())
                .set("name", name.as_str())
                .opt("block_size", *block_size)
                .opt("uuid", uuid.as_deref());
            ("bdev_uring_create", params)
        }
        M::BdevUringDelete { name } => (
            "bdev_uring_delete",
            Params::new().set("name", name.as_str()),
        ),
        M::BdevCompressCreate {
            base_bdev_name,
            name,
            algorithm,
            level,
            chunk_size,
            pm_path,
            lb_size: _,
            force,
        } => {
            let params = Params::new()
                .set("base_bdev_name", base_bdev_name.as_str())
                .opt("name", name.as_deref())
                .opt("algorithm", algorithm.as_deref())
                .opt("level", *level)
                .opt("chunk_size", *chunk_size)
                .opt("pm_path", pm_path.as_deref())
                .opt("force", force.then_some(true));
            ("bdev_compress_create", params)
        }
        M::BdevCompressDelete { name } => (
            "bdev_compress_delete",
            Params::new().set("name", name.as_str()),
        ),
        M::AccelCryptoKeyCreate {
            cipher,
            key,
            key2,
            name,
            tweak_mode,
        } => (
            "accel_crypto_key_create",
            Params::new()
                .set("cipher", cipher.as_str())
                .set("key", key.as_str())
                .set("key2", key2.as_str())
                .set("name", name.as_str())
                .opt("tweak_mode", tweak_mode.as_deref()),
        ),
        M::AccelCryptoKeysGet { key_name } => (
            "accel_crypto_keys_get",
            Params::new().opt("key_name", key_name.as_deref()),
        ),
        M::AccelCryptoKeyDestroy { key_name } => (
            "accel_crypto_key_destroy",
            Params::new().set("key_name", key_name.as_str()),
        ),
        M::BdevCryptoCreate {
            base_bdev_name,
            name,
            key_name,
        } => (
            "bdev_crypto_create",
            Params::new()
                .set("base_bdev_name", base_bdev_name.as_str())
                .set("name", name.as_str())
                .set("key_name", key_name.as_str()),
        ),
        M::BdevCryptoDelete { name } => (
            "bdev_crypto_delete",
            Params::new().set("name", name.as_str()),
        ),
        M::BdevCompressGetStats { name } => (
            "bdev_compress_get_stats",
            Params::new().opt("name", name.as_deref()),
        ),

        M::NvmfCreateTransport {
            trtype,
            max_queue_depth,
            max_io_qpairs_per_ctrlr,
            in_capsule_data_size,
            max_io_size,
            io_unit_size,
            disable_c2h_success,
        } => {
            let mut params = Params::new()
                .set("trtype", trtype.as_str())
                .opt("max_queue_depth", *max_queue_depth)
                .opt("max_io_qpairs_per_ctrlr", *max_io_qpairs_per_ctrlr)
                .opt("in_capsule_data_size", *in_capsule_data_size)
                .opt("max_io_size", *max_io_size)
                .opt("io_unit_size", *io_unit_size);
            if *disable_c2h_success {
                params = params.set("c2h_success", false);
            }
            ("nvmf_create_transport", params)
        }
        M::NvmfGetTransports { trtype } => (
            "nvmf_get_transports",
            Params::new().opt("trtype", trtype.as_deref()),
        ),
        M::NvmfCreateSubsystem {
            nqn,
            serial_number,
            model_number,
            allow_any_host,
            max_namespaces,
        } => {
            let params = Params::new()
                .set("nqn", nqn.as_str())
                .opt("serial_number", serial_number.as_deref())
                .opt("model_number", model_number.as_deref())
                .flag("allow_any_host", *allow_any_host)
                .opt("max_namespaces", *max_namespaces);
            ("nvmf_create_subsystem", params)
        }
        M::NvmfDeleteSubsystem { subsystem_nqn } => (
            "nvmf_delete_subsystem",
            Params::new().set("nqn", subsystem_nqn.as_str()),
        ),
        M::NvmfGetSubsystems { nqn } => (
            "nvmf_get_subsystems",
            Params::new().opt("nqn", nqn.as_deref()),
        ),
        M::NvmfSubsystemAddNs {
            nqn,
            bdev_name,
            nsid,
            uuid,
            nguid,
            eui64,
        } => {
            let namespace = Params::new()
                .set("bdev_name", bdev_name.as_str())
                .opt("nsid", *nsid)
                .opt("uuid", uuid.as_deref())
                .opt("nguid", nguid.as_deref())
                .opt("eui64", eui64.as_deref());
            let params = Params::new()
                .set("nqn", nqn.as_str())
                .set("namespace", namespace.0);
            ("nvmf_subsystem_add_ns", params)
        }
        M::NvmfSubsystemRemoveNs { nqn, nsid } => (
            "nvmf_subsystem_remove_ns",
            Params::new().set("nqn", nqn.as_str()).set("nsid", *nsid),
        ),
        M::NvmfSubsystemAddListener { listener } => {
            ("nvmf_subsystem_add_listener", listener.params())
        }
        M::NvmfSubsystemRemoveListener { listener } => {
            ("nvmf_subsystem_remove_listener", listener.params())
        }
        M::NvmfSubsystemAddHost { nqn, host } => (
            "nvmf_subsystem_add_host",
            Params::new()
                .set("nqn", nqn.as_str())
                .set("host", host.as_str()),
        ),
        M::NvmfSubsystemRemoveHost { nqn, host } => (
            "nvmf_subsystem_remove_host",
            Params::new()
                .set("nqn", nqn.as_str())
                .set("host", host.as_str()),
        ),
        // As rpc.py: neither flag means enable.
        M::NvmfSubsystemAllowAnyHost {
            nqn,
            enable: _,
            disable,
        } => (
            "nvmf_subsystem_allow_any_host",
            Params::new()
                .set("nqn", nqn.as_str())
                .set("allow_any_host", !*disable),
        ),
        M::NvmfSubsystemGetControllers { nqn } => (
            "nvmf_subsystem_get_controllers",
            Params::new().set("nqn", nqn.as_str()),
        ),
        M::NvmfSubsystemGetQpairs { nqn } => (
            "nvmf_subsystem_get_qpairs",
            Params::new().set("nqn", nqn.as_str()),
        ),
        M::NvmfSubsystemGetListeners { nqn } => (
            "nvmf_subsystem_get_listeners",
            Params::new().set("nqn", nqn.as_str()),
        ),

        // Raw mode sends exactly what it was given, `{}` included.
        M::Call { method, params } => {
            let params = match params.as_deref() {
                None => None,
                Some("-") => Some(parse_json(stdin.unwrap_or_default(), "params on stdin")?),
                Some(text) => Some(parse_json(text, "params")?),
            };
            return Ok((method.clone(), params));
        }
    };
    Ok((name.to_string(), params.into_params()))
}

impl Listener {
    fn params(&self) -> Params {
        let nqn = if self.nqn == "discovery" {
            DISCOVERY_NQN
        } else {
            self.nqn.as_str()
        };
        let listen_address = Params::new()
            .set("trtype", self.trtype.as_str())
            .set("traddr", self.traddr.as_str())
            .opt("trsvcid", self.trsvcid.as_deref())
            .opt("adrfam", self.adrfam.as_deref());
        Params::new()
            .set("nqn", nqn)
            .set("listen_address", listen_address.0)
    }
}

/// A params object under construction; absent options leave their key out.
struct Params(Map<String, Value>);

impl Params {
    fn new() -> Self {
        Params(Map::new())
    }

    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    fn opt<T: Into<Value>>(self, key: &str, value: Option<T>) -> Self {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }

    /// A store-true flag: sent as `true` when given, left out otherwise.
    fn flag(self, key: &str, on: bool) -> Self {
        if on {
            self.set(key, true)
        } else {
            self
        }
    }

    /// The `params` member: none at all rather than `{}`, as rpc.py sends.
    fn into_params(self) -> Option<Value> {
        (!self.0.is_empty()).then_some(Value::Object(self.0))
    }
}

fn parse_json(text: &str, what: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JSON in {what}: {e}"))
}

fn parse_size_mb(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(size) if size.is_finite() && size > 0.0 => Ok(size),
        _ => Err(format!("`{text}` is not a size in MiB (a number > 0)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::json;
    use std::collections::BTreeSet;

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        crate::Cli::try_parse_from(std::iter::once("ballast-rpc").chain(args.iter().copied()))
    }

    fn map_with_stdin(
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(String, Option<Value>), String> {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
        params_for(&cli.method, stdin)
    }

    fn map(args: &[&str]) -> (String, Option<Value>) {
        map_with_stdin(args, None).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Every dedicated subcommand: command line (split on spaces; `NQN` stands for a subsystem
    /// NQN), and the method and params it must send.
    fn cases() -> Vec<(&'static str, &'static str, Option<Value>)> {
        let nqn = NQN;
        let host = "nqn.2014-08.org.nvmexpress:uuid:1";
        let uuid = "0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01";
        vec![
            ("rpc_get_methods", "rpc_get_methods", None),
            (
                "rpc_get_methods -c",
                "rpc_get_methods",
                Some(json!({"current": true})),
            ),
            ("spdk_get_version", "spdk_get_version", None),
            ("framework_get_reactors", "framework_get_reactors", None),
            ("thread_get_stats", "thread_get_stats", None),
            ("framework_wait_init", "framework_wait_init", None),
            ("save_config", "save_config", None),
            ("save_config -o /tmp/cfg.json", "save_config", None),
            (
                "spdk_kill_instance SIGTERM",
                "spdk_kill_instance",
                Some(json!({"sig_name": "SIGTERM"})),
            ),
            ("bdev_get_bdevs", "bdev_get_bdevs", None),
            (
                "bdev_get_bdevs -b Malloc0",
                "bdev_get_bdevs",
                Some(json!({"name": "Malloc0"})),
            ),
            (
                "bdev_get_bdevs --name M0",
                "bdev_get_bdevs",
                Some(json!({"name": "M0"})),
            ),
            (
                "bdev_get_bdevs -b Malloc0 -t 500",
                "bdev_get_bdevs",
                Some(json!({"name": "Malloc0", "timeout": 500})),
            ),
            ("bdev_get_iostat", "bdev_get_iostat", None),
            (
                "bdev_get_iostat -b Null0",
                "bdev_get_iostat",
                Some(json!({"name": "Null0"})),
            ),
            (
                "bdev_malloc_create -b Malloc0 64 512",
                "bdev_malloc_create",
                Some(json!({"name": "Malloc0", "num_blocks": 131072, "block_size": 512})),
            ),
            (
                "bdev_malloc_create 64 4096 --uuid 0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01",
                "bdev_malloc_create",
                Some(json!({"num_blocks": 16384, "block_size": 4096, "uuid": uuid})),
            ),
            // Fractional sizes round down to whole blocks, as rpc.py's `//`.
            (
                "bdev_malloc_create 0.5 4096 -u u",
                "bdev_malloc_create",
                Some(json!({"num_blocks": 128, "block_size": 4096, "uuid": "u"})),
            ),
            (
                "bdev_malloc_create 1.0001 512",
                "bdev_malloc_create",
                Some(json!({"num_blocks": 2048, "block_size": 512})),
            ),
            (
                "bdev_malloc_delete Malloc0",
                "bdev_malloc_delete",
                Some(json!({"name": "Malloc0"})),
            ),
            (
                "bdev_null_create Null0 1024 4096",
                "bdev_null_create",
                Some(json!({"name": "Null0", "num_blocks": 262144, "block_size": 4096})),
            ),
            (
                "bdev_null_create -u u-1 Null0 1 512",
                "bdev_null_create",
                Some(
                    json!({"name": "Null0", "num_blocks": 2048, "block_size": 512,
                            "uuid": "u-1"}),
                ),
            ),
            (
                "bdev_null_delete Null0",
                "bdev_null_delete",
                Some(json!({"name": "Null0"})),
            ),
            (
                "bdev_uring_create /dev/nvme0n1 Uring0",
                "bdev_uring_create",
                Some(json!({"filename": "/dev/nvme0n1", "name": "Uring0"})),
            ),
            (
                "bdev_uring_create /tmp/disk.img Uring1 4096 -u u-2",
                "bdev_uring_create",
                Some(
                    json!({"filename": "/tmp/disk.img", "name": "Uring1", "block_size": 4096,
                            "uuid": "u-2"}),
                ),
            ),
            (
                "bdev_uring_delete Uring0",
                "bdev_uring_delete",
                Some(json!({"name": "Uring0"})),
            ),
            (
                "bdev_compress_create -b Malloc0",
                "bdev_compress_create",
                Some(json!({"base_bdev_name": "Malloc0"})),
            ),
            (
                "bdev_compress_create -b Malloc0 -n Comp0 -a zstd -L 3 --chunk-size 65536 -p /mnt/pm -l 4096",
                "bdev_compress_create",
                Some(
                    json!({"base_bdev_name": "Malloc0", "name": "Comp0", "algorithm": "zstd",
                            "level": 3, "chunk_size": 65536, "pm_path": "/mnt/pm"}),
                ),
            ),
            (
                "bdev_compress_create --base-bdev-name M1 --name C1 --comp-algo lz4 \
                 --chunk-size 4096",
                "bdev_compress_create",
                Some(
                    json!({"base_bdev_name": "M1", "name": "C1", "algorithm": "lz4",
                            "chunk_size": 4096}),
                ),
            ),
            (
                "accel_crypto_key_create -c AES_XTS -k 00ff -e ff00 -n k0",
                "accel_crypto_key_create",
                Some(json!({"cipher": "AES_XTS", "key": "00ff", "key2": "ff00", "name": "k0"})),
            ),
            ("accel_crypto_keys_get", "accel_crypto_keys_get", None),
            (
                "accel_crypto_keys_get -k k0",
                "accel_crypto_keys_get",
                Some(json!({"key_name": "k0"})),
            ),
            (
                "accel_crypto_key_destroy -n k0",
                "accel_crypto_key_destroy",
                Some(json!({"key_name": "k0"})),
            ),
            (
                "bdev_crypto_create Malloc0 Crypt0 -n k0",
                "bdev_crypto_create",
                Some(json!({"base_bdev_name": "Malloc0", "name": "Crypt0", "key_name": "k0"})),
            ),
            (
                "bdev_crypto_delete Crypt0",
                "bdev_crypto_delete",
                Some(json!({"name": "Crypt0"})),
            ),
            (
                "bdev_compress_delete COMP_Malloc0",
                "bdev_compress_delete",
                Some(json!({"name": "COMP_Malloc0"})),
            ),
            ("bdev_compress_get_stats", "bdev_compress_get_stats", None),
            (
                "bdev_compress_get_stats -n COMP_Malloc0",
                "bdev_compress_get_stats",
                Some(json!({"name": "COMP_Malloc0"})),
            ),
            (
                "nvmf_create_transport -t TCP",
                "nvmf_create_transport",
                Some(json!({"trtype": "TCP"})),
            ),
            (
                "nvmf_create_transport -t TCP -c 8192 -i 131072 -q 128 -u 8192 -m 8 -o",
                "nvmf_create_transport",
                Some(
                    json!({"trtype": "TCP", "in_capsule_data_size": 8192, "max_io_size": 131072,
                            "max_queue_depth": 128, "io_unit_size": 8192,
                            "max_io_qpairs_per_ctrlr": 8, "c2h_success": false}),
                ),
            ),
            (
                "nvmf_create_transport --trtype tcp --in-capsule-data-size 4096 \
                 --max-io-size 65536 --max-queue-depth 64 --io-unit-size 4096 \
                 --max-io-qpairs-per-ctrlr 4 --c2h-success",
                "nvmf_create_transport",
                Some(
                    json!({"trtype": "tcp", "in_capsule_data_size": 4096, "max_io_size": 65536,
                            "max_queue_depth": 64, "io_unit_size": 4096,
                            "max_io_qpairs_per_ctrlr": 4, "c2h_success": false}),
                ),
            ),
            ("nvmf_get_transports", "nvmf_get_transports", None),
            (
                "nvmf_get_transports --trtype TCP",
                "nvmf_get_transports",
                Some(json!({"trtype": "TCP"})),
            ),
            (
                "nvmf_create_subsystem NQN",
                "nvmf_create_subsystem",
                Some(json!({"nqn": nqn})),
            ),
            (
                "nvmf_create_subsystem NQN -s SPDK00000000000001 -d ballast -a -m 32",
                "nvmf_create_subsystem",
                Some(json!({"nqn": nqn, "serial_number": "SPDK00000000000001",
                            "model_number": "ballast", "allow_any_host": true,
                            "max_namespaces": 32})),
            ),
            (
                "nvmf_create_subsystem --serial-number S1 --model-number M1 --allow-any-host \
                 --max-namespaces 1 NQN",
                "nvmf_create_subsystem",
                Some(
                    json!({"nqn": nqn, "serial_number": "S1", "model_number": "M1",
                            "allow_any_host": true, "max_namespaces": 1}),
                ),
            ),
            (
                "nvmf_delete_subsystem NQN",
                "nvmf_delete_subsystem",
                Some(json!({"nqn": nqn})),
            ),
            ("nvmf_get_subsystems", "nvmf_get_subsystems", None),
            (
                "nvmf_get_subsystems NQN",
                "nvmf_get_subsystems",
                Some(json!({"nqn": nqn})),
            ),
            (
                "nvmf_subsystem_add_ns NQN Malloc0",
                "nvmf_subsystem_add_ns",
                Some(json!({"nqn": nqn, "namespace": {"bdev_name": "Malloc0"}})),
            ),
            (
                "nvmf_subsystem_add_ns NQN Malloc0 -n 3 -u 0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01 \
                 -g 000102030405060708090a0b0c0d0e0f -e 0011223344556677",
                "nvmf_subsystem_add_ns",
                Some(
                    json!({"nqn": nqn, "namespace": {"bdev_name": "Malloc0", "nsid": 3,
                            "uuid": uuid, "nguid": "000102030405060708090a0b0c0d0e0f",
                            "eui64": "0011223344556677"}}),
                ),
            ),
            (
                "nvmf_subsystem_add_ns --nsid 1 --uuid u --nguid g --eui64 e NQN Null0",
                "nvmf_subsystem_add_ns",
                Some(
                    json!({"nqn": nqn, "namespace": {"bdev_name": "Null0", "nsid": 1, "uuid": "u",
                            "nguid": "g", "eui64": "e"}}),
                ),
            ),
            (
                "nvmf_subsystem_remove_ns NQN 3",
                "nvmf_subsystem_remove_ns",
                Some(json!({"nqn": nqn, "nsid": 3})),
            ),
            (
                "nvmf_subsystem_add_listener NQN -t tcp -a 127.0.0.1 -s 4420",
                "nvmf_subsystem_add_listener",
                Some(
                    json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1",
                            "trsvcid": "4420"}}),
                ),
            ),
            (
                "nvmf_subsystem_add_listener NQN --trtype TCP --traddr ::1 --trsvcid 4421 \
                 --adrfam ipv6",
                "nvmf_subsystem_add_listener",
                Some(
                    json!({"nqn": nqn, "listen_address": {"trtype": "TCP", "traddr": "::1",
                            "trsvcid": "4421", "adrfam": "ipv6"}}),
                ),
            ),
            (
                "nvmf_subsystem_add_listener discovery -t tcp -a 127.0.0.1 -s 8009 -f ipv4",
                "nvmf_subsystem_add_listener",
                Some(json!({"nqn": "nqn.2014-08.org.nvmexpress.discovery",
                            "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1",
                                               "trsvcid": "8009", "adrfam": "ipv4"}})),
            ),
            (
                "nvmf_subsystem_remove_listener NQN -t tcp -a 127.0.0.1 -s 4420 -f ipv4",
                "nvmf_subsystem_remove_listener",
                Some(
                    json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1",
                            "trsvcid": "4420", "adrfam": "ipv4"}}),
                ),
            ),
            (
                "nvmf_subsystem_add_host NQN nqn.2014-08.org.nvmexpress:uuid:1",
                "nvmf_subsystem_add_host",
                Some(json!({"nqn": nqn, "host": host})),
            ),
            (
                "nvmf_subsystem_remove_host NQN nqn.2014-08.org.nvmexpress:uuid:1",
                "nvmf_subsystem_remove_host",
                Some(json!({"nqn": nqn, "host": host})),
            ),
            (
                "nvmf_subsystem_allow_any_host NQN -e",
                "nvmf_subsystem_allow_any_host",
                Some(json!({"nqn": nqn, "allow_any_host": true})),
            ),
            (
                "nvmf_subsystem_allow_any_host NQN --disable",
                "nvmf_subsystem_allow_any_host",
                Some(json!({"nqn": nqn, "allow_any_host": false})),
            ),
            // As rpc.py: neither flag means enable.
            (
                "nvmf_subsystem_allow_any_host NQN",
                "nvmf_subsystem_allow_any_host",
                Some(json!({"nqn": nqn, "allow_any_host": true})),
            ),
            (
                "nvmf_subsystem_get_controllers NQN",
                "nvmf_subsystem_get_controllers",
                Some(json!({"nqn": nqn})),
            ),
            (
                "nvmf_subsystem_get_qpairs NQN",
                "nvmf_subsystem_get_qpairs",
                Some(json!({"nqn": nqn})),
            ),
            (
                "nvmf_subsystem_get_listeners NQN",
                "nvmf_subsystem_get_listeners",
                Some(json!({"nqn": nqn})),
            ),
        ]
    }

    const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

    fn argv(line: &str) -> Vec<&str> {
        line.split_whitespace()
            .map(|arg| if arg == "NQN" { NQN } else { arg })
            .collect()
    }

    #[test]
    fn every_method_maps_to_spdk_names_and_params() {
        for (line, method, params) in cases() {
            let args = argv(line);
            assert_eq!(map(&args), (method.to_string(), params), "{line}");
            assert_eq!(args[0], method, "a subcommand is named after its method");
        }
        // Arguments with spaces pass through whole.
        let (_, params) = map(&["nvmf_create_subsystem", NQN, "-d", "ballast Controller"]);
        assert_eq!(
            params,
            Some(json!({"nqn": NQN, "model_number": "ballast Controller"}))
        );
    }

    #[test]
    fn every_subcommand_has_a_mapping_case() {
        let subcommands: BTreeSet<String> = crate::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|name| name != "call" && name != "load_config")
            .collect();
        let covered: BTreeSet<String> = cases()
            .into_iter()
            .map(|(_, method, _)| method.to_string())
            .collect();
        assert_eq!(subcommands, covered);
    }

    #[test]
    fn load_config_sends_stdin_as_params() {
        let config = r#"{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_malloc_create",
                        "params":{"name":"Malloc0","num_blocks":2048,"block_size":512}}]}]}"#;
        assert!(parse(&["load_config"]).unwrap().method.reads_stdin());
        let (method, params) = map_with_stdin(&["load_config"], Some(config)).unwrap();
        assert_eq!(method, "load_config");
        assert_eq!(params, Some(serde_json::from_str::<Value>(config).unwrap()));

        let empty = map_with_stdin(&["load_config"], Some(" \n")).unwrap_err();
        assert!(empty.contains("stdin was empty"), "{empty}");
        let broken = map_with_stdin(&["load_config"], Some("{\"subsystems\": [")).unwrap_err();
        assert!(
            broken.contains("invalid JSON in config on stdin"),
            "{broken}"
        );
    }

    #[test]
    fn raw_call_sends_params_verbatim() {
        assert!(!parse(&["call", "x"]).unwrap().method.reads_stdin());
        assert!(!parse(&["call", "x", "{}"]).unwrap().method.reads_stdin());
        assert!(parse(&["call", "x", "-"]).unwrap().method.reads_stdin());

        assert_eq!(
            map(&["call", "bdev_get_bdevs"]),
            ("bdev_get_bdevs".into(), None)
        );
        assert_eq!(
            map(&["call", "bdev_get_bdevs", "{}"]),
            ("bdev_get_bdevs".into(), Some(json!({})))
        );
        assert_eq!(
            map(&["call", "bdev_get_bdevs", r#"{"name":"Malloc0"}"#]),
            ("bdev_get_bdevs".into(), Some(json!({"name": "Malloc0"})))
        );
        // Not ours to judge: the daemon answers for methods and params it does not know.
        assert_eq!(
            map(&["call", "no_such_method", "[1,2]"]),
            ("no_such_method".into(), Some(json!([1, 2])))
        );
        assert_eq!(
            map_with_stdin(
                &["call", "nvmf_get_subsystems", "-"],
                Some(r#" {"nqn": "n"} "#)
            )
            .unwrap(),
            ("nvmf_get_subsystems".into(), Some(json!({"nqn": "n"})))
        );
        let bad = map_with_stdin(&["call", "bdev_get_bdevs", "Malloc0"], None).unwrap_err();
        assert!(bad.contains("invalid JSON in params"), "{bad}");
        let bad = map_with_stdin(&["call", "bdev_get_bdevs", "-"], Some("")).unwrap_err();
        assert!(bad.contains("invalid JSON in params on stdin"), "{bad}");
    }

    #[test]
    fn malformed_arguments_are_usage_errors() {
        for line in [
            "bdev_malloc_create 64",
            "bdev_malloc_create 0 512",
            "bdev_malloc_create -1 512",
            "bdev_malloc_create big 512",
            "bdev_malloc_create 64 0",
            "bdev_malloc_create 64 512 extra",
            "bdev_null_create Null0 0 512",
            "bdev_null_create Null0 1.5 512",
            "bdev_null_create Null0 1",
            "bdev_uring_create /dev/x",
            "bdev_uring_create /dev/x U 4k",
            "bdev_malloc_delete",
            "bdev_compress_create",
            "bdev_compress_create Malloc0",
            "bdev_compress_create -b Malloc0 -a lz5",
            "bdev_compress_create -b Malloc0 -l fast",
            "bdev_compress_create -b Malloc0 -c 16k",
            "bdev_compress_delete",
            "save_config -o",
            "spdk_kill_instance",
            "bdev_get_bdevs -t 500",
            "bdev_get_bdevs -b Malloc0 -t soon",
            "nvmf_create_transport",
            "nvmf_create_transport -t TCP -q deep",
            "nvmf_create_transport -t TCP --tgt-name x",
            "nvmf_create_subsystem",
            "nvmf_create_subsystem NQN -m -1",
            "nvmf_subsystem_add_ns NQN",
            "nvmf_subsystem_add_ns NQN Malloc0 -n one",
            "nvmf_subsystem_remove_ns NQN x",
            "nvmf_subsystem_add_listener NQN -a 127.0.0.1 -s 4420",
            "nvmf_subsystem_add_listener NQN -t tcp -s 4420",
            "nvmf_subsystem_remove_listener NQN -a 127.0.0.1",
            "nvmf_subsystem_add_host NQN",
            "nvmf_subsystem_allow_any_host NQN -e -d",
            "nvmf_subsystem_get_controllers",
            "rpc_get_methods extra",
            "call",
        ] {
            assert!(parse(&argv(line)).is_err(), "`{line}` was accepted");
        }
    }

    #[test]
    fn oversized_null_bdev_is_refused_before_sending() {
        let e = map_with_stdin(
            &["bdev_null_create", "N", &u64::MAX.to_string(), "512"],
            None,
        )
        .unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn tiny_malloc_bdev_is_refused_before_sending() {
        let e = map_with_stdin(&["bdev_malloc_create", "0.0001", "4096"], None).unwrap_err();
        assert!(e.contains("less than one 4096-byte block"), "{e}");
    }

    #[test]
    fn every_method_has_help() {
        for sub in crate::Cli::command().get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "{} has no help text",
                sub.get_name()
            );
        }
        let help = parse(&["nvmf_create_transport", "--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        let text = help.to_string();
        for flag in [
            "--trtype",
            "--in-capsule-data-size",
            "--max-io-size",
            "--c2h-success",
            "-o",
        ] {
            assert!(text.contains(flag), "{flag} missing from:\n{text}");
        }
    }
}
