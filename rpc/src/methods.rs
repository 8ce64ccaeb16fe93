//! The methods, with SPDK's names and parameter names. Each takes the request's params and
//! returns a JSON result or an [`RpcError`] whose message says what was wrong.
//!
//! Params are decoded with serde into structs that reject unknown fields, so a misspelt or
//! missing parameter is named in the -32602 message.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ballast_engine::backend::compress::{self, Algorithm, CompressStats};
use ballast_engine::backend::{malloc, null, uring};
use ballast_engine::IoType;
use ballast_nvme::target::{ListenAddr, Subsystem, SubsystemKind, Target, TransportOpts};
use ballast_reactor::RuntimeHandle;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{RpcError, METHOD_NOT_FOUND};

/// What the methods act on.
pub struct Context {
    /// The reactors.
    pub rt: RuntimeHandle,
    /// The NVMe-oF target.
    pub target: Arc<Target>,
    /// Set by `spdk_kill_instance`; the daemon's main loop watches it.
    pub stop: Arc<AtomicBool>,
    /// When the daemon started.
    pub started: Instant,
}

impl Context {
    /// A context over `rt` and `target`.
    pub fn new(rt: RuntimeHandle, target: Arc<Target>, stop: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Context {
            rt,
            target,
            stop,
            started: Instant::now(),
        })
    }
}

type Method = fn(&Context, Option<Value>) -> Result<Value, RpcError>;

/// Every method, by name.
pub const METHODS: &[(&str, Method)] = &[
    ("rpc_get_methods", rpc_get_methods),
    ("spdk_get_version", spdk_get_version),
    ("framework_wait_init", framework_wait_init),
    ("framework_get_reactors", framework_get_reactors),
    ("thread_get_stats", thread_get_stats),
    ("spdk_kill_instance", spdk_kill_instance),
    ("save_config", save_config),
    ("load_config", load_config),
    ("bdev_get_bdevs", bdev_get_bdevs),
    ("bdev_get_iostat", bdev_get_iostat),
    ("bdev_malloc_create", bdev_malloc_create),
    ("bdev_malloc_delete", bdev_delete),
    ("bdev_null_create", bdev_null_create),
    ("bdev_null_delete", bdev_delete),
    ("bdev_uring_create", bdev_uring_create),
    ("bdev_uring_delete", bdev_delete),
    ("accel_crypto_key_create", accel_crypto_key_create),
    ("accel_crypto_keys_get", accel_crypto_keys_get),
    ("accel_crypto_key_destroy", accel_crypto_key_destroy),
    ("bdev_crypto_create", bdev_crypto_create),
    ("bdev_crypto_delete", bdev_delete),
    ("bdev_compress_create", bdev_compress_create),
    ("bdev_compress_delete", bdev_delete),
    ("bdev_compress_get_stats", bdev_compress_get_stats),
    ("bdev_nvme_attach_controller", bdev_nvme_attach_controller),
    ("bdev_nvme_detach_controller", bdev_nvme_detach_controller),
    ("bdev_nvme_get_controllers", bdev_nvme_get_controllers),
    ("nvmf_create_transport", nvmf_create_transport),
    ("nvmf_get_transports", nvmf_get_transports),
    ("nvmf_create_subsystem", nvmf_create_subsystem),
    ("nvmf_delete_subsystem", nvmf_delete_subsystem),
    ("nvmf_get_subsystems", nvmf_get_subsystems),
    ("nvmf_subsystem_add_ns", nvmf_subsystem_add_ns),
    ("nvmf_subsystem_remove_ns", nvmf_subsystem_remove_ns),
    ("nvmf_subsystem_add_listener", nvmf_subsystem_add_listener),
    (
        "nvmf_subsystem_remove_listener",
        nvmf_subsystem_remove_listener,
    ),
    ("nvmf_subsystem_add_host", nvmf_subsystem_add_host),
    ("nvmf_subsystem_remove_host", nvmf_subsystem_remove_host),
    (
        "nvmf_subsystem_allow_any_host",
        nvmf_subsystem_allow_any_host,
    ),
    (
        "nvmf_subsystem_get_controllers",
        nvmf_subsystem_get_controllers,
    ),
    ("nvmf_subsystem_get_qpairs", nvmf_subsystem_get_qpairs),
    ("nvmf_subsystem_get_listeners", nvmf_subsystem_get_listeners),
];

/// Calls `method` with `params`.
pub fn call(ctx: &Context, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
    let Some((_, f)) = METHODS.iter().find(|(n, _)| *n == method) else {
        return Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        ));
    };
    f(ctx, params)
}

/// Decodes params (absent params decode like `{}`, so required ones are reported missing).
fn parse<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let v = match params {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(RpcError::params(
                "Invalid parameters: params must be an object",
            ))
        }
    };
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            RpcError::params(format!("Invalid parameters: {inner}"))
        } else {
            RpcError::params(format!("Invalid parameters: {path}: {inner}"))
        }
    })
}

/// Methods without parameters accept none (or an empty object).
fn no_params(params: Option<Value>) -> Result<(), RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct None_ {}
    parse::<None_>(params).map(|_| ())
}

