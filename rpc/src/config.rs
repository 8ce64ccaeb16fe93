//! Configuration in SPDK's `save_config` format:
//!
//! ```text
//! {"subsystems": [
//!   {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create", "params": {...}}, ...]},
//!   {"subsystem": "nvmf", "config": [{"method": "nvmf_create_transport", ...},
//!                                    {"method": "nvmf_create_subsystem", ...}, ...]}]}
//! ```
//!
//! `save` renders the live state deterministically (sorted by name, NQN, NSID), so saving,
//! replaying the file into a fresh daemon and saving again gives the same document. `load`
//! replays a document method by method, skipping methods of SPDK subsystems ballast does not
//! have (logged), and stops at the first failing method with an error naming it.

use ballast_nvme::target::SubsystemKind;
use serde_json::{json, Value};

use crate::error::RpcError;
use crate::methods::{self, Context};

fn entry(method: &str, params: Value) -> Value {
    json!({"method": method, "params": params})
}

/// The live configuration.
pub fn save(ctx: &Context) -> Value {
    let mut bdevs = ballast_engine::bdev::list();
    bdevs.sort_by(|a, b| a.name().cmp(b.name()));
    let mut bcfg = Vec::new();
    for b in bdevs {
        let i = b.info();
        let common = json!({
            "name": i.name,
            "num_blocks": i.num_blocks,
            "block_size": i.block_size,
            "uuid": i.uuid.to_string(),
        });
        match b.product_name() {
            "Malloc disk" => bcfg.push(entry("bdev_malloc_create", common)),
            "Null disk" => bcfg.push(entry("bdev_null_create", common)),
            "URING bdev" => {
                let filename = b
                    .describe()
                    .into_iter()
                    .find(|(k, _)| k == "filename")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                bcfg.push(entry(
                    "bdev_uring_create",
                    json!({
                        "name": i.name,
                        "filename": filename,
                        "block_size": i.block_size,
                        "uuid": i.uuid.to_string(),
                    }),
                ));
            }
            // Saved below as their controller's attach.
            "NVMe disk" | "crypto" => {}
            other => {
                tracing::warn!(bdev = %i.name, product = other, "save_config: bdev type not saved")
            }
        }
    }
    for r in ballast_nvme::remote::list() {
        bcfg.push(entry(
            "bdev_nvme_attach_controller",
            methods::remote_json(&r),
        ));
    }
    for (name, base, key) in ballast_engine::backend::crypto::stages() {
        bcfg.push(entry(
            "bdev_crypto_create",
            json!({"base_bdev_name": base, "name": name, "key_name": key}),
        ));
    }
    // Keys are saved with their material, as SPDK does: protect saved configs (0600).
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let acfg: Vec<Value> = ballast_engine::backend::crypto::keys()
        .into_iter()
        .filter_map(|k| {
            let (k1, k2) = ballast_engine::backend::crypto::key_material(&k.name)?;
            Some(entry(
                "accel_crypto_key_create",
                json!({"name": k.name, "cipher": k.cipher, "key": hex(&k1), "key2": hex(&k2)}),
            ))
        })
        .collect();
    let t = &ctx.target;
    let mut ncfg = Vec::new();
    if let Some(o) = t.transport() {
        ncfg.push(entry("nvmf_create_transport", methods::transport_json(o)));
    }
    for s in t.subsystems() {
        if s.kind != SubsystemKind::Nvm {
            continue;
        }
        let (any, mut hosts) = s.hosts();
        ncfg.push(entry(
            "nvmf_create_subsystem",
            json!({
                "nqn": s.nqn,
                "serial_number": s.serial,
                "model_number": s.model,
                "allow_any_host": any,
                "max_namespaces": s.max_namespaces,
            }),
        ));
        let mut ns = s.namespaces();
        ns.sort_by_key(|n| n.nsid);
        for n in ns {
            ncfg.push(entry(
                "nvmf_subsystem_add_ns",
                json!({
                    "nqn": s.nqn,
                    "namespace": {
                        "nsid": n.nsid,
                        "bdev_name": n.bdev.name(),
                        "uuid": n.uuid.to_string(),
                        "nguid": n.nguid.iter().map(|x| format!("{x:02X}")).collect::<String>(),
                        "eui64": n.eui64.iter().map(|x| format!("{x:02X}")).collect::<String>(),
                    }
                }),
            ));
        }
        hosts.sort();
        for h in hosts {
            ncfg.push(entry(
                "nvmf_subsystem_add_host",
                json!({"nqn": s.nqn, "host": h}),
            ));
        }
        let mut ls = s.listeners();
        ls.sort();
        for l in ls {
            ncfg.push(entry(
                "nvmf_subsystem_add_listener",
                json!({
                    "nqn": s.nqn,
                    "listen_address": {
                        "trtype": "TCP",
                        "adrfam": if l.0.is_ipv4() { "IPv4" } else { "IPv6" },
                        "traddr": l.traddr(),
                        "trsvcid": l.trsvcid(),
                    }
                }),
            ));
        }
    }
    json!({"subsystems": [
        {"subsystem": "accel", "config": acfg},
        {"subsystem": "bdev", "config": bcfg},
        {"subsystem": "nvmf", "config": ncfg},
    ]})
}

