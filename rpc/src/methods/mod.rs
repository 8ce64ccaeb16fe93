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

/// What a method, when it succeeds, may do to the configuration [`crate::config::save`]
/// renders (`save_config`): the daemon's `--save-config` file is rewritten after a successful
/// call of a method that [`ConfigEffect::Changes`] it, never after one that only
/// [`ConfigEffect::Reads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigEffect {
    /// Leaves the saved configuration as it was: getters, and methods that act on what
    /// save_config does not hold (the log level, error injection, shutdown, waits).
    Reads,
    /// May change it: creates, deletes, adds, removes, renames, resizes, options saved.
    /// Lvol methods are here too although lvols are not saved: what is stacked on an lvol
    /// is saved by the lvol's name.
    Changes,
}
use ConfigEffect::{Changes, Reads};

/// Every method, by name, with its effect on the configuration.
pub const METHODS: &[(&str, Method, ConfigEffect)] = &[
    ("rpc_get_methods", rpc_get_methods, Reads),
    ("spdk_get_version", spdk_get_version, Reads),
    ("framework_wait_init", framework_wait_init, Reads),
    ("framework_get_reactors", framework_get_reactors, Reads),
    ("thread_get_stats", thread_get_stats, Reads),
    ("spdk_kill_instance", spdk_kill_instance, Reads),
    ("framework_get_subsystems", framework_get_subsystems, Reads),
    ("framework_get_config", framework_get_config, Reads),
    ("log_get_print_level", log_get_print_level, Reads),
    ("log_set_print_level", log_set_print_level, Reads),
    ("iobuf_get_stats", iobuf_get_stats, Reads),
    ("sock_impl_get_options", sock_impl_get_options, Reads),
    ("save_config", save_config, Reads),
    ("load_config", load_config, Changes),
    ("bdev_get_bdevs", bdev_get_bdevs, Reads),
    ("bdev_get_iostat", bdev_get_iostat, Reads),
    ("bdev_wait_for_examine", bdev_wait_for_examine, Reads),
    ("bdev_malloc_create", bdev_malloc_create, Changes),
    ("bdev_malloc_delete", bdev_malloc_delete, Changes),
    ("bdev_null_create", bdev_null_create, Changes),
    ("bdev_null_delete", bdev_null_delete, Changes),
    ("bdev_uring_create", bdev_uring_create, Changes),
    ("bdev_uring_delete", bdev_uring_delete, Changes),
    ("accel_crypto_key_create", accel_crypto_key_create, Changes),
    ("accel_crypto_keys_get", accel_crypto_keys_get, Reads),
    (
        "accel_crypto_key_destroy",
        accel_crypto_key_destroy,
        Changes,
    ),
    ("bdev_crypto_create", bdev_crypto_create, Changes),
    ("bdev_crypto_delete", bdev_crypto_delete, Changes),
    ("bdev_compress_create", bdev_compress_create, Changes),
    ("bdev_compress_delete", bdev_compress_delete, Changes),
    ("bdev_compress_get_stats", bdev_compress_get_stats, Reads),
    ("bdev_raid_create", bdev_raid_create, Changes),
    ("bdev_raid_get_bdevs", bdev_raid_get_bdevs, Reads),
    ("bdev_raid_add_base_bdev", bdev_raid_add_base_bdev, Changes),
    (
        "bdev_raid_remove_base_bdev",
        bdev_raid_remove_base_bdev,
        Changes,
    ),
    ("bdev_raid_set_options", bdev_raid_set_options, Changes),
    ("bdev_raid_delete", bdev_raid_delete, Changes),
    // A pause of a mirror's writes is not configuration (it ends by itself).
    ("bdev_raid_quiesce", bdev_raid_quiesce, Reads),
    ("bdev_raid_unquiesce", bdev_raid_unquiesce, Reads),
    (
        "bdev_lvol_create_lvstore",
        bdev_lvol_create_lvstore,
        Changes,
    ),
    (
        "bdev_lvol_delete_lvstore",
        bdev_lvol_delete_lvstore,
        Changes,
    ),
    ("bdev_lvol_get_lvstores", bdev_lvol_get_lvstores, Reads),
    (
        "bdev_lvol_rename_lvstore",
        bdev_lvol_rename_lvstore,
        Changes,
    ),
    ("bdev_lvol_grow_lvstore", bdev_lvol_grow_lvstore, Changes),
    ("bdev_lvol_create", bdev_lvol_create, Changes),
    ("bdev_lvol_get_lvols", bdev_lvol_get_lvols, Reads),
    ("bdev_lvol_delete", bdev_lvol_delete, Changes),
    ("bdev_lvol_snapshot", bdev_lvol_snapshot, Changes),
    ("bdev_lvol_clone", bdev_lvol_clone, Changes),
    ("bdev_lvol_resize", bdev_lvol_resize, Changes),
    ("bdev_lvol_inflate", bdev_lvol_inflate, Changes),
    (
        "bdev_lvol_decouple_parent",
        bdev_lvol_decouple_parent,
        Changes,
    ),
    ("bdev_lvol_set_read_only", bdev_lvol_set_read_only, Changes),
    ("bdev_lvol_rename", bdev_lvol_rename, Changes),
    ("bdev_lvol_check_lvstore", bdev_lvol_check_lvstore, Reads),
    ("bdev_error_create", bdev_error_create, Changes),
    ("bdev_error_delete", bdev_error_delete, Changes),
    ("bdev_error_inject_error", bdev_error_inject_error, Reads),
    (
        "bdev_nvme_attach_controller",
        bdev_nvme_attach_controller,
        Changes,
    ),
    (
        "bdev_nvme_detach_controller",
        bdev_nvme_detach_controller,
        Changes,
    ),
    (
        "bdev_nvme_get_controllers",
        bdev_nvme_get_controllers,
        Reads,
    ),
    ("nvmf_create_transport", nvmf_create_transport, Changes),
    ("nvmf_get_transports", nvmf_get_transports, Reads),
    ("nvmf_get_stats", nvmf_get_stats, Reads),
    ("nvmf_create_subsystem", nvmf_create_subsystem, Changes),
    ("nvmf_delete_subsystem", nvmf_delete_subsystem, Changes),
    ("nvmf_get_subsystems", nvmf_get_subsystems, Reads),
    ("nvmf_subsystem_add_ns", nvmf_subsystem_add_ns, Changes),
    (
        "nvmf_subsystem_remove_ns",
        nvmf_subsystem_remove_ns,
        Changes,
    ),
    (
        "nvmf_subsystem_add_listener",
        nvmf_subsystem_add_listener,
        Changes,
    ),
    (
        "nvmf_subsystem_remove_listener",
        nvmf_subsystem_remove_listener,
        Changes,
    ),
    ("nvmf_subsystem_add_host", nvmf_subsystem_add_host, Changes),
    (
        "nvmf_subsystem_remove_host",
        nvmf_subsystem_remove_host,
        Changes,
    ),
    (
        "nvmf_subsystem_allow_any_host",
        nvmf_subsystem_allow_any_host,
        Changes,
    ),
    (
        "nvmf_subsystem_get_controllers",
        nvmf_subsystem_get_controllers,
        Reads,
    ),
    (
        "nvmf_subsystem_get_qpairs",
        nvmf_subsystem_get_qpairs,
        Reads,
    ),
    (
        "nvmf_subsystem_get_listeners",
        nvmf_subsystem_get_listeners,
        Reads,
    ),
];

