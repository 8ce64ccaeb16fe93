//! ControllerPublishVolume / ControllerUnpublishVolume: a volume reaches a node as an NVMe/TCP
//! subsystem of its own on the volume's ballastd, and publishing to a node allows that node's
//! host NQN on it. Never `allow_any_host`.
//!
//! ```text
//!  ControllerPublish(volume, node_id = host NQN)
//!    ├─ nvmf_create_subsystem  nqn.2026-11.io.ballast:csi-<lvol uuid>   (once; allow_any_host false)
//!    ├─ nvmf_subsystem_add_ns  the volume's bdev, namespace UUID = the lvol's UUID
//!    ├─ nvmf_subsystem_add_listener  the node config's nvmf addr:port
//!    └─ nvmf_subsystem_add_host  node_id          ─► publish_context {nqn, traddr, trsvcid, ns_uuid}
//!  ControllerUnpublish(volume, node_id)
//!    └─ nvmf_subsystem_remove_host node_id (its controllers are disconnected);
//!       the last host gone → nvmf_delete_subsystem
//! ```
//!
//! The subsystem is the whole record: its hosts are the nodes the volume is published to
//! (ControllerGetVolume's `published_node_ids`), so a restarted controller knows them. Each
//! step checks what exists first, so a publish cut short at any point is completed by the
//! CO's retry, and DeleteVolume removes a host-less leftover subsystem.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use crate::error::{rpc_code, Error, Result};
use crate::nodes::{Lvol, NodeHandle};
use crate::pb;
use crate::pb::volume_capability::access_mode::Mode;

/// The NQN prefix of the subsystems volumes are exported in; the lvol's UUID follows.
pub const EXPORT_NQN_PREFIX: &str = "nqn.2026-11.io.ballast:csi-";

/// publish_context keys (the contract between ControllerPublish and the node plugin).
pub mod ctx {
    pub const NQN: &str = "nqn";
    pub const TRTYPE: &str = "trtype";
    pub const TRADDR: &str = "traddr";
    pub const TRSVCID: &str = "trsvcid";
    pub const NS_UUID: &str = "ns_uuid";
}

/// The subsystem NQN volume `lvol_uuid` is exported in.
pub fn export_nqn(lvol_uuid: &str) -> String {
    format!("{EXPORT_NQN_PREFIX}{lvol_uuid}")
}

/// Whether `nqn` is a plausible NVMe host NQN (the node ids node plugins report): the
/// spec's `nqn.` form, at most 223 bytes, printable ASCII without separators our
/// parameters use.
pub fn is_host_nqn(nqn: &str) -> bool {
    // nqn.yyyy-mm.<reverse domain>[:...], as the target checks it.
    let b = nqn.as_bytes();
    let date = b.len() > 12
        && b[4..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..11].iter().all(u8::is_ascii_digit)
        && b[11] == b'.';
    nqn.starts_with("nqn.")
        && date
        && nqn.len() <= 223
        && nqn.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// A subsystem as `nvmf_get_subsystems` shows it (the fields used here).
#[derive(Debug, Clone, Deserialize)]
pub struct Export {
    pub nqn: String,
    #[serde(default)]
    pub allow_any_host: bool,
    /// The access class it was made for ([`MODEL_SINGLE`] / [`MODEL_MULTI_READER`]).
    #[serde(default)]
    pub model_number: String,
    #[serde(default)]
    pub hosts: Vec<Host>,
    #[serde(default)]
    pub listen_addresses: Vec<Listen>,
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Host {
    pub nqn: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Listen {
    #[serde(default)]
    pub traddr: String,
    #[serde(default)]
    pub trsvcid: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Namespace {
    pub bdev_name: String,
    #[serde(default)]
    pub uuid: String,
}

impl Export {
    pub fn host_nqns(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.nqn.clone()).collect()
    }
}

/// The export subsystem of `lvol_uuid` on `n`, if there is one.
pub async fn export(n: &NodeHandle, lvol_uuid: &str) -> Result<Option<Export>> {
    let m = "nvmf_get_subsystems";
    let Some(v) = n
        .call_opt(m, json!({ "nqn": export_nqn(lvol_uuid) }))
        .await?
    else {
        return Ok(None);
    };
    let mut list: Vec<Export> = serde_json::from_value(v.clone()).map_err(|_| n.bad(m, &v))?;
    Ok(list.pop())
}

/// Deletes the export subsystem of `lvol_uuid` if it has no hosts (a publish cut short);
/// FAILED_PRECONDITION naming them when it has.
pub async fn remove_unused_export(n: &NodeHandle, lvol_uuid: &str) -> Result<()> {
    let Some(e) = export(n, lvol_uuid).await? else {
        return Ok(());
    };
    if !e.hosts.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "the volume is published to {}: ControllerUnpublishVolume first",
            e.host_nqns().join(", ")
        )));
    }
    delete_subsystem(n, &e.nqn).await
}

