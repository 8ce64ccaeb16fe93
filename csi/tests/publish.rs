//! ControllerPublishVolume / ControllerUnpublishVolume against a real ballastd: the export
//! subsystem, its hosts (never allow_any_host), idempotency, the single-node rule, and
//! DeleteVolume's interplay with exports. The NVMe/TCP listener is on 127.0.0.1.

mod common;

use ballast_csi::pb;
use ballast_csi::pb::volume_capability::access_mode::Mode;
use common::*;
use serde_json::json;
use tonic::Code;

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-1111-4111-8111-111111111111";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:22222222-2222-4222-8222-222222222222";

fn pub_req(volume_id: &str, node: &str, m: Mode) -> pb::ControllerPublishVolumeRequest {
    pb::ControllerPublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: node.into(),
        volume_capability: Some(mount_cap(m)),
        ..Default::default()
    }
}

fn unpub_req(volume_id: &str, node: &str) -> pb::ControllerUnpublishVolumeRequest {
    pb::ControllerUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: node.into(),
        ..Default::default()
    }
}

/// The export subsystem of `lvol` as ballastd shows it, or None.
fn export(d: &Daemon, lvol: &str) -> Option<serde_json::Value> {
    let nqn = format!("nqn.2026-11.io.ballast:csi-{lvol}");
    match d.call("nvmf_get_subsystems", json!({ "nqn": nqn })) {
        Ok(v) => Some(v[0].clone()),
        Err((-19, _)) => None,
        Err(e) => panic!("nvmf_get_subsystems: {e:?}"),
    }
}

