//! CSI snapshots and clones over ballastd's lvol snapshots (issue 21): CreateSnapshot,
//! DeleteSnapshot, ListSnapshots, and CreateVolume from a snapshot or a volume.
//!
//! ballastd behaves as SPDK: `bdev_lvol_snapshot V S` makes S read-only with V's clusters and
//! V a thin clone of S (V keeps its UUID and name); `bdev_lvol_clone S C` makes C, a thin
//! clone of S; deleting a snapshot with one clone merges it into that clone, with several it
//! is refused (EBUSY). Deleting a clone is always allowed, so a volume with snapshots can be
//! deleted and its snapshots stay.
//!
//! ```text
//!  CreateSnapshot(name, V) ─► bdev_lvol_snapshot V csisnap-<key><V uuid><time>
//!  CreateVolume(from snapshot S) ─► bdev_lvol_clone S csi-<name> (+ resize when larger)
//!  CreateVolume(from volume A)   ─► bdev_lvol_snapshot A csibase-<key><A uuid><time>
//!                                   bdev_lvol_clone csibase-… csi-<name>
//!  DeleteSnapshot(S): ≤ 1 clone  ─► bdev_lvol_delete S (merged into its clone, if any)
//!                     more       ─► bdev_lvol_rename S csigone-…  (no longer a CSI snapshot)
//!  DeleteVolume(V) ─► bdev_lvol_delete V, then hidden parents (csibase-, csigone-) left with
//!                     ≤ 1 clone are deleted in turn (merged into their last clone)
//! ```
//!
//! **Names.** Every snapshot lvol this driver makes is named `<prefix><key><source><time>`,
//! exactly 63 characters (SPDK's limit): an 8-character prefix (`csisnap-` a CSI snapshot,
//! `csisnpm-` one of a replicated volume and `csisnpr-` a replica's copy of it: rsnap.rs,
//! `csibase-` the hidden base of a volume clone, `csigone-` a deleted CSI snapshot that
//! clones still need), `key` = 15 hex digits (60 bits) of the SHA-256 of the CSI snapshot
//! name (of the new volume's lvol name for `csibase-`, of the lvol's own UUID for
//! `csigone-`), `source` = the source volume's lvol UUID (32 hex digits), and `time` = the
//! creation time in Unix seconds (8 hex digits). None of the prefixes starts with `csi-` or
//! `csix-`, so ListVolumes, DeleteVolume and ControllerExpandVolume never see them.
//!
//! - The key makes CreateSnapshot idempotent without a database: the same name finds the
//!   same lvol, and its source says whether the request is the same or ALREADY_EXISTS.
//! - The source is how ListSnapshots names a snapshot's `source_volume_id` (ballastd's clone
//!   relation cannot tell the source from a volume restored from the snapshot: both are its
//!   clones). It stays valid after the source volume is deleted.
//! - The time is `creation_time`. ballastd's lvol metadata records no time, and the
//!   engine's on-disk format is not changed for this; a name is written with the snapshot in
//!   one metadata record, so the time is as durable as the snapshot and the same after any
//!   restart of the controller or the node. It is taken just before `bdev_lvol_snapshot`
//!   (whole seconds).
//!
//! **Content source of a volume.** A volume's origin is its nearest ancestor (parent,
//! grandparent, ...) whose encoded source is not the volume itself (snapshots of the
//! volume sit between it and its origin): a `csisnap-`/`csigone-` origin is a snapshot
//! source (its own id), a `csibase-` origin a volume source (its encoded source). This makes
//! CreateVolume with a content source idempotent and detects a conflicting source.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{rpc_code, Error, Result};
use crate::nodes::{Lvol, NodeHandle, Nodes, Store};
use crate::pb;
use crate::pb::volume_content_source::Type as SourceType;
use crate::volume::{is_managed, serves, volume_size, VolumeId, SIDECAR_PREFIX};

