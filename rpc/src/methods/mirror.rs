//! Replicated volumes with SPDK's raid RPCs: `bdev_raid_create` (raid1), `bdev_raid_get_bdevs`,
//! `bdev_raid_add_base_bdev` (re-adds a faulted member — a partial rebuild when it is the one
//! that left — or fills an empty slot with a new bdev: a full rebuild; in the background),
//! `bdev_raid_remove_base_bdev` (empties a member's slot), `bdev_raid_set_options` (rebuild
//! window, bandwidth cap; ballast's `self_heal`) and `bdev_raid_delete` (with the other
//! deletes). ballast's own `bdev_raid_quiesce` / `bdev_raid_unquiesce` pause a mirror's writes
//! for a snapshot of every member (SPDK has no RPC for it). ballast's mirror always keeps a superblock and a write-intent bitmap on its
//! children (the durable record of who is in sync and what a returning member missed):
//! `superblock: false`, rpc.py's default, is accepted and a superblock is kept all the same.

use super::*;
use ballast_engine::backend::mirror::rebuild::{self, Options as RaidOptions};
use ballast_engine::backend::mirror::{self, MemberState, MirrorInfo, MirrorOpts, META_BYTES};

pub(crate) fn bdev_raid_create(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        raid_level: String,
        base_bdevs: Vec<String>,
        #[serde(default)]
        strip_size_kb: Option<u32>,
        #[serde(default)]
        #[allow(dead_code)]
        superblock: bool,
        #[serde(default)]
        uuid: Option<String>,
        /// ballast's: bytes of data one write-intent bit stands for, in KiB.
        #[serde(default)]
        region_size_kb: Option<u32>,
    }
    let p: P = parse(params)?;
    if !matches!(p.raid_level.to_ascii_lowercase().as_str(), "raid1" | "1") {
        return Err(RpcError::params(format!(
            "Invalid parameters: raid_level {} is not supported by ballast (raid1 only)",
            crate::error::cap(&p.raid_level, 32)
        )));
    }
    if p.strip_size_kb.is_some_and(|s| s != 0) {
        return Err(RpcError::params(
            "Invalid parameters: strip_size_kb applies to striped levels; raid1 takes 0",
        ));
    }
    let uuid = parse_uuid(p.uuid, "uuid")?;
    mirror::create(
        &ctx.rt,
        MirrorOpts {
            name: p.name.clone(),
            children: p.base_bdevs,
            uuid,
            region_bytes: p.region_size_kb.map(|k| k.saturating_mul(1024)),
        },
    )?;
    Ok(json!(true))
}

/// SPDK's raid state of a mirror: online while an in-sync child serves it.
fn state(m: &MirrorInfo) -> &'static str {
    if m.members.iter().any(|c| c.state == MemberState::InSync) {
        "online"
    } else {
        "offline"
    }
}

/// SPDK's `process` object of a rebuild in progress, with ballast's figures beside it.
fn process_json(m: &MirrorInfo, bs: u64) -> Option<Value> {
    let p = mirror::rebuild::progress(&m.name)?;
    let pct = if p.blocks_total == 0 {
        100.0
    } else {
        p.blocks_done as f64 * 100.0 / p.blocks_total as f64
    };
    let secs = p.started.elapsed().as_secs_f64();
    let eta = (p.blocks_done > 0)
        .then(|| secs * (p.blocks_total - p.blocks_done) as f64 / p.blocks_done as f64);
    Some(json!({
        "type": "rebuild",
        "target": p.target,
        "progress": {"blocks": p.blocks_done, "percent": (pct * 100.0).round() / 100.0},
        // ballast's: what kind of rebuild, in bytes, and when it should end.
        "kind": p.kind.as_str(),
        "bytes_to_copy": p.blocks_total * bs,
        "bytes_copied": p.blocks_done * bs,
        "eta_s": eta.map(|e| (e * 10.0).round() / 10.0),
    }))
}

/// ballast's record of the last rebuild (none yet: absent).
fn last_json(m: &MirrorInfo) -> Option<Value> {
    let o = m.last_rebuild.as_ref()?;
    Some(json!({
        "target": o.target,
        "kind": o.kind.as_str(),
        "bytes_to_copy": o.bytes_to_copy,
        "bytes_copied": o.bytes_copied,
        "seconds": (o.seconds * 1000.0).round() / 1000.0,
        "outcome": if o.error.is_none() { "in_sync" } else { "failed" },
        "error": o.error,
    }))
}

