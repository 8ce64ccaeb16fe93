//! Configuration in SPDK's `save_config` format:
//!
//! ```text
//! {"subsystems": [
//!   {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create", "params": {...}}, ...]},
//!   {"subsystem": "nvmf", "config": [{"method": "nvmf_create_transport", ...},
//!                                    {"method": "nvmf_create_subsystem", ...}, ...]}]}
//! ```
//!
//! `save` renders the live state deterministically (sorted by name, NQN, NSID; a stage after
//! the bdev it is built on), so saving, replaying the file into a fresh daemon and saving
//! again gives the same document. The document holds crypto keys with their material, as
//! SPDK's does: `ballast-rpc save_config` writes it with mode 0600. `load`
//! replays a document method by method, skipping methods of SPDK subsystems ballast does not
//! have (logged), and stops at the first failing method with an error naming it.
//!
//! Lvol stores and lvols are not saved, as SPDK's are not: when the bdev holding a store is
//! created at replay, examine brings the store and its lvols back. A stage or mirror on an lvol
//! is ordered after the entry creating the store's base; the bdev config ends with
//! `bdev_wait_for_examine`, as SPDK's does, so namespaces on lvols (in the nvmf config, later)
//! find them; and replay waits for running examines before each method.

use std::collections::HashMap;

use ballast_engine::backend::lvol;
use ballast_nvme::target::SubsystemKind;
use serde_json::{json, Value};

use crate::error::RpcError;
use crate::methods::{self, Context};

fn entry(method: &str, params: Value) -> Value {
    json!({"method": method, "params": params})
}

/// One entry of the "bdev" config and how it stacks: the bdevs it creates and the bdev it is
/// built on. [`dependency_order`] sorts these.
#[derive(Debug, Clone)]
pub(crate) struct BdevEntry {
    /// Names of the bdevs the entry creates (a controller attach creates one per namespace).
    pub provides: Vec<String>,
    /// The bdevs it is built on (a stage's base, a mirror's children).
    pub bases: Vec<String>,
    /// The `{"method", "params"}` entry.
    pub entry: Value,
}

impl BdevEntry {
    fn base(name: &str, entry: Value) -> Self {
        BdevEntry {
            provides: vec![name.to_string()],
            bases: Vec::new(),
            entry,
        }
    }

    fn stage(name: &str, base: &str, entry: Value) -> Self {
        Self::over(name, vec![base.to_string()], entry)
    }

    fn over(name: &str, bases: Vec<String>, entry: Value) -> Self {
        BdevEntry {
            provides: vec![name.to_string()],
            bases,
            entry,
        }
    }
}

/// Orders bdev entries so that each comes after the entry creating its base, for any
/// stacking (crypto on compress on malloc, compress on crypto on an NVMe namespace, ...).
///
/// Kahn's algorithm in waves: first every entry without a base, then the stages whose base is
/// already emitted, and so on; within a wave the given order is kept, so the output is as
/// deterministic as the input. A base no entry creates (a bdev type save_config does not
/// save) does not hold its stage back: replaying fails at that stage, naming the base.
/// A cycle cannot exist (a stage claims its base), but would not lose entries either: they
/// are appended, with a warning.
pub(crate) fn dependency_order(entries: Vec<BdevEntry>) -> Vec<Value> {
    use std::collections::HashSet;
    let saved: HashSet<String> = entries
        .iter()
        .flat_map(|e| e.provides.iter().cloned())
        .collect();
    let mut emitted: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    let mut pending = entries;
    while !pending.is_empty() {
        let ready = |e: &BdevEntry| {
            e.bases
                .iter()
                .all(|b| emitted.contains(b) || !saved.contains(b))
        };
        let (wave, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|e| ready(e));
        if wave.is_empty() {
            let names: Vec<&String> = rest.iter().flat_map(|e| &e.provides).collect();
            tracing::warn!(?names, "save_config: bdevs stacked in a cycle");
            out.extend(rest.into_iter().map(|e| e.entry));
            break;
        }
        for e in wave {
            emitted.extend(e.provides);
            out.push(e.entry);
        }
        pending = rest;
    }
    out
}