// ------------------------------------------------------------------ framework ----

fn rpc_get_methods(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        #[serde(default)]
        current: bool,
        #[serde(default)]
        include_aliases: bool,
    }
    parse::<P>(params)?;
    Ok(json!(METHODS.iter().map(|(n, _)| *n).collect::<Vec<_>>()))
}

fn spdk_get_version(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    let v = env!("CARGO_PKG_VERSION");
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    Ok(json!({
        "version": format!("ballast v{v}"),
        "fields": {
            "major": parts.next().unwrap_or(0),
            "minor": parts.next().unwrap_or(0),
            "patch": parts.next().unwrap_or(0),
            "suffix": "",
        }
    }))
}

fn framework_wait_init(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    // The daemon finishes initialisation before it serves RPC.
    Ok(json!(true))
}

/// Reactor busy/idle are reported in nanoseconds; tick_rate says so (SPDK's shape).
const TICK_RATE: u64 = 1_000_000_000;

fn framework_get_reactors(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    let main = ctx.rt.main_core();
    let reactors: Vec<Value> = ctx
        .rt
        .stats()
        .into_iter()
        .map(|s| {
            json!({
                "lcore": s.core,
                "tid": s.tid,
                "busy": s.busy.as_nanos() as u64,
                "idle": s.idle.as_nanos() as u64,
                "in_interrupt": false,
                "polls": s.polls,
                "messages": s.messages,
                "sleeps": s.sleeps,
                "wakeups": s.wakeups,
                "pollers": s.pollers,
                "lw_threads": [{
                    "name": if s.core == main { "app_thread".to_string() } else { format!("reactor_{}", s.core) },
                    "id": s.core + 1,
                    "cpumask": format!("{:x}", 1u128 << s.core.min(127)),
                    "elapsed": (s.busy + s.idle).as_nanos() as u64,
                }],
            })
        })
        .collect();
    Ok(json!({"tick_rate": TICK_RATE, "reactors": reactors}))
}

fn thread_get_stats(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    let main = ctx.rt.main_core();
    let threads: Vec<Value> = ctx
        .rt
        .stats()
        .into_iter()
        .map(|s| {
            json!({
                "name": if s.core == main { "app_thread".to_string() } else { format!("reactor_{}", s.core) },
                "id": s.core + 1,
                "cpumask": format!("{:x}", 1u128 << s.core.min(127)),
                "busy": s.busy.as_nanos() as u64,
                "idle": s.idle.as_nanos() as u64,
                "active_pollers_count": s.pollers,
                "timed_pollers_count": 0,
                "paused_pollers_count": 0,
            })
        })
        .collect();
    Ok(json!({"tick_rate": TICK_RATE, "threads": threads}))
}

fn spdk_kill_instance(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        sig_name: String,
    }
    let p: P = parse(params)?;
    let sig = match p.sig_name.trim_start_matches("SIG") {
        "INT" | "2" => libc::SIGINT,
        "TERM" | "15" => libc::SIGTERM,
        "KILL" | "9" => libc::SIGKILL,
        _ => {
            return Err(RpcError::params(format!(
                "Invalid parameters: sig_name {:?} is not one of SIGINT, SIGTERM, SIGKILL",
                p.sig_name
            )))
        }
    };
    if sig == libc::SIGKILL {
        // Answer first, then die the hard way.
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::process::abort();
        });
    } else {
        tracing::info!(sig_name = %p.sig_name, "shutdown requested over RPC");
        ctx.stop.store(true, Ordering::Release);
        // Deliver the signal to ourselves once the answer is on its way: the daemon's main
        // thread waits for exactly that.
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
            unsafe {
                libc::kill(libc::getpid(), sig);
            }
        });
    }
    Ok(json!(true))
}

fn save_config(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    Ok(crate::config::save(ctx))
}

fn load_config(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let v = params.unwrap_or(Value::Null);
    crate::config::load(ctx, &v)?;
    Ok(json!(true))
}

// ----------------------------------------------------------------------- bdev ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameOpt {
    #[serde(default)]
    name: Option<String>,
    /// SPDK's bdev_get_bdevs takes a timeout for examine; nothing to wait for here.
    #[serde(default)]
    #[allow(dead_code)]
    timeout: Option<u64>,
}

fn bdevs_named(name: Option<String>) -> Result<Vec<Arc<ballast_engine::Bdev>>, RpcError> {
    match name {
        Some(n) => ballast_engine::bdev::lookup(&n)
            .map(|b| vec![b])
            .ok_or_else(|| RpcError::new(-19, format!("bdev {n} not found"))),
        None => {
            let mut v = ballast_engine::bdev::list();
            v.sort_by(|a, b| a.name().cmp(b.name()));
            Ok(v)
        }
    }
}

