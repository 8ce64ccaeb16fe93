//! Replicated volumes (StorageClass `replicas: "N"`, N ≥ 2): ballast's raid1 mirror on one
//! node, the volume's *primary*, over its own lvol and the lvols of N−1 other nodes, each
//! exported to the primary over NVMe/TCP.
//!
//! ```text
//!  primary node P                                    replica node R1 (R2, ...)
//!  csi-m-<U>  bdev_raid_create -r raid1              lvs0/csr-<name> (lvol R1)
//!   ├─ U        lvs0/csm-<name> (the volume's lvol)   nqn...:csi-replica-<R1>  ns 1 = R1
//!   └─ csi-r-<R1>n1 ◄── bdev_nvme_attach_controller ── listener = R1's nvmf address,
//!                       csi-r-<R1>, hostnqn = P's     host = P's mirror_host_nqn only
//!                       mirror_host_nqn
//! ```
//!
//! No database: the replica set is in the names. The volume id names P and U as for any
//! volume; the lvol names carry the role, all derived from the volume's lvol name
//! `csi-<name>` ([`crate::volume::lvol_name`]) by its third letter:
//!
//! - `csm-<name>` the primary's lvol of a finished replicated volume (listed as a volume);
//! - `csp-<name>` the primary's lvol while CreateVolume builds (never listed);
//! - `csr-<name>` a replica's lvol (never listed);
//!
//! (`csix-…` names likewise: `csmx-`, `cspx-`, `csrx-`.) Bdevs and subsystems are named from
//! lvol UUIDs: the mirror `csi-m-<U>`, the replica's subsystem
//! `nqn.2026-11.io.ballast:csi-replica-<R>`, the primary's controller for it `csi-r-<R>`.
//! So any node can be asked what it holds, and the primary's raid and controllers say
//! which replica is where (trid → node by its configured nvmf address).
//!
//! CreateVolume builds replicas first (lvol, subsystem, listener, host), then the primary's
//! lvol under the pending name, attaches the replicas, creates the mirror and renames the
//! lvol `csp-` → `csm-`: the rename is the commit. Before that, a failure tears down what
//! the call made; pieces a crash left (`csp-`/`csr-` lvols of the name, with their
//! subsystems, controllers and mirror) are torn down by the next CreateVolume of the name,
//! which then builds anew (nothing unfinished was ever handed out, so it holds no data).
//! A plain `csi-` lvol is never turned into a mirror member (creating a mirror zeroes its
//! children): a replicas mismatch with an existing volume is ALREADY_EXISTS.
//!
//! DeleteVolume tears down in the reverse order and deletes the primary's lvol last, so a
//! call cut short leaves the id resolvable and the next call finishes the job. A node that
//! holds (or may hold) a piece and cannot be asked fails the call with UNAVAILABLE before
//! anything is deleted.
//!
//! Sizes: each member keeps the mirror's superblock and bitmap in its first MiB
//! ([`META_BYTES`]), so the lvols are the capacity asked + 1 MiB rounded up to clusters and
//! the volume's capacity is the lvol size − 1 MiB.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{rpc_code, Error, Result};
use crate::nodes::{Lvol, NodeHandle, Nodes, Store};
use crate::pb;
use crate::volume::{preference, serves, DEFAULT_SIZE};

/// What each mirror member keeps for itself at its start (superblocks, write-intent bitmap).
pub const META_BYTES: u64 = 1 << 20;
/// The mirror bdev on the primary: `csi-m-<primary lvol uuid>`.
pub const MIRROR_PREFIX: &str = "csi-m-";
/// The primary's NVMe controller of a replica: `csi-r-<replica lvol uuid>` (its namespace
/// bdev: that + `n1`).
pub const REMOTE_PREFIX: &str = "csi-r-";
/// The subsystem a replica node exports its replica lvol in.
pub const REPLICA_NQN_PREFIX: &str = "nqn.2026-11.io.ballast:csi-replica-";
/// The primary's host library gives up on a silent replica after this (the mirror then
/// faults it and goes on); it keeps reconnecting afterwards, and the mirror heals the
/// replica by itself when it is back.
const CTRLR_LOSS_TIMEOUT_SEC: u64 = 5;
const RECONNECT_DELAY_SEC: u64 = 1;

/// The role of an lvol of a replicated volume (the third letter of its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `csm-`: the primary's lvol of a finished volume.
    Primary,
    /// `csp-`: the primary's lvol while CreateVolume builds.
    Pending,
    /// `csr-`: a replica's lvol.
    Replica,
}

