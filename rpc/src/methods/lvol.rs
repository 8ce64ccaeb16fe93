//! Logical volumes with SPDK's lvol RPCs, over the engine's lvol store
//! (`ballast_engine::backend::lvol`):
//!
//! ```text
//!  bdev_lvol_create_lvstore BDEV LVS ─► a store on BDEV (which it claims) ─► the store's UUID
//!  bdev_lvol_create -l LVS NAME MIB   ─► an lvol bdev named by its UUID, alias LVS/NAME
//!  bdev_lvol_snapshot LVOL SNAP       ─► SNAP, read-only; LVOL becomes its thin clone
//!  bdev_lvol_clone SNAP CLONE         ─► CLONE, a thin clone of SNAP
//!  bdev_lvol_inflate / _decouple_parent, _resize, _set_read_only, _rename, _delete
//!  bdev_lvol_get_lvstores, bdev_lvol_get_lvols, bdev_lvol_rename_lvstore, _grow_lvstore,
//!  bdev_lvol_delete_lvstore
//!  bdev_lvol_check_lvstore BDEV       ─► ballast's: the metadata checker's report
//! ```
//!
//! A store is named by `uuid` (`lvs_uuid` in `bdev_lvol_get_lvols`) or `lvs_name`: exactly one
//! where the method acts on a store, at most one where it lists. An lvol is named by its bdev
//! name (its UUID) or its alias `lvs/lvol`; a bdev of another kind is refused with SPDK's -19
//! before the store is asked. Parameters are checked here (names, sizes, clear methods, UUIDs)
//! so a bad request never reaches the store.
//!
//! save_config writes no lvol and no store, as SPDK's does not: they come back by examine when
//! the store's base bdev is created at replay (see `crate::config`).

use ballast_engine::backend::lvol::{self, ClearMethod, LvolInfo, LvsInfo, LvsOpts, MAX_NAME};

use super::bdev::{existing, of_kind, parse_uuid, LVOL};
use super::*;
use crate::error::cap;

/// The store a call names: SPDK's `uuid` (canonical form) or `lvs_name`, never both.
struct Store {
    uuid: Option<String>,
    name: Option<String>,
}

impl Store {
    /// Checks the pair; `required`: one of them must be given. `uuid_param` is the UUID's
    /// parameter name (`uuid`, or `lvs_uuid` in `bdev_lvol_get_lvols`).
    fn pick(
        uuid: Option<String>,
        name: Option<String>,
        uuid_param: &str,
        required: bool,
    ) -> Result<Store, RpcError> {
        let uuid = parse_uuid(uuid, uuid_param)?.map(|u| u.to_string());
        match (&uuid, &name) {
            (Some(_), Some(_)) => Err(RpcError::params(format!(
                "Invalid parameters: give {uuid_param} or lvs_name, not both"
            ))),
            (None, None) if required => Err(RpcError::params(format!(
                "Invalid parameters: give the lvol store's {uuid_param} or lvs_name"
            ))),
            _ => Ok(Store { uuid, name }),
        }
    }