fn bdev_get_bdevs(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: NameOpt = parse(params)?;
    let out: Vec<Value> = bdevs_named(p.name)?
        .into_iter()
        .map(|b| {
            let i = b.info();
            let io = |t| b.supports(t);
            let specific: Map<String, Value> = b
                .describe()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            json!({
                "name": i.name,
                "aliases": i.aliases,
                "product_name": b.product_name(),
                "block_size": i.block_size,
                "num_blocks": i.num_blocks,
                "uuid": i.uuid.to_string(),
                "claimed": b.claimed_by().is_some(),
                "claimed_by": b.claimed_by(),
                "write_cache": i.write_cache,
                "optimal_io_boundary": i.optimal_io_boundary,
                "supported_io_types": {
                    "read": io(IoType::Read),
                    "write": io(IoType::Write),
                    "flush": io(IoType::Flush),
                    "unmap": io(IoType::Unmap),
                    "write_zeroes": io(IoType::WriteZeroes),
                    "reset": false,
                    "nvme_admin": false,
                    "nvme_io": false,
                },
                "driver_specific": specific,
            })
        })
        .collect();
    Ok(Value::Array(out))
}

fn bdev_get_iostat(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: NameOpt = parse(params)?;
    let bdevs: Vec<Value> = bdevs_named(p.name)?
        .into_iter()
        .map(|b| {
            let s = b.iostat();
            json!({
                "name": b.name(),
                "bytes_read": s.bytes_read,
                "num_read_ops": s.num_read_ops,
                "bytes_written": s.bytes_written,
                "num_write_ops": s.num_write_ops,
                "num_unmap_ops": s.num_unmap_ops,
                "num_write_zeroes_ops": s.num_write_zeroes_ops,
                "num_flush_ops": s.num_flush_ops,
                "num_io_errors": s.num_errors,
            })
        })
        .collect();
    Ok(json!({
        "tick_rate": TICK_RATE,
        "ticks": ctx.started.elapsed().as_nanos() as u64,
        "bdevs": bdevs,
    }))
}

fn parse_uuid(s: Option<String>, param: &str) -> Result<Option<uuid::Uuid>, RpcError> {
    s.map(|u| {
        uuid::Uuid::parse_str(&u)
            .map_err(|e| RpcError::params(format!("Invalid parameters: {param} {u:?}: {e}")))
    })
    .transpose()
}

fn check_block_size(bs: u32) -> Result<(), RpcError> {
    if bs != 512 && bs != 4096 {
        return Err(RpcError::params(format!(
            "Invalid parameters: block_size {bs} (must be 512 or 4096)"
        )));
    }
    Ok(())
}

fn check_num_blocks(n: u64, bs: u32) -> Result<(), RpcError> {
    if n == 0 {
        return Err(RpcError::params(
            "Invalid parameters: num_blocks must be > 0",
        ));
    }
    if n.checked_mul(bs as u64).is_none() {
        return Err(RpcError::params("Invalid parameters: num_blocks too large"));
    }
    Ok(())
}

/// Next free default name with `prefix` (Malloc0, Malloc1, ...).
fn next_name(prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| ballast_engine::bdev::lookup(n).is_none())
        .unwrap_or_else(|| prefix.to_string())
}

/// Params of the RAM-sized bdev constructors (malloc, null).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SizedBdev {
    #[serde(default)]
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    #[serde(default)]
    uuid: Option<String>,
}

impl SizedBdev {
    fn parse(params: Option<Value>) -> Result<(Self, Option<uuid::Uuid>), RpcError> {
        let mut p: SizedBdev = parse(params)?;
        check_block_size(p.block_size)?;
        check_num_blocks(p.num_blocks, p.block_size)?;
        let uuid = parse_uuid(p.uuid.take(), "uuid")?;
        Ok((p, uuid))
    }
}

fn bdev_malloc_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let (p, uuid) = SizedBdev::parse(params)?;
    let b = malloc::create(malloc::MallocOpts {
        name: p.name.unwrap_or_else(|| next_name("Malloc")),
        num_blocks: p.num_blocks,
        block_size: p.block_size,
        uuid,
    })?;
    Ok(json!(b.name()))
}

fn bdev_null_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let (p, uuid) = SizedBdev::parse(params)?;
    let name = p
        .name
        .ok_or_else(|| RpcError::params("Invalid parameters: missing field `name`"))?;
    let b = null::create(&name, p.num_blocks, p.block_size, uuid)?;
    Ok(json!(b.name()))
}

fn bdev_uring_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        filename: String,
        #[serde(default)]
        block_size: Option<u32>,
        #[serde(default)]
        uuid: Option<String>,
    }
    let p: P = parse(params)?;
    let bs = p.block_size.unwrap_or(512);
    check_block_size(bs)?;
    let uuid = parse_uuid(p.uuid, "uuid")?;
    let b = uring::create(uring::UringOpts {
        name: p.name,
        filename: p.filename,
        block_size: bs,
        uuid,
    })?;
    Ok(json!(b.name()))
}

fn bdev_delete(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    let p: P = parse(params)?;
    ballast_engine::bdev::delete(&p.name)?;
    Ok(json!(true))
}

// --------------------------------------------------------------------- crypto ----