async fn delete_subsystem(n: &NodeHandle, nqn: &str) -> Result<()> {
    n.call_tolerating(
        "nvmf_delete_subsystem",
        json!({ "nqn": nqn }),
        rpc_code::ENODEV,
    )
    .await
}

/// Model numbers of export subsystems: the access class they were made for, so that a
/// volume published to one node for writing is never also published to readers elsewhere.
pub const MODEL_SINGLE: &str = "ballast-csi single-node";
pub const MODEL_MULTI_READER: &str = "ballast-csi multi-reader";

/// Whether `mode` lets more than one node have the volume at a time.
fn multi_node(cap: &pb::VolumeCapability) -> bool {
    let mode = cap
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .unwrap_or(Mode::Unknown);
    matches!(
        mode,
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter
    )
}

/// Publishes volume `l` (exported as bdev `bdev`) of node `n` to host `host`; returns the
/// publish_context. Idempotent; FAILED_PRECONDITION when a single-node volume is published
/// to another node already.
pub async fn publish(
    n: &NodeHandle,
    l: &Lvol,
    bdev: &str,
    host: &str,
    cap: &pb::VolumeCapability,
) -> Result<HashMap<String, String>> {
    let Some(nvmf) = n.cfg.nvmf.clone() else {
        return Err(Error::FailedPrecondition(format!(
            "node {} has no nvmf address in the configuration: its volumes cannot be published",
            n.id()
        )));
    };
    let nqn = export_nqn(&l.uuid);
    let model = if multi_node(cap) {
        MODEL_MULTI_READER
    } else {
        MODEL_SINGLE
    };
    let mut existing = export(n, &l.uuid).await?;
    if let Some(e) = &existing {
        let here = e.hosts.iter().any(|h| h.nqn == host);
        let others: Vec<String> = e.host_nqns().into_iter().filter(|h| h != host).collect();
        if e.model_number != model && !e.hosts.is_empty() {
            if here {
                return Err(Error::AlreadyExists(format!(
                    "the volume is published to this node with another access mode ({})",
                    e.model_number
                )));
            }
            return Err(Error::FailedPrecondition(format!(
                "the volume is published to {} with another access mode ({})",
                others.join(", "),
                e.model_number
            )));
        }
        if !others.is_empty() && model == MODEL_SINGLE && !here {
            return Err(Error::FailedPrecondition(format!(
                "the volume is published to {} already and its access mode allows one node",
                others.join(", ")
            )));
        }
        if e.model_number != model {
            // A host-less leftover made for another class: made again below.
            delete_subsystem(n, &e.nqn).await?;
            existing = None;
        }
    }
    let e = match existing {
        Some(e) => e,
        None => {
            let serial: String = l.uuid.chars().filter(|c| *c != '-').take(17).collect();
            n.call_tolerating(
                "nvmf_create_subsystem",
                json!({
                    "nqn": nqn,
                    "serial_number": format!("CSI{serial}"),
                    "model_number": model,
                    "allow_any_host": false,
                    "max_namespaces": 1,
                }),
                rpc_code::EEXIST,
            )
            .await?;
            tracing::info!(node = n.id(), %nqn, "export subsystem created");
            export(n, &l.uuid).await?.ok_or_else(|| Error::Protocol {
                node: n.id().into(),
                method: "nvmf_get_subsystems".into(),
                detail: format!("{nqn} missing right after nvmf_create_subsystem"),
            })?
        }
    };
    if e.allow_any_host {
        // Not made by this driver that way: close it before anything else.
        n.rpc
            .call(
                "nvmf_subsystem_allow_any_host",
                Some(json!({"nqn": nqn, "allow_any_host": false})),
            )
            .await?;
        tracing::warn!(node = n.id(), %nqn, "allow_any_host was on: turned off");
    }
    match e.namespaces.first() {
        Some(ns) if ns.bdev_name != bdev || !ns.uuid.eq_ignore_ascii_case(&l.uuid) => {
            return Err(Error::FailedPrecondition(format!(
                "{nqn} exports bdev {} (namespace {}) instead of {bdev} (namespace {})",
                ns.bdev_name, ns.uuid, l.uuid
            )))
        }
        Some(_) => {}
        None => {
            n.rpc
                .call(
                    "nvmf_subsystem_add_ns",
                    Some(json!({"nqn": nqn, "namespace": {"bdev_name": bdev, "uuid": l.uuid}})),
                )
                .await?;
        }
    }
    let port = nvmf.port.to_string();
    if !e
        .listen_addresses
        .iter()
        .any(|a| a.traddr == nvmf.addr && a.trsvcid == port)
    {
        let fam = if nvmf.addr.contains(':') {
            "ipv6"
        } else {
            "ipv4"
        };
        n.rpc
            .call(
                "nvmf_subsystem_add_listener",
                Some(json!({"nqn": nqn, "listen_address": {
                    "trtype": "tcp", "adrfam": fam, "traddr": nvmf.addr, "trsvcid": port}})),
            )
            .await?;
    }
    if !e.hosts.iter().any(|h| h.nqn == host) {
        n.rpc
            .call(
                "nvmf_subsystem_add_host",
                Some(json!({"nqn": nqn, "host": host})),
            )
            .await?;
        tracing::info!(node = n.id(), %nqn, host, "published");
    }
    Ok(HashMap::from([
        (ctx::NQN.into(), nqn),
        (ctx::TRTYPE.into(), "tcp".into()),
        (
            ctx::TRADDR.into(),
            nvmf.advertise.clone().unwrap_or(nvmf.addr.clone()),
        ),
        (ctx::TRSVCID.into(), port),
        (ctx::NS_UUID.into(), l.uuid.clone()),
    ]))
}