    fn uuid(&self) -> Option<&str> {
        self.uuid.as_deref()
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// SPDK's clear methods (case-insensitive, as SPDK compares them); absent: the default
/// (unmap). An lvol also takes rpc.py 26.x's `default`.
fn clear_method(given: Option<&str>, lvol: bool) -> Result<ClearMethod, RpcError> {
    let Some(s) = given else {
        return Ok(ClearMethod::default());
    };
    let lower = s.to_ascii_lowercase();
    if lvol && lower == "default" {
        return Ok(ClearMethod::default());
    }
    ClearMethod::parse(&lower).ok_or_else(|| {
        RpcError::params(format!(
            "Invalid parameters: clear_method {:?} is not one of none, unmap, write_zeroes{}",
            cap(s, 32),
            if lvol { ", default" } else { "" }
        ))
    })
}

/// An lvol's size in bytes from SPDK's `size_in_mib` or the older `size` (bytes, still sent
/// by existing tools): exactly one, above 0. The store rounds it up to whole clusters.
fn size_bytes(size_in_mib: Option<u64>, size: Option<u64>) -> Result<u64, RpcError> {
    match (size_in_mib, size) {
        (Some(_), Some(_)) => Err(RpcError::params(
            "Invalid parameters: give size_in_mib or size (bytes), not both",
        )),
        (None, None) => Err(RpcError::params(
            "Invalid parameters: missing field `size_in_mib`",
        )),
        (Some(0), None) => Err(RpcError::params(
            "Invalid parameters: size_in_mib must be > 0",
        )),
        (None, Some(0)) => Err(RpcError::params("Invalid parameters: size must be > 0")),
        (Some(mib), None) => mib.checked_mul(1 << 20).ok_or_else(|| {
            RpcError::params(format!(
                "Invalid parameters: size_in_mib {mib} is too large"
            ))
        }),
        (None, Some(bytes)) => Ok(bytes),
    }
}

/// A store or lvol name: not empty, at most [`MAX_NAME`] bytes (SPDK's limit).
fn check_name(param: &str, name: &str) -> Result<(), RpcError> {
    if name.is_empty() {
        return Err(RpcError::params(format!(
            "Invalid parameters: {param} must not be empty"
        )));
    }
    if name.len() > MAX_NAME {
        return Err(RpcError::params(format!(
            "Invalid parameters: {param} {} is {} bytes long (at most {MAX_NAME})",
            cap(name, 80),
            name.len()
        )));
    }
    Ok(())
}

/// The lvol bdev `name` names (its UUID or alias); SPDK's -19 for anything else.
fn lvol_bdev(name: &str) -> Result<Arc<ballast_engine::Bdev>, RpcError> {
    of_kind(name, LVOL, "")
}

/// A store as `bdev_lvol_get_lvstores` shows it (SPDK's keys and order).
fn lvs_json(s: &LvsInfo) -> Value {
    json!({
        "uuid": s.uuid.to_string(),
        "name": s.name,
        "base_bdev": s.base_bdev,
        "total_data_clusters": s.total_data_clusters,
        "free_clusters": s.free_clusters,
        "block_size": s.block_size,
        "cluster_size": s.cluster_size,
    })
}

/// An lvol as `bdev_lvol_get_lvols` shows it. ballast has no external snapshots and no
/// degraded lvols (a store opens whole or not at all).
fn lvol_json(l: &LvolInfo) -> Value {
    json!({
        "alias": l.alias,
        "uuid": l.uuid.to_string(),
        "name": l.name,
        "is_thin_provisioned": l.thin,
        "is_snapshot": l.is_snapshot,
        "is_clone": l.is_clone,
        "is_esnap_clone": false,
        "is_degraded": false,
        "lvs": {"name": l.lvs_name, "uuid": l.lvs_uuid.to_string()},
        "num_allocated_clusters": l.num_allocated_clusters,
    })
}

/// SPDK's `driver_specific.lvol` object of an lvol bdev in `bdev_get_bdevs`: `base_snapshot`
/// only on a clone, `clones` only on a snapshot.
pub(crate) fn lvol_driver_json(l: &LvolInfo) -> Value {
    let mut v = json!({
        "lvol_store_uuid": l.lvs_uuid.to_string(),
        "base_bdev": l.base_bdev,
        "thin_provision": l.thin,
        "num_allocated_clusters": l.num_allocated_clusters,
        "snapshot": l.is_snapshot,
        "clone": l.is_clone,
        "esnap_clone": false,
    });
    if l.is_clone {
        v["base_snapshot"] = json!(l.base_snapshot);
    }
    if l.is_snapshot {
        v["clones"] = json!(l.clones);
    }
    v
}

/// `bdev_lvol_create_lvstore`: formats `bdev_name` as a store; returns the store's UUID.
/// SPDK's `num_md_pages_per_cluster_ratio` and `md_page_size` tune blobstore's metadata
/// layout, which ballast's store does not share: accepted and ignored (methods/compat.rs).
pub(crate) fn bdev_lvol_create_lvstore(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        bdev_name: String,
        lvs_name: String,
        #[serde(default)]
        cluster_sz: Option<u64>,
        #[serde(default)]
        clear_method: Option<String>,
    }
    let p: P = parse(params)?;
    check_name("lvs_name", &p.lvs_name)?;
    let clear_method = clear_method(p.clear_method.as_deref(), false)?;
    // 0 is SPDK's "the default".
    let cluster_sz = p.cluster_sz.filter(|&c| c != 0);
    if let Some(c) = cluster_sz.filter(|c| !c.is_power_of_two()) {
        return Err(RpcError::params(format!(
            "Invalid parameters: cluster_sz {c} is not a power of two"
        )));
    }
    existing(&p.bdev_name)?;
    let s = lvol::create_lvstore(
        &ctx.rt,
        &LvsOpts {
            bdev_name: p.bdev_name,
            lvs_name: p.lvs_name,
            cluster_sz,
            clear_method,
        },
    )?;
    Ok(json!(s.uuid.to_string()))
}

/// Params of the methods that name one store (`bdev_lvol_delete_lvstore`,
/// `bdev_lvol_grow_lvstore`) or filter by one (`bdev_lvol_get_lvstores`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreParams {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    lvs_name: Option<String>,
}

