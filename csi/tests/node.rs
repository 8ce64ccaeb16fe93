//! The Node service's contract without a kernel initiator: identity in node mode,
//! NodeGetInfo/NodeGetCapabilities, and csi-sanity's argument and idempotency cases that need
//! no attached volume. Attaching, mounting and expanding for real is tested in the QEMU guest
//! (ci/interop-csi.sh).

mod common;

use std::collections::BTreeMap;

use ballast_csi::node::NodeOptions;
use ballast_csi::pb;
use ballast_csi::pb::node_service_capability::{rpc, Type as CapType};
use ballast_csi::pb::plugin_capability::{service, Type};
use ballast_csi::pb::volume_capability::access_mode::Mode;
use ballast_csi::server::Mode as ServeMode;
use common::*;
use tonic::Code;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:33333333-3333-4333-8333-333333333333";
const VOL: &str = "v1:n1:00000000-0000-4000-8000-000000000000:0f6b2f9e-8a4d-4c1e-9d55-0a2b3c4d5e6f";

/// `ctx` with `k` set to `v`.
fn with(
    ctx: &std::collections::HashMap<String, String>,
    k: &str,
    v: &str,
) -> std::collections::HashMap<String, String> {
    let mut c = ctx.clone();
    c.insert(k.into(), v.into());
    c
}

