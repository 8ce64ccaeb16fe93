//! csi-sanity-style checks of ballast-csi's Identity and Controller services against real
//! ballastd daemons (see common/mod.rs). Each test has its own daemons and CSI socket.

mod common;

use std::collections::HashSet;

use ballast_csi::pb;
use ballast_csi::pb::controller_service_capability::{rpc, Type as CapType};
use ballast_csi::pb::plugin_capability::{service, volume_expansion, Type};
use ballast_csi::pb::volume_capability::{access_mode::Mode, AccessType, BlockVolume};
use ballast_csi::volume::VolumeId;
use common::*;
use serde_json::json;
use tonic::Code;

// ---------------------------------------------------------------------------- Identity --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_reports_name_version_and_capabilities() {
    let d = Daemon::with_store();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    let info = c
        .identity
        .get_plugin_info(pb::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "csi.ballast.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));

    let caps = c
        .identity
        .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let services: HashSet<i32> = caps
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    assert!(services.contains(&(service::Type::ControllerService as i32)));
    assert!(services.contains(&(service::Type::VolumeAccessibilityConstraints as i32)));
    assert!(caps.iter().any(|c| matches!(&c.r#type,
        Some(Type::VolumeExpansion(e)) if e.r#type == volume_expansion::Type::Online as i32)));

    let ctl = c
        .ctrl
        .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let got: HashSet<i32> = ctl
        .iter()
        .filter_map(|c| c.r#type.as_ref().map(|CapType::Rpc(r)| r.r#type))
        .collect();
    let want: HashSet<i32> = [
        rpc::Type::CreateDeleteVolume,
        rpc::Type::PublishUnpublishVolume,
        rpc::Type::ListVolumes,
        rpc::Type::GetCapacity,
        rpc::Type::ExpandVolume,
        rpc::Type::CreateDeleteSnapshot,
        rpc::Type::ListSnapshots,
        rpc::Type::CloneVolume,
        rpc::Type::GetVolume,
        rpc::Type::VolumeCondition,
    ]
    .into_iter()
    .map(|t| t as i32)
    .collect();
    // Exactly these: nothing not built is advertised.
    assert_eq!(got, want);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_is_ready_only_while_ballastd_answers() {
    let mut d = Daemon::start();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    let ready = |r: pb::ProbeResponse| r.ready.map(|b| b.value);
    let r = c
        .identity
        .probe(pb::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ready(r), Some(true));
    d.kill();
    let r = c
        .identity
        .probe(pb::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ready(r), Some(false));
    c.stop().await;
}

// ------------------------------------------------------------------------ CreateVolume --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_volume_refuses_bad_arguments() {
    let d = Daemon::with_store();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    let base = create_req("pvc-bad", 8 * MIB, &[]);

    let mut r = base.clone();
    r.name.clear();
    assert_eq!(code(c.ctrl.create_volume(r).await).0, Code::InvalidArgument);

    let mut r = base.clone();
    r.volume_capabilities.clear();
    assert_eq!(code(c.ctrl.create_volume(r).await).0, Code::InvalidArgument);

    let mut r = base.clone();
    r.volume_capabilities[0].access_type = None;
    assert_eq!(code(c.ctrl.create_volume(r).await).0, Code::InvalidArgument);

    let mut r = base.clone();
    r.volume_capabilities[0].access_mode = None;
    assert_eq!(code(c.ctrl.create_volume(r).await).0, Code::InvalidArgument);

    let mut r = base.clone();
    r.volume_capabilities
        .push(mount_cap(Mode::MultiNodeMultiWriter));
    let (k, m) = code(c.ctrl.create_volume(r).await);
    assert_eq!(k, Code::InvalidArgument);
    assert!(m.contains("MULTI_NODE_MULTI_WRITER"), "{m}");

    let r = create_req("pvc-bad", 8 * MIB, &[("colour", "red"), ("thin", "true")]);
    let (k, m) = code(c.ctrl.create_volume(r).await);
    assert_eq!(k, Code::InvalidArgument);
    assert!(m.contains("colour"), "{m}");

    let r = create_req(
        "pvc-bad",
        8 * MIB,
        &[("compression", "lz4"), ("encryption", "true")],
    );
    let (k, m) = code(c.ctrl.create_volume(r).await);
    assert_eq!(k, Code::InvalidArgument);
    assert!(
        m.contains("compression=lz4") && m.contains("encryption") && m.contains("not built yet"),
        "{m}"
    );
    let r = create_req("pvc-bad", 8 * MIB, &[("replicas", "6")]);
    let (k, m) = code(c.ctrl.create_volume(r).await);
    assert_eq!(k, Code::InvalidArgument);
    assert!(m.contains("replicas"), "{m}");

    let mut r = base.clone();
    r.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Volume(
            pb::volume_content_source::VolumeSource {
                volume_id: "v1:n1:x:y".into(),
            },
        )),
    });
    assert_eq!(code(c.ctrl.create_volume(r).await).0, Code::NotFound);
    let mut r = base.clone();
    r.volume_content_source = Some(pb::VolumeContentSource { r#type: None });
    assert_eq!(code(c.ctrl.create_volume(r).await).0, Code::InvalidArgument);

    let mut r = base.clone();
    r.capacity_range = Some(pb::CapacityRange {
        required_bytes: 9 * MIB as i64,
        limit_bytes: 8 * MIB as i64,
    });
    assert_eq!(code(c.ctrl.create_volume(r).await).0, Code::InvalidArgument);

    // 5..6 MiB holds no whole 4 MiB cluster count.
    let mut r = base.clone();
    r.capacity_range = Some(pb::CapacityRange {
        required_bytes: 5 * MIB as i64,
        limit_bytes: 6 * MIB as i64,
    });
    assert_eq!(code(c.ctrl.create_volume(r).await).0, Code::OutOfRange);

    // None of the refusals left an lvol behind.
    let lvols = d.ok("bdev_lvol_get_lvols", json!({"lvs_name": "lvs0"}));
    assert_eq!(lvols, json!([]), "refused calls created lvols");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_volume_is_idempotent_rounds_to_clusters_and_conflicts_are_already_exists() {
    let d = Daemon::with_store();
    let nodes = vec![node("n1", &d.sock, &[])];
    let mut c = Csi::start(nodes.clone()).await;

    let v = vol(c
        .ctrl
        .create_volume(create_req("pvc-one", 5 * MIB, &[]))
        .await);
    assert_eq!(
        v.capacity_bytes,
        8 * MIB as i64,
        "5 MiB rounds up to two 4 MiB clusters"
    );
    let id = VolumeId::parse(&v.volume_id).expect("a v1 volume id");
    assert_eq!(id.node, "n1");
    // Reachable over NVMe/TCP from every node: no topology beyond the per-node key, so no
    // constraint on where pods run.
    assert!(
        v.accessible_topology.is_empty(),
        "{:?}",
        v.accessible_topology
    );

    // The lvol ballastd holds: named from the CSI name, thin, the rounded size, its UUID
    // in the volume id.
    let l = d.lvol("lvs0/csi-pvc-one").expect("lvol lvs0/csi-pvc-one");
    assert_eq!(l["name"], json!(id.lvol_uuid));
    assert_eq!(
        l["num_blocks"].as_u64().unwrap() * l["block_size"].as_u64().unwrap(),
        8 * MIB
    );
    assert_eq!(l["driver_specific"]["lvol"]["thin_provision"], json!(true));

    // Same name, same (or compatible) capacity: the same volume.
    let again = vol(c
        .ctrl
        .create_volume(create_req("pvc-one", 5 * MIB, &[]))
        .await);
    assert_eq!(again.volume_id, v.volume_id);
    let again = vol(c
        .ctrl
        .create_volume(create_req("pvc-one", 8 * MIB, &[]))
        .await);
    assert_eq!(again.volume_id, v.volume_id);

    // A restarted controller has no state of its own and finds the same volume.
    c.stop().await;
    let mut c = Csi::start(nodes).await;
    let again = vol(c
        .ctrl
        .create_volume(create_req("pvc-one", 5 * MIB, &[]))
        .await);
    assert_eq!(again.volume_id, v.volume_id);

    // Same name, conflicting capacity or parameters: ALREADY_EXISTS.
    let (k, m) = code(
        c.ctrl
            .create_volume(create_req("pvc-one", 16 * MIB, &[]))
            .await,
    );
    assert_eq!(k, Code::AlreadyExists, "{m}");
    let mut r = create_req("pvc-one", 0, &[]);
    r.capacity_range = Some(pb::CapacityRange {
        required_bytes: 0,
        limit_bytes: 4 * MIB as i64,
    });
    assert_eq!(code(c.ctrl.create_volume(r).await).0, Code::AlreadyExists);
    let (k, _) = code(
        c.ctrl
            .create_volume(create_req("pvc-one", 5 * MIB, &[("thin", "false")]))
            .await,
    );
    assert_eq!(k, Code::AlreadyExists);
    let lvols = d.ok("bdev_lvol_get_lvols", json!({"lvs_name": "lvs0"}));
    assert_eq!(
        lvols.as_array().unwrap().len(),
        1,
        "one lvol for one name: {lvols}"
    );

    // Names that cannot be lvol names are hashed, still idempotent, still distinct.
    let a = vol(c
        .ctrl
        .create_volume(create_req("my volume/1", MIB, &[]))
        .await);
    let a2 = vol(c
        .ctrl
        .create_volume(create_req("my volume/1", MIB, &[]))
        .await);
    let b = vol(c
        .ctrl
        .create_volume(create_req("my volume/2", MIB, &[]))
        .await);
    assert_eq!(a.volume_id, a2.volume_id);
    assert_ne!(a.volume_id, b.volume_id);

    // No capacity range: the default size (1 GiB, thin; the pool is 128 MiB).
    let dflt = vol(c
        .ctrl
        .create_volume(create_req("pvc-default", 0, &[]))
        .await);
    assert_eq!(dflt.capacity_bytes, 1 << 30);
    c.stop().await;
}

// ------------------------------------------------------------------------ DeleteVolume --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_volume_is_idempotent_and_touches_only_its_own_lvols() {
    let d = Daemon::with_store();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    let v = vol(c
        .ctrl
        .create_volume(create_req("pvc-del", 4 * MIB, &[]))
        .await);
    let del = |id: &str| pb::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    };

    assert_eq!(
        code(c.ctrl.delete_volume(del("")).await).0,
        Code::InvalidArgument
    );
    c.ctrl
        .delete_volume(del(&v.volume_id))
        .await
        .expect("delete");
    assert!(
        d.lvol("lvs0/csi-pvc-del").is_none(),
        "the lvol is still there"
    );
    c.ctrl
        .delete_volume(del(&v.volume_id))
        .await
        .expect("second delete is OK");
    c.ctrl
        .delete_volume(del("reallyfakevolumeid"))
        .await
        .expect("unknown id is OK");

    // An lvol the driver did not make is never deleted, even under a well-formed id.
    let foreign = d.ok(
        "bdev_lvol_create",
        json!({"lvol_name": "vol0", "lvs_name": "lvs0", "size_in_mib": 4, "thin_provision": true}),
    );
    let id = VolumeId::parse(&v.volume_id).unwrap();
    let forged = VolumeId {
        lvol_uuid: foreign.as_str().unwrap().to_string(),
        ..id
    };
    c.ctrl
        .delete_volume(del(&forged.to_string()))
        .await
        .expect("OK: not ours");
    assert!(d.lvol("lvs0/vol0").is_some(), "a foreign lvol was deleted");

    // A volume in use (a namespace of a subsystem holds its lvol): FAILED_PRECONDITION,
    // and the lvol stays.
    let busy = vol(c
        .ctrl
        .create_volume(create_req("pvc-busy", 4 * MIB, &[]))
        .await);
    let nqn = "nqn.2026-11.io.ballast:csi-test";
    d.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "allow_any_host": false}),
    );
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": "lvs0/csi-pvc-busy"}}),
    );
    let (k, m) = code(c.ctrl.delete_volume(del(&busy.volume_id)).await);
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert!(d.lvol("lvs0/csi-pvc-busy").is_some());
    d.ok("nvmf_delete_subsystem", json!({"nqn": nqn}));
    c.ctrl
        .delete_volume(del(&busy.volume_id))
        .await
        .expect("deleted once free");
    assert!(d.lvol("lvs0/csi-pvc-busy").is_none());

    // A volume on a node the configuration does not have: refused, not silently dropped.
    let elsewhere = VolumeId {
        node: "n9".into(),
        ..forged
    };
    let (k, m) = code(c.ctrl.delete_volume(del(&elsewhere.to_string())).await);
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    c.stop().await;
}