fn raid_json(m: &MirrorInfo) -> Value {
    let b = ballast_engine::bdev::lookup(&m.name);
    let bs = b.as_ref().map_or(512, |b| b.block_size() as u64);
    let blocks = b.as_ref().map_or(0, |b| b.num_blocks());
    let operational = m
        .members
        .iter()
        .filter(|c| c.state != MemberState::Faulted)
        .count();
    let discovered = m.members.iter().filter(|c| !c.name.is_empty()).count();
    let mut v = json!({
        "name": m.name,
        "uuid": m.uuid.to_string(),
        "strip_size_kb": 0,
        "state": state(m),
        "raid_level": "raid1",
        "superblock": true,
        "num_base_bdevs": m.members.len(),
        "num_base_bdevs_discovered": discovered,
        "num_base_bdevs_operational": operational,
        "base_bdevs_list": m.members.iter().map(|c| json!({
            // An empty slot (removed, or missing at assembly) has no bdev: SPDK's null.
            "name": (!c.name.is_empty()).then_some(&c.name),
            "uuid": c.uuid.to_string(),
            "is_configured": c.state != MemberState::Faulted,
            "data_offset": META_BYTES / bs,
            "data_size": blocks,
            // ballast's: the member's state in the superblock, and whether only a full
            // copy brings it back (new, blank, removed).
            "state": match c.state {
                MemberState::InSync => "in_sync",
                MemberState::Faulted => "faulted",
                MemberState::Rebuilding => "rebuilding",
            },
            "needs_full_rebuild": c.full,
        })).collect::<Vec<_>>(),
        // ballast's: the membership generation on disk, the write-intent bitmap.
        "generation": m.generation,
        "region_size_kb": m.region_bytes >> 10,
        "dirty_regions": m.dirty_regions,
        "dirty_bytes": m.dirty_regions * m.region_bytes as u64,
        // ballast's: writes paused by bdev_raid_quiesce, and for how long yet.
        "quiesced": m.quiesced_for.is_some(),
    });
    if let Some(d) = m.quiesced_for {
        v["quiesce_remaining_ms"] = json!(d.as_millis() as u64);
    }
    if let Some(p) = process_json(m, bs) {
        v["process"] = p;
    }
    if let Some(l) = last_json(m) {
        v["last_rebuild"] = l;
    }
    v
}

pub(crate) fn bdev_raid_add_base_bdev(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        raid_bdev: String,
        base_bdev: String,
    }
    let p: P = parse(params)?;
    let m = mirror::get(&p.raid_bdev)
        .ok_or_else(|| RpcError::new(-19, format!("raid bdev {} not found", p.raid_bdev)))?;
    if let Some(r) = mirror::rebuild::progress(&m.name) {
        return Err(RpcError::new(
            -16,
            format!("{} is rebuilding {} already", m.name, r.target),
        ));
    }
    match m.members.iter().find(|c| c.name == p.base_bdev) {
        Some(member) if member.state != MemberState::Faulted => {
            return Err(RpcError::new(
                -16,
                format!(
                    "{} is already in {} ({:?})",
                    member.name, m.name, member.state
                ),
            ));
        }
        Some(_) => {}
        // A new bdev into an empty slot, or a missing member coming back.
        None => {
            mirror::add_member(&ctx.rt, &m.name, &p.base_bdev)?;
        }
    }
    // Checked and reserved now (errors answer this call); the copy runs in the background
    // and bdev_raid_get_bdevs shows its progress.
    mirror::rebuild::start(&ctx.rt, &m.name, &p.base_bdev)?;
    Ok(json!(true))
}

pub(crate) fn bdev_raid_remove_base_bdev(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    let p: P = parse(params)?;
    let m = mirror::list()
        .into_iter()
        .find(|m| m.members.iter().any(|c| c.name == p.name))
        .ok_or_else(|| {
            RpcError::new(
                -19,
                format!(
                    "No such device: {} is not a member of any raid bdev",
                    crate::error::cap(&p.name, 255)
                ),
            )
        })?;
    mirror::remove_member(&ctx.rt, &m.name, &p.name)?;
    Ok(json!(true))
}