async fn start(root: &std::path::Path) -> Csi {
    let topology: BTreeMap<String, String> = [
        (
            "topology.csi.ballast.io/node".to_string(),
            "k8s-1".to_string(),
        ),
        ("topology.kubernetes.io/zone".to_string(), "z1".to_string()),
    ]
    .into();
    Csi::start_mode(ServeMode::Node(NodeOptions {
        host_nqn: HOST.into(),
        topology,
        max_volumes: 7,
        ctrl_loss_tmo: 60,
        reconnect_delay: 2,
        keep_alive_tmo: 5,
        root: root.to_path_buf(),
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_mode_serves_identity_and_node_info() {
    let root = tempfile::tempdir().unwrap();
    let mut c = start(root.path()).await;
    let caps = c
        .identity
        .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    assert!(!caps.iter().any(|c| matches!(&c.r#type,
        Some(Type::Service(s)) if s.r#type == service::Type::ControllerService as i32)));
    // The Controller service is not served in node mode.
    let (k, _) = code(
        c.ctrl
            .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
            .await,
    );
    assert_eq!(k, Code::Unimplemented);

    let info = c
        .node
        .node_get_info(pb::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, HOST, "the node id is the host NQN");
    assert_eq!(info.max_volumes_per_node, 7);
    let seg = info.accessible_topology.unwrap().segments;
    assert_eq!(seg["topology.csi.ballast.io/node"], "k8s-1");
    assert_eq!(seg["topology.kubernetes.io/zone"], "z1");

    let caps: Vec<i32> = c
        .node
        .node_get_capabilities(pb::NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref().map(|CapType::Rpc(r)| r.r#type))
        .collect();
    for t in [
        rpc::Type::StageUnstageVolume,
        rpc::Type::GetVolumeStats,
        rpc::Type::ExpandVolume,
        rpc::Type::VolumeCondition,
    ] {
        assert!(caps.contains(&(t as i32)), "{t:?} not advertised");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_calls_validate_arguments_and_are_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let mut c = start(root.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging").display().to_string();
    let target = dir.path().join("target").display().to_string();
    let ctx: std::collections::HashMap<String, String> = [
        (
            "nqn",
            "nqn.2026-11.io.ballast:csi-0f6b2f9e-8a4d-4c1e-9d55-0a2b3c4d5e6f",
        ),
        ("traddr", "127.0.0.1"),
        ("trsvcid", "4420"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let stage =
        |id: &str, path: &str, cap: Option<pb::VolumeCapability>, ctx| pb::NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: path.into(),
            volume_capability: cap,
            publish_context: ctx,
            ..Default::default()
        };
    let rwo = Some(mount_cap(Mode::SingleNodeWriter));
    for (r, want) in [
        (
            stage("", &staging, rwo.clone(), ctx.clone()),
            Code::InvalidArgument,
        ),
        (
            stage(VOL, "", rwo.clone(), ctx.clone()),
            Code::InvalidArgument,
        ),
        (
            stage(VOL, &staging, None, ctx.clone()),
            Code::InvalidArgument,
        ),
        (
            stage(
                VOL,
                &staging,
                Some(mount_cap(Mode::MultiNodeMultiWriter)),
                ctx.clone(),
            ),
            Code::InvalidArgument,
        ),
        (
            stage(VOL, &staging, rwo.clone(), Default::default()),
            Code::InvalidArgument,
        ),
        (
            stage("not-a-volume", &staging, rwo.clone(), ctx.clone()),
            Code::NotFound,
        ),
        // publish_context must name this volume's subsystem, an IP address and a port.
        (
            stage(
                VOL,
                &staging,
                rwo.clone(),
                with(&ctx, "nqn", "nqn.2026-11.io.ballast:csi-x"),
            ),
            Code::InvalidArgument,
        ),
        (
            stage(
                VOL,
                &staging,
                rwo.clone(),
                with(&ctx, "traddr", "10.0.0.1,duplicate_connect"),
            ),
            Code::InvalidArgument,
        ),
        (
            stage(VOL, &staging, rwo.clone(), with(&ctx, "trsvcid", "4420,x")),
            Code::InvalidArgument,
        ),
        // No /dev/nvme-fabrics under the fake root: said plainly.
        (
            stage(VOL, &staging, rwo.clone(), ctx.clone()),
            Code::FailedPrecondition,
        ),
    ] {
        let (k, m) = code(c.node.node_stage_volume(r).await);
        assert_eq!(k, want, "{m}");
    }

    let publish = |id: &str, st: &str, t: &str| pb::NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: st.into(),
        target_path: t.into(),
        volume_capability: rwo.clone(),
        ..Default::default()
    };
    for (r, want) in [
        (publish("", &staging, &target), Code::InvalidArgument),
        (publish(VOL, "", &target), Code::InvalidArgument),
        (publish(VOL, &staging, ""), Code::InvalidArgument),
        // Not staged.
        (publish(VOL, &staging, &target), Code::FailedPrecondition),
    ] {
        let (k, m) = code(c.node.node_publish_volume(r).await);
        assert_eq!(k, want, "{m}");
    }

    // Unpublish/unstage of what is not there: OK (idempotent); missing ids: INVALID_ARGUMENT.
    std::fs::create_dir_all(&target).unwrap();
    c.node
        .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
            volume_id: VOL.into(),
            target_path: target.clone(),
        })
        .await
        .unwrap();
    assert!(
        !std::path::Path::new(&target).exists(),
        "target not removed"
    );
    c.node
        .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
            volume_id: VOL.into(),
            target_path: target.clone(),
        })
        .await
        .unwrap();
    c.node
        .node_unstage_volume(pb::NodeUnstageVolumeRequest {
            volume_id: VOL.into(),
            staging_target_path: staging.clone(),
        })
        .await
        .unwrap();
    let (k, _) = code(
        c.node
            .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                volume_id: String::new(),
                target_path: target.clone(),
            })
            .await,
    );
    assert_eq!(k, Code::InvalidArgument);
    let (k, _) = code(
        c.node
            .node_unstage_volume(pb::NodeUnstageVolumeRequest {
                volume_id: VOL.into(),
                staging_target_path: String::new(),
            })
            .await,
    );
    assert_eq!(k, Code::InvalidArgument);

    // Unpublish never removes what NodePublish does not make (a file with data).
    std::fs::write(&target, "precious").unwrap();
    let (k, m) = code(
        c.node
            .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                volume_id: VOL.into(),
                target_path: target.clone(),
            })
            .await,
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    std::fs::remove_file(&target).unwrap();

    // Stats: a path that does not exist, or is not the volume's mount → NOT_FOUND.
    for p in [target.as_str(), staging.as_str()] {
        let (k, m) = code(
            c.node
                .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
                    volume_id: VOL.into(),
                    volume_path: p.into(),
                    ..Default::default()
                })
                .await,
        );
        assert_eq!(k, Code::NotFound, "{m}");
    }
    // Expand of a volume not attached here → NOT_FOUND.
    let (k, m) = code(
        c.node
            .node_expand_volume(pb::NodeExpandVolumeRequest {
                volume_id: VOL.into(),
                volume_path: staging.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(k, Code::NotFound, "{m}");
    c.stop().await;
}