/// Unpublishes volume `lvol_uuid` of `n` from `host` (every host when empty); the
/// subsystem goes when its last host does. Idempotent.
pub async fn unpublish(n: &NodeHandle, lvol_uuid: &str, host: &str) -> Result<()> {
    let Some(e) = export(n, lvol_uuid).await? else {
        return Ok(());
    };
    let mut left = e.host_nqns();
    for h in e.host_nqns() {
        if !host.is_empty() && h != host {
            continue;
        }
        n.call_tolerating(
            "nvmf_subsystem_remove_host",
            json!({"nqn": e.nqn, "host": h}),
            rpc_code::INVALID_PARAMS,
        )
        .await?;
        left.retain(|x| *x != h);
        tracing::info!(node = n.id(), nqn = %e.nqn, host = %h, "unpublished");
    }
    if left.is_empty() {
        delete_subsystem(n, &e.nqn).await?;
        tracing::info!(node = n.id(), nqn = %e.nqn, "export subsystem deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_nqns() {
        assert!(is_host_nqn(
            "nqn.2014-08.org.nvmexpress:uuid:0f6b2f9e-8a4d-4c1e-9d55-0a2b3c4d5e6f"
        ));
        assert!(!is_host_nqn("some-fake-node-id"));
        assert!(!is_host_nqn("nqn.x"));
        assert!(is_host_nqn("nqn.2026-11.io.example:node-a"));
        assert!(!is_host_nqn("nqn.a,b"));
        assert!(!is_host_nqn(&format!("nqn.{}", "x".repeat(220))));
    }

    #[test]
    fn exports_parse_from_nvmf_get_subsystems() {
        let v = json!([{"nqn": "nqn.2026-11.io.ballast:csi-x", "subtype": "NVMe",
            "allow_any_host": false, "hosts": [{"nqn": "nqn.h1"}],
            "listen_addresses": [{"trtype": "TCP", "adrfam": "IPv4", "traddr": "10.0.0.1",
                                  "trsvcid": "4420"}],
            "namespaces": [{"nsid": 1, "bdev_name": "u", "uuid": "u"}]}]);
        let mut l: Vec<Export> = serde_json::from_value(v).unwrap();
        let e = l.pop().unwrap();
        assert_eq!(e.host_nqns(), vec!["nqn.h1".to_string()]);
        assert_eq!(e.listen_addresses[0].trsvcid, "4420");
        assert_eq!(e.namespaces[0].bdev_name, "u");
    }
}
