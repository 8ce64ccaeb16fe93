//! `ballast-csi call`: any CSI call from the command line, request and answer as JSON — for
//! operators (what `csc` is for other drivers) and for the tests that run the node plugin in
//! a VM. Field names are the specification's; oneofs are objects keyed by the variant
//! (`{"access_type": {"mount": {"fs_type": "ext4"}}}`), enum fields their numbers
//! (`{"access_mode": {"mode": 1}}` = SINGLE_NODE_WRITER).
//!
//! ```text
//!  ballast-csi call --endpoint unix:///csi/csi.sock NodeGetInfo
//!  ballast-csi call --endpoint tcp://127.0.0.1:10000 CreateVolume '{"name": "v1", ...}'
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint as GrpcEndpoint, Uri};

use crate::error::{Error, Result};
use crate::pb;
use crate::pb::controller_client::ControllerClient;
use crate::pb::identity_client::IdentityClient;
use crate::pb::node_client::NodeClient;
use crate::server::Endpoint;

/// A gRPC channel to `e`.
pub async fn connect(e: &Endpoint) -> Result<Channel> {
    match e {
        Endpoint::Tcp(a) => Ok(GrpcEndpoint::from_shared(format!("http://{a}"))
            .map_err(|err| Error::InvalidArgument(format!("endpoint {e}: {err}")))?
            .connect()
            .await?),
        Endpoint::Unix(p) => {
            let p = p.clone();
            // The URI is a placeholder: the connector ignores it.
            Ok(GrpcEndpoint::from_static("http://[::]:50051")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let p = p.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(p).await?,
                        ))
                    }
                }))
                .await?)
        }
    }
}

fn req<T: DeserializeOwned>(method: &str, v: Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| Error::InvalidArgument(format!("{method} request JSON: {e}")))
}

fn answer<T: Serialize>(
    r: std::result::Result<tonic::Response<T>, tonic::Status>,
) -> Result<Value> {
    match r {
        Ok(a) => Ok(serde_json::to_value(a.into_inner()).expect("messages serialize")),
        Err(s) => Err(Error::Call {
            code: format!("{:?}", s.code()),
            message: s.message().to_string(),
        }),
    }
}

/// Calls `method` (e.g. `NodeStageVolume`, or `csi.v1.Node/NodeStageVolume`) with request
/// `body`; the answer as JSON.
pub async fn call(ch: Channel, method: &str, body: Value) -> Result<Value> {
    let m = method.rsplit('/').next().unwrap_or(method);
    let mut id = IdentityClient::new(ch.clone());
    let mut c = ControllerClient::new(ch.clone());
    let mut n = NodeClient::new(ch);
    macro_rules! route {
        ($($name:literal => $cl:ident . $f:ident ($t:ty)),* $(,)?) => {
            match m {
                $($name => answer($cl.$f(req::<$t>(m, body)?).await),)*
                _ => Err(Error::InvalidArgument(format!("unknown CSI method {method:?}"))),
            }
        };
    }
    route! {
        "GetPluginInfo" => id.get_plugin_info(pb::GetPluginInfoRequest),
        "GetPluginCapabilities" => id.get_plugin_capabilities(pb::GetPluginCapabilitiesRequest),
        "Probe" => id.probe(pb::ProbeRequest),
        "CreateVolume" => c.create_volume(pb::CreateVolumeRequest),
        "DeleteVolume" => c.delete_volume(pb::DeleteVolumeRequest),
        "ControllerPublishVolume" => c.controller_publish_volume(pb::ControllerPublishVolumeRequest),
        "ControllerUnpublishVolume" => c.controller_unpublish_volume(pb::ControllerUnpublishVolumeRequest),
        "ValidateVolumeCapabilities" => c.validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest),
        "ListVolumes" => c.list_volumes(pb::ListVolumesRequest),
        "GetCapacity" => c.get_capacity(pb::GetCapacityRequest),
        "ControllerGetCapabilities" => c.controller_get_capabilities(pb::ControllerGetCapabilitiesRequest),
        "CreateSnapshot" => c.create_snapshot(pb::CreateSnapshotRequest),
        "DeleteSnapshot" => c.delete_snapshot(pb::DeleteSnapshotRequest),
        "ListSnapshots" => c.list_snapshots(pb::ListSnapshotsRequest),
        "ControllerExpandVolume" => c.controller_expand_volume(pb::ControllerExpandVolumeRequest),
        "ControllerGetVolume" => c.controller_get_volume(pb::ControllerGetVolumeRequest),
        "NodeStageVolume" => n.node_stage_volume(pb::NodeStageVolumeRequest),
        "NodeUnstageVolume" => n.node_unstage_volume(pb::NodeUnstageVolumeRequest),
        "NodePublishVolume" => n.node_publish_volume(pb::NodePublishVolumeRequest),
        "NodeUnpublishVolume" => n.node_unpublish_volume(pb::NodeUnpublishVolumeRequest),
        "NodeGetVolumeStats" => n.node_get_volume_stats(pb::NodeGetVolumeStatsRequest),
        "NodeExpandVolume" => n.node_expand_volume(pb::NodeExpandVolumeRequest),
        "NodeGetCapabilities" => n.node_get_capabilities(pb::NodeGetCapabilitiesRequest),
        "NodeGetInfo" => n.node_get_info(pb::NodeGetInfoRequest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_from_json() {
        let r: pb::NodeStageVolumeRequest = req(
            "NodeStageVolume",
            serde_json::json!({"volume_id": "v", "publish_context": {"nqn": "n"},
                "volume_capability": {"access_type": {"mount": {"fs_type": "ext4"}},
                                      "access_mode": {"mode": 1}}}),
        )
        .unwrap();
        assert_eq!(r.volume_id, "v");
        assert_eq!(r.publish_context["nqn"], "n");
        let c = r.volume_capability.unwrap();
        assert!(matches!(
            c.access_type,
            Some(pb::volume_capability::AccessType::Mount(ref m)) if m.fs_type == "ext4"
        ));
        assert_eq!(c.access_mode.unwrap().mode, 1);
        assert!(
            req::<pb::NodeStageVolumeRequest>("x", serde_json::json!({"volume_id": 3})).is_err()
        );
    }
}