fn hosts(e: &serde_json::Value) -> Vec<String> {
    e["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["nqn"].as_str().unwrap().to_string())
        .collect()
}

/// DeleteVolume of published volume `id` is FAILED_PRECONDITION and keeps its lvol.
async fn delete_is_refused(c: &mut Csi, d: &Daemon, id: &str, lvol: &str) {
    let (k, m) = code(
        c.ctrl
            .delete_volume(pb::DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert!(d.lvol(lvol).is_some());
}

async fn setup() -> (Daemon, Csi, u16) {
    let d = Daemon::with_store();
    let port = free_port();
    let mut n = node("n1", &d.sock, &[]);
    n.nvmf = Some(ballast_csi::config::Nvmf {
        addr: "127.0.0.1".into(),
        advertise: Some("10.0.2.2".into()),
        port,
    });
    let c = Csi::start(vec![n]).await;
    (d, c, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_allows_exactly_the_node_and_unpublish_removes_it() {
    let (d, mut c, port) = setup().await;
    let v = vol(c.ctrl.create_volume(create_req("pvc-p", 0, &[])).await);
    let id = v.volume_id.clone();
    let lvol = id.rsplit(':').next().unwrap().to_string();

    // Argument validation and NOT_FOUND cases (csi-sanity's).
    for (r, want) in [
        (
            pub_req("", HOST_A, Mode::SingleNodeWriter),
            Code::InvalidArgument,
        ),
        (
            pub_req(&id, "", Mode::SingleNodeWriter),
            Code::InvalidArgument,
        ),
        (
            pb::ControllerPublishVolumeRequest {
                volume_capability: None,
                ..pub_req(&id, HOST_A, Mode::SingleNodeWriter)
            },
            Code::InvalidArgument,
        ),
        (
            pub_req(&id, HOST_A, Mode::MultiNodeMultiWriter),
            Code::InvalidArgument,
        ),
        (
            pub_req(
                "v1:n1:00000000-0000-4000-8000-000000000000:00000000-0000-4000-8000-000000000001",
                HOST_A,
                Mode::SingleNodeWriter,
            ),
            Code::NotFound,
        ),
        (
            pub_req(&id, "some-fake-node-id", Mode::SingleNodeWriter),
            Code::NotFound,
        ),
    ] {
        let (k, m) = code(c.ctrl.controller_publish_volume(r).await);
        assert_eq!(k, want, "{m}");
    }
    assert!(
        export(&d, &lvol).is_none(),
        "a refused publish made a subsystem"
    );

    // Publish to A: the context says where to connect; ballastd allows A only.
    let ctx = c
        .ctrl
        .controller_publish_volume(pub_req(&id, HOST_A, Mode::SingleNodeWriter))
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    let nqn = format!("nqn.2026-11.io.ballast:csi-{lvol}");
    assert_eq!(ctx["nqn"], nqn);
    assert_eq!(ctx["traddr"], "10.0.2.2", "the advertised address");
    assert_eq!(ctx["trsvcid"], port.to_string());
    assert_eq!(ctx["ns_uuid"], lvol);
    let e = export(&d, &lvol).expect("export subsystem");
    assert_eq!(e["allow_any_host"], false);
    assert_eq!(hosts(&e), vec![HOST_A.to_string()]);
    assert_eq!(e["namespaces"][0]["uuid"], lvol.as_str());
    assert_eq!(e["namespaces"][0]["bdev_name"], lvol.as_str());
    assert_eq!(e["listen_addresses"][0]["traddr"], "127.0.0.1");
    assert_eq!(e["listen_addresses"][0]["trsvcid"], port.to_string());

    // The CO sees where the volume is published: ControllerGetVolume and ListVolumes.
    let st = c
        .ctrl
        .controller_get_volume(pb::ControllerGetVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.published_node_ids, vec![HOST_A.to_string()]);
    let l = c
        .ctrl
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let e = l
        .entries
        .iter()
        .find(|e| e.volume.as_ref().unwrap().volume_id == id)
        .unwrap();
    assert_eq!(
        e.status.as_ref().unwrap().published_node_ids,
        vec![HOST_A.to_string()]
    );

    // Idempotent.
    let again = c
        .ctrl
        .controller_publish_volume(pub_req(&id, HOST_A, Mode::SingleNodeWriter))
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    assert_eq!(again, ctx);
    assert_eq!(hosts(&export(&d, &lvol).unwrap()).len(), 1);

    // A single-node volume cannot go to B too, not even for reading (B would read a file
    // system A is changing); A again with another access mode: ALREADY_EXISTS.
    for m in [Mode::SingleNodeWriter, Mode::MultiNodeReaderOnly] {
        let (k, msg) = code(
            c.ctrl
                .controller_publish_volume(pub_req(&id, HOST_B, m))
                .await,
        );
        assert_eq!(k, Code::FailedPrecondition, "{m:?}: {msg}");
        assert!(msg.contains(HOST_A), "{msg}");
    }
    let (k, msg) = code(
        c.ctrl
            .controller_publish_volume(pub_req(&id, HOST_A, Mode::MultiNodeReaderOnly))
            .await,
    );
    assert_eq!(k, Code::AlreadyExists, "{msg}");
    assert_eq!(hosts(&export(&d, &lvol).unwrap()), vec![HOST_A.to_string()]);

    // Deleting a published volume is refused and keeps it.
    delete_is_refused(&mut c, &d, &id, &lvol).await;

    // Unpublished from A, it can go to several readers; a writer is then refused.
    c.ctrl
        .controller_unpublish_volume(unpub_req(&id, HOST_A))
        .await
        .unwrap();
    assert!(
        export(&d, &lvol).is_none(),
        "the last host gone, the subsystem stays"
    );
    for h in [HOST_A, HOST_B] {
        c.ctrl
            .controller_publish_volume(pub_req(&id, h, Mode::MultiNodeReaderOnly))
            .await
            .unwrap();
    }
    let mut h = hosts(&export(&d, &lvol).unwrap());
    h.sort();
    assert_eq!(h, vec![HOST_A.to_string(), HOST_B.to_string()]);
    let (k, msg) = code(
        c.ctrl
            .controller_publish_volume(pub_req(&id, HOST_B, Mode::SingleNodeWriter))
            .await,
    );
    assert_eq!(k, Code::AlreadyExists, "{msg}");

    // Published to readers: refused as well.
    delete_is_refused(&mut c, &d, &id, &lvol).await;

    // Unpublish A: B stays; unpublish B: the subsystem goes; again: OK.
    c.ctrl
        .controller_unpublish_volume(unpub_req(&id, HOST_A))
        .await
        .unwrap();
    assert_eq!(hosts(&export(&d, &lvol).unwrap()), vec![HOST_B.to_string()]);
    c.ctrl
        .controller_unpublish_volume(unpub_req(&id, HOST_B))
        .await
        .unwrap();
    assert!(
        export(&d, &lvol).is_none(),
        "the last host gone, the subsystem stays"
    );
    c.ctrl
        .controller_unpublish_volume(unpub_req(&id, HOST_B))
        .await
        .unwrap();
    // Unknown volumes are unpublished already; a missing id is INVALID_ARGUMENT.
    c.ctrl
        .controller_unpublish_volume(unpub_req("v1:n1:bogus", HOST_A))
        .await
        .unwrap();
    let (k, _) = code(
        c.ctrl
            .controller_unpublish_volume(unpub_req("", HOST_A))
            .await,
    );
    assert_eq!(k, Code::InvalidArgument);

    // Empty node_id unpublishes from every node.
    for h in [HOST_A, HOST_B] {
        c.ctrl
            .controller_publish_volume(pub_req(&id, h, Mode::MultiNodeReaderOnly))
            .await
            .unwrap();
    }
    c.ctrl
        .controller_unpublish_volume(unpub_req(&id, ""))
        .await
        .unwrap();
    assert!(export(&d, &lvol).is_none());

    c.ctrl
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: id,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(d.lvol(&lvol).is_none());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_short_publish_is_completed_or_removed() {
    let (d, mut c, _) = setup().await;
    let v = vol(c.ctrl.create_volume(create_req("pvc-q", 0, &[])).await);
    let lvol = v.volume_id.rsplit(':').next().unwrap().to_string();
    let nqn = format!("nqn.2026-11.io.ballast:csi-{lvol}");
    // A publish that stopped after the subsystem and its namespace.
    d.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "allow_any_host": true}),
    );
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": lvol}}),
    );
    // The retry completes it, and closes allow_any_host.
    c.ctrl
        .controller_publish_volume(pub_req(&v.volume_id, HOST_A, Mode::SingleNodeWriter))
        .await
        .unwrap();
    let e = export(&d, &lvol).unwrap();
    assert_eq!(e["allow_any_host"], false);
    assert_eq!(hosts(&e), vec![HOST_A.to_string()]);
    assert_eq!(e["listen_addresses"].as_array().unwrap().len(), 1);
    c.ctrl
        .controller_unpublish_volume(unpub_req(&v.volume_id, HOST_A))
        .await
        .unwrap();

    // A host-less leftover holds the lvol open: DeleteVolume removes both.
    d.ok("nvmf_create_subsystem", json!({ "nqn": nqn }));
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": lvol}}),
    );
    c.ctrl
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(export(&d, &lvol).is_none());
    assert!(d.lvol(&lvol).is_none());

    // A node without an nvmf address cannot publish.
    let d2 = Daemon::with_store();
    let mut c2 = Csi::start(vec![node("n2", &d2.sock, &[])]).await;
    let v2 = vol(c2.ctrl.create_volume(create_req("pvc-r", 0, &[])).await);
    let (k, m) = code(
        c2.ctrl
            .controller_publish_volume(pub_req(&v2.volume_id, HOST_A, Mode::SingleNodeWriter))
            .await,
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert!(m.contains("nvmf"), "{m}");
    c2.stop().await;
    c.stop().await;
}
