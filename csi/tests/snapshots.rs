//! csi-sanity-style checks of ballast-csi's snapshots and clones against real ballastd
//! daemons (see common/mod.rs): CreateSnapshot, DeleteSnapshot, ListSnapshots and
//! CreateVolume from a snapshot or a volume, with the data read back over NVMe/TCP
//! (common/blocks.rs).

#[path = "common/blocks.rs"]
mod blocks;
mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use ballast_csi::pb;
use ballast_csi::pb::volume_content_source::{SnapshotSource, Type as Src, VolumeSource};
use ballast_csi::volume::VolumeId;
use blocks::{pattern, Export};
use common::*;
use serde_json::{json, Value};
use tonic::Code;

/// Asserts that a call failed with `want`.
fn fails<T: std::fmt::Debug>(r: R<T>, want: Code) {
    let (k, m) = code(r);
    assert_eq!(k, want, "{m}");
}

/// Asserts that the store holds no lvol and all its clusters are free again.
fn all_gone(d: &Daemon, free0: u64) {
    assert!(lvols(d).is_empty(), "{:?}", lvols(d));
    assert_eq!(d.free_bytes(), free0, "clusters leaked");
}

/// One node with a store, its free bytes before any volume, and the driver.
async fn one_node() -> (Daemon, u64, Csi) {
    let d = Daemon::with_store();
    let free = d.free_bytes();
    let c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    (d, free, c)
}

/// The ids ListVolumes answers (one page, all of them).
async fn volume_ids(c: &mut Csi) -> Vec<String> {
    let r = c.ctrl.list_volumes(pb::ListVolumesRequest::default()).await;
    r.expect("ListVolumes")
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.volume.unwrap().volume_id)
        .collect()
}

/// A new volume without a content source.
async fn plain(c: &mut Csi, name: &str, bytes: u64) -> pb::Volume {
    vol(c.ctrl.create_volume(create_req(name, bytes, &[])).await)
}

fn snap(r: R<pb::CreateSnapshotResponse>) -> pb::Snapshot {
    r.expect("CreateSnapshot").into_inner().snapshot.unwrap()
}

fn snap_req(name: &str, source: &str) -> pb::CreateSnapshotRequest {
    pb::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    }
}

fn from_snapshot(name: &str, required: u64, snapshot_id: &str) -> pb::CreateVolumeRequest {
    let mut r = create_req(name, required, &[]);
    r.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(Src::Snapshot(SnapshotSource {
            snapshot_id: snapshot_id.into(),
        })),
    });
    r
}

fn from_volume(name: &str, required: u64, volume_id: &str) -> pb::CreateVolumeRequest {
    let mut r = create_req(name, required, &[]);
    r.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(Src::Volume(VolumeSource {
            volume_id: volume_id.into(),
        })),
    });
    r
}

fn del_snap(id: &str) -> pb::DeleteSnapshotRequest {
    pb::DeleteSnapshotRequest {
        snapshot_id: id.into(),
        ..Default::default()
    }
}

fn del_vol(id: &str) -> pb::DeleteVolumeRequest {
    pb::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    }
}

fn list_req(max: i32, token: &str, source: &str, id: &str) -> pb::ListSnapshotsRequest {
    pb::ListSnapshotsRequest {
        max_entries: max,
        starting_token: token.into(),
        source_volume_id: source.into(),
        snapshot_id: id.into(),
        ..Default::default()
    }
}

/// The snapshot ids of a ListSnapshots answer, and its next token.
fn ids(r: R<pb::ListSnapshotsResponse>) -> (Vec<String>, String) {
    let r = r.expect("ListSnapshots").into_inner();
    let ids = r
        .entries
        .iter()
        .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
        .collect();
    (ids, r.next_token)
}