// ---------------------------------------------------------- ValidateVolumeCapabilities --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_volume_capabilities() {
    let d = Daemon::with_store();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    let v = vol(c
        .ctrl
        .create_volume(create_req("pvc-val", 4 * MIB, &[]))
        .await);
    let req = |id: &str, caps: Vec<pb::VolumeCapability>| pb::ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    };

    let r = c
        .ctrl
        .validate_volume_capabilities(req(&v.volume_id, rwo()))
        .await
        .unwrap()
        .into_inner();
    let conf = r.confirmed.expect("RWO ext4 is confirmed");
    assert_eq!(conf.volume_capabilities, rwo());

    let block = pb::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(pb::volume_capability::AccessMode {
            mode: Mode::MultiNodeReaderOnly as i32,
        }),
    };
    let r = c
        .ctrl
        .validate_volume_capabilities(req(&v.volume_id, vec![block]))
        .await
        .unwrap();
    assert!(r.into_inner().confirmed.is_some(), "ROX block is confirmed");

    let r = c
        .ctrl
        .validate_volume_capabilities(req(
            &v.volume_id,
            vec![mount_cap(Mode::MultiNodeMultiWriter)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.confirmed.is_none() && r.message.contains("MULTI_NODE_MULTI_WRITER"),
        "{r:?}"
    );

    let mut thick = req(&v.volume_id, rwo());
    thick.parameters.insert("thin".into(), "false".into());
    let r = c
        .ctrl
        .validate_volume_capabilities(thick)
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.confirmed.is_none(),
        "a thin volume confirmed for thin=false"
    );

    assert_eq!(
        code(
            c.ctrl
                .validate_volume_capabilities(req(&v.volume_id, vec![]))
                .await
        )
        .0,
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.ctrl.validate_volume_capabilities(req("", rwo())).await).0,
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.ctrl
                .validate_volume_capabilities(req("nope", rwo()))
                .await
        )
        .0,
        Code::NotFound
    );
    c.ctrl
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        code(
            c.ctrl
                .validate_volume_capabilities(req(&v.volume_id, rwo()))
                .await
        )
        .0,
        Code::NotFound
    );
    c.stop().await;
}