fn unhex(s: &str, param: &str) -> Result<Vec<u8>, RpcError> {
    let bad = || RpcError::params(format!("Invalid parameters: {param} must be hex digits"));
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

fn accel_crypto_key_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        cipher: String,
        key: String,
        #[serde(default)]
        key2: Option<String>,
        name: String,
        #[serde(default)]
        tweak_mode: Option<String>,
    }
    let p: P = parse(params)?;
    if let Some(t) = &p.tweak_mode {
        if t != "SIMPLE_LBA" {
            return Err(RpcError::params(format!(
                "Invalid parameters: tweak_mode {t:?} is not supported (only SIMPLE_LBA)"
            )));
        }
    }
    let key = unhex(&p.key, "key")?;
    let key2 = match &p.key2 {
        Some(k) => unhex(k, "key2")?,
        None => {
            return Err(RpcError::params(
                "Invalid parameters: key2 is required for AES_XTS",
            ))
        }
    };
    ballast_engine::backend::crypto::key_create(&p.name, &p.cipher, &key, &key2)
        .map_err(RpcError::from)?;
    tracing::info!(name = %p.name, "crypto key created");
    Ok(json!(true))
}

fn accel_crypto_keys_get(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        key_name: Option<String>,
    }
    let p: P = parse(params)?;
    let keys = ballast_engine::backend::crypto::keys();
    if let Some(n) = &p.key_name {
        if !keys.iter().any(|k| &k.name == n) {
            return Err(RpcError::new(-19, format!("key {n} not found")));
        }
    }
    // Never the key material.
    Ok(Value::Array(
        keys.iter()
            .filter(|k| p.key_name.as_ref().is_none_or(|n| n == &k.name))
            .map(|k| json!({"name": k.name, "cipher": k.cipher, "key_bits": k.bits, "in_use": k.users}))
            .collect(),
    ))
}

fn accel_crypto_key_destroy(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        key_name: String,
    }
    let p: P = parse(params)?;
    ballast_engine::backend::crypto::key_destroy(&p.key_name)?;
    Ok(json!(true))
}

fn bdev_crypto_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        base_bdev_name: String,
        name: String,
        key_name: String,
        #[serde(default)]
        crypto_pmd: Option<String>,
    }
    let p: P = parse(params)?;
    let b = ballast_engine::backend::crypto::create(&p.name, &p.base_bdev_name, &p.key_name)?;
    Ok(json!(b.name()))
}

// ------------------------------------------------------------------- compress ----

/// Smallest and largest chunk (the unit compressed as a whole) the engine accepts.
const CHUNK_SIZES: std::ops::RangeInclusive<u32> = 4096..=128 * 1024;
/// Zstd levels the engine accepts.
const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

/// `bdev_compress_create`. SPDK's spellings `comp_algo` and `comp_level` are accepted; its
/// `pm_path` and `lb_size` are accepted and ignored: ballast keeps the volume's metadata on the
/// base bdev (no persistent-memory file) and the logical block size is the base's.
fn bdev_compress_create(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        base_bdev_name: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default, alias = "comp_algo")]
        algorithm: Option<String>,
        #[serde(default, alias = "comp_level")]
        level: Option<i32>,
        #[serde(default)]
        chunk_size: Option<u32>,
        #[serde(default)]
        pm_path: Option<String>,
        #[serde(default)]
        lb_size: Option<u32>,
        /// Format a base holding data but no compressed volume (ballast's; not saved).
        #[serde(default)]
        force: bool,
    }
    let p: P = parse(params)?;
    // Checked here as well as in the engine, so a bad request never reaches the base bdev.
    let algorithm = p.algorithm.map(|a| a.to_ascii_lowercase());
    if let Some(a) = algorithm.as_deref() {
        if a != "lz4" && a != "zstd" {
            return Err(RpcError::params(format!(
                "Invalid parameters: algorithm {a:?} is not supported (lz4 or zstd)"
            )));
        }
    }
    if let Some(l) = p.level {
        if algorithm.as_deref() == Some("lz4") {
            return Err(RpcError::params(
                "Invalid parameters: level applies to zstd only, not to lz4",
            ));
        }
        if !ZSTD_LEVELS.contains(&l) {
            return Err(RpcError::params(format!(
                "Invalid parameters: level {l} is out of range (zstd: {}..={})",
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            )));
        }
    }
    if let Some(c) = p.chunk_size {
        if !c.is_power_of_two() || !CHUNK_SIZES.contains(&c) {
            return Err(RpcError::params(format!(
                "Invalid parameters: chunk_size {c} must be a power of two from {} to {} bytes",
                CHUNK_SIZES.start(),
                CHUNK_SIZES.end()
            )));
        }
    }
    let b = compress::create(
        &ctx.rt,
        compress::CompressOpts {
            name: p.name,
            base: p.base_bdev_name,
            algorithm,
            level: p.level,
            chunk_size: p.chunk_size,
            force: p.force,
        },
    )?;
    Ok(json!(b.name()))
}

/// The `bdev_compress_create` params that recreate compressed bdev `s`, as save_config writes
/// them.
pub(crate) fn compress_json(s: &CompressStats) -> Value {
    let mut v = json!({
        "base_bdev_name": s.base,
        "name": s.name,
        "algorithm": s.algorithm.name(),
        "chunk_size": s.chunk_size,
    });
    if let Algorithm::Zstd { level } = s.algorithm {
        v["level"] = json!(level);
    }
    v
}