/// Every lvol of lvs0 as ballastd lists it: (name, is_snapshot).
fn lvols(d: &Daemon) -> Vec<(String, bool)> {
    let v = d.ok("bdev_lvol_get_lvols", json!({"lvs_name": "lvs0"}));
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["is_snapshot"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn lvol_uuid(id: &str) -> String {
    VolumeId::parse(id).expect("a v1 id").lvol_uuid
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------- CreateSnapshot --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_snapshot_validates_is_idempotent_and_conflicts_are_already_exists() {
    let d = Daemon::with_store();
    let nodes = vec![node("n1", &d.sock, &[])];
    let mut c = Csi::start(nodes.clone()).await;
    let v1 = plain(&mut c, "pvc-s1", 8 * MIB).await;
    let v2 = plain(&mut c, "pvc-s2", 4 * MIB).await;

    for (r, want) in [
        (snap_req("", &v1.volume_id), Code::InvalidArgument),
        (snap_req("snap-a", ""), Code::InvalidArgument),
        (snap_req("snap-a", "reallyfakevolumeid"), Code::NotFound),
        (
            snap_req(
                "snap-a",
                &VolumeId {
                    lvol_uuid: uuid::Uuid::new_v4().to_string(),
                    ..VolumeId::parse(&v1.volume_id).unwrap()
                }
                .to_string(),
            ),
            Code::NotFound,
        ),
    ] {
        fails(c.ctrl.create_snapshot(r).await, want);
    }
    let mut bad = snap_req("snap-a", &v1.volume_id);
    bad.parameters.insert("colour".into(), "red".into());
    let (k, m) = code(c.ctrl.create_snapshot(bad).await);
    assert_eq!(k, Code::InvalidArgument);
    assert!(m.contains("colour"), "{m}");
    assert_eq!(
        lvols(&d).len(),
        2,
        "refused calls made lvols: {:?}",
        lvols(&d)
    );

    let t0 = now();
    let mut ok = snap_req("snap-a", &v1.volume_id);
    ok.parameters
        .insert("csi.storage.k8s.io/volumesnapshot/name".into(), "x".into());
    let s = snap(c.ctrl.create_snapshot(ok.clone()).await);
    let t1 = now();
    assert!(s.ready_to_use);
    assert_eq!(s.size_bytes, 8 * MIB as i64);
    assert_eq!(s.source_volume_id, v1.volume_id);
    let created = s.creation_time.unwrap();
    assert!(
        (t0..=t1).contains(&created.seconds),
        "{created:?} not in [{t0}, {t1}]"
    );
    let sid = VolumeId::parse(&s.snapshot_id).expect("a v1 snapshot id");
    assert_eq!(sid.node, "n1");
    assert_ne!(sid.lvol_uuid, lvol_uuid(&v1.volume_id));

    // ballastd: a read-only snapshot named csisnap-…, and the volume is now its clone.
    let b = d.lvol(&sid.lvol_uuid).expect("the snapshot lvol");
    let alias = b["aliases"][0].as_str().unwrap();
    assert!(
        alias.starts_with("lvs0/csisnap-") && alias.len() == 5 + 63,
        "{alias}"
    );
    assert_eq!(b["driver_specific"]["lvol"]["snapshot"], json!(true));
    let src = d.lvol(&lvol_uuid(&v1.volume_id)).unwrap();
    assert_eq!(
        src["driver_specific"]["lvol"]["base_snapshot"].as_str(),
        alias.strip_prefix("lvs0/")
    );

    // The same request: the same snapshot, creation time included; also after a restart
    // of the controller (nothing is kept outside the nodes).
    let again = snap(c.ctrl.create_snapshot(ok.clone()).await);
    assert_eq!(again, s);
    c.stop().await;
    let mut c = Csi::start(nodes).await;
    let again = snap(c.ctrl.create_snapshot(ok).await);
    assert_eq!(again, s);

    // The same name with another source: ALREADY_EXISTS, nothing made.
    fails(
        c.ctrl
            .create_snapshot(snap_req("snap-a", &v2.volume_id))
            .await,
        Code::AlreadyExists,
    );
    // A name that cannot be part of an lvol name works the same.
    let odd = snap(
        c.ctrl
            .create_snapshot(snap_req("my snapshot/1 ü", &v2.volume_id))
            .await,
    );
    assert_eq!(
        snap(
            c.ctrl
                .create_snapshot(snap_req("my snapshot/1 ü", &v2.volume_id))
                .await
        )
        .snapshot_id,
        odd.snapshot_id
    );
    assert_eq!(lvols(&d).iter().filter(|l| l.1).count(), 2);

    // Snapshots are not volumes: not listed, not validated, not deleted by DeleteVolume.
    let mut want = vec![v1.volume_id.clone(), v2.volume_id.clone()];
    want.sort();
    assert_eq!(volume_ids(&mut c).await, want);
    c.ctrl
        .delete_volume(del_vol(&s.snapshot_id))
        .await
        .expect("OK: not a volume");
    assert!(
        d.lvol(&sid.lvol_uuid).is_some(),
        "DeleteVolume deleted a snapshot"
    );
    fails(
        c.ctrl
            .validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
                volume_id: s.snapshot_id.clone(),
                volume_capabilities: rwo(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    // ... and DeleteSnapshot does not delete volumes.
    c.ctrl
        .delete_snapshot(del_snap(&v2.volume_id))
        .await
        .expect("OK: not a snapshot");
    assert!(d.lvol(&lvol_uuid(&v2.volume_id)).is_some());

    // A volume with a snapshot can be deleted; the snapshot stays, still naming it.
    c.ctrl.delete_volume(del_vol(&v1.volume_id)).await.unwrap();
    assert!(d.lvol(&lvol_uuid(&v1.volume_id)).is_none());
    let (got, _) = ids(c
        .ctrl
        .list_snapshots(list_req(0, "", "", &s.snapshot_id))
        .await);
    assert_eq!(got, vec![s.snapshot_id.clone()]);
    let again = snap(
        c.ctrl
            .create_snapshot(snap_req("snap-a", &v1.volume_id))
            .await,
    );
    assert_eq!(again, s, "idempotent after the source is deleted");
    c.stop().await;
}

// ----------------------------------------------------------------------- ListSnapshots --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_snapshots_filters_paginates_and_refuses_bad_tokens() {
    let (a, b) = (Daemon::with_store(), Daemon::with_store());
    let mut c = Csi::start(vec![
        node("node-a", &a.sock, &[]),
        node("node-b", &b.sock, &[]),
    ])
    .await;
    let on = |v: &pb::Volume| VolumeId::parse(&v.volume_id).unwrap().node;
    let va = plain(&mut c, "pvc-la", 4 * MIB).await;
    let mut on_b = create_req("pvc-lb", 4 * MIB, &[]);
    // The pod's node first (every node serves every volume: the per-node key only prefers).
    on_b.accessibility_requirements = Some(pb::TopologyRequirement {
        requisite: vec![],
        preferred: vec![topology(&[("topology.csi.ballast.io/node", "node-b")])],
    });
    let vb = vol(c.ctrl.create_volume(on_b).await);
    assert_ne!(on(&va), on(&vb));
    let mut made = Vec::new();
    for (i, v) in [&va, &va, &va, &vb, &vb].into_iter().enumerate() {
        let s = snap(
            c.ctrl
                .create_snapshot(snap_req(&format!("snap-l{i}"), &v.volume_id))
                .await,
        );
        made.push(s);
    }
    // A snapshot ballast-csi did not make is not listed.
    a.ok(
        "bdev_lvol_snapshot",
        json!({"lvol_name": lvol_uuid(&va.volume_id), "snapshot_name": "manual"}),
    );
    let mut want: Vec<String> = made.iter().map(|s| s.snapshot_id.clone()).collect();
    want.sort();

    let (all, next) = ids(c.ctrl.list_snapshots(list_req(0, "", "", "")).await);
    assert_eq!(all, want, "every snapshot of both nodes, in id order");
    assert!(next.is_empty());

    // Pages of 2: 2 + 2 + 1.
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        assert!(pages < 5, "pagination does not end: {seen:?}");
        let (p, next) = ids(c.ctrl.list_snapshots(list_req(2, &token, "", "")).await);
        assert!(p.len() <= 2);
        seen.extend(p);
        pages += 1;
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!((pages, seen), (3, want.clone()));

    // Filters.
    let (one, _) = ids(c
        .ctrl
        .list_snapshots(list_req(0, "", "", &made[3].snapshot_id))
        .await);
    assert_eq!(one, vec![made[3].snapshot_id.clone()]);
    let r = c
        .ctrl
        .list_snapshots(list_req(0, "", "", &made[3].snapshot_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.entries[0].snapshot.as_ref(), Some(&made[3]));
    let (of_b, _) = ids(c
        .ctrl
        .list_snapshots(list_req(0, "", &vb.volume_id, ""))
        .await);
    let mut want_b = vec![made[3].snapshot_id.clone(), made[4].snapshot_id.clone()];
    want_b.sort();
    assert_eq!(of_b, want_b);
    let (of_a, _) = ids(c
        .ctrl
        .list_snapshots(list_req(1, "", &va.volume_id, ""))
        .await);
    assert_eq!(of_a.len(), 1);
    let unknown = VolumeId {
        lvol_uuid: uuid::Uuid::new_v4().to_string(),
        ..VolumeId::parse(&va.volume_id).unwrap()
    }
    .to_string();
    for (source, id) in [
        ("", unknown.as_str()),
        ("", "reallyfakesnapshotid"),
        (unknown.as_str(), ""),
        ("nope", ""),
        (vb.volume_id.as_str(), made[0].snapshot_id.as_str()),
    ] {
        let (got, _) = ids(c.ctrl.list_snapshots(list_req(0, "", source, id)).await);
        assert!(got.is_empty(), "source {source:?} id {id:?}: {got:?}");
    }

    fails(
        c.ctrl
            .list_snapshots(list_req(0, "invalid-token", "", ""))
            .await,
        Code::Aborted,
    );
    fails(
        c.ctrl.list_snapshots(list_req(-1, "", "", "")).await,
        Code::InvalidArgument,
    );

    // DeleteSnapshot: gone from the list; again, or an unknown id: OK.
    c.ctrl
        .delete_snapshot(del_snap(&made[0].snapshot_id))
        .await
        .unwrap();
    let (after, _) = ids(c.ctrl.list_snapshots(list_req(0, "", "", "")).await);
    assert_eq!(after.len(), 4);
    assert!(!after.contains(&made[0].snapshot_id));
    for id in [
        made[0].snapshot_id.as_str(),
        "reallyfakesnapshotid",
        &unknown,
    ] {
        c.ctrl.delete_snapshot(del_snap(id)).await.expect(id);
    }
    fails(
        c.ctrl.delete_snapshot(del_snap("")).await,
        Code::InvalidArgument,
    );
    // A snapshot on a node the configuration does not have: refused, not dropped.
    let elsewhere = VolumeId {
        node: "n9".into(),
        ..VolumeId::parse(&made[1].snapshot_id).unwrap()
    };
    fails(
        c.ctrl
            .delete_snapshot(del_snap(&elsewhere.to_string()))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        a.lvol("lvs0/manual").is_some(),
        "a foreign snapshot was touched"
    );
    c.stop().await;
}

// ------------------------------------------------------ Volumes from snapshots (data) --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_from_snapshot_has_the_snapshot_data_and_outlives_it() {
    let (d, free0, mut c) = one_node().await;
    let v = plain(&mut c, "pvc-data", 12 * MIB).await;
    let vu = lvol_uuid(&v.volume_id);
    let (a, b, cc, dd) = (pattern(1, 2), pattern(2, 2), pattern(3, 2), pattern(4, 2));
    {
        let e = Export::new(&d, &vu);
        e.write(0, &a);
        e.write(2048, &b);
    }
    let s = snap(
        c.ctrl
            .create_snapshot(snap_req("snap-data", &v.volume_id))
            .await,
    );
    // Written after the snapshot: not in it.
    Export::new(&d, &vu).write(0, &cc);

    // Refusals: a limit below the snapshot, an unknown snapshot, thick clones.
    let mut small = from_snapshot("pvc-r", 0, &s.snapshot_id);
    small.capacity_range = Some(pb::CapacityRange {
        required_bytes: 0,
        limit_bytes: 8 * MIB as i64,
    });
    fails(c.ctrl.create_volume(small).await, Code::OutOfRange);
    let missing = VolumeId {
        lvol_uuid: uuid::Uuid::new_v4().to_string(),
        ..VolumeId::parse(&s.snapshot_id).unwrap()
    };
    for id in [
        missing.to_string(),
        "reallyfakesnapshotid".into(),
        v.volume_id.clone(),
    ] {
        fails(
            c.ctrl.create_volume(from_snapshot("pvc-r", 0, &id)).await,
            Code::NotFound,
        );
    }
    let mut thick = from_snapshot("pvc-r", 0, &s.snapshot_id);
    thick.parameters.insert("thin".into(), "false".into());
    fails(c.ctrl.create_volume(thick).await, Code::InvalidArgument);
    assert!(d.lvol("lvs0/csi-pvc-r").is_none());

    // Larger than the snapshot: cloned, then grown. The content source is in the answer.
    let r = vol(c
        .ctrl
        .create_volume(from_snapshot("pvc-r", 13 * MIB, &s.snapshot_id))
        .await);
    assert_eq!(r.capacity_bytes, 16 * MIB as i64);
    assert_eq!(
        r.content_source.as_ref().and_then(|s| s.r#type.clone()),
        Some(Src::Snapshot(SnapshotSource {
            snapshot_id: s.snapshot_id.clone()
        }))
    );
    let ru = lvol_uuid(&r.volume_id);
    {
        let e = Export::new(&d, &ru);
        assert!(
            e.read(0, 2) == a,
            "the clone does not hold the snapshot's data at 0"
        );
        assert!(e.read(2048, 2) == b, "... at 2048");
        assert!(
            e.read(3500, 1).iter().all(|&x| x == 0),
            "the grown part is not zero"
        );
        e.write(0, &dd);
    }
    {
        let e = Export::new(&d, &vu);
        assert!(e.read(0, 2) == cc, "the clone's write reached the source");
        assert!(e.read(2048, 2) == b);
    }

    // Idempotent; a different source or none for the same name: ALREADY_EXISTS.
    let again = vol(c
        .ctrl
        .create_volume(from_snapshot("pvc-r", 13 * MIB, &s.snapshot_id))
        .await);
    assert_eq!(again.volume_id, r.volume_id);
    fails(
        c.ctrl
            .create_volume(create_req("pvc-r", 13 * MIB, &[]))
            .await,
        Code::AlreadyExists,
    );
    fails(
        c.ctrl
            .create_volume(from_volume("pvc-r", 13 * MIB, &v.volume_id))
            .await,
        Code::AlreadyExists,
    );
    fails(
        c.ctrl
            .create_volume(from_snapshot("pvc-data", 12 * MIB, &s.snapshot_id))
            .await,
        // A plain volume's name with a source.
        Code::AlreadyExists,
    );

    // A second snapshot of the source, then the first deleted while two volumes (the
    // source, through the second snapshot, and the restored one) depend on it: OK, no
    // longer listed, no longer a content source, and no data lost.
    let s2 = snap(
        c.ctrl
            .create_snapshot(snap_req("snap-data-2", &v.volume_id))
            .await,
    );
    c.ctrl
        .delete_snapshot(del_snap(&s.snapshot_id))
        .await
        .unwrap();
    let (left, _) = ids(c.ctrl.list_snapshots(list_req(0, "", "", "")).await);
    assert_eq!(left, vec![s2.snapshot_id.clone()]);
    fails(
        c.ctrl
            .create_volume(from_snapshot("pvc-r2", 0, &s.snapshot_id))
            .await,
        Code::NotFound,
    );
    let hidden: Vec<String> = lvols(&d)
        .into_iter()
        .filter(|l| l.0.starts_with("csigone-"))
        .map(|l| l.0)
        .collect();
    assert_eq!(hidden.len(), 1, "{:?}", lvols(&d));
    // The restored volume still knows its source (idempotent retry).
    let again = vol(c
        .ctrl
        .create_volume(from_snapshot("pvc-r", 13 * MIB, &s.snapshot_id))
        .await);
    assert_eq!(again.volume_id, r.volume_id);
    // Deleting it again is OK and changes nothing.
    c.ctrl
        .delete_snapshot(del_snap(&s.snapshot_id))
        .await
        .unwrap();

    // The source deleted: its second snapshot stays (and so the hidden first one, whose
    // clones are the second snapshot and the restored volume) ...
    c.ctrl.delete_volume(del_vol(&v.volume_id)).await.unwrap();
    assert!(d.lvol(&vu).is_none());
    assert_eq!(lvols(&d).len(), 3, "{:?}", lvols(&d));
    // ... then the second snapshot: the hidden one has only the restored volume left and is
    // merged into it.
    c.ctrl
        .delete_snapshot(del_snap(&s2.snapshot_id))
        .await
        .unwrap();
    let names: Vec<String> = lvols(&d).into_iter().map(|l| l.0).collect();
    assert_eq!(names, vec!["csi-pvc-r".to_string()], "left over: {names:?}");
    {
        let e = Export::new(&d, &ru);
        assert!(e.read(0, 2) == dd, "the restored volume lost its own write");
        assert!(
            e.read(2048, 2) == b,
            "the restored volume lost the snapshot's data"
        );
    }
    c.ctrl.delete_volume(del_vol(&r.volume_id)).await.unwrap();
    all_gone(&d, free0);
    c.stop().await;
}

// -------------------------------------------------------- Volumes from volumes (data) --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_from_volume_is_a_copy_and_either_can_be_deleted() {
    let (d, free0, mut c) = one_node().await;
    let a = plain(&mut c, "pvc-a", 8 * MIB).await;
    let au = lvol_uuid(&a.volume_id);
    let (pa, pb_, pc) = (pattern(5, 3), pattern(6, 3), pattern(7, 3));
    Export::new(&d, &au).write(1024, &pa);

    fails(
        c.ctrl
            .create_volume(from_volume("pvc-b", 0, "reallyfakevolumeid"))
            .await,
        Code::NotFound,
    );
    let mut small = from_volume("pvc-b", 0, &a.volume_id);
    small.capacity_range = Some(pb::CapacityRange {
        required_bytes: 0,
        limit_bytes: 4 * MIB as i64,
    });
    fails(c.ctrl.create_volume(small).await, Code::OutOfRange);
    // A requisite topology the source's node does not serve (another zone).
    let mut far = from_volume("pvc-b", 0, &a.volume_id);
    far.accessibility_requirements = Some(pb::TopologyRequirement {
        requisite: vec![topology(&[("topology.kubernetes.io/zone", "z9")])],
        preferred: vec![],
    });
    fails(c.ctrl.create_volume(far).await, Code::ResourceExhausted);
    assert_eq!(lvols(&d).len(), 1, "refusals made lvols: {:?}", lvols(&d));

    let b = vol(c
        .ctrl
        .create_volume(from_volume("pvc-b", 0, &a.volume_id))
        .await);
    assert_eq!(b.capacity_bytes, 8 * MIB as i64);
    assert_eq!(
        b.content_source.as_ref().and_then(|s| s.r#type.clone()),
        Some(Src::Volume(VolumeSource {
            volume_id: a.volume_id.clone()
        }))
    );
    let bu = lvol_uuid(&b.volume_id);
    let again = vol(c
        .ctrl
        .create_volume(from_volume("pvc-b", 0, &a.volume_id))
        .await);
    assert_eq!(again.volume_id, b.volume_id);
    fails(
        c.ctrl.create_volume(create_req("pvc-b", 0, &[])).await,
        Code::AlreadyExists,
    );
    // A clone of a clone.
    let b2 = vol(c
        .ctrl
        .create_volume(from_volume("pvc-b2", 0, &b.volume_id))
        .await);
    let again = vol(c
        .ctrl
        .create_volume(from_volume("pvc-b2", 0, &b.volume_id))
        .await);
    assert_eq!(again.volume_id, b2.volume_id);
    fails(
        c.ctrl
            .create_volume(from_volume("pvc-b2", 0, &a.volume_id))
            .await,
        Code::AlreadyExists,
    );

    // The hidden snapshots are neither snapshots nor volumes to the CO.
    let (snaps, _) = ids(c.ctrl.list_snapshots(list_req(0, "", "", "")).await);
    assert!(snaps.is_empty(), "{snaps:?}");
    assert_eq!(volume_ids(&mut c).await.len(), 3);
    assert_eq!(
        lvols(&d)
            .iter()
            .filter(|l| l.0.starts_with("csibase-"))
            .count(),
        2
    );

    {
        let e = Export::new(&d, &bu);
        assert!(
            e.read(1024, 3) == pa,
            "the clone does not hold the source's data"
        );
        e.write(1024, &pb_);
    }
    {
        let e = Export::new(&d, &au);
        assert!(
            e.read(1024, 3) == pa,
            "the clone's write reached the source"
        );
        e.write(1024, &pc);
    }
    assert!(Export::new(&d, &bu).read(1024, 3) == pb_);
    assert!(Export::new(&d, &lvol_uuid(&b2.volume_id)).read(1024, 3) == pa);

    // The source deleted first: the clones keep their data, the hidden snapshot of a goes.
    c.ctrl.delete_volume(del_vol(&a.volume_id)).await.unwrap();
    assert!(d.lvol(&au).is_none());
    assert_eq!(
        lvols(&d)
            .iter()
            .filter(|l| l.0.starts_with("csibase-"))
            .count(),
        1,
        "{:?}",
        lvols(&d)
    );
    assert!(Export::new(&d, &bu).read(1024, 3) == pb_);
    // Then the clone of the clone, then the clone: nothing is left.
    c.ctrl.delete_volume(del_vol(&b2.volume_id)).await.unwrap();
    assert_eq!(lvols(&d), vec![("csi-pvc-b".to_string(), false)]);
    assert!(Export::new(&d, &bu).read(1024, 3) == pb_);
    c.ctrl.delete_volume(del_vol(&b.volume_id)).await.unwrap();
    all_gone(&d, free0);

    // The clone deleted first works too: the source keeps its data.
    let a = plain(&mut c, "pvc-a", 8 * MIB).await;
    let au = lvol_uuid(&a.volume_id);
    Export::new(&d, &au).write(0, &pa);
    let b = vol(c
        .ctrl
        .create_volume(from_volume("pvc-b", 0, &a.volume_id))
        .await);
    c.ctrl.delete_volume(del_vol(&b.volume_id)).await.unwrap();
    assert_eq!(lvols(&d), vec![("csi-pvc-a".to_string(), false)]);
    assert!(Export::new(&d, &au).read(0, 3) == pa);
    let parent: &Value = &d.lvol(&au).unwrap()["driver_specific"]["lvol"];
    assert!(parent.get("base_snapshot").is_none(), "{parent}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_advertise_snapshots_and_clones() {
    let d = Daemon::start();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    use ballast_csi::pb::controller_service_capability::{rpc, Type as CapType};
    let got: Vec<i32> = c
        .ctrl
        .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref().map(|CapType::Rpc(r)| r.r#type))
        .collect();
    for t in [
        rpc::Type::CreateDeleteSnapshot,
        rpc::Type::ListSnapshots,
        rpc::Type::CloneVolume,
    ] {
        assert!(got.contains(&(t as i32)), "{t:?} missing from {got:?}");
    }
    c.stop().await;
}