impl StoreParams {
    fn store(params: Option<Value>, required: bool) -> Result<Store, RpcError> {
        let p: StoreParams = parse(params)?;
        Store::pick(p.uuid, p.lvs_name, "uuid", required)
    }
}

/// `bdev_lvol_delete_lvstore`: removes the store's lvol bdevs and erases its metadata
/// (refused while one of its lvols is in use).
pub(crate) fn bdev_lvol_delete_lvstore(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let s = StoreParams::store(params, true)?;
    lvol::delete_lvstore(s.uuid(), s.name())?;
    Ok(json!(true))
}

/// `bdev_lvol_get_lvstores`: every store, or the one named (unknown: -19).
pub(crate) fn bdev_lvol_get_lvstores(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let s = StoreParams::store(params, false)?;
    let mut all = lvol::get_lvstores(s.uuid(), s.name())?;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Value::Array(all.iter().map(lvs_json).collect()))
}

/// `bdev_lvol_grow_lvstore`: takes in what the base bdev grew by since the store was made.
pub(crate) fn bdev_lvol_grow_lvstore(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let s = StoreParams::store(params, true)?;
    lvol::grow_lvstore(s.uuid(), s.name())?;
    Ok(json!(true))
}

/// Params of the renames: `bdev_lvol_rename_lvstore` and `bdev_lvol_rename`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    old_name: String,
    new_name: String,
}

/// `bdev_lvol_rename_lvstore`: its lvols' aliases follow.
pub(crate) fn bdev_lvol_rename_lvstore(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: Rename = parse(params)?;
    check_name("new_name", &p.new_name)?;
    lvol::rename_lvstore(&p.old_name, &p.new_name)?;
    Ok(json!(true))
}

/// `bdev_lvol_create`: returns the new lvol's bdev name (its UUID). rpc.py sends
/// `size_in_mib`; older tools send `size` in bytes.
pub(crate) fn bdev_lvol_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        lvol_name: String,
        #[serde(default)]
        size_in_mib: Option<u64>,
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        thin_provision: Option<bool>,
        #[serde(default)]
        uuid: Option<String>,
        #[serde(default)]
        lvs_name: Option<String>,
        #[serde(default)]
        clear_method: Option<String>,
    }
    let p: P = parse(params)?;
    check_name("lvol_name", &p.lvol_name)?;
    let s = Store::pick(p.uuid, p.lvs_name, "uuid", true)?;
    let bytes = size_bytes(p.size_in_mib, p.size)?;
    let clear_method = clear_method(p.clear_method.as_deref(), true)?;
    let l = lvol::create_lvol(
        s.uuid(),
        s.name(),
        &p.lvol_name,
        bytes,
        p.thin_provision.unwrap_or(false),
        clear_method,
    )?;
    Ok(json!(l.uuid.to_string()))
}

/// `bdev_lvol_get_lvols`: every lvol (snapshots included), or those of one store.
pub(crate) fn bdev_lvol_get_lvols(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        lvs_uuid: Option<String>,
        #[serde(default)]
        lvs_name: Option<String>,
    }
    let p: P = parse(params)?;
    let s = Store::pick(p.lvs_uuid, p.lvs_name, "lvs_uuid", false)?;
    let mut all = lvol::get_lvols(s.uuid(), s.name())?;
    all.sort_by(|a, b| a.alias.cmp(&b.alias));
    Ok(Value::Array(all.iter().map(lvol_json).collect()))
}

/// Params of the methods that act on one lvol and take nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