/// `bdev_raid_set_options`'s parameters as save_config writes them.
pub(crate) fn raid_options_json(o: &RaidOptions) -> Value {
    json!({
        "process_window_size_kb": o.window_bytes >> 10,
        "process_max_bandwidth_mb_sec": o.max_bandwidth_mib,
        "self_heal": o.self_heal,
    })
}

pub(crate) fn bdev_raid_set_options(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        process_window_size_kb: Option<u64>,
        #[serde(default)]
        process_max_bandwidth_mb_sec: Option<u64>,
        /// ballast's: re-add a faulted child when its transport reconnects.
        #[serde(default)]
        self_heal: Option<bool>,
    }
    let p: P = parse(params)?;
    let mut o = rebuild::options();
    if let Some(k) = p.process_window_size_kb {
        o.window_bytes = k.saturating_mul(1024);
    }
    if let Some(b) = p.process_max_bandwidth_mb_sec {
        o.max_bandwidth_mib = b;
    }
    if let Some(h) = p.self_heal {
        o.self_heal = h;
    }
    rebuild::set_options(o)?;
    Ok(json!(true))
}

pub(crate) fn bdev_raid_get_bdevs(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        category: Option<String>,
        #[serde(default)]
        name: Option<String>,
    }
    let p: P = parse(params)?;
    let cat = p.category.as_deref().unwrap_or("all");
    if !matches!(cat, "all" | "online" | "configuring" | "offline") {
        return Err(RpcError::params(format!(
            "Invalid parameters: category {} is not one of all, online, configuring, offline",
            crate::error::cap(cat, 32)
        )));
    }
    let all = mirror::list();
    if let Some(n) = &p.name {
        if !all.iter().any(|m| &m.name == n) {
            return Err(RpcError::new(-19, format!("raid bdev {n} not found")));
        }
    }
    Ok(Value::Array(
        all.iter()
            .filter(|m| p.name.as_ref().is_none_or(|n| n == &m.name))
            .filter(|m| cat == "all" || state(m) == cat)
            .map(raid_json)
            .collect(),
    ))
}

/// `bdev_raid_delete` (rpc.py 26.x also sends `clear_sb`): deletes the mirror; with
/// `clear_sb` its children's superblocks are wiped afterwards, so they no longer reassemble
/// it (their data stays).
pub(crate) fn bdev_raid_delete(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        #[serde(default)]
        clear_sb: bool,
    }
    let p: P = parse(params)?;
    let children: Vec<String> = mirror::get(&p.name)
        .map(|m| {
            m.members
                .into_iter()
                .map(|c| c.name)
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let r = super::bdev::delete_named(&p.name, super::bdev::RAID)?;
    if p.clear_sb {
        for c in &children {
            mirror::wipe_superblock(&ctx.rt, c)?;
        }
    }
    Ok(r)
}

/// ballast's `bdev_raid_quiesce {name, timeout_ms}`: pauses the mirror's writes (held, never
/// failed; reads go on), waits for those in flight and flushes every member; the pause ends
/// by itself after `timeout_ms` (default 10 000) unless `bdev_raid_unquiesce` ends it first.
/// Again while paused: the deadline is renewed.
pub(crate) fn bdev_raid_quiesce(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    }
    let p: P = parse(params)?;
    if mirror::get(&p.name).is_none() {
        return Err(RpcError::new(
            -19,
            format!("raid bdev {} not found", crate::error::cap(&p.name, 255)),
        ));
    }
    let timeout = p.timeout_ms.map_or(
        mirror::quiesce::DEFAULT_TIMEOUT,
        std::time::Duration::from_millis,
    );
    mirror::quiesce(&ctx.rt, &p.name, timeout)?;
    Ok(json!(true))
}

/// ballast's `bdev_raid_unquiesce {name}`: ends the pause; true if one was in force, false if
/// none was (never quiesced, or its deadline passed: what was done meanwhile was not paused).
pub(crate) fn bdev_raid_unquiesce(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    let p: P = parse(params)?;
    if mirror::get(&p.name).is_none() {
        return Err(RpcError::new(
            -19,
            format!("raid bdev {} not found", crate::error::cap(&p.name, 255)),
        ));
    }
    Ok(json!(mirror::unquiesce(&p.name)?))
}