/// SPDK methods that tune parts of SPDK ballast does not have; skipped on load.
fn skippable(method: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "iobuf_",
        "sock_",
        "accel_",
        "vmd_",
        "scheduler_",
        "framework_set_",
        "keyring_",
        "bdev_set_options",
        "bdev_wait_for_examine",
        "bdev_nvme_set_options",
        "bdev_nvme_set_hotplug",
        "bdev_iscsi_set_options",
        "nvmf_set_config",
        "nvmf_set_max_subsystems",
        "nvmf_set_crdt",
        "bdev_raid_set_options",
        "iscsi_",
        "vhost_",
        "ublk_",
        "nbd_",
        "scsi_",
    ];
    PREFIXES.iter().any(|p| method.starts_with(p))
}

/// Replays a configuration document.
pub fn load(ctx: &Context, doc: &Value) -> Result<(), RpcError> {
    let bad = |why: &str| RpcError::params(format!("Invalid parameters: config {why}"));
    let subs = doc
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("must be an object with a \"subsystems\" array"))?;
    for s in subs {
        let name = s.get("subsystem").and_then(Value::as_str).unwrap_or("?");
        let Some(cfg) = s.get("config") else { continue };
        if cfg.is_null() {
            continue;
        }
        let cfg = cfg
            .as_array()
            .ok_or_else(|| bad(&format!("subsystem {name}: config must be an array")))?;
        for e in cfg {
            let method = e
                .get("method")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("subsystem {name}: an entry has no method")))?;
            if matches!(method, "load_config" | "save_config" | "spdk_kill_instance") {
                return Err(bad(&format!("may not call {method}")));
            }
            if !methods::METHODS.iter().any(|(n, _)| *n == method) {
                if skippable(method) {
                    tracing::info!(
                        method,
                        "load_config: skipping SPDK method ballast has no use for"
                    );
                    continue;
                }
                return Err(RpcError::new(
                    crate::error::METHOD_NOT_FOUND,
                    format!("load_config: method {method} is not supported by ballast"),
                ));
            }
            let params = e.get("params").cloned();
            methods::call(ctx, method, params).map_err(|err| {
                RpcError::new(err.code, format!("load_config: {method}: {}", err.message))
            })?;
        }
    }
    Ok(())
}

/// The embedded default of the README's first command, in this format.
pub fn embedded_default(
    nqn: &str,
    listen: std::net::SocketAddr,
    size_mib: u64,
    block_size: u32,
    transport: Value,
) -> Value {
    json!({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {
                "name": "Malloc0",
                "num_blocks": size_mib * 1024 * 1024 / block_size as u64,
                "block_size": block_size,
            }},
        ]},
        {"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": transport},
            {"method": "nvmf_create_subsystem", "params": {
                "nqn": nqn,
                "serial_number": "BALLAST0000000000001",
                "model_number": "ballast",
                "allow_any_host": true,
                "max_namespaces": 32,
            }},
            {"method": "nvmf_subsystem_add_ns", "params": {
                "nqn": nqn,
                "namespace": {"nsid": 1, "bdev_name": "Malloc0"},
            }},
            {"method": "nvmf_subsystem_add_listener", "params": {
                "nqn": nqn,
                "listen_address": {
                    "trtype": "TCP",
                    "adrfam": if listen.is_ipv4() { "IPv4" } else { "IPv6" },
                    "traddr": listen.ip().to_string(),
                    "trsvcid": listen.port().to_string(),
                },
            }},
        ]},
    ]})
}