// ------------------------------------------------------------------------- ListVolumes --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_volumes_paginates_and_refuses_bad_tokens() {
    let d = Daemon::with_store();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            vol(c
                .ctrl
                .create_volume(create_req(&format!("pvc-l{i}"), 4 * MIB, &[]))
                .await)
            .volume_id,
        );
    }
    // Not ours: never listed.
    d.ok(
        "bdev_lvol_create",
        json!({"lvol_name": "vol0", "lvs_name": "lvs0", "size_in_mib": 4, "thin_provision": true}),
    );
    let list = |max: i32, token: &str| pb::ListVolumesRequest {
        max_entries: max,
        starting_token: token.into(),
    };

    let all = c.ctrl.list_volumes(list(0, "")).await.unwrap().into_inner();
    let mut ids: Vec<String> = all
        .entries
        .iter()
        .map(|e| e.volume.clone().unwrap().volume_id)
        .collect();
    assert!(all.next_token.is_empty());
    ids.sort();
    let mut want = made.clone();
    want.sort();
    assert_eq!(ids, want);
    assert!(all
        .entries
        .iter()
        .all(|e| e.volume.as_ref().unwrap().capacity_bytes == 4 * MIB as i64));

    // Pages of 2: 2 + 2 + 1, each page's token leads to the next, nothing twice.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        assert!(pages < 5, "pagination does not end: {seen:?}");
        let r = c
            .ctrl
            .list_volumes(list(2, &token))
            .await
            .unwrap()
            .into_inner();
        assert!(r.entries.len() <= 2);
        seen.extend(
            r.entries
                .iter()
                .map(|e| e.volume.clone().unwrap().volume_id),
        );
        pages += 1;
        if r.next_token.is_empty() {
            break;
        }
        token = r.next_token;
    }
    assert_eq!(pages, 3);
    seen.sort();
    assert_eq!(seen, want);

    // The last volume of a page deleted before the next page is asked: the rest still come.
    let p1 = c.ctrl.list_volumes(list(2, "")).await.unwrap().into_inner();
    let last = p1.entries[1].volume.clone().unwrap().volume_id;
    c.ctrl
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: last.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let p2 = c
        .ctrl
        .list_volumes(list(0, &p1.next_token))
        .await
        .unwrap()
        .into_inner();
    let rest: Vec<String> = p2
        .entries
        .iter()
        .map(|e| e.volume.clone().unwrap().volume_id)
        .collect();
    assert_eq!(rest, want[2..].to_vec());

    let (k, m) = code(c.ctrl.list_volumes(list(0, "invalid-token")).await);
    assert_eq!(k, Code::Aborted, "{m}");
    assert_eq!(
        code(c.ctrl.list_volumes(list(-1, "")).await).0,
        Code::InvalidArgument
    );
    c.stop().await;
}