/// `bdev_compress_get_stats` (a ballast extension): the create params plus the space figures.
fn bdev_compress_get_stats(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        name: Option<String>,
    }
    let p: P = parse(params)?;
    let mut all = match p.name {
        Some(n) => vec![compress::stats(&n)?],
        None => compress::stages(),
    };
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Value::Array(
        all.iter()
            .map(|s| {
                let mut v = compress_json(s);
                v["logical_bytes"] = json!(s.logical_bytes);
                v["mapped_bytes"] = json!(s.mapped_bytes);
                v["allocated_bytes"] = json!(s.allocated_bytes);
                v["compression_ratio"] = json!(s.ratio);
                v
            })
            .collect(),
    ))
}

// ------------------------------------------------------------- remote (nvme) ----

impl From<ballast_nvme::remote::RemoteError> for RpcError {
    fn from(e: ballast_nvme::remote::RemoteError) -> Self {
        use ballast_nvme::remote::RemoteError as R;
        match e {
            R::Exists(_) => RpcError::new(-17, e.to_string()),
            R::NotFound(_) => RpcError::new(-19, e.to_string()),
            R::Bdev(b) => b.into(),
            R::Host(h) => RpcError::new(-5, h.to_string()),
        }
    }
}

fn bdev_nvme_attach_controller(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        name: String,
        trtype: String,
        traddr: String,
        #[serde(default)]
        adrfam: Option<String>,
        #[serde(default)]
        trsvcid: Option<String>,
        subnqn: String,
        #[serde(default)]
        hostnqn: Option<String>,
        #[serde(default)]
        hostid: Option<String>,
        #[serde(default)]
        hdgst: bool,
        #[serde(default)]
        ddgst: bool,
        #[serde(default)]
        ctrlr_loss_timeout_sec: Option<i64>,
        #[serde(default)]
        reconnect_delay_sec: Option<u64>,
        #[serde(default)]
        fast_io_fail_timeout_sec: Option<u64>,
        #[serde(default)]
        io_queues: Option<u16>,
    }
    let p: P = parse(params)?;
    let addr = socket_addr(&ListenAddress {
        trtype: p.trtype,
        adrfam: p.adrfam,
        traddr: p.traddr,
        trsvcid: p.trsvcid.unwrap_or_else(|| "4420".into()),
    })?;
    let mut host = ballast_nvme::host::HostOpts {
        hdgst: p.hdgst,
        ddgst: p.ddgst,
        ..Default::default()
    };
    if let Some(h) = p.hostnqn {
        host.hostnqn = h;
    }
    if let Some(id) = p.hostid {
        host.hostid = *parse_uuid(Some(id), "hostid")?.expect("given").as_bytes();
    }
    // SPDK: -1 = retry forever; 0 = give up at once.
    let loss = match p.ctrlr_loss_timeout_sec {
        Some(s) if s < 0 => std::time::Duration::from_secs(u64::MAX / 4),
        Some(s) => std::time::Duration::from_secs(s as u64),
        None => std::time::Duration::from_secs(30),
    };
    let names = ballast_nvme::remote::attach(ballast_nvme::remote::AttachOpts {
        name: p.name,
        addr,
        subnqn: p.subnqn,
        host,
        ctrlr_loss_timeout: loss,
        reconnect_delay: std::time::Duration::from_secs(p.reconnect_delay_sec.unwrap_or(1).max(1)),
        io_queues: p.io_queues.unwrap_or(ctx.rt.cores().len() as u16).max(1),
    })?;
    Ok(json!(names))
}

fn bdev_nvme_detach_controller(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    let p: P = parse(params)?;
    ballast_nvme::remote::detach(&p.name)?;
    Ok(json!(true))
}

/// Attach params of a controller, as save_config writes them.
pub(crate) fn remote_json(r: &ballast_nvme::remote::RemoteInfo) -> Value {
    let o = &r.opts;
    json!({
        "name": r.name,
        "trtype": "TCP",
        "adrfam": if o.addr.is_ipv4() { "IPv4" } else { "IPv6" },
        "traddr": o.addr.ip().to_string(),
        "trsvcid": o.addr.port().to_string(),
        "subnqn": o.subnqn,
        "hostnqn": o.host.hostnqn,
        "hostid": uuid::Uuid::from_bytes(o.host.hostid).to_string(),
        "hdgst": o.host.hdgst,
        "ddgst": o.host.ddgst,
        "ctrlr_loss_timeout_sec": o.ctrlr_loss_timeout.as_secs().min(i64::MAX as u64 / 2),
        "reconnect_delay_sec": o.reconnect_delay.as_secs(),
        "io_queues": o.io_queues,
    })
}

fn bdev_nvme_get_controllers(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: NameOpt = parse(params)?;
    let all = ballast_nvme::remote::list();
    if let Some(n) = &p.name {
        if !all.iter().any(|r| &r.name == n) {
            return Err(RpcError::new(-19, format!("controller {n} not found")));
        }
    }
    Ok(Value::Array(
        all.iter()
            .filter(|r| p.name.as_ref().is_none_or(|n| n == &r.name))
            .map(|r| {
                json!({
                    "name": r.name,
                    "ctrlrs": [{"trid": remote_json(r), "state": if r.failed { "failed" } else if r.connected { "enabled" } else { "resetting" }}],
                    "bdevs": r.bdevs,
                    "reconnects": r.reconnects,
                })
            })
            .collect(),
    ))
}

