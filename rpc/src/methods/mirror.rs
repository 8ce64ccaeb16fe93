//! Replicated volumes with SPDK's raid RPCs: `bdev_raid_create` (raid1), `bdev_raid_get_bdevs`,
//! `bdev_raid_add_base_bdev` (re-adds a faulted member: a full rebuild in the background) and
//! `bdev_raid_delete` (with the other deletes). ballast's mirror always keeps a
//! superblock on its children (the durable record of who is in sync): `superblock: false`,
//! rpc.py's default, is accepted and a superblock is kept all the same.

use super::*;
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
        "kind": "full",
        "bytes_to_copy": p.blocks_total * bs,
        "bytes_copied": p.blocks_done * bs,
        "eta_s": eta.map(|e| (e * 10.0).round() / 10.0),
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
    let mut v = json!({
        "name": m.name,
        "uuid": m.uuid.to_string(),
        "strip_size_kb": 0,
        "state": state(m),
        "raid_level": "raid1",
        "superblock": true,
        "num_base_bdevs": m.members.len(),
        "num_base_bdevs_discovered": m.members.len(),
        "num_base_bdevs_operational": operational,
        "base_bdevs_list": m.members.iter().map(|c| json!({
            "name": c.name,
            "uuid": c.uuid.to_string(),
            "is_configured": c.state != MemberState::Faulted,
            "data_offset": META_BYTES / bs,
            "data_size": blocks,
            // ballast's: the member's state in the superblock.
            "state": match c.state {
                MemberState::InSync => "in_sync",
                MemberState::Faulted => "faulted",
                MemberState::Rebuilding => "rebuilding",
            },
        })).collect::<Vec<_>>(),
        // ballast's: the membership generation on disk.
        "generation": m.generation,
    });
    if let Some(p) = process_json(m, bs) {
        v["process"] = p;
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
    let Some(member) = m.members.iter().find(|c| c.name == p.base_bdev) else {
        return Err(RpcError::params(format!(
            "Invalid parameters: {} is not a member of {}: adding a new member is not \
             supported yet (re-adding a faulted one is)",
            crate::error::cap(&p.base_bdev, 255),
            m.name
        )));
    };
    if member.state != MemberState::Faulted {
        return Err(RpcError::new(
            -16,
            format!(
                "{} is already in {} ({:?})",
                member.name, m.name, member.state
            ),
        ));
    }
    if let Some(r) = mirror::rebuild::progress(&m.name) {
        return Err(RpcError::new(
            -16,
            format!("{} is rebuilding {} already", m.name, r.target),
        ));
    }
    // Checked and reserved now (errors answer this call); the copy runs in the background
    // and bdev_raid_get_bdevs shows its progress.
    mirror::rebuild::start(&ctx.rt, &m.name, &member.name)?;
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