/// Runs `op` on the lvol `params.name` names; `true`, as SPDK answers.
fn on_lvol(
    params: Option<Value>,
    op: fn(&str) -> ballast_engine::Result<()>,
) -> Result<Value, RpcError> {
    let p: Named = parse(params)?;
    let b = lvol_bdev(&p.name)?;
    op(b.name())?;
    Ok(json!(true))
}

/// `bdev_lvol_delete`: a snapshot with one clone is merged into it; with more, refused.
pub(crate) fn bdev_lvol_delete(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: Named = parse(params)?;
    // A bdev of another kind is refused here; a name no bdev has is the store's to judge
    // (SPDK also finds lvols whose bdev is missing).
    let name = match ballast_engine::bdev::lookup(&p.name) {
        Some(_) => lvol_bdev(&p.name)?.name().to_string(),
        None => p.name,
    };
    lvol::delete_lvol(&name)?;
    Ok(json!(true))
}

/// Makes lvol `new` (given as parameter `new_param`) from lvol `from` with `op` (a snapshot,
/// a clone); returns the new lvol's bdev name (its UUID), as SPDK does.
fn derive(
    from: &str,
    new_param: &str,
    new: &str,
    op: fn(&str, &str) -> ballast_engine::Result<LvolInfo>,
) -> Result<Value, RpcError> {
    check_name(new_param, new)?;
    let b = lvol_bdev(from)?;
    Ok(json!(op(b.name(), new)?.uuid.to_string()))
}

/// `bdev_lvol_snapshot`: a read-only snapshot; the lvol becomes its thin clone.
pub(crate) fn bdev_lvol_snapshot(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        lvol_name: String,
        snapshot_name: String,
    }
    let p: P = parse(params)?;
    derive(
        &p.lvol_name,
        "snapshot_name",
        &p.snapshot_name,
        lvol::snapshot,
    )
}

/// `bdev_lvol_clone`: a thin clone of a read-only lvol (a snapshot).
pub(crate) fn bdev_lvol_clone(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        snapshot_name: String,
        clone_name: String,
    }
    let p: P = parse(params)?;
    derive(&p.snapshot_name, "clone_name", &p.clone_name, lvol::clone)
}

/// `bdev_lvol_resize`: to `size_in_mib` (or the older `size` in bytes), rounded up to
/// clusters; an exported namespace takes the new size.
pub(crate) fn bdev_lvol_resize(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        #[serde(default)]
        size_in_mib: Option<u64>,
        #[serde(default)]
        size: Option<u64>,
    }
    let p: P = parse(params)?;
    let bytes = size_bytes(p.size_in_mib, p.size)?;
    let b = lvol_bdev(&p.name)?;
    lvol::resize(b.name(), bytes)?;
    Ok(json!(true))
}

/// `bdev_lvol_inflate`: allocates every cluster of a clone and cuts it loose.
pub(crate) fn bdev_lvol_inflate(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    on_lvol(params, lvol::inflate)
}

/// `bdev_lvol_decouple_parent`: copies what the parent provides and cuts the clone loose.
pub(crate) fn bdev_lvol_decouple_parent(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    on_lvol(params, lvol::decouple_parent)
}

/// `bdev_lvol_set_read_only`: for good.
pub(crate) fn bdev_lvol_set_read_only(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    on_lvol(params, lvol::set_read_only)
}

/// `bdev_lvol_rename`: within its store (the bdev's alias follows; its name, the UUID, stays).
pub(crate) fn bdev_lvol_rename(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: Rename = parse(params)?;
    check_name("new_name", &p.new_name)?;
    let b = lvol_bdev(&p.old_name)?;
    lvol::rename(b.name(), &p.new_name)?;
    Ok(json!(true))
}