// ----------------------------------------------------------------------- nvmf ----

/// SPDK transport options ballast accepts and ignores (they tune SPDK internals that have
/// no counterpart here), so SPDK scripts run unchanged.
const IGNORED_TRANSPORT_OPTS: &[&str] = &[
    "max_qpairs_per_ctrlr",
    "max_aq_depth",
    "num_shared_buffers",
    "buf_cache_size",
    "dif_insert_or_strip",
    "sock_priority",
    "abort_timeout_sec",
    "zcopy",
    "ack_timeout",
    "data_wr_pool_size",
    "acceptor_poll_rate",
    "tgt_name",
    "control_msg_num",
];

fn nvmf_create_transport(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    struct P {
        trtype: String,
        max_queue_depth: Option<u16>,
        max_io_qpairs_per_ctrlr: Option<u16>,
        in_capsule_data_size: Option<u32>,
        max_io_size: Option<u32>,
        io_unit_size: Option<u32>,
        c2h_success: Option<bool>,
        #[serde(flatten)]
        rest: Map<String, Value>,
    }
    let p: P = parse(params)?;
    if !p.trtype.eq_ignore_ascii_case("tcp") {
        return Err(RpcError::params(format!(
            "Invalid parameters: trtype {:?} is not supported (only TCP)",
            p.trtype
        )));
    }
    if let Some(k) = p
        .rest
        .keys()
        .find(|k| !IGNORED_TRANSPORT_OPTS.contains(&k.as_str()))
    {
        return Err(RpcError::params(format!(
            "Invalid parameters: unknown field `{k}`"
        )));
    }
    let d = TransportOpts::default();
    let max_io_size = p.max_io_size.unwrap_or(d.max_io_size);
    let opts = TransportOpts {
        max_queue_depth: p.max_queue_depth.unwrap_or(d.max_queue_depth),
        max_io_qpairs_per_ctrlr: p
            .max_io_qpairs_per_ctrlr
            .unwrap_or(d.max_io_qpairs_per_ctrlr),
        in_capsule_data_size: p.in_capsule_data_size.unwrap_or(d.in_capsule_data_size),
        max_io_size,
        io_unit_size: p.io_unit_size.unwrap_or(d.io_unit_size),
        c2h_success: p.c2h_success.unwrap_or(d.c2h_success),
        max_h2c_data: max_io_size.min(d.max_h2c_data.max(max_io_size)),
        ..d
    };
    ctx.target.create_transport(opts)?;
    Ok(json!(true))
}

/// The transport's options in SPDK's shape.
pub fn transport_json(o: &TransportOpts) -> Value {
    json!({
        "trtype": "TCP",
        "max_queue_depth": o.max_queue_depth,
        "max_io_qpairs_per_ctrlr": o.max_io_qpairs_per_ctrlr,
        "in_capsule_data_size": o.in_capsule_data_size,
        "max_io_size": o.max_io_size,
        "io_unit_size": o.io_unit_size,
        "c2h_success": o.c2h_success,
    })
}

fn nvmf_get_transports(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        trtype: Option<String>,
        #[serde(default)]
        #[allow(dead_code)]
        tgt_name: Option<String>,
    }
    let p: P = parse(params)?;
    if let Some(t) = &p.trtype {
        if !t.eq_ignore_ascii_case("tcp") {
            return Err(RpcError::new(-19, format!("transport {t} not found")));
        }
    }
    Ok(Value::Array(
        ctx.target
            .transport()
            .map(transport_json)
            .into_iter()
            .collect(),
    ))
}

fn subsystem(ctx: &Context, nqn: &str) -> Result<Arc<Subsystem>, RpcError> {
    ctx.target
        .subsystem(nqn)
        .ok_or_else(|| RpcError::new(-19, format!("subsystem {nqn} not found")))
}

fn nvm_subsystem(ctx: &Context, nqn: &str) -> Result<Arc<Subsystem>, RpcError> {
    let s = subsystem(ctx, nqn)?;
    if s.kind == SubsystemKind::Discovery {
        return Err(RpcError::params(format!(
            "Invalid parameters: {nqn} is the discovery subsystem"
        )));
    }
    Ok(s)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NqnOnly {
    nqn: String,
    #[serde(default)]
    #[allow(dead_code)]
    tgt_name: Option<String>,
}

/// Default serial number of a subsystem created without one (SPDK's default).
pub const DEFAULT_SERIAL: &str = "00000000000000000000";
/// Default model number (SPDK's default).
pub const DEFAULT_MODEL: &str = "SPDK bdev Controller";

fn nvmf_create_subsystem(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        nqn: String,
        #[serde(default)]
        serial_number: Option<String>,
        #[serde(default)]
        model_number: Option<String>,
        #[serde(default)]
        allow_any_host: bool,
        #[serde(default)]
        max_namespaces: Option<u32>,
        #[serde(default)]
        tgt_name: Option<String>,
        #[serde(default)]
        ana_reporting: Option<bool>,
        #[serde(default)]
        min_cntlid: Option<u16>,
        #[serde(default)]
        max_cntlid: Option<u16>,
    }
    let p: P = parse(params)?;
    ctx.target.create_subsystem(
        &p.nqn,
        p.serial_number.as_deref().unwrap_or(DEFAULT_SERIAL),
        p.model_number.as_deref().unwrap_or(DEFAULT_MODEL),
        // SPDK's 0 means "the default" (32 here).
        p.max_namespaces.filter(|&n| n > 0).unwrap_or(32),
        p.allow_any_host,
    )?;
    Ok(json!(true))
}