/// What a driver-made snapshot lvol is (its name's prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `csisnap-`: a CSI snapshot.
    Snapshot,
    /// `csisnpm-`: a CSI snapshot of a replicated volume (the primary's lvol: see rsnap.rs).
    Mirrored,
    /// `csisnpr-`: a replica's copy of a `csisnpm-` snapshot (never a CSI snapshot itself).
    Copy,
    /// `csibase-`: the hidden snapshot a volume clone was made from.
    Base,
    /// `csigone-`: a deleted CSI snapshot that clones still depend on.
    Gone,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Snapshot => "csisnap-",
            Kind::Mirrored => "csisnpm-",
            Kind::Copy => "csisnpr-",
            Kind::Base => "csibase-",
            Kind::Gone => "csigone-",
        }
    }

    /// Hidden kinds are deleted as soon as they have at most one clone.
    fn hidden(self) -> bool {
        matches!(self, Kind::Base | Kind::Gone)
    }

    /// A CSI snapshot (listed, found by id and name).
    pub fn is_csi(self) -> bool {
        matches!(self, Kind::Snapshot | Kind::Mirrored)
    }
}

const KEY_LEN: usize = 15;
const SOURCE_LEN: usize = 32;
const TIME_LEN: usize = 8;

/// A driver-made snapshot lvol's name (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapName {
    pub kind: Kind,
    /// 15 lowercase hex digits.
    pub key: String,
    /// The source volume's lvol UUID (hyphenated).
    pub source: String,
    /// Unix seconds.
    pub created: u64,
}

/// The 15-hex-digit key of `s`.
pub fn key_of(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .flat_map(|b| [b >> 4, b & 15])
        .take(KEY_LEN)
        .map(|d| char::from_digit(d as u32, 16).expect("a hex digit"))
        .collect()
}

impl SnapName {
    pub fn encode(&self) -> String {
        let src = uuid::Uuid::parse_str(&self.source)
            .map_or_else(|_| "0".repeat(SOURCE_LEN), |u| u.simple().to_string());
        format!(
            "{}{}{src}{:08x}",
            self.kind.prefix(),
            self.key,
            self.created.min(u32::MAX as u64)
        )
    }

    pub fn parse(name: &str) -> Option<SnapName> {
        let kind = [
            Kind::Snapshot,
            Kind::Mirrored,
            Kind::Copy,
            Kind::Base,
            Kind::Gone,
        ]
        .into_iter()
        .find(|k| name.starts_with(k.prefix()))?;
        let rest = &name[kind.prefix().len()..];
        let hex = |s: &str| s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if rest.len() != KEY_LEN + SOURCE_LEN + TIME_LEN || !hex(rest) {
            return None;
        }
        let (key, rest) = rest.split_at(KEY_LEN);
        let (src, time) = rest.split_at(SOURCE_LEN);
        Some(SnapName {
            kind,
            key: key.to_string(),
            source: uuid::Uuid::parse_str(src).ok()?.hyphenated().to_string(),
            created: u64::from_str_radix(time, 16).ok()?,
        })
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An lvol with its place in ballastd's snapshot tree (`bdev_get_bdevs`' `base_snapshot`
/// and `clones`, both lvol names within the store).
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) lvol: Lvol,
    parent: Option<String>,
    clones: Vec<String>,
}