/// The lvol name of `role` for a volume whose plain lvol name is `lname` (`csi-…`/`csix-…`,
/// or any role's name: only the third letter changes).
pub fn role_name(lname: &str, role: Role) -> String {
    let c = match role {
        Role::Primary => 'm',
        Role::Pending => 'p',
        Role::Replica => 'r',
    };
    format!("cs{c}{}", lname.get(3..).unwrap_or(""))
}

/// Whether lvol `name` is the primary lvol of a finished replicated volume.
pub fn is_replicated(name: &str) -> bool {
    name.starts_with("csm-") || name.starts_with("csmx-")
}

pub fn mirror_name(primary_uuid: &str) -> String {
    format!("{MIRROR_PREFIX}{primary_uuid}")
}

pub fn remote_name(replica_uuid: &str) -> String {
    format!("{REMOTE_PREFIX}{replica_uuid}")
}

pub fn replica_nqn(replica_uuid: &str) -> String {
    format!("{REPLICA_NQN_PREFIX}{replica_uuid}")
}

/// The subsystem a volume is published in (publish.rs), named after its primary's lvol.
pub use crate::publish::export_nqn;

/// The capacity a volume's lvol gives: its size, less the mirror's metadata when replicated.
pub fn capacity(l: &Lvol) -> u64 {
    if is_replicated(&l.name) {
        l.size.saturating_sub(META_BYTES)
    } else {
        l.size
    }
}

/// The lvol size and the capacity of a replicated volume for `range` (already checked with
/// [`crate::volume::volume_size`]) in stores of `cluster`-byte clusters: the capacity asked
/// (default [`DEFAULT_SIZE`], capped by the limit) + [`META_BYTES`], rounded up to clusters.
pub fn replicated_size(range: Option<&pb::CapacityRange>, cluster: u64) -> Result<(u64, u64)> {
    let (req, lim) = range.map_or((0, 0), |r| {
        (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64)
    });
    let want = match (req, lim) {
        (0, 0) => DEFAULT_SIZE,
        (0, l) => DEFAULT_SIZE.min(l),
        (r, _) => r,
    };
    let mut lvol = (want + META_BYTES).div_ceil(cluster) * cluster;
    if lim != 0 && lvol - META_BYTES > lim {
        lvol = if req == 0 {
            (lim + META_BYTES) / cluster * cluster
        } else {
            0
        };
        if lvol <= META_BYTES {
            return Err(Error::OutOfRange(format!(
                "capacity_range [{req}, {lim}]: a replicated volume takes whole {cluster}-byte \
                 clusters less {META_BYTES} bytes of mirror metadata, and none fits"
            )));
        }
    }
    Ok((lvol, lvol - META_BYTES))
}

// ------------------------------------------------------------------- node operations --

/// A mirror as `bdev_raid_get_bdevs` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Raid {
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub base_bdevs_list: Vec<RaidMember>,
    /// A rebuild in progress: SPDK's `{type, target, progress}` plus ballast's figures.
    #[serde(default)]
    pub process: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RaidMember {
    /// None: an empty slot.
    pub name: Option<String>,
    #[serde(default)]
    pub state: String,
}

/// An NVMe controller of the host library (`bdev_nvme_get_controllers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctrlr {
    pub name: String,
    pub traddr: String,
    pub trsvcid: String,
    pub subnqn: String,
    pub state: String,
}

impl Ctrlr {
    fn from_json(v: &Value) -> Option<Ctrlr> {
        let c = v.get("ctrlrs")?.as_array()?.first()?;
        let t = c.get("trid")?;
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Some(Ctrlr {
            name: v.get("name")?.as_str()?.to_string(),
            traddr: s("traddr"),
            trsvcid: s("trsvcid"),
            subnqn: s("subnqn"),
            state: c.get("state").and_then(Value::as_str).unwrap_or("").into(),
        })
    }
}

fn protocol(n: &NodeHandle, method: &str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        node: n.id().into(),
        method: method.into(),
        detail: detail.into(),
    }
}

/// Every mirror of the node.
pub async fn raids(n: &NodeHandle) -> Result<Vec<Raid>> {
    n.rpc
        .call_as("bdev_raid_get_bdevs", Some(json!({"category": "all"})))
        .await
}