/// Every name an lvol bdev answers to (bdev name, UUID, `lvs/lvol` alias), each mapped to the
/// base bdev of its store: no entry creates an lvol, examine brings it back with that base.
fn lvol_bases(bdevs: &[std::sync::Arc<ballast_engine::Bdev>]) -> HashMap<String, String> {
    let mut stands_on = HashMap::new();
    for b in bdevs.iter().filter(|b| b.product_name() == lvol::PRODUCT) {
        let Some(l) = lvol::lvol_info(b.name()) else {
            continue;
        };
        let names = [b.name().to_string(), l.alias, l.uuid.to_string()];
        for n in names.into_iter().chain(b.aliases()) {
            stands_on.insert(n, l.base_bdev.clone());
        }
    }
    stands_on
}

/// Makes each entry built on an lvol wait for the entry that brings the lvol back: the one
/// creating its store's base bdev (through stores on lvols, down to a bdev that is not one).
pub(crate) fn resolve_lvol_bases(entries: &mut [BdevEntry], stands_on: &HashMap<String, String>) {
    for base in entries.iter_mut().flat_map(|e| e.bases.iter_mut()) {
        // At most one hop per lvol: a store cannot stand on itself, but nothing may loop.
        for _ in 0..=stands_on.len() {
            match stands_on.get(base.as_str()) {
                Some(next) => *base = next.clone(),
                None => break,
            }
        }
    }
}

/// The "bdev" config: every bdev save_config can recreate, bases before what is built on them,
/// then `bdev_wait_for_examine` as SPDK ends it (lvols come back by examine of their store's
/// base, and what is configured after, namespaces on lvols, needs them).
fn bdev_config() -> Vec<Value> {
    let mut bdevs = ballast_engine::bdev::list();
    bdevs.sort_by(|a, b| a.name().cmp(b.name()));
    let stands_on = lvol_bases(&bdevs);
    let mut bases = Vec::new();
    for b in bdevs {
        let i = b.info();
        let common = json!({
            "name": i.name,
            "num_blocks": i.num_blocks,
            "block_size": i.block_size,
            "uuid": i.uuid.to_string(),
        });
        let entry = match b.product_name() {
            "Malloc disk" => {
                let mut params = common;
                if b.describe()
                    .iter()
                    .any(|(k, v)| k == "overcommit" && v == "true")
                {
                    params["overcommit"] = json!(true);
                }
                entry("bdev_malloc_create", params)
            }
            "Null disk" => entry("bdev_null_create", common),
            "URING bdev" => {
                let filename = b
                    .describe()
                    .into_iter()
                    .find(|(k, _)| k == "filename")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                entry(
                    "bdev_uring_create",
                    json!({
                        "name": i.name,
                        "filename": filename,
                        "block_size": i.block_size,
                        "uuid": i.uuid.to_string(),
                    }),
                )
            }
            // Saved below: as their controller's attach, or as stages over their base. Lvols
            // are not saved: examine brings them back when their store's base is created.
            "NVMe disk" | "crypto" | "compress" | "error" | "raid" | lvol::PRODUCT => continue,
            other => {
                tracing::warn!(bdev = %i.name, product = other, "save_config: bdev type not saved");
                continue;
            }
        };
        bases.push(BdevEntry::base(&i.name, entry));
    }
    for r in ballast_nvme::remote::list() {
        bases.push(BdevEntry {
            provides: r.bdevs.clone(),
            bases: Vec::new(),
            entry: entry("bdev_nvme_attach_controller", methods::remote_json(&r)),
        });
    }
    let mut stages: Vec<(String, BdevEntry)> = Vec::new();
    for (name, base, key) in ballast_engine::backend::crypto::stages() {
        let params = json!({"base_bdev_name": base, "name": name, "key_name": key});
        let e = BdevEntry::stage(&name, &base, entry("bdev_crypto_create", params));
        stages.push((name, e));
    }
    for (name, base) in ballast_engine::backend::error::stages() {
        let Some(b) = ballast_engine::bdev::lookup(&name) else {
            continue;
        };
        let params = json!({"base_name": base, "uuid": b.info().uuid.to_string()});
        let e = BdevEntry::stage(&name, &base, entry("bdev_error_create", params));
        stages.push((name, e));
    }
    for m in ballast_engine::backend::mirror::list() {
        // Slots without a bdev (removed, missing) are left out: the superblocks name them.
        let kids: Vec<String> = m
            .members
            .iter()
            .filter(|c| !c.name.is_empty())
            .map(|c| c.name.clone())
            .collect();
        let params = json!({
            "name": m.name,
            "raid_level": "raid1",
            "base_bdevs": kids,
            "superblock": true,
            "uuid": m.uuid.to_string(),
            "region_size_kb": m.region_bytes >> 10,
        });
        let e = BdevEntry::over(&m.name, kids, entry("bdev_raid_create", params));
        stages.push((m.name.clone(), e));
    }
    for s in ballast_engine::backend::compress::stages() {
        let e = entry("bdev_compress_create", methods::compress_json(&s));
        stages.push((s.name.clone(), BdevEntry::stage(&s.name, &s.base, e)));
    }
    stages.sort_by(|a, b| a.0.cmp(&b.0));
    bases.extend(stages.into_iter().map(|(_, e)| e));
    let mut out = Vec::new();
    // Rebuild settings first (SPDK's place for them), when not the defaults.
    let o = ballast_engine::backend::mirror::rebuild::options();
    if o != ballast_engine::backend::mirror::rebuild::DEFAULT_OPTIONS {
        out.push(entry(
            "bdev_raid_set_options",
            methods::raid_options_json(&o),
        ));
    }
    resolve_lvol_bases(&mut bases, &stands_on);
    out.extend(dependency_order(bases));
    out.push(json!({"method": "bdev_wait_for_examine"}));
    out
}

