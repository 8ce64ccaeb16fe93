//! Snapshots of replicated volumes (issue 21: "consistent across replicas: pause the mirror,
//! snapshot every replica, resume").
//!
//! ```text
//!  CreateSnapshot(name, V replicated; primary P, mirror csi-m-<U>)
//!   ├─ leftovers of an interrupted attempt of the name (csisnpr-<key>… copies): deleted
//!   ├─ P: bdev_raid_quiesce csi-m-<U> (10 s deadline): writes held, those in flight done on
//!   │     every member, members flushed
//!   ├─ the mirror's members as they are now: P's own lvol must be in sync; each other in-sync
//!   │   member → its node (controller csi-r-<R> → nvmf address) and lvol R
//!   ├─ each in-sync replica's node: bdev_lvol_snapshot R csisnpr-<key><U><time>
//!   ├─ P: bdev_lvol_snapshot U csisnpm-<key><U><time>      ◄── the commit: the CSI snapshot
//!   └─ P: bdev_raid_unquiesce — always, also after an error; "no pause was in force" (the
//!         deadline passed meanwhile) undoes the snapshots: ABORTED, to be retried
//!  DeleteSnapshot(csisnpm-…) ─► every other node's csisnpr-… (same suffix), then the primary's
//!  ListSnapshots / snapshot ids ─► the csisnpm- lvol only; copies are never CSI snapshots
//! ```
//!
//! **Consistency.** While the mirror is paused no write reaches any member, and every write
//! acknowledged before the pause is on every in-sync member (ballastd waits for the writes in
//! flight and flushes the members before `bdev_raid_quiesce` answers), so the snapshots of the
//! members hold the same data: the volume's content at one instant. Writes issued meanwhile
//! wait (they are not failed) and go when the mirror resumes. The members' first MiB (the
//! mirror's superblocks and write-intent bitmap) is not part of that promise: the mirror may
//! still update it during the pause.
//!
//! **Degraded mirrors.** The snapshot is made of the members in sync when the mirror is
//! paused: a faulted, rebuilding or missing replica gets no copy (its data is stale or
//! partial), and the call succeeds with fewer copies (logged; the copies present on the
//! nodes are the record). Refusing would block backups for as long as a node is down, and a
//! snapshot with one copy is what a single-replica volume has anyway. The primary's own
//! member must be in sync (the CSI snapshot is its lvol): if it is not, FAILED_PRECONDITION
//! until the rebuild is done.
//!
//! **Names.** The copies are named like the primary's snapshot with the prefix `csisnpr-`:
//! the same key (of the CSI snapshot name), source (the primary's lvol UUID) and time, so
//! DeleteSnapshot finds them by name on every node. A copy is never listed, never a content
//! source, and deleting the source volume leaves it (as it leaves the snapshot).
//!
//! **Not built yet.** A volume from such a snapshot (a new mirror over clones of the
//! copies): refused as INVALID_ARGUMENT. Copies left by a CreateSnapshot cut short whose name
//! is never asked again stay until deleted by hand (`csisnpr-` lvols without a `csisnpm-`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{rpc_code, Error, Result};
use crate::nodes::{Lvol, NodeHandle, Nodes};
use crate::replicas::{controllers, member_replica, mirror_name, node_of, raid, remote_name};
use crate::snapshot::{member, members, retire, snapshot_lvol, Kind, SnapName};

/// How long the mirror may stay paused: the deadline ballastd resumes it at if the controller
/// never does. Well under the Linux NVMe host's 30 s I/O timeout, so a held write never
/// makes a host reset its controller.
pub const QUIESCE_MS: u64 = 10_000;

/// The name of a replica's copy of the primary's snapshot lvol `primary`.
pub fn copy_name(primary: &str) -> String {
    format!("{}{}", Kind::Copy.prefix(), primary.get(8..).unwrap_or(""))
}

/// Makes the CSI snapshot `s` (kind [`Kind::Mirrored`]) of replicated volume `vol` on its
/// primary `p`, with a copy on every in-sync replica (see the module doc); the primary's
/// snapshot lvol.
pub async fn create(nodes: &Nodes, p: &NodeHandle, vol: &Lvol, s: &SnapName) -> Result<Lvol> {
    remove_orphans(nodes, &s.key).await?;
    let mirror = mirror_name(&vol.uuid);
    let t0 = Instant::now();
    let q = json!({"name": mirror, "timeout_ms": QUIESCE_MS});
    match p.rpc.call("bdev_raid_quiesce", Some(q)).await {
        Ok(_) => {}
        Err(e) if e.rpc_code() == Some(rpc_code::ENODEV) => {
            return Err(Error::FailedPrecondition(format!(
                "node {}: mirror {mirror} of the volume is not assembled; no snapshot of it \
                 can be consistent",
                p.id()
            )))
        }
        Err(e) => return Err(e),
    }
    let mut made = Vec::new();
    let r = snapshot_members(nodes, p, vol, s, &mut made).await;
    let resumed = p
        .rpc
        .call("bdev_raid_unquiesce", Some(json!({"name": mirror})))
        .await;
    let in_time = t0.elapsed() < Duration::from_millis(QUIESCE_MS);
    let err = match (r, resumed) {
        (Ok(l), Ok(Value::Bool(true))) => return Ok(l),
        (Ok(l), Err(e)) if in_time => {
            // Made well within the pause; it ends by itself at its deadline.
            tracing::warn!(node = p.id(), mirror = %mirror, "unquiesce failed: {e}");
            return Ok(l);
        }
        (Ok(_), Ok(_)) | (Ok(_), Err(_)) => Error::Aborted(format!(
            "node {}: the pause of mirror {mirror} ended (its {QUIESCE_MS} ms deadline) before \
             every copy was made: the snapshot would not be consistent; retry",
            p.id()
        )),
        (Err(e), _) => e,
    };
    for (n, uuid) in made.iter().rev() {
        if let Err(e) = n.delete_lvol(uuid).await {
            tracing::warn!(node = n.id(), lvol = %uuid, "snapshot not undone: {e}");
        }
    }
    Err(err)
}