/// Mirror `name`, if the node has it.
pub async fn raid(n: &NodeHandle, name: &str) -> Result<Option<Raid>> {
    let m = "bdev_raid_get_bdevs";
    match n
        .call_opt(m, json!({"category": "all", "name": name}))
        .await?
    {
        None => Ok(None),
        Some(v) => {
            let v: Vec<Raid> =
                serde_json::from_value(v).map_err(|e| protocol(n, m, e.to_string()))?;
            Ok(v.into_iter().find(|r| r.name == name))
        }
    }
}

/// Every NVMe controller of the node's host library.
pub async fn controllers(n: &NodeHandle) -> Result<Vec<Ctrlr>> {
    match n.rpc.call("bdev_nvme_get_controllers", None).await? {
        Value::Array(v) => Ok(v.iter().filter_map(Ctrlr::from_json).collect()),
        other => Err(protocol(n, "bdev_nvme_get_controllers", other.to_string())),
    }
}

/// Every subsystem of the node's target (`nvmf_get_subsystems`).
pub async fn subsystems(n: &NodeHandle) -> Result<Vec<Value>> {
    n.rpc.call_as("nvmf_get_subsystems", None).await
}

async fn subsystem(n: &NodeHandle, nqn: &str) -> Result<Option<Value>> {
    Ok(n.call_opt("nvmf_get_subsystems", json!({"nqn": nqn}))
        .await?
        .and_then(|v| v.as_array().and_then(|a| a.first().cloned())))
}

/// The node's nvmf address from the configuration (replicas are exported there).
fn nvmf_addr(n: &NodeHandle) -> Result<(String, u16)> {
    n.cfg
        .nvmf
        .as_ref()
        .map(|a| (a.addr.clone(), a.port))
        .ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "node {} has no nvmf address in the configuration",
                n.id()
            ))
        })
}