impl Member {
    fn from_bdev(b: &Value) -> Option<Member> {
        let lvol = Lvol::from_bdev(b)?;
        let d = &b["driver_specific"]["lvol"];
        Some(Member {
            lvol,
            parent: d["base_snapshot"].as_str().map(str::to_string),
            clones: d["clones"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    pub(crate) fn snap(&self) -> Option<SnapName> {
        SnapName::parse(&self.lvol.name)
    }
}

/// Every lvol of store `lvs_uuid` on `n`, with its relations.
pub(crate) async fn members(n: &NodeHandle, lvs_uuid: &str) -> Result<Vec<Member>> {
    match n.rpc.call("bdev_get_bdevs", None).await? {
        Value::Array(v) => Ok(v
            .iter()
            .filter_map(Member::from_bdev)
            .filter(|m| m.lvol.lvs_uuid == lvs_uuid)
            .collect()),
        other => Err(protocol(n, "bdev_get_bdevs", other.to_string())),
    }
}

/// The lvol `name` (UUID or alias) on `n`, with its relations.
pub(crate) async fn member(n: &NodeHandle, name: &str) -> Result<Option<Member>> {
    match n
        .rpc
        .call("bdev_get_bdevs", Some(json!({"name": name})))
        .await
    {
        Ok(Value::Array(v)) => Ok(v.first().and_then(Member::from_bdev)),
        Ok(other) => Err(protocol(n, "bdev_get_bdevs", other.to_string())),
        Err(e) if e.rpc_code() == Some(rpc_code::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn protocol(n: &NodeHandle, method: &str, mut detail: String) -> Error {
    detail.truncate(200);
    Error::Protocol {
        node: n.id().into(),
        method: method.into(),
        detail,
    }
}

fn id(n: &NodeHandle, lvs_uuid: &str, lvol_uuid: &str) -> String {
    VolumeId {
        node: n.id().into(),
        lvs_uuid: lvs_uuid.into(),
        lvol_uuid: lvol_uuid.into(),
    }
    .to_string()
}

/// The CSI snapshot of lvol `l` named `s` (of a replicated volume: its capacity, without the
/// mirror's metadata).
fn snapshot(n: &NodeHandle, l: &Lvol, s: &SnapName) -> pb::Snapshot {
    let size = match s.kind {
        Kind::Mirrored => l.size.saturating_sub(crate::replicas::META_BYTES),
        _ => l.size,
    };
    pb::Snapshot {
        size_bytes: size as i64,
        snapshot_id: id(n, &l.lvs_uuid, &l.uuid),
        source_volume_id: id(n, &l.lvs_uuid, &s.source),
        creation_time: Some(pb::Timestamp {
            seconds: s.created as i64,
            nanos: 0,
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

/// What a snapshot id names.
enum Found<'a> {
    Snapshot(&'a NodeHandle, Member, SnapName),
    /// Not an id of ours, or no such CSI snapshot (any more).
    Missing,
    /// A well-formed id on a node the configuration does not have.
    UnknownNode(String),
}

async fn find_snapshot<'a>(nodes: &'a Nodes, snapshot_id: &str) -> Result<Found<'a>> {
    let Some(id) = VolumeId::parse(snapshot_id) else {
        return Ok(Found::Missing);
    };
    let Some(n) = nodes.get(&id.node) else {
        return Ok(Found::UnknownNode(id.node));
    };
    Ok(match member(n, &id.lvol_uuid).await? {
        Some(m) if m.lvol.lvs_uuid == id.lvs_uuid => match m.snap() {
            Some(s) if s.kind.is_csi() => Found::Snapshot(n, m, s),
            _ => Found::Missing,
        },
        _ => Found::Missing,
    })
}

/// The managed volume `volume_id` names, or None.
async fn find_volume<'a>(
    nodes: &'a Nodes,
    volume_id: &str,
) -> Result<Option<(&'a NodeHandle, Lvol)>> {
    let Some(id) = VolumeId::parse(volume_id) else {
        return Ok(None);
    };
    let Some(n) = nodes.get(&id.node) else {
        return Ok(None);
    };
    Ok(n.lvol(&id.lvol_uuid)
        .await?
        .filter(|l| l.lvs_uuid == id.lvs_uuid && is_managed(&l.name))
        .map(|l| (n, l)))
}

/// Refuses parameters other than the sidecars' own (`csi.storage.k8s.io/*`): none are
/// defined for snapshots yet.
fn check_params(p: &std::collections::HashMap<String, String>) -> Result<()> {
    let mut unknown: Vec<&str> = p
        .keys()
        .filter(|k| !k.starts_with(SIDECAR_PREFIX))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    Err(Error::InvalidArgument(format!(
        "unknown snapshot parameters: {} (known: {SIDECAR_PREFIX}*)",
        unknown.join(", ")
    )))
}

// ------------------------------------------------------------------------ CreateSnapshot --

/// CreateSnapshot (the caller holds the controller's mutation lock).
pub async fn create(nodes: &Nodes, r: &pb::CreateSnapshotRequest) -> Result<pb::Snapshot> {
    if r.name.is_empty() {
        return Err(Error::InvalidArgument("name is required".into()));
    }
    if r.source_volume_id.is_empty() {
        return Err(Error::InvalidArgument(
            "source_volume_id is required".into(),
        ));
    }
    check_params(&r.parameters)?;
    let key = key_of(&r.name);
    let want = VolumeId::parse(&r.source_volume_id);

    // The name on any node: the same snapshot, or a conflict. Every node is asked (a node
    // that cannot be is UNAVAILABLE rather than risk a second snapshot of one name).
    for n in nodes.iter() {
        let Some(store) = n.store_if_any().await? else {
            continue;
        };
        for m in members(n, &store.uuid).await? {
            let Some(s) = m.snap().filter(|s| s.kind.is_csi() && s.key == key) else {
                continue;
            };
            let same = want.as_ref().is_some_and(|w| {
                w.node == n.id() && w.lvs_uuid == store.uuid && w.lvol_uuid == s.source
            });
            if !same {
                return Err(Error::AlreadyExists(format!(
                    "snapshot {:?} exists with source volume {}",
                    r.name,
                    id(n, &store.uuid, &s.source)
                )));
            }
            tracing::info!(name = %r.name, node = n.id(), lvol = %m.lvol.uuid, "CreateSnapshot: exists");
            return Ok(snapshot(n, &m.lvol, &s));
        }
    }

    let Some((n, src)) = find_volume(nodes, &r.source_volume_id).await? else {
        return Err(Error::NotFound(format!(
            "source volume {} does not exist",
            r.source_volume_id
        )));
    };
    let replicated = crate::replicas::is_replicated(&src.name);
    let s = SnapName {
        kind: if replicated {
            Kind::Mirrored
        } else {
            Kind::Snapshot
        },
        key,
        source: src.uuid.clone(),
        created: now_secs(),
    };
    let l = if replicated {
        crate::rsnap::create(nodes, n, &src, &s).await?
    } else {
        snapshot_lvol(n, &src.uuid, &s.encode()).await?
    };
    tracing::info!(name = %r.name, node = n.id(), source = %src.uuid, lvol = %l.uuid, "CreateSnapshot: created");
    Ok(snapshot(n, &l, &s))
}

/// `bdev_lvol_snapshot` of lvol `origin` as `name`; the new lvol.
pub(crate) async fn snapshot_lvol(n: &NodeHandle, origin: &str, name: &str) -> Result<Lvol> {
    let p = json!({"lvol_name": origin, "snapshot_name": name});
    let uuid = match n.rpc.call("bdev_lvol_snapshot", Some(p)).await? {
        Value::String(u) => u,
        other => return Err(protocol(n, "bdev_lvol_snapshot", other.to_string())),
    };
    fetched(n, &uuid, "bdev_lvol_snapshot").await
}

/// Lvol `uuid`, which `method` has just made.
async fn fetched(n: &NodeHandle, uuid: &str, method: &str) -> Result<Lvol> {
    n.lvol(uuid).await?.ok_or_else(|| {
        protocol(
            n,
            "bdev_get_bdevs",
            format!("lvol {uuid} missing right after {method}"),
        )
    })
}

// ------------------------------------------------------------------------ DeleteSnapshot --

/// DeleteSnapshot (the caller holds the mutation lock). Idempotent: an id that is not a
/// snapshot of ours, or one already gone, is OK. A snapshot with at most one clone is
/// deleted (ballastd merges it into that clone); one with more clones (volumes restored
/// from it, or a source with later snapshots and restores) is renamed `csigone-…`: no
/// longer a CSI snapshot (not listed, not a content source), deleted once its clones are
/// down to one. No clone ever loses data.
pub async fn delete(nodes: &Nodes, snapshot_id: &str) -> Result<()> {
    if snapshot_id.is_empty() {
        return Err(Error::InvalidArgument("snapshot_id is required".into()));
    }
    let (n, m, s) = match find_snapshot(nodes, snapshot_id).await? {
        Found::Snapshot(n, m, s) if s.kind == Kind::Mirrored => {
            // The replicas' copies first: the primary's snapshot, the CSI snapshot, goes
            // last, so a delete cut short is found and finished by the next.
            crate::rsnap::delete_copies(nodes, n, &m.lvol).await?;
            (n, m, s)
        }
        Found::Snapshot(n, m, s) => (n, m, s),
        Found::Missing => {
            tracing::info!(snapshot = snapshot_id, "DeleteSnapshot: nothing to delete");
            return Ok(());
        }
        Found::UnknownNode(node) => {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {snapshot_id} is on node {node}, which is not in the configuration"
            )))
        }
    };
    retire(n, m, s, snapshot_id).await
}

/// Deletes snapshot lvol `m` (named `s`) of `n` when it has at most one clone (ballastd
/// merges it into that clone), else renames it `csigone-…` (deleted once its clones are down
/// to one). `what` names it in the log.
pub(crate) async fn retire(n: &NodeHandle, m: Member, s: SnapName, what: &str) -> Result<()> {
    let snapshot_id = what;
    if m.clones.len() <= 1 {
        match n.delete_lvol(&m.lvol.uuid).await {
            Ok(_) => {
                tracing::info!(
                    snapshot = snapshot_id,
                    clones = m.clones.len(),
                    "DeleteSnapshot: deleted"
                );
                if m.clones.is_empty() {
                    collect(n, m.parent).await;
                }
                return Ok(());
            }
            // Refused (e.g. the merge would expose a grandparent's data): hide it instead.
            Err(e) if e.rpc_code() == Some(rpc_code::EBUSY) => {
                tracing::info!(
                    snapshot = snapshot_id,
                    "DeleteSnapshot: delete refused, hiding: {e}"
                )
            }
            Err(e) => return Err(e),
        }
    }
    let gone = SnapName {
        kind: Kind::Gone,
        key: key_of(&m.lvol.uuid),
        ..s
    };
    n.rpc
        .call(
            "bdev_lvol_rename",
            Some(json!({"old_name": m.lvol.uuid, "new_name": gone.encode()})),
        )
        .await?;
    tracing::info!(
        snapshot = snapshot_id,
        clones = m.clones.len(),
        "DeleteSnapshot: hidden until its clones are gone"
    );
    Ok(())
}

/// Deletes the hidden snapshot `name` (and then its parent, and so on) while it has at most
/// one clone. Best effort: what cannot be deleted now stays, harmless, until a later delete
/// below it tries again.
async fn collect(n: &NodeHandle, mut name: Option<String>) {
    while let Some(nm) = name {
        let alias = format!("{}/{nm}", n.cfg.lvs);
        let m = match member(n, &alias).await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(node = n.id(), lvol = %alias, "not collected: {e}");
                return;
            }
        };
        if !m.snap().is_some_and(|s| s.kind.hidden()) || m.clones.len() > 1 {
            return;
        }
        if let Err(e) = n.delete_lvol(&m.lvol.uuid).await {
            tracing::warn!(node = n.id(), lvol = %alias, "not collected: {e}");
            return;
        }
        tracing::info!(node = n.id(), lvol = %alias, clones = m.clones.len(), "hidden snapshot deleted");
        // Merged into its one clone: the parent keeps as many clones as before.
        if !m.clones.is_empty() {
            return;
        }
        name = m.parent;
    }
}

/// DeleteVolume's delete of a volume's lvol: then collects the hidden snapshots it was the
/// last user of. False if it was already gone.
pub async fn delete_volume_lvol(n: &NodeHandle, l: &Lvol) -> Result<bool> {
    let parent = member(n, &l.uuid).await?.and_then(|m| m.parent);
    let deleted = n.delete_lvol(&l.uuid).await?;
    collect(n, parent).await;
    Ok(deleted)
}

// ------------------------------------------------------------------------- ListSnapshots --

/// ListSnapshots: CSI snapshots of every node in snapshot-id order, paged as ListVolumes.
pub async fn list(
    nodes: &Nodes,
    r: &pb::ListSnapshotsRequest,
) -> Result<pb::ListSnapshotsResponse> {
    if r.max_entries < 0 {
        return Err(Error::InvalidArgument(
            "max_entries must not be negative".into(),
        ));
    }
    check_token(&r.starting_token)?;
    let mut all = Vec::new();
    if !r.snapshot_id.is_empty() {
        // One snapshot (an unknown or malformed id: none).
        if let Found::Snapshot(n, m, s) = find_snapshot(nodes, &r.snapshot_id).await? {
            all.push(snapshot(n, &m.lvol, &s));
        }
    } else {
        for n in nodes.iter() {
            let Some(store) = n.store_if_any().await? else {
                continue;
            };
            for m in members(n, &store.uuid).await? {
                if let Some(s) = m.snap().filter(|s| s.kind.is_csi()) {
                    all.push(snapshot(n, &m.lvol, &s));
                }
            }
        }
    }
    if !r.source_volume_id.is_empty() {
        all.retain(|s| s.source_volume_id == r.source_volume_id);
    }
    let (page, next_token) = page(all, |s| &s.snapshot_id, &r.starting_token, r.max_entries);
    Ok(pb::ListSnapshotsResponse {
        entries: page
            .into_iter()
            .map(|s| pb::list_snapshots_response::Entry { snapshot: Some(s) })
            .collect(),
        next_token,
    })
}

/// A starting token must be an id the driver handed out (ABORTED otherwise).
pub fn check_token(token: &str) -> Result<()> {
    if token.is_empty() || VolumeId::parse(token).is_some() {
        return Ok(());
    }
    Err(Error::Aborted(format!(
        "starting_token {:?} was not handed out by ballast-csi",
        token.chars().take(128).collect::<String>()
    )))
}

/// One page of `items`, sorted by `key`: those after `token` (the last key of the previous
/// page, so items deleted or added between pages neither repeat nor shift the others), at
/// most `max` (0: all), and the next token (empty on the last page).
pub fn page<T>(
    mut items: Vec<T>,
    key: fn(&T) -> &String,
    token: &str,
    max: i32,
) -> (Vec<T>, String) {
    items.sort_by(|a, b| key(a).cmp(key(b)));
    items.retain(|i| token.is_empty() || key(i).as_str() > token);
    let max = if max <= 0 { usize::MAX } else { max as usize };
    let next = if items.len() > max {
        key(&items[max - 1]).clone()
    } else {
        String::new()
    };
    items.truncate(max);
    (items, next)
}

// ---------------------------------------------------------------- CreateVolume from a source --

/// A CreateVolume content source: the id of a snapshot or of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Snapshot(String),
    Volume(String),
}

impl Source {
    /// The request's content source; one without a type or id is INVALID_ARGUMENT.
    pub fn from_request(s: Option<&pb::VolumeContentSource>) -> Result<Option<Source>> {
        let Some(s) = s else { return Ok(None) };
        let src = match &s.r#type {
            Some(SourceType::Snapshot(x)) => Source::Snapshot(x.snapshot_id.clone()),
            Some(SourceType::Volume(x)) => Source::Volume(x.volume_id.clone()),
            None => {
                return Err(Error::InvalidArgument(
                    "volume_content_source without a snapshot or volume".into(),
                ))
            }
        };
        if src.id().is_empty() {
            return Err(Error::InvalidArgument(
                "volume_content_source with an empty id".into(),
            ));
        }
        Ok(Some(src))
    }

    fn id(&self) -> &str {
        match self {
            Source::Snapshot(i) | Source::Volume(i) => i,
        }
    }
}

/// The content source lvol `l` (a volume in `store` on `n`) was made from, if any (see the
/// module doc: its nearest ancestor that is not a snapshot of itself).
pub async fn origin(n: &NodeHandle, store: &Store, l: &Lvol) -> Result<Option<Source>> {
    let all = members(n, &store.uuid).await?;
    let by_name = |name: &str| all.iter().find(|m| m.lvol.name == name);
    let mut next = by_name(&l.name).and_then(|m| m.parent.clone());
    // A chain is finite; the bound guards against a malformed answer.
    for _ in 0..all.len() {
        let Some(m) = next.as_deref().and_then(by_name) else {
            return Ok(None);
        };
        match m.snap() {
            Some(s) if s.source != l.uuid => {
                return Ok(Some(match s.kind {
                    Kind::Base => Source::Volume(id(n, &store.uuid, &s.source)),
                    Kind::Snapshot | Kind::Mirrored | Kind::Copy | Kind::Gone => {
                        Source::Snapshot(id(n, &store.uuid, &m.lvol.uuid))
                    }
                }))
            }
            _ => next = m.parent.clone(),
        }
    }
    Ok(None)
}

/// Why existing volume `l` does not match content source `want`, if it does not.
pub async fn source_conflict(
    n: &NodeHandle,
    store: &Store,
    l: &Lvol,
    want: Option<&Source>,
) -> Result<Option<String>> {
    let have = origin(n, store, l).await?;
    let norm = |s: &Source| -> Source {
        let canon = |i: &str| VolumeId::parse(i).map_or_else(|| i.to_string(), |v| v.to_string());
        match s {
            Source::Snapshot(i) => Source::Snapshot(canon(i)),
            Source::Volume(i) => Source::Volume(canon(i)),
        }
    };
    if have.as_ref().map(norm) == want.map(norm) {
        return Ok(None);
    }
    Ok(Some(match have {
        Some(Source::Snapshot(i)) => format!("content from snapshot {i}"),
        Some(Source::Volume(i)) => format!("content from volume {i}"),
        None => "no content source".into(),
    }))
}

/// Makes lvol `lname` from content source `src` on the source's node (CreateVolume; the
/// caller holds the mutation lock and has checked that no volume has the name): a clone of
/// the snapshot, or of a hidden snapshot of the volume, grown to the range asked.
pub async fn clone_into<'a>(
    nodes: &'a Nodes,
    src: &Source,
    lname: &str,
    range: Option<&pb::CapacityRange>,
    requisite: &[pb::Topology],
    thin: bool,
) -> Result<(&'a NodeHandle, Store, Lvol)> {
    if !thin {
        return Err(Error::InvalidArgument(
            "thin=false with a content source: clones are thin (their data is shared with \
             the source until written)"
                .into(),
        ));
    }
    let not_found = |what: &str| Error::NotFound(format!("{what} {} does not exist", src.id()));
    let (n, base, volume) = match src {
        Source::Snapshot(i) => match find_snapshot(nodes, i).await? {
            Found::Snapshot(_, _, s) if s.kind == Kind::Mirrored => {
                return Err(Error::InvalidArgument(format!(
                    "snapshot {i} is of a replicated volume: a volume from it is not built \
                     yet (its copies hold the mirror's metadata ahead of the data)"
                )))
            }
            Found::Snapshot(n, m, _) => (n, m.lvol, None),
            Found::Missing | Found::UnknownNode(_) => return Err(not_found("snapshot")),
        },
        Source::Volume(i) => match find_volume(nodes, i).await? {
            Some((_, l)) if crate::replicas::is_replicated(&l.name) => {
                return Err(Error::InvalidArgument(format!(
                    "volume {i} is replicated: a clone of it is not built yet"
                )))
            }
            Some((n, l)) => (n, l.clone(), Some(l)),
            None => return Err(not_found("volume")),
        },
    };
    if !requisite.is_empty() && !requisite.iter().any(|t| serves(&n.cfg.topology, t)) {
        return Err(Error::ResourceExhausted(format!(
            "the content source is on node {}, outside the requisite topology",
            n.id()
        )));
    }
    let store = n.store().await?;
    let size = clone_size(range, store.cluster_size, base.size)?;
    let base = match volume {
        None => base,
        Some(v) => clone_base(n, &store, &v, lname).await?,
    };
    let p = json!({"snapshot_name": base.uuid, "clone_name": lname});
    let uuid = match n.rpc.call("bdev_lvol_clone", Some(p)).await? {
        Value::String(u) => u,
        other => return Err(protocol(n, "bdev_lvol_clone", other.to_string())),
    };
    if size > base.size {
        n.resize_lvol(&uuid, size).await?;
    }
    let l = fetched(n, &uuid, "bdev_lvol_clone").await?;
    tracing::info!(
        lvol = lname,
        node = n.id(),
        source = src.id(),
        size,
        "CreateVolume: cloned"
    );
    Ok((n, store, l))
}

