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

mod bdev;
mod compat;
mod compress_stage;
mod crypto;
mod error_stage;
mod framework;
mod lvol;
mod mirror;
mod nvmf;
mod ops;
mod remote;

use bdev::*;
pub(crate) use compress_stage::compress_json;
use compress_stage::*;
use crypto::*;
use error_stage::*;
use framework::*;
use lvol::*;
pub(crate) use mirror::raid_options_json;
use mirror::*;
use nvmf::*;
pub(crate) use nvmf::{addr_json, hex, listen_json};
pub use nvmf::{transport_json, DEFAULT_MODEL, DEFAULT_SERIAL};
pub(crate) use ops::wait_for_examine;
use ops::*;
pub(crate) use remote::remote_json;
use remote::*;

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
    /// Each CPU's /proc/stat times when the daemon started (framework_get_reactors reports
    /// what its reactors' cores spent since).
    pub(crate) cpu_base: Vec<framework::CpuTimes>,
}

impl Context {
    /// A context over `rt` and `target`.
    pub fn new(rt: RuntimeHandle, target: Arc<Target>, stop: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Context {
            rt,
            target,
            stop,
            started: Instant::now(),
            cpu_base: framework::cpu_times(),
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
    ("framework_get_subsystems", framework_get_subsystems),
    ("framework_get_config", framework_get_config),
    ("log_get_print_level", log_get_print_level),
    ("log_set_print_level", log_set_print_level),
    ("iobuf_get_stats", iobuf_get_stats),
    ("sock_impl_get_options", sock_impl_get_options),
    ("save_config", save_config),
    ("load_config", load_config),
    ("bdev_get_bdevs", bdev_get_bdevs),
    ("bdev_get_iostat", bdev_get_iostat),
    ("bdev_wait_for_examine", bdev_wait_for_examine),
    ("bdev_malloc_create", bdev_malloc_create),
    ("bdev_malloc_delete", bdev_malloc_delete),
    ("bdev_null_create", bdev_null_create),
    ("bdev_null_delete", bdev_null_delete),
    ("bdev_uring_create", bdev_uring_create),
    ("bdev_uring_delete", bdev_uring_delete),
    ("accel_crypto_key_create", accel_crypto_key_create),
    ("accel_crypto_keys_get", accel_crypto_keys_get),
    ("accel_crypto_key_destroy", accel_crypto_key_destroy),
    ("bdev_crypto_create", bdev_crypto_create),
    ("bdev_crypto_delete", bdev_crypto_delete),
    ("bdev_compress_create", bdev_compress_create),
    ("bdev_compress_delete", bdev_compress_delete),
    ("bdev_compress_get_stats", bdev_compress_get_stats),
    ("bdev_raid_create", bdev_raid_create),
    ("bdev_raid_get_bdevs", bdev_raid_get_bdevs),
    ("bdev_raid_add_base_bdev", bdev_raid_add_base_bdev),
    ("bdev_raid_remove_base_bdev", bdev_raid_remove_base_bdev),
    ("bdev_raid_set_options", bdev_raid_set_options),
    ("bdev_raid_delete", bdev_raid_delete),
    ("bdev_raid_quiesce", bdev_raid_quiesce),
    ("bdev_raid_unquiesce", bdev_raid_unquiesce),
    ("bdev_lvol_create_lvstore", bdev_lvol_create_lvstore),
    ("bdev_lvol_delete_lvstore", bdev_lvol_delete_lvstore),
    ("bdev_lvol_get_lvstores", bdev_lvol_get_lvstores),
    ("bdev_lvol_rename_lvstore", bdev_lvol_rename_lvstore),
    ("bdev_lvol_grow_lvstore", bdev_lvol_grow_lvstore),
    ("bdev_lvol_create", bdev_lvol_create),
    ("bdev_lvol_get_lvols", bdev_lvol_get_lvols),
    ("bdev_lvol_delete", bdev_lvol_delete),
    ("bdev_lvol_snapshot", bdev_lvol_snapshot),
    ("bdev_lvol_clone", bdev_lvol_clone),
    ("bdev_lvol_resize", bdev_lvol_resize),
    ("bdev_lvol_inflate", bdev_lvol_inflate),
    ("bdev_lvol_decouple_parent", bdev_lvol_decouple_parent),
    ("bdev_lvol_set_read_only", bdev_lvol_set_read_only),
    ("bdev_lvol_rename", bdev_lvol_rename),
    ("bdev_lvol_check_lvstore", bdev_lvol_check_lvstore),
    ("bdev_error_create", bdev_error_create),
    ("bdev_error_delete", bdev_error_delete),
    ("bdev_error_inject_error", bdev_error_inject_error),
    ("bdev_nvme_attach_controller", bdev_nvme_attach_controller),
    ("bdev_nvme_detach_controller", bdev_nvme_detach_controller),
    ("bdev_nvme_get_controllers", bdev_nvme_get_controllers),
    ("nvmf_create_transport", nvmf_create_transport),
    ("nvmf_get_transports", nvmf_get_transports),
    ("nvmf_get_stats", nvmf_get_stats),
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
            format!("Method not found: {}", crate::error::cap(method, 128)),
        ));
    };
    let mut params = params;
    compat::screen(method, &mut params)?;
    // A bdev registered a moment ago may be being examined for an lvol store (its claim is
    // held meanwhile, and its lvols are not there yet): every method sees the outcome, as
    // scripts expect (one atomic load when nothing is examined).
    if method != "bdev_wait_for_examine" {
        wait_for_examine()?;
    }
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

/// Params of the listings that take an optional name and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptName {
    #[serde(default)]
    name: Option<String>,
}

/// Methods without parameters accept none (or an empty object).
fn no_params(params: Option<Value>) -> Result<(), RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct None_ {}
    parse::<None_>(params).map(|_| ())
}