/// Subsystem `nqn` exporting bdev `bdev` as namespace 1 on the node's nvmf address to
/// `host` only; what exists already is kept (each part is checked).
async fn ensure_export(n: &NodeHandle, nqn: &str, bdev: &str, host: &str) -> Result<()> {
    let (addr, port) = nvmf_addr(n)?;
    let s = match subsystem(n, nqn).await? {
        Some(s) => s,
        None => {
            n.rpc
                .call(
                    "nvmf_create_subsystem",
                    Some(json!({"nqn": nqn, "allow_any_host": false,
                                "serial_number": "BALLASTCSIREPLICA", "model_number": "ballast replica"})),
                )
                .await?;
            subsystem(n, nqn)
                .await?
                .ok_or_else(|| protocol(n, "nvmf_create_subsystem", format!("{nqn} missing")))?
        }
    };
    let list = |k: &str| {
        s.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    if s.get("allow_any_host").and_then(Value::as_bool) == Some(true) {
        n.rpc
            .call(
                "nvmf_subsystem_allow_any_host",
                Some(json!({"nqn": nqn, "allow_any_host": false})),
            )
            .await?;
    }
    if !list("namespaces")
        .iter()
        .any(|ns| ns.get("bdev_name").and_then(Value::as_str) == Some(bdev))
    {
        n.rpc
            .call(
                "nvmf_subsystem_add_ns",
                Some(json!({"nqn": nqn, "namespace": {"bdev_name": bdev}})),
            )
            .await?;
    }
    if !list("hosts")
        .iter()
        .any(|h| h.get("nqn").and_then(Value::as_str) == Some(host))
    {
        n.rpc
            .call(
                "nvmf_subsystem_add_host",
                Some(json!({"nqn": nqn, "host": host})),
            )
            .await?;
    }
    let port_s = port.to_string();
    if !list("listen_addresses").iter().any(|l| {
        l.get("traddr").and_then(Value::as_str) == Some(addr.as_str())
            && l.get("trsvcid").and_then(Value::as_str) == Some(port_s.as_str())
    }) {
        n.rpc
            .call(
                "nvmf_subsystem_add_listener",
                Some(json!({"nqn": nqn, "listen_address":
                    {"trtype": "tcp", "traddr": addr, "trsvcid": port_s}})),
            )
            .await?;
    }
    Ok(())
}

async fn delete_subsystem(n: &NodeHandle, nqn: &str) -> Result<()> {
    n.call_opt("nvmf_delete_subsystem", json!({"nqn": nqn}))
        .await
        .map(|_| ())
}

/// Attaches the replica `replica_uuid` exported by node `r` to node `p` as controller
/// `csi-r-<uuid>`; returns its namespace bdev. An existing controller with that name is
/// kept when it points at the same subsystem.
async fn attach(p: &NodeHandle, r: &NodeHandle, replica_uuid: &str) -> Result<String> {
    let (addr, port) = nvmf_addr(r)?;
    let name = remote_name(replica_uuid);
    let nqn = replica_nqn(replica_uuid);
    let m = "bdev_nvme_attach_controller";
    let params = json!({
        "name": name, "trtype": "tcp", "traddr": addr, "trsvcid": port.to_string(),
        "subnqn": nqn, "hostnqn": p.cfg.mirror_host_nqn(),
        "ctrlr_loss_timeout_sec": CTRLR_LOSS_TIMEOUT_SEC,
        "reconnect_delay_sec": RECONNECT_DELAY_SEC,
    });
    match p.rpc.call(m, Some(params)).await {
        Ok(Value::Array(v)) => v
            .first()
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| protocol(p, m, "no namespace bdev")),
        Ok(other) => Err(protocol(p, m, other.to_string())),
        Err(e) if e.rpc_code() == Some(rpc_code::EEXIST) => {
            match controllers(p).await?.into_iter().find(|c| c.name == name) {
                Some(c) if c.subnqn == nqn => Ok(format!("{name}n1")),
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

async fn detach(p: &NodeHandle, name: &str) -> Result<()> {
    p.call_opt("bdev_nvme_detach_controller", json!({"name": name}))
        .await
        .map(|_| ())
}

/// Deletes mirror `name` (gone already: fine). A mirror that is exported is in use.
async fn delete_raid(p: &NodeHandle, name: &str) -> Result<()> {
    match p.call_opt("bdev_raid_delete", json!({"name": name})).await {
        Err(e) if e.rpc_code() == Some(rpc_code::EBUSY) => Err(Error::FailedPrecondition(format!(
            "node {}: mirror {name} is in use (published?): {e}",
            p.id()
        ))),
        r => r.map(|_| ()),
    }
}

/// The lvol `name` of node `n`'s store; a node without a store has none.
pub(crate) async fn lvol_named(n: &NodeHandle, name: &str) -> Result<Option<Lvol>> {
    let Some(store) = n.store_if_any().await? else {
        return Ok(None);
    };
    Ok(n.lvol(&format!("{}/{name}", n.cfg.lvs))
        .await?
        .filter(|l| l.lvs_uuid == store.uuid))
}

/// The configured node whose nvmf address a controller points at.
pub(crate) fn node_of<'a>(nodes: &'a Nodes, c: &Ctrlr) -> Option<&'a NodeHandle> {
    nodes.iter().find(|n| {
        n.cfg
            .nvmf
            .as_ref()
            .is_some_and(|a| a.addr == c.traddr && a.port.to_string() == c.trsvcid)
    })
}

/// The replica lvol uuid behind a member bdev `csi-r-<uuid>n1`.
pub(crate) fn member_replica(member: &str) -> Option<&str> {
    member
        .strip_prefix(REMOTE_PREFIX)
        .and_then(|s| s.get(..36))
        .filter(|u| uuid::Uuid::parse_str(u).is_ok())
}

// ---------------------------------------------------------------------------- pieces --

/// What a torn-down volume is made of: the primary's lvol (its node, uuid) and the replicas'.
#[derive(Default)]
struct Set<'a> {
    primary: Option<(&'a NodeHandle, String)>,
    replicas: Vec<(&'a NodeHandle, String)>,
    /// Controllers on the primary to detach (replicas' and the mirror's members').
    remotes: BTreeSet<String>,
}

impl Set<'_> {
    fn is_empty(&self) -> bool {
        self.primary.is_none() && self.replicas.is_empty() && self.remotes.is_empty()
    }
}

/// Tears `s` down: mirror, controllers, replica subsystems and lvols, the primary's lvol
/// last (so an interrupted teardown is found and finished by the next one).
async fn teardown(s: &Set<'_>) -> Result<()> {
    if let Some((p, u)) = &s.primary {
        delete_raid(p, &mirror_name(u)).await?;
        let mut remotes = s.remotes.clone();
        remotes.extend(s.replicas.iter().map(|(_, r)| remote_name(r)));
        for c in &remotes {
            detach(p, c).await?;
        }
    }
    for (n, r) in &s.replicas {
        delete_subsystem(n, &replica_nqn(r)).await?;
        n.delete_lvol(r).await?;
    }
    if let Some((p, u)) = &s.primary {
        p.delete_lvol(u).await?;
    }
    Ok(())
}

/// The unfinished pieces (`csp-`, `csr-` lvols) of the volume with lvol name `lname` on every
/// node; a node that cannot be asked fails the call.
async fn unfinished<'a>(nodes: &'a Nodes, lname: &str) -> Result<Set<'a>> {
    let (pending, replica) = (
        role_name(lname, Role::Pending),
        role_name(lname, Role::Replica),
    );
    let mut s = Set::default();
    for n in nodes.iter() {
        if let Some(l) = lvol_named(n, &pending).await? {
            if let Some((other, _)) = &s.primary {
                tracing::warn!(
                    node = n.id(),
                    "{pending} also on node {}: both torn down",
                    other.id()
                );
                s.replicas.push((n, l.uuid));
            } else {
                s.primary = Some((n, l.uuid));
            }
        }
        if let Some(l) = lvol_named(n, &replica).await? {
            s.replicas.push((n, l.uuid));
        }
    }
    Ok(s)
}