/// The effect of `method` on the configuration; `None` for a method ballast does not have.
pub fn config_effect(method: &str) -> Option<ConfigEffect> {
    METHODS
        .iter()
        .find(|(n, _, _)| *n == method)
        .map(|(_, _, e)| *e)
}

/// Calls `method` with `params`.
pub fn call(ctx: &Context, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
    let Some((_, f, _)) = METHODS.iter().find(|(n, _, _)| *n == method) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The effects agree with the names, so a method added with the wrong one shows: a getter
    /// (a `get` word) reads; a creator, deleter, adder, remover, setter ... changes. The few
    /// that do neither are listed with why.
    #[test]
    fn getters_read_and_makers_change() {
        const CHANGING_WORDS: &[&str] = &[
            "create", "delete", "destroy", "add", "remove", "attach", "detach", "rename", "resize",
            "grow", "inflate", "decouple", "snapshot", "clone", "set", "load", "allow",
        ];
        // Neither a getter nor a change to what save_config renders.
        const READS_ANYWAY: &[&str] = &[
            "spdk_kill_instance",      // stops the daemon
            "framework_wait_init",     // a wait
            "bdev_wait_for_examine",   // a wait
            "save_config",             // renders it
            "log_set_print_level",     // the log level is not saved
            "bdev_error_inject_error", // injections are not saved
            "bdev_lvol_check_lvstore", // checks, repairs nothing
            "bdev_raid_quiesce",       // a pause of writes, not configuration
            "bdev_raid_unquiesce",     // its end
        ];
        let mut seen = std::collections::HashSet::new();
        for (name, _, effect) in METHODS {
            assert!(seen.insert(name), "{name} twice");
            let words: Vec<&str> = name.split('_').collect();
            let expected = if words.contains(&"get") || READS_ANYWAY.contains(name) {
                Reads
            } else if words.iter().any(|w| CHANGING_WORDS.contains(w)) {
                Changes
            } else {
                panic!("{name}: say in this test whether it changes the configuration");
            };
            assert_eq!(*effect, expected, "{name}");
            assert_eq!(config_effect(name), Some(expected));
        }
        assert_eq!(config_effect("no_such_method"), None);
    }
}