/// The hidden snapshot of volume `v` that clone `lname` is made from: the one an earlier,
/// interrupted attempt made, else a new one.
async fn clone_base(n: &NodeHandle, store: &Store, v: &Lvol, lname: &str) -> Result<Lvol> {
    let key = key_of(lname);
    let earlier = members(n, &store.uuid).await?.into_iter().find(|m| {
        m.snap()
            .is_some_and(|s| s.kind == Kind::Base && s.key == key && s.source == v.uuid)
    });
    if let Some(m) = earlier {
        return Ok(m.lvol);
    }
    let s = SnapName {
        kind: Kind::Base,
        key,
        source: v.uuid.clone(),
        created: now_secs(),
    };
    snapshot_lvol(n, &v.uuid, &s.encode()).await
}

/// The size of a volume cloned from `base` bytes: the range's size (rounded up to
/// clusters), never below the source's; OUT_OF_RANGE when `limit_bytes` is below the source.
pub fn clone_size(range: Option<&pb::CapacityRange>, cluster: u64, base: u64) -> Result<u64> {
    let (req, lim) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    let size = if req <= 0 {
        base
    } else {
        volume_size(range, cluster)?.max(base)
    };
    if lim > 0 && size > lim as u64 {
        return Err(Error::OutOfRange(format!(
            "the content source has {base} bytes; limit_bytes {lim} is below it"
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    #[test]
    fn snapshot_names_round_trip_fit_and_stay_apart_from_volumes() {
        let s = SnapName {
            kind: Kind::Snapshot,
            key: key_of("snapshot-0b1c"),
            source: U.into(),
            created: 1_767_225_600,
        };
        let name = s.encode();
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.starts_with("csisnap-"));
        assert!(!is_managed(&name), "a snapshot looks like a volume: {name}");
        assert_eq!(SnapName::parse(&name), Some(s.clone()));
        for k in [Kind::Base, Kind::Gone] {
            let n = SnapName {
                kind: k,
                ..s.clone()
            }
            .encode();
            assert!(
                !is_managed(&n) && SnapName::parse(&n).unwrap().kind == k,
                "{n}"
            );
        }
        assert_eq!(key_of("a").len(), 15);
        assert_ne!(key_of("a"), key_of("b"));
        for bad in [
            "csi-pvc-1",
            "csisnap-",
            &name[..62],
            &format!("{name}0"),
            &name.replace('a', "A"),
            "vol0",
        ] {
            assert_eq!(SnapName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn relations_are_read_from_bdev_get_bdevs() {
        let b = json!({
            "name": U, "aliases": ["lvs0/csi-pvc-1"], "block_size": 4096, "num_blocks": 1024,
            "driver_specific": {"lvol": {"lvol_store_uuid": "u", "thin_provision": true,
                "clone": true, "base_snapshot": "snap0"}}
        });
        let m = Member::from_bdev(&b).unwrap();
        assert_eq!(m.parent.as_deref(), Some("snap0"));
        assert!(m.clones.is_empty());
        let b = json!({
            "name": U, "aliases": ["lvs0/snap0"], "block_size": 4096, "num_blocks": 1024,
            "driver_specific": {"lvol": {"lvol_store_uuid": "u", "thin_provision": true,
                "snapshot": true, "clones": ["a", "b"]}}
        });
        let m = Member::from_bdev(&b).unwrap();
        assert_eq!((m.parent, m.clones), (None, vec!["a".into(), "b".into()]));
    }

    #[test]
    fn clone_sizes_never_go_below_the_source() {
        const MIB: u64 = 1 << 20;
        let r = |req: u64, lim: u64| pb::CapacityRange {
            required_bytes: req as i64,
            limit_bytes: lim as i64,
        };
        assert_eq!(clone_size(None, 4 * MIB, 8 * MIB).unwrap(), 8 * MIB);
        assert_eq!(
            clone_size(Some(&r(MIB, 0)), 4 * MIB, 8 * MIB).unwrap(),
            8 * MIB
        );
        assert_eq!(
            clone_size(Some(&r(9 * MIB, 0)), 4 * MIB, 8 * MIB).unwrap(),
            12 * MIB
        );
        assert_eq!(
            clone_size(Some(&r(0, 8 * MIB)), 4 * MIB, 8 * MIB).unwrap(),
            8 * MIB
        );
        let e = clone_size(Some(&r(0, 4 * MIB)), 4 * MIB, 8 * MIB).unwrap_err();
        assert!(matches!(e, Error::OutOfRange(_)), "{e}");
    }

    #[test]
    fn pages_follow_the_token() {
        let items: Vec<String> = ["c", "a", "d", "b"].map(String::from).into();
        fn key(s: &String) -> &String {
            s
        }
        let (p, next) = page(items.clone(), key, "", 3);
        assert_eq!(
            (p, next.as_str()),
            (vec!["a".into(), "b".into(), "c".into()], "c")
        );
        let (p, next) = page(items.clone(), key, "c", 3);
        assert_eq!((p, next.as_str()), (vec!["d".to_string()], ""));
        assert_eq!(page(items, key, "", 0).0.len(), 4);
        assert!(check_token("invalid-token").is_err());
        assert!(check_token("").is_ok());
    }
}