// --------------------------------------------------------------------------- create --

/// A node chosen for a replica, with its store.
struct Pick<'a> {
    node: &'a NodeHandle,
    store: Store,
}

/// Chooses `count` distinct nodes: within the requisite topologies (any node without one),
/// by the first preferred topology each lies in, then by most free space. The first is the
/// primary. Nodes without a store or an nvmf address cannot take a replica; a thick volume
/// needs its lvol size free on each. Returns the picks and the lvol size.
async fn place<'a>(
    nodes: &'a Nodes,
    topo: Option<&pb::TopologyRequirement>,
    range: Option<&pb::CapacityRange>,
    thin: bool,
    count: usize,
) -> Result<(Vec<Pick<'a>>, u64)> {
    let (requisite, preferred) =
        topo.map_or((&[][..], &[][..]), |t| (&t.requisite[..], &t.preferred[..]));
    let mut why = Vec::new();
    let mut cands = Vec::new();
    for n in nodes.iter() {
        if !requisite.is_empty() && !requisite.iter().any(|t| serves(&n.cfg.topology, t)) {
            why.push(format!("{}: outside the requisite topology", n.id()));
            continue;
        }
        if n.cfg.nvmf.is_none() {
            why.push(format!("{}: no nvmf address configured", n.id()));
            continue;
        }
        match n.store().await {
            Ok(store) => cands.push(Pick { node: n, store }),
            Err(e @ Error::Unavailable { .. }) => return Err(e),
            Err(e) => why.push(e.to_string()),
        }
    }
    // One lvol size for every member: computed with the largest cluster size (clusters are
    // powers of two, so it is whole clusters in every store).
    let cluster = cands
        .iter()
        .map(|c| c.store.cluster_size)
        .max()
        .unwrap_or(1);
    let (lvol, _) = replicated_size(range, cluster)?;
    cands.retain(|c| {
        let ok = thin || c.store.free_bytes() >= lvol;
        if !ok {
            why.push(format!(
                "{}: {} bytes free, {lvol} needed",
                c.node.id(),
                c.store.free_bytes()
            ));
        }
        ok
    });
    let rank = |c: &Pick<'_>| {
        let pref = preference(&c.node.cfg.topology, preferred);
        (pref, std::cmp::Reverse(c.store.free_bytes()))
    };
    cands.sort_by_key(|c| rank(c));
    if cands.len() < count {
        let have: Vec<&str> = cands.iter().map(|c| c.node.id()).collect();
        return Err(Error::ResourceExhausted(format!(
            "replicas={count} needs {count} distinct nodes, {} can take a replica ({}){}",
            have.len(),
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            },
            if why.is_empty() {
                String::new()
            } else {
                format!("; not eligible: {}", why.join("; "))
            }
        )));
    }
    cands.truncate(count);
    Ok((cands, lvol))
}