// ------------------------------------------------------------------------- GetCapacity --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_capacity_follows_the_store() {
    let d = Daemon::with_store();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    let cap = |params: &[(&str, &str)], caps: Vec<pb::VolumeCapability>| pb::GetCapacityRequest {
        volume_capabilities: caps,
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        accessible_topology: None,
    };
    let get = |r: R<pb::GetCapacityResponse>| r.unwrap().into_inner().available_capacity as u64;

    let before = get(c.ctrl.get_capacity(cap(&[], vec![])).await);
    assert_eq!(before, d.free_bytes());
    assert!(before > 100 * MIB && before <= POOL_MIB * MIB, "{before}");

    // A thick volume takes its clusters at once; GetCapacity shows it.
    let thick = vol(c
        .ctrl
        .create_volume(create_req("pvc-thick", 10 * MIB, &[("thin", "false")]))
        .await);
    assert_eq!(thick.capacity_bytes, 12 * MIB as i64);
    let after = get(c.ctrl.get_capacity(cap(&[], rwo())).await);
    assert_eq!(after, before - 12 * MIB);
    // A thin one takes nothing until written.
    vol(c
        .ctrl
        .create_volume(create_req("pvc-thin", 40 * MIB, &[]))
        .await);
    assert_eq!(
        get(c.ctrl.get_capacity(cap(&[("thin", "true")], vec![])).await),
        after
    );

    // A thick volume larger than what is free: RESOURCE_EXHAUSTED, nothing made.
    let (k, m) = code(
        c.ctrl
            .create_volume(create_req("pvc-huge", 1 << 30, &[("thin", "false")]))
            .await,
    );
    assert_eq!(k, Code::ResourceExhausted, "{m}");
    assert!(d.lvol("lvs0/csi-pvc-huge").is_none());

    c.ctrl
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: thick.volume_id,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(get(c.ctrl.get_capacity(cap(&[], vec![])).await), before);

    assert_eq!(
        code(c.ctrl.get_capacity(cap(&[("colour", "red")], vec![])).await).0,
        Code::InvalidArgument
    );
    // Capabilities the driver cannot serve: no capacity for them.
    assert_eq!(
        get(c
            .ctrl
            .get_capacity(cap(&[], vec![mount_cap(Mode::MultiNodeMultiWriter)]))
            .await),
        0
    );
    c.stop().await;
}