/// Snapshots every in-sync member of the paused mirror, the primary last; records each lvol
/// made in `made`.
async fn snapshot_members<'a>(
    nodes: &'a Nodes,
    p: &'a NodeHandle,
    vol: &Lvol,
    s: &SnapName,
    made: &mut Vec<(&'a NodeHandle, String)>,
) -> Result<Lvol> {
    let mirror = mirror_name(&vol.uuid);
    let r = raid(p, &mirror).await?.ok_or_else(|| {
        Error::FailedPrecondition(format!("node {}: mirror {mirror} disappeared", p.id()))
    })?;
    let ctrls = controllers(p).await?;
    let mut copies = Vec::new();
    let mut left_out = Vec::new();
    let mut primary = None;
    for b in &r.base_bdevs_list {
        let Some(name) = b.name.as_deref() else {
            left_out.push("an empty slot".to_string());
            continue;
        };
        if name == vol.uuid {
            primary = Some(b.state.clone());
            continue;
        }
        let n = member_replica(name)
            .and_then(|u| ctrls.iter().find(|c| c.name == remote_name(u)))
            .and_then(|c| node_of(nodes, c))
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "node {}: member {name} of mirror {mirror} is not a replica on a \
                     configured node",
                    p.id()
                ))
            })?;
        match (b.state.as_str(), member_replica(name)) {
            ("in_sync", Some(u)) => copies.push((n, u.to_string())),
            (st, _) => left_out.push(format!("replica on {} ({st})", n.id())),
        }
    }
    if primary.as_deref() != Some("in_sync") {
        return Err(Error::FailedPrecondition(format!(
            "node {}: the primary's copy of the volume is {} in mirror {mirror}; snapshot it \
             once it is in sync again",
            p.id(),
            primary.as_deref().unwrap_or("missing")
        )));
    }
    let copy = SnapName {
        kind: Kind::Copy,
        ..s.clone()
    }
    .encode();
    for (n, u) in &copies {
        let l = snapshot_lvol(n, u, &copy).await?;
        made.push((n, l.uuid));
    }
    let l = snapshot_lvol(p, &vol.uuid, &s.encode()).await?;
    made.push((p, l.uuid.clone()));
    if left_out.is_empty() {
        tracing::info!(volume = %vol.uuid, snapshot = %l.uuid, copies = copies.len() + 1,
            "replicated snapshot: every member");
    } else {
        tracing::warn!(volume = %vol.uuid, snapshot = %l.uuid, copies = copies.len() + 1,
            left_out = %left_out.join(", "),
            "replicated snapshot of a degraded mirror: in-sync members only");
    }
    Ok(l)
}

/// Deletes the replicas' copies of the primary's snapshot lvol `snap` (on node `p`): every
/// other node is asked first; one that cannot be is UNAVAILABLE, and nothing is deleted.
pub async fn delete_copies(nodes: &Nodes, p: &NodeHandle, snap: &Lvol) -> Result<()> {
    let copy = copy_name(&snap.name);
    let mut found = Vec::new();
    for n in nodes.iter().filter(|n| n.id() != p.id()) {
        let Some(store) = n.store_if_any().await? else {
            continue;
        };
        let alias = format!("{}/{copy}", n.cfg.lvs);
        if let Some(m) = member(n, &alias)
            .await?
            .filter(|m| m.lvol.lvs_uuid == store.uuid)
        {
            found.push((n, m));
        }
    }
    for (n, m) in found {
        let Some(s) = m.snap() else { continue };
        retire(n, m, s, &format!("{copy} on {}", n.id())).await?;
    }
    Ok(())
}

/// Deletes replica copies of key `key` (the CSI snapshot name's) on every node: called when
/// no CSI snapshot of the name exists, so they are leftovers of a CreateSnapshot cut short
/// before its commit.
async fn remove_orphans(nodes: &Nodes, key: &str) -> Result<()> {
    for n in nodes.iter() {
        let Some(store) = n.store_if_any().await? else {
            continue;
        };
        for m in members(n, &store.uuid).await? {
            let Some(s) = m.snap().filter(|s| s.kind == Kind::Copy && s.key == key) else {
                continue;
            };
            tracing::warn!(node = n.id(), lvol = %m.lvol.name,
                "a copy left by an interrupted CreateSnapshot: deleting it");
            let what = m.lvol.name.clone();
            retire(n, m, s, &what).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_named_after_the_primary_snapshot_and_are_not_csi_snapshots() {
        let s = SnapName {
            kind: Kind::Mirrored,
            key: crate::snapshot::key_of("snap-1"),
            source: "7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
            created: 1_767_225_600,
        };
        let name = s.encode();
        assert!(name.starts_with("csisnpm-") && name.len() == 63, "{name}");
        let c = copy_name(&name);
        assert_eq!(c.len(), 63);
        let parsed = SnapName::parse(&c).unwrap();
        assert_eq!(
            parsed,
            SnapName {
                kind: Kind::Copy,
                ..s.clone()
            }
        );
        assert!(Kind::Mirrored.is_csi() && Kind::Snapshot.is_csi());
        assert!(!Kind::Copy.is_csi());
        assert!(!crate::volume::is_managed(&c) && !crate::volume::is_managed(&name));
    }
}