fn nvmf_delete_subsystem(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: NqnOnly = parse(params)?;
    nvm_subsystem(ctx, &p.nqn)?;
    ctx.target.delete_subsystem(&p.nqn)?;
    Ok(json!(true))
}

fn listen_json(l: &ListenAddr) -> Value {
    json!({
        "trtype": "TCP",
        "adrfam": if l.0.is_ipv4() { "IPv4" } else { "IPv6" },
        "traddr": l.traddr(),
        "trsvcid": l.trsvcid(),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn subsystem_json(s: &Subsystem) -> Value {
    let (any, hosts) = s.hosts();
    let mut v = json!({
        "nqn": s.nqn,
        "subtype": if s.kind == SubsystemKind::Discovery { "Discovery" } else { "NVMe" },
        "listen_addresses": s.listeners().iter().map(listen_json).collect::<Vec<_>>(),
        "allow_any_host": any,
        "hosts": hosts.iter().map(|h| json!({"nqn": h})).collect::<Vec<_>>(),
    });
    if s.kind == SubsystemKind::Nvm {
        let m = v.as_object_mut().expect("object");
        m.insert("serial_number".into(), json!(s.serial));
        m.insert("model_number".into(), json!(s.model));
        m.insert("max_namespaces".into(), json!(s.max_namespaces));
        let mut ns = s.namespaces();
        ns.sort_by_key(|n| n.nsid);
        m.insert(
            "namespaces".into(),
            Value::Array(
                ns.iter()
                    .map(|n| {
                        json!({
                            "nsid": n.nsid,
                            "bdev_name": n.bdev.name(),
                            "name": n.bdev.name(),
                            "nguid": hex(&n.nguid),
                            "eui64": hex(&n.eui64),
                            "uuid": n.uuid.to_string(),
                        })
                    })
                    .collect(),
            ),
        );
    }
    v
}

fn nvmf_get_subsystems(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        #[serde(default)]
        nqn: Option<String>,
        #[serde(default)]
        tgt_name: Option<String>,
    }
    let p: P = parse(params)?;
    if let Some(n) = p.nqn {
        return Ok(json!([subsystem_json(&*subsystem(ctx, &n)?)]));
    }
    let mut all = vec![subsystem_json(ctx.target.discovery())];
    all.extend(ctx.target.subsystems().iter().map(|s| subsystem_json(s)));
    Ok(Value::Array(all))
}

fn parse_hex<const N: usize>(s: &str, param: &str) -> Result<[u8; N], RpcError> {
    let clean: String = s.chars().filter(|c| *c != '-').collect();
    let bad = || {
        RpcError::params(format!(
            "Invalid parameters: {param} {s:?} must be {} hex digits",
            N * 2
        ))
    };
    if clean.len() != N * 2 || !clean.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&clean[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn nvmf_subsystem_add_ns(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Ns {
        bdev_name: String,
        #[serde(default)]
        nsid: Option<u32>,
        #[serde(default)]
        uuid: Option<String>,
        #[serde(default)]
        nguid: Option<String>,
        #[serde(default)]
        eui64: Option<String>,
        #[serde(default)]
        ptpl_file: Option<String>,
        #[serde(default)]
        anagrpid: Option<u32>,
        #[serde(default)]
        no_auto_visible: Option<bool>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        nqn: String,
        namespace: Ns,
        #[serde(default)]
        tgt_name: Option<String>,
    }
    let p: P = parse(params)?;
    let s = nvm_subsystem(ctx, &p.nqn)?;
    let ns = p.namespace;
    let uuid = parse_uuid(ns.uuid, "namespace.uuid")?;
    let nguid = ns
        .nguid
        .as_deref()
        .map(|g| parse_hex::<16>(g, "namespace.nguid"))
        .transpose()?;
    let eui64 = ns
        .eui64
        .as_deref()
        .map(|e| parse_hex::<8>(e, "namespace.eui64"))
        .transpose()?;
    let nsid = s.add_ns(
        &ns.bdev_name,
        ns.nsid.filter(|&n| n != 0),
        uuid,
        nguid,
        eui64,
    )?;
    Ok(json!(nsid))
}

fn nvmf_subsystem_remove_ns(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        nqn: String,
        nsid: u32,
        #[serde(default)]
        tgt_name: Option<String>,
    }
    let p: P = parse(params)?;
    nvm_subsystem(ctx, &p.nqn)?.remove_ns(p.nsid)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenAddress {
    trtype: String,
    #[serde(default)]
    adrfam: Option<String>,
    traddr: String,
    trsvcid: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ListenerParams {
    nqn: String,
    listen_address: ListenAddress,
    #[serde(default)]
    tgt_name: Option<String>,
    #[serde(default)]
    secure_channel: Option<bool>,
    #[serde(default)]
    ana_state: Option<String>,
}

fn socket_addr(l: &ListenAddress) -> Result<SocketAddr, RpcError> {
    if !l.trtype.eq_ignore_ascii_case("tcp") {
        return Err(RpcError::params(format!(
            "Invalid parameters: listen_address.trtype {:?} is not supported (only TCP)",
            l.trtype
        )));
    }
    let ip: IpAddr = l
        .traddr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            RpcError::params(format!(
                "Invalid parameters: listen_address.traddr {:?} is not an IP address",
                l.traddr
            ))
        })?;
    let port: u16 = l.trsvcid.parse().map_err(|_| {
        RpcError::params(format!(
            "Invalid parameters: listen_address.trsvcid {:?} is not a port number",
            l.trsvcid
        ))
    })?;
    if let Some(f) = &l.adrfam {
        let ok = match f.to_ascii_lowercase().as_str() {
            "ipv4" => ip.is_ipv4(),
            "ipv6" => ip.is_ipv6(),
            _ => false,
        };
        if !ok {
            return Err(RpcError::params(format!(
                "Invalid parameters: listen_address.adrfam {f:?} does not match traddr {}",
                l.traddr
            )));
        }
    }
    Ok(SocketAddr::new(ip, port))
}

fn nvmf_subsystem_add_listener(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: ListenerParams = parse(params)?;
    let addr = socket_addr(&p.listen_address)?;
    nvm_subsystem(ctx, &p.nqn)?;
    ctx.target.add_listener(&p.nqn, addr)?;
    Ok(json!(true))
}

fn nvmf_subsystem_remove_listener(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: ListenerParams = parse(params)?;
    let addr = socket_addr(&p.listen_address)?;
    nvm_subsystem(ctx, &p.nqn)?;
    ctx.target.remove_listener(&p.nqn, addr)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct HostParams {
    nqn: String,
    host: String,
    #[serde(default)]
    tgt_name: Option<String>,
    #[serde(default)]
    psk: Option<String>,
}

fn nvmf_subsystem_add_host(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: HostParams = parse(params)?;
    if p.psk.is_some() {
        return Err(RpcError::params(
            "Invalid parameters: psk (TLS) is not supported by ballast",
        ));
    }
    nvm_subsystem(ctx, &p.nqn)?.add_host(&p.host)?;
    Ok(json!(true))
}

fn nvmf_subsystem_remove_host(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: HostParams = parse(params)?;
    nvm_subsystem(ctx, &p.nqn)?.remove_host(&p.host)?;
    Ok(json!(true))
}

fn nvmf_subsystem_allow_any_host(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        nqn: String,
        allow_any_host: bool,
        #[serde(default)]
        tgt_name: Option<String>,
    }
    let p: P = parse(params)?;
    nvm_subsystem(ctx, &p.nqn)?.set_allow_any_host(p.allow_any_host);
    Ok(json!(true))
}

fn nvmf_subsystem_get_controllers(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: NqnOnly = parse(params)?;
    let s = subsystem(ctx, &p.nqn)?;
    let mut cs = s.controllers();
    cs.sort_by_key(|c| c.cntlid);
    Ok(Value::Array(
        cs.iter()
            .map(|c| {
                let q = c.qpairs();
                json!({
                    "cntlid": c.cntlid,
                    "hostnqn": c.hostnqn,
                    "hostid": uuid::Uuid::from_bytes(c.hostid).to_string(),
                    "num_io_qpairs": q.len().saturating_sub(1),
                    "peer_address": c.peer.to_string(),
                    "listen_address": listen_json(&c.listener),
                    "kato_ms": c.kato.as_millis() as u64,
                })
            })
            .collect(),
    ))
}

fn nvmf_subsystem_get_qpairs(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: NqnOnly = parse(params)?;
    let s = subsystem(ctx, &p.nqn)?;
    let mut out = Vec::new();
    let mut cs = s.controllers();
    cs.sort_by_key(|c| c.cntlid);
    for c in cs {
        for q in c.qpairs() {
            out.push(json!({
                "cntlid": c.cntlid,
                "qid": q.qid,
                "state": "active",
                "thread": format!("reactor_{}", q.core),
                "listen_address": listen_json(&c.listener),
                "peer_address": c.peer.to_string(),
            }));
        }
    }
    Ok(Value::Array(out))
}

fn nvmf_subsystem_get_listeners(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: NqnOnly = parse(params)?;
    let s = subsystem(ctx, &p.nqn)?;
    Ok(Value::Array(
        s.listeners()
            .iter()
            .map(|l| json!({"address": listen_json(l), "ana_state": "optimized"}))
            .collect(),
    ))
}