/// `bdev_lvol_check_lvstore` (ballast's): the metadata checker's report on the store kept on
/// `bdev_name`, open or not. Problems are the report's `errors`, not an error response.
pub(crate) fn bdev_lvol_check_lvstore(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        bdev_name: String,
    }
    let p: P = parse(params)?;
    let b = existing(&p.bdev_name)?;
    let r = lvol::check(&ctx.rt, b.name())?;
    Ok(json!({
        "bdev_name": b.name(),
        "consistent": r.errors.is_empty(),
        "errors": r.errors,
        "lvols": r.lvols,
        "total_clusters": r.total_clusters,
        "used_clusters": r.used_clusters,
        "free_clusters": r.free_clusters,
        "log_blocks": r.log_blocks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(snapshot: bool, clone: bool) -> LvolInfo {
        LvolInfo {
            uuid: uuid::Uuid::from_u128(1),
            name: "v".into(),
            alias: "s/v".into(),
            lvs_uuid: uuid::Uuid::from_u128(2),
            lvs_name: "s".into(),
            base_bdev: "M0".into(),
            size_bytes: 8 << 20,
            block_size: 512,
            num_allocated_clusters: 2,
            thin: clone,
            read_only: snapshot,
            is_snapshot: snapshot,
            is_clone: clone,
            base_snapshot: clone.then(|| "snap".to_string()),
            clones: if snapshot { vec!["c1".into()] } else { vec![] },
        }
    }

    #[test]
    fn store_is_uuid_xor_name() {
        let u = "0E2B8E6C-3F3A-4E0F-8D8E-1C6B7F0A9B01".to_string();
        let s = Store::pick(Some(u.clone()), None, "uuid", true).unwrap();
        assert_eq!(s.uuid(), Some("0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01"));
        let s = Store::pick(None, None, "lvs_uuid", false).unwrap();
        assert!(s.uuid().is_none() && s.name().is_none());
        for (uuid, name, required, what) in [
            (Some(u.clone()), Some("s".to_string()), false, "not both"),
            (None, None, true, "uuid or lvs_name"),
            (Some("nope".to_string()), None, true, "uuid \"nope\""),
        ] {
            let e = Store::pick(uuid, name, "uuid", required).err().unwrap();
            assert_eq!(e.code, crate::error::INVALID_PARAMS);
            assert!(e.message.contains(what), "{}", e.message);
        }
    }

    #[test]
    fn sizes_are_one_positive_param_in_bytes() {
        assert_eq!(size_bytes(Some(3), None).unwrap(), 3 << 20);
        assert_eq!(size_bytes(None, Some(4096)).unwrap(), 4096);
        for (mib, bytes, what) in [
            (Some(1), Some(1), "not both"),
            (None, None, "size_in_mib"),
            (Some(0), None, "size_in_mib must be > 0"),
            (None, Some(0), "size must be > 0"),
            (Some(u64::MAX), None, "too large"),
        ] {
            let e = size_bytes(mib, bytes).unwrap_err();
            assert!(e.message.contains(what), "{}", e.message);
        }
    }

    #[test]
    fn clear_methods_are_spdks() {
        assert_eq!(clear_method(None, false).unwrap(), ClearMethod::Unmap);
        assert_eq!(
            clear_method(Some("Write_Zeroes"), false).unwrap(),
            ClearMethod::WriteZeroes
        );
        assert_eq!(clear_method(Some("none"), true).unwrap(), ClearMethod::None);
        assert_eq!(
            clear_method(Some("default"), true).unwrap(),
            ClearMethod::Unmap
        );
        assert!(clear_method(Some("default"), false).is_err());
        let e = clear_method(Some("shred"), true).unwrap_err();
        assert!(
            e.message.contains("clear_method \"shred\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn names_fit_spdks_limit() {
        check_name("lvs_name", &"x".repeat(MAX_NAME)).unwrap();
        let e = check_name("lvs_name", &"x".repeat(MAX_NAME + 1)).unwrap_err();
        assert!(e.message.contains("at most 63"), "{}", e.message);
        assert!(check_name("lvol_name", "").is_err());
    }

    #[test]
    fn lvol_shapes_are_spdks() {
        let l = lvol_json(&info(false, true));
        assert_eq!(l["alias"], json!("s/v"));
        assert_eq!(
            l["lvs"],
            json!({"name": "s", "uuid": uuid::Uuid::from_u128(2).to_string()})
        );
        assert_eq!(l["is_esnap_clone"], json!(false));
        let d = lvol_driver_json(&info(false, true));
        assert_eq!(d["base_snapshot"], json!("snap"));
        assert!(d.get("clones").is_none());
        let d = lvol_driver_json(&info(true, false));
        assert_eq!(d["clones"], json!(["c1"]));
        assert!(d.get("base_snapshot").is_none());
        assert_eq!(d["base_bdev"], json!("M0"));
    }
}