// -------------------------------------------------------------- ControllerExpandVolume --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expand_volume_grows_the_lvol_and_never_shrinks() {
    let d = Daemon::with_store();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    let v = vol(c
        .ctrl
        .create_volume(create_req("pvc-grow", 4 * MIB, &[]))
        .await);
    let grow = |id: &str, bytes: u64, cap: Option<pb::VolumeCapability>| {
        pb::ControllerExpandVolumeRequest {
            volume_id: id.into(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: bytes as i64,
                limit_bytes: 0,
            }),
            volume_capability: cap,
            ..Default::default()
        }
    };
    let r = c
        .ctrl
        .controller_expand_volume(grow(
            &v.volume_id,
            17 * MIB,
            Some(mount_cap(Mode::SingleNodeWriter)),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 20 * MIB as i64);
    assert!(
        r.node_expansion_required,
        "a file system must be grown on the node"
    );
    let l = d.lvol("lvs0/csi-pvc-grow").unwrap();
    assert_eq!(l["num_blocks"].as_u64().unwrap() * 4096, 20 * MIB);

    let block = pb::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(pb::volume_capability::AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    };
    let r = c
        .ctrl
        .controller_expand_volume(grow(&v.volume_id, 8 * MIB, Some(block)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.capacity_bytes,
        20 * MIB as i64,
        "a smaller size leaves the volume as is"
    );
    assert!(
        !r.node_expansion_required,
        "a block volume needs nothing on the node"
    );
    assert_eq!(
        d.lvol("lvs0/csi-pvc-grow").unwrap()["num_blocks"]
            .as_u64()
            .unwrap()
            * 4096,
        20 * MIB
    );

    // ListVolumes reports the new size.
    let l = c
        .ctrl
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        l.entries[0].volume.as_ref().unwrap().capacity_bytes,
        20 * MIB as i64
    );

    assert_eq!(
        code(
            c.ctrl
                .controller_expand_volume(grow("nope", MIB, None))
                .await
        )
        .0,
        Code::NotFound
    );
    let mut no_range = grow(&v.volume_id, MIB, None);
    no_range.capacity_range = None;
    assert_eq!(
        code(c.ctrl.controller_expand_volume(no_range).await).0,
        Code::InvalidArgument
    );
    c.stop().await;
}