/// Builds a new replicated volume named by `lname` (its plain lvol name, not found on any
/// node by the caller) with `replicas` copies; tears down the unfinished pieces of an
/// earlier attempt first. Returns the primary node, its store and the finished lvol.
pub async fn create<'a>(
    nodes: &'a Nodes,
    lname: &str,
    replicas: u32,
    topo: Option<&pb::TopologyRequirement>,
    range: Option<&pb::CapacityRange>,
    thin: bool,
) -> Result<(&'a NodeHandle, Store, Lvol)> {
    let left = unfinished(nodes, lname).await?;
    if !left.is_empty() {
        tracing::warn!(
            lvol = lname,
            "an unfinished CreateVolume left pieces: tearing them down"
        );
        teardown(&left).await?;
    }
    let (picks, size) = place(nodes, topo, range, thin, replicas as usize).await?;
    let mut made = Set::default();
    match build(&picks, lname, size, thin, &mut made).await {
        Ok(l) => {
            tracing::info!(lvol = %l.uuid, primary = picks[0].node.id(),
                replicas = ?picks.iter().map(|p| p.node.id()).collect::<Vec<_>>(),
                size, "replicated volume created");
            let p = &picks[0];
            Ok((p.node, p.store.clone(), l))
        }
        Err(e) => {
            tracing::warn!(
                lvol = lname,
                "CreateVolume failed ({e}): tearing down what it made"
            );
            if let Err(e2) = teardown(&made).await {
                tracing::warn!(
                    lvol = lname,
                    "teardown failed ({e2}): the next CreateVolume \
                    of this name tears the rest down"
                );
            }
            Err(e)
        }
    }
}

async fn build<'a>(
    picks: &[Pick<'a>],
    lname: &str,
    size: u64,
    thin: bool,
    made: &mut Set<'a>,
) -> Result<Lvol> {
    let p = picks[0].node;
    let host = p.cfg.mirror_host_nqn();
    let rname = role_name(lname, Role::Replica);
    for r in &picks[1..] {
        let uuid = r.node.create_lvol(&rname, size, thin).await?;
        made.replicas.push((r.node, uuid.clone()));
        ensure_export(r.node, &replica_nqn(&uuid), &uuid, &host).await?;
    }
    let u = p
        .create_lvol(&role_name(lname, Role::Pending), size, thin)
        .await?;
    made.primary = Some((p, u.clone()));
    let mut members = vec![u.clone()];
    for (r, uuid) in made.replicas.clone() {
        members.push(attach(p, r, &uuid).await?);
    }
    let m = mirror_name(&u);
    p.rpc
        .call(
            "bdev_raid_create",
            Some(json!({"name": m, "raid_level": "raid1", "base_bdevs": members})),
        )
        .await?;
    // The commit: from now on the volume is listed and found by its name.
    p.rpc
        .call(
            "bdev_lvol_rename",
            Some(json!({"old_name": u, "new_name": role_name(lname, Role::Primary)})),
        )
        .await?;
    p.lvol(&u).await?.ok_or_else(|| {
        protocol(
            p,
            "bdev_get_bdevs",
            format!("lvol {u} missing after rename"),
        )
    })
}

// --------------------------------------------------------------------------- delete --