/// ballast's configurable subsystems with those each depends on, in the order a saved
/// configuration lists (and replays) them: SPDK's `framework_get_subsystems` shape.
pub const SUBSYSTEMS: &[(&str, &[&str])] =
    &[("accel", &[]), ("bdev", &["accel"]), ("nvmf", &["bdev"])];

/// The live configuration of subsystem `name` (`framework_get_config`); `None` if ballast
/// has no such subsystem.
pub fn subsystem_config(ctx: &Context, name: &str) -> Option<Vec<Value>> {
    match name {
        "accel" => Some(accel_config()),
        "bdev" => Some(bdev_config()),
        "nvmf" => Some(nvmf_config(ctx)),
        _ => None,
    }
}

/// The live configuration: every subsystem's, in [`SUBSYSTEMS`] order.
pub fn save(ctx: &Context) -> Value {
    let subs: Vec<Value> = SUBSYSTEMS
        .iter()
        .map(|(name, _)| json!({"subsystem": name, "config": subsystem_config(ctx, name)}))
        .collect();
    json!({ "subsystems": subs })
}

/// The "accel" config: crypto keys.
fn accel_config() -> Vec<Value> {
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
    acfg
}

/// The "nvmf" config: transport, subsystems with their namespaces, hosts and listeners.
fn nvmf_config(ctx: &Context) -> Vec<Value> {
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
                        "nguid": methods::hex(&n.nguid),
                        "eui64": methods::hex(&n.eui64),
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
                    "listen_address": methods::listen_json(&l),
                }),
            ));
        }
    }
    ncfg
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
            if methods::config_effect(method).is_none() {
                if skippable(method) {
                    tracing::info!(
                        method = %crate::error::cap(method, 128),
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
            // What an entry stands on may be an lvol that examine is still bringing back
            // (a store on a namespace attached just before): wait for it, as SPDK's stages
            // wait for their base. Free when nothing is being examined.
            methods::wait_for_examine()?;
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
                "listen_address": methods::addr_json(&listen),
            }},
        ]},
    ]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[Value]) -> Vec<&str> {
        entries
            .iter()
            .map(|e| e["params"]["name"].as_str().unwrap())
            .collect()
    }

    fn base(name: &str) -> BdevEntry {
        BdevEntry::base(name, entry("bdev_malloc_create", json!({"name": name})))
    }

    fn crypto(name: &str, on: &str) -> BdevEntry {
        let params = json!({"name": name, "base_bdev_name": on});
        BdevEntry::stage(name, on, entry("bdev_crypto_create", params))
    }

    fn compress(name: &str, on: &str) -> BdevEntry {
        let params = json!({"name": name, "base_bdev_name": on});
        BdevEntry::stage(name, on, entry("bdev_compress_create", params))
    }

    /// Every entry comes after the one creating its base, and none is lost.
    fn assert_bases_first(order: &[Value], count: usize) {
        assert_eq!(order.len(), count, "{order:?}");
        for (i, e) in order.iter().enumerate() {
            if let Some(b) = e["params"]["base_bdev_name"].as_str() {
                let at = order.iter().position(|x| x["params"]["name"] == b);
                assert!(at.is_none_or(|at| at < i), "{b} after its stage: {order:?}");
            }
        }
    }

    #[test]
    fn crypto_over_compress_and_compress_over_crypto() {
        // Listed stage-first and named so that sorting by name would be wrong.
        for (stages, expected) in [
            (
                [crypto("A_crypt", "COMP_M0"), compress("COMP_M0", "M0")],
                ["M0", "COMP_M0", "A_crypt"],
            ),
            (
                [compress("A_comp", "Z_crypt"), crypto("Z_crypt", "M0")],
                ["M0", "Z_crypt", "A_comp"],
            ),
        ] {
            let order = dependency_order([vec![base("M0")], stages.to_vec()].concat());
            assert_eq!(names(&order), expected);
            assert_bases_first(&order, 3);
        }
    }

    #[test]
    fn deep_and_wide_stacks_keep_bases_first() {
        // crypto on compress on crypto on malloc, and stages on an NVMe controller's namespace.
        let nvme = BdevEntry {
            provides: vec!["Nvme0n1".into(), "Nvme0n2".into()],
            bases: Vec::new(),
            entry: entry("bdev_nvme_attach_controller", json!({"name": "Nvme0"})),
        };
        let order = dependency_order(vec![
            base("Malloc0"),
            base("Null0"),
            nvme,
            crypto("c1", "Malloc0"),
            compress("c2", "c1"),
            crypto("c3", "c2"),
            compress("n1", "Nvme0n2"),
            crypto("n2", "n1"),
        ]);
        assert_eq!(
            names(&order),
            ["Malloc0", "Null0", "Nvme0", "c1", "n1", "c2", "n2", "c3"]
        );
        assert_bases_first(&order, 8);
    }

    #[test]
    fn a_stage_on_an_lvol_follows_the_base_of_its_store() {
        // Lvol bdevs are named by UUID, alias lvs/lvol; the store lvs0 is on Z_base, lvs1 on
        // an lvol of lvs0. Sorted by name, the stages would come before Z_base.
        let stands_on: HashMap<String, String> = [
            ("0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01", "Z_base"),
            ("lvs0/v0", "Z_base"),
            ("lvs1/v1", "lvs0/v0"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let mut entries = vec![
            crypto("A_crypt", "0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01"),
            compress("B_comp", "lvs1/v1"),
            base("Z_base"),
        ];
        resolve_lvol_bases(&mut entries, &stands_on);
        assert_eq!(entries[1].bases, ["Z_base"]);
        let order = dependency_order(entries);
        assert_eq!(names(&order), ["Z_base", "A_crypt", "B_comp"]);
        // What is not an lvol is left alone.
        let mut entries = vec![crypto("c", "M0")];
        resolve_lvol_bases(&mut entries, &stands_on);
        assert_eq!(entries[0].bases, ["M0"]);
    }

    #[test]
    fn unsaved_base_and_cycles_lose_no_entry() {
        // The base is a bdev type save_config does not write: the stage is still saved.
        let order = dependency_order(vec![crypto("x", "Unsaved0"), base("Malloc0")]);
        assert_eq!(names(&order), ["x", "Malloc0"]);
        // Impossible live (a stage claims its base), but nothing may vanish.
        let order = dependency_order(vec![base("M"), crypto("a", "b"), compress("b", "a")]);
        assert_eq!(names(&order), ["M", "a", "b"]);
    }
}