// -------------------------------------------------------------------- Topology, nodes --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_places_volumes_and_scopes_capacity() {
    let (a, b) = (Daemon::with_store(), Daemon::with_store());
    // b is fuller, so without topology a new volume goes to a (most free space).
    b.ok(
        "bdev_lvol_create",
        json!({"lvol_name": "filler", "lvs_name": "lvs0", "size_in_mib": 32, "thin_provision": false}),
    );
    let zone = "topology.kubernetes.io/zone";
    let mut c = Csi::start(vec![
        node("node-a", &a.sock, &[(zone, "z1")]),
        node("node-b", &b.sock, &[(zone, "z2")]),
    ])
    .await;
    let on = |v: &pb::Volume| VolumeId::parse(&v.volume_id).unwrap().node;

    let v = vol(c
        .ctrl
        .create_volume(create_req("pvc-any", 4 * MIB, &[]))
        .await);
    assert_eq!(on(&v), "node-a");
    assert!(a.lvol("lvs0/csi-pvc-any").is_some() && b.lvol("lvs0/csi-pvc-any").is_none());

    let mut r = create_req("pvc-z2", 4 * MIB, &[]);
    r.accessibility_requirements = Some(pb::TopologyRequirement {
        requisite: vec![topology(&[(zone, "z2")])],
        preferred: vec![],
    });
    let v = vol(c.ctrl.create_volume(r.clone()).await);
    assert_eq!(on(&v), "node-b");
    assert_eq!(v.accessible_topology[0].segments[zone], "z2");
    assert!(b.lvol("lvs0/csi-pvc-z2").is_some());

    // Preferred wins over free space.
    let mut r2 = create_req("pvc-pref", 4 * MIB, &[]);
    r2.accessibility_requirements = Some(pb::TopologyRequirement {
        requisite: vec![],
        preferred: vec![topology(&[(zone, "z2")])],
    });
    assert_eq!(on(&vol(c.ctrl.create_volume(r2).await)), "node-b");

    // The existing name asked for in another zone: ALREADY_EXISTS.
    r.accessibility_requirements.as_mut().unwrap().requisite = vec![topology(&[(zone, "z1")])];
    assert_eq!(
        code(c.ctrl.create_volume(r.clone()).await).0,
        Code::AlreadyExists
    );
    // A zone no node is in: RESOURCE_EXHAUSTED.
    r.name = "pvc-z9".into();
    r.accessibility_requirements.as_mut().unwrap().requisite = vec![topology(&[(zone, "z9")])];
    assert_eq!(
        code(c.ctrl.create_volume(r).await).0,
        Code::ResourceExhausted
    );

    // GetCapacity per segment is that node's store; without one, the sum.
    let cap = |t: Option<pb::Topology>| pb::GetCapacityRequest {
        accessible_topology: t,
        ..Default::default()
    };
    let get = |r: R<pb::GetCapacityResponse>| r.unwrap().into_inner().available_capacity as u64;
    assert_eq!(
        get(c
            .ctrl
            .get_capacity(cap(Some(topology(&[(zone, "z1")]))))
            .await),
        a.free_bytes()
    );
    assert_eq!(
        get(c
            .ctrl
            .get_capacity(cap(Some(topology(&[(zone, "z2")]))))
            .await),
        b.free_bytes()
    );
    assert_eq!(
        get(c.ctrl.get_capacity(cap(None)).await),
        a.free_bytes() + b.free_bytes()
    );
    assert_eq!(
        get(c
            .ctrl
            .get_capacity(cap(Some(topology(&[(zone, "z9")]))))
            .await),
        0
    );

    // Volumes of both nodes are listed.
    let l = c
        .ctrl
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let nodes: HashSet<String> = l
        .entries
        .iter()
        .map(|e| on(e.volume.as_ref().unwrap()))
        .collect();
    assert_eq!(l.entries.len(), 3);
    assert_eq!(
        nodes,
        HashSet::from(["node-a".to_string(), "node-b".to_string()])
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_fails_create_instead_of_risking_a_duplicate() {
    let a = Daemon::with_store();
    let mut gone = Daemon::with_store();
    let mut c = Csi::start(vec![
        node("node-a", &a.sock, &[]),
        node("node-b", &gone.sock, &[]),
    ])
    .await;
    gone.kill();
    let (k, m) = code(
        c.ctrl
            .create_volume(create_req("pvc-x", 4 * MIB, &[]))
            .await,
    );
    assert_eq!(k, Code::Unavailable, "{m}");
    assert!(m.contains("node-b"), "{m}");
    assert!(
        a.lvol("lvs0/csi-pvc-x").is_none(),
        "created while a node could not be asked"
    );
    // Probe stays ready: one node still answers.
    let p = c
        .identity
        .probe(pb::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.ready.map(|b| b.value), Some(true));
    c.stop().await;
}