/// Deletes replicated volume `l` (a `csm-` lvol) of primary node `p` and every piece of it.
/// The replica set: the members of the mirror (controller → node by address) and every
/// node's `csr-` lvol of the name. A node that holds a member and cannot be asked fails the
/// call (UNAVAILABLE) before anything is deleted; so does any node that cannot be asked
/// when the mirror (the authority on membership) is missing.
pub async fn delete(nodes: &Nodes, p: &NodeHandle, l: &Lvol) -> Result<()> {
    let rname = role_name(&l.name, Role::Replica);
    let raid = raid(p, &mirror_name(&l.uuid)).await?;
    let ctrls = controllers(p).await?;
    let mut s = Set {
        primary: Some((p, l.uuid.clone())),
        ..Default::default()
    };
    let mut members = BTreeSet::new();
    for m in raid.iter().flat_map(|r| &r.base_bdevs_list) {
        if let Some(u) = m.name.as_deref().and_then(member_replica) {
            s.remotes.insert(remote_name(u));
            if let Some(n) = ctrls
                .iter()
                .find(|c| c.name == remote_name(u))
                .and_then(|c| node_of(nodes, c))
            {
                members.insert(n.id().to_string());
            }
        }
    }
    for n in nodes.iter().filter(|n| n.id() != p.id()) {
        match lvol_named(n, &rname).await {
            Ok(Some(r)) => s.replicas.push((n, r.uuid)),
            Ok(None) => {
                if members.contains(n.id()) {
                    tracing::warn!(node = n.id(), lvol = %rname, "replica lvol already gone");
                }
            }
            Err(e @ Error::Unavailable { .. }) if raid.is_some() && !members.contains(n.id()) => {
                tracing::warn!(node = n.id(), "not a member of the mirror, not asked: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    teardown(&s).await?;
    tracing::info!(lvol = %l.uuid, node = p.id(),
        replicas = ?s.replicas.iter().map(|(n, _)| n.id()).collect::<Vec<_>>(),
        "replicated volume deleted");
    Ok(())
}

/// How many replicas volume `l` of node `p` has: 1 for a plain volume; the mirror's slots,
/// or (the mirror not assembled) 1 + the nodes holding a replica lvol of the name.
pub async fn replica_count(nodes: &Nodes, p: &NodeHandle, l: &Lvol) -> Result<u32> {
    if !is_replicated(&l.name) {
        return Ok(1);
    }
    if let Some(r) = raid(p, &mirror_name(&l.uuid)).await? {
        return Ok(r.base_bdevs_list.len() as u32);
    }
    let rname = role_name(&l.name, Role::Replica);
    let mut count = 1;
    for n in nodes.iter().filter(|n| n.id() != p.id()) {
        if lvol_named(n, &rname).await?.is_some() {
            count += 1;
        }
    }
    Ok(count)
}

// ----------------------------------------------------------------- export and health --

/// The bdev ControllerPublish exports for volume `l` on its primary node `p`: the mirror
/// `csi-m-<uuid>` of a replicated volume, else the lvol's UUID. A replicated volume whose
/// mirror is not assembled (the primary's ballastd restarted without it) or has no in-sync
/// member is FAILED_PRECONDITION: its bare lvol is never exported (writes would miss the
/// replicas).
pub async fn export_bdev(p: &NodeHandle, l: &Lvol) -> Result<String> {
    if !is_replicated(&l.name) {
        return Ok(l.uuid.clone());
    }
    let m = mirror_name(&l.uuid);
    match raid(p, &m).await? {
        Some(r) if r.state == "online" => Ok(m),
        Some(r) => Err(Error::FailedPrecondition(format!(
            "node {}: mirror {m} of the volume is {} (no in-sync replica)",
            p.id(),
            r.state
        ))),
        None => Err(Error::FailedPrecondition(format!(
            "node {}: mirror {m} of the volume is not assembled (ballastd restarted without \
             it?); its lvol alone is not exported",
            p.id()
        ))),
    }
}

/// What a node says about the volumes it holds, asked once for all of them.
pub struct NodeView {
    raids: HashMap<String, Raid>,
    ctrls: Vec<Ctrlr>,
    subsystems: Vec<Value>,
}

impl NodeView {
    /// A view of nothing (a node that could not be asked).
    pub fn empty() -> NodeView {
        NodeView {
            raids: HashMap::new(),
            ctrls: Vec::new(),
            subsystems: Vec::new(),
        }
    }

    pub async fn of(n: &NodeHandle) -> Result<NodeView> {
        Ok(NodeView {
            raids: raids(n)
                .await?
                .into_iter()
                .map(|r| (r.name.clone(), r))
                .collect(),
            ctrls: controllers(n).await?,
            subsystems: subsystems(n).await?,
        })
    }

    /// The volume's health: a plain lvol that exists is normal; a replicated volume is
    /// abnormal while its mirror is missing or offline, a member is faulted, rebuilding or
    /// missing (empty slot), or a rebuild runs (with its progress).
    pub fn condition(&self, nodes: &Nodes, p: &NodeHandle, l: &Lvol) -> pb::VolumeCondition {
        if !is_replicated(&l.name) {
            return normal(String::new());
        }
        let m = mirror_name(&l.uuid);
        let Some(r) = self.raids.get(&m) else {
            return abnormal(format!(
                "mirror {m} is not assembled on node {} (ballastd restarted without it?): \
                 the volume cannot be served",
                p.id()
            ));
        };
        let where_ = |member: &str| -> String {
            if member == l.uuid {
                return format!("{} (primary)", p.id());
            }
            member_replica(member)
                .and_then(|u| self.ctrls.iter().find(|c| c.name == remote_name(u)))
                .and_then(|c| node_of(nodes, c))
                .map_or_else(|| member.to_string(), |n| n.id().to_string())
        };
        let mut bad = Vec::new();
        let mut in_sync = 0;
        for b in &r.base_bdevs_list {
            match (b.name.as_deref(), b.state.as_str()) {
                (None, _) => bad.push("a replica slot is empty".to_string()),
                (Some(_), "in_sync") => in_sync += 1,
                (Some(name), st) => bad.push(format!("replica on {} is {st}", where_(name))),
            }
        }
        if let Some(pr) = &r.process {
            let target = pr.get("target").and_then(Value::as_str).unwrap_or("?");
            let pct = pr
                .get("progress")
                .and_then(|p| p.get("percent"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            let kind = pr.get("kind").and_then(Value::as_str).unwrap_or("");
            bad.push(format!(
                "rebuilding {} ({kind}): {pct:.1}% done",
                where_(target)
            ));
        }
        if r.state != "online" {
            bad.insert(0, format!("mirror {} is {}", m, r.state));
        }
        let total = r.base_bdevs_list.len();
        if bad.is_empty() {
            normal(format!("{in_sync} of {total} replicas in sync"))
        } else {
            abnormal(format!(
                "degraded, {in_sync} of {total} replicas in sync: {}",
                bad.join("; ")
            ))
        }
    }

    /// The hosts allowed on the volume's export subsystem `nqn.2026-11.io.ballast:csi-<lvol
    /// uuid>`: the nodes it is published to (a node's id is its host NQN).
    pub fn published_node_ids(&self, l: &Lvol) -> Vec<String> {
        let nqn = export_nqn(&l.uuid);
        self.subsystems
            .iter()
            .find(|s| s.get("nqn").and_then(Value::as_str) == Some(nqn.as_str()))
            .and_then(|s| s.get("hosts").and_then(Value::as_array))
            .map(|h| {
                h.iter()
                    .filter_map(|h| h.get("nqn").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn normal(message: String) -> pb::VolumeCondition {
    pb::VolumeCondition {
        abnormal: false,
        message,
    }
}

pub fn abnormal(message: String) -> pb::VolumeCondition {
    pb::VolumeCondition {
        abnormal: true,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{is_managed, lvol_name};

    const MIB: u64 = 1 << 20;

    #[test]
    fn role_names_differ_only_in_the_third_letter_and_only_the_primary_is_listed() {
        let l = lvol_name("pvc-1");
        assert_eq!(role_name(&l, Role::Primary), "csm-pvc-1");
        assert_eq!(role_name(&l, Role::Pending), "csp-pvc-1");
        assert_eq!(role_name(&l, Role::Replica), "csr-pvc-1");
        let h = lvol_name("a b");
        let hm = role_name(&h, Role::Primary);
        assert!(hm.starts_with("csmx-") && hm.len() == h.len(), "{hm}");
        assert_eq!(role_name(&hm, Role::Replica), role_name(&h, Role::Replica));
        assert!(is_replicated(&hm) && is_managed(&hm));
        for r in [Role::Pending, Role::Replica] {
            assert!(!is_managed(&role_name(&l, r)) && !is_managed(&role_name(&h, r)));
        }
        assert!(!is_replicated(&l));
    }

    #[test]
    fn replicated_sizes_add_the_mirror_metadata() {
        let r = |a: u64, b: u64| pb::CapacityRange {
            required_bytes: a as i64,
            limit_bytes: b as i64,
        };
        assert_eq!(
            replicated_size(None, 4 * MIB).unwrap(),
            (DEFAULT_SIZE + 4 * MIB, DEFAULT_SIZE + 3 * MIB)
        );
        assert_eq!(
            replicated_size(Some(&r(8 * MIB, 0)), 4 * MIB).unwrap(),
            (12 * MIB, 11 * MIB)
        );
        assert_eq!(
            replicated_size(Some(&r(0, 10 * MIB)), 4 * MIB).unwrap(),
            (8 * MIB, 7 * MIB)
        );
        assert!(matches!(
            replicated_size(Some(&r(8 * MIB, 9 * MIB)), 4 * MIB),
            Err(Error::OutOfRange(_))
        ));
        assert!(matches!(
            replicated_size(Some(&r(0, 2 * MIB)), 4 * MIB),
            Err(Error::OutOfRange(_))
        ));
    }

    #[test]
    fn members_and_controllers_are_read() {
        let u = "7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        assert_eq!(member_replica(&format!("csi-r-{u}n1")), Some(u));
        assert_eq!(member_replica(u), None);
        assert_eq!(member_replica("csi-r-shortn1"), None);
        let c = Ctrlr::from_json(&json!({
            "name": "csi-r-x", "ctrlrs": [{"state": "enabled", "trid": {
                "traddr": "10.0.0.2", "trsvcid": "4420", "subnqn": "nqn.x"}}]
        }))
        .unwrap();
        assert_eq!(
            (c.traddr.as_str(), c.state.as_str()),
            ("10.0.0.2", "enabled")
        );
    }
}
