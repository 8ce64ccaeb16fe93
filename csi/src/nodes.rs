//! The ballast nodes as the controller uses them: each configured node with its JSON-RPC
//! client, and the typed lvol operations the CSI calls are made of.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{Config, Node};
use crate::error::{rpc_code, Error, Result};
use crate::rpc::RpcClient;

/// One configured node and its client.
#[derive(Debug)]
pub struct NodeHandle {
    pub cfg: Node,
    pub rpc: RpcClient,
}

/// Every configured node, in config order.
#[derive(Debug)]
pub struct Nodes {
    list: Vec<NodeHandle>,
}

impl Nodes {
    pub fn new(cfg: &Config, timeout: Duration) -> Nodes {
        Nodes {
            list: cfg
                .nodes
                .iter()
                .map(|n| NodeHandle {
                    rpc: RpcClient::new(n.id.clone(), n.rpc_socket.clone(), timeout),
                    cfg: n.clone(),
                })
                .collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&NodeHandle> {
        self.list.iter().find(|n| n.cfg.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeHandle> {
        self.list.iter()
    }
}

/// A node's lvol store as `bdev_lvol_get_lvstores` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Store {
    pub uuid: String,
    pub name: String,
    pub cluster_size: u64,
    pub free_clusters: u64,
    pub total_data_clusters: u64,
}

impl Store {
    pub fn free_bytes(&self) -> u64 {
        self.free_clusters.saturating_mul(self.cluster_size)
    }
}

/// An lvol as the driver sees it (from `bdev_get_bdevs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lvol {
    /// The bdev name: the lvol's UUID.
    pub uuid: String,
    pub lvs_uuid: String,
    /// The lvol's own name (the part after `lvs/` of its alias).
    pub name: String,
    pub size: u64,
    pub thin: bool,
}

impl Lvol {
    /// An lvol from one `bdev_get_bdevs` entry; None for other bdev kinds.
    pub(crate) fn from_bdev(b: &Value) -> Option<Lvol> {
        let l = b.get("driver_specific")?.get("lvol")?;
        let alias = b.get("aliases")?.as_array()?.first()?.as_str()?;
        let (_, name) = alias.split_once('/')?;
        Some(Lvol {
            uuid: b.get("name")?.as_str()?.to_string(),
            lvs_uuid: l.get("lvol_store_uuid")?.as_str()?.to_string(),
            name: name.to_string(),
            size: b.get("num_blocks")?.as_u64()? * b.get("block_size")?.as_u64()?,
            thin: l.get("thin_provision")?.as_bool()?,
        })
    }
}

impl NodeHandle {
    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// ballastd's version (`spdk_get_version`): the liveness check.
    pub async fn version(&self) -> Result<String> {
        let v = self.rpc.call("spdk_get_version", None).await?;
        Ok(v.get("version")
            .and_then(Value::as_str)
            .unwrap_or("(no version)")
            .to_string())
    }

    /// The node's store, or None (logged) when it has none: such a node holds no volume and
    /// has no room; other errors stay errors.
    pub async fn store_if_any(&self) -> Result<Option<Store>> {
        match self.store().await {
            Ok(s) => Ok(Some(s)),
            Err(Error::FailedPrecondition(why)) => {
                tracing::warn!(node = self.id(), "{why}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The node's lvol store (the config's `lvs`); a missing store is FAILED_PRECONDITION.
    pub async fn store(&self) -> Result<Store> {
        let r: Result<Vec<Store>> = self
            .rpc
            .call_as(
                "bdev_lvol_get_lvstores",
                Some(json!({"lvs_name": self.cfg.lvs})),
            )
            .await;
        match r {
            Ok(mut v) if v.len() == 1 => Ok(v.remove(0)),
            Ok(v) => Err(Error::Protocol {
                node: self.cfg.id.clone(),
                method: "bdev_lvol_get_lvstores".into(),
                detail: format!("{} stores named {}", v.len(), self.cfg.lvs),
            }),
            Err(e) if e.rpc_code() == Some(rpc_code::ENODEV) => {
                Err(Error::FailedPrecondition(format!(
                    "node {}: no lvol store {} (create it: bdev_lvol_create_lvstore BDEV {})",
                    self.cfg.id, self.cfg.lvs, self.cfg.lvs
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// The lvol named `name` (a UUID or `lvs/lvol` alias), if there is one.
    pub async fn lvol(&self, name: &str) -> Result<Option<Lvol>> {
        match self
            .rpc
            .call("bdev_get_bdevs", Some(json!({"name": name})))
            .await
        {
            Ok(Value::Array(v)) => Ok(v.first().and_then(Lvol::from_bdev)),
            Ok(other) => Err(self.bad("bdev_get_bdevs", &other)),
            Err(e) if e.rpc_code() == Some(rpc_code::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every lvol of store `lvs_uuid`.
    pub async fn lvols(&self, lvs_uuid: &str) -> Result<Vec<Lvol>> {
        match self.rpc.call("bdev_get_bdevs", None).await? {
            Value::Array(v) => Ok(v
                .iter()
                .filter_map(Lvol::from_bdev)
                .filter(|l| l.lvs_uuid == lvs_uuid)
                .collect()),
            other => Err(self.bad("bdev_get_bdevs", &other)),
        }
    }

    /// Creates lvol `name` of `size` bytes (a whole number of clusters) in the node's store;
    /// returns its UUID.
    pub async fn create_lvol(&self, name: &str, size: u64, thin: bool) -> Result<String> {
        let mut p = json!({"lvol_name": name, "lvs_name": self.cfg.lvs, "thin_provision": thin});
        size_param(&mut p, size);
        match self.rpc.call("bdev_lvol_create", Some(p)).await? {
            Value::String(uuid) => Ok(uuid),
            other => Err(self.bad("bdev_lvol_create", &other)),
        }
    }

    /// Deletes lvol `uuid`; false if it was already gone.
    pub async fn delete_lvol(&self, uuid: &str) -> Result<bool> {
        match self
            .rpc
            .call("bdev_lvol_delete", Some(json!({"name": uuid})))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.rpc_code() == Some(rpc_code::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Resizes lvol `uuid` to `size` bytes (online: a connected host sees the new size).
    pub async fn resize_lvol(&self, uuid: &str, size: u64) -> Result<()> {
        let mut p = json!({"name": uuid});
        size_param(&mut p, size);
        self.rpc.call("bdev_lvol_resize", Some(p)).await.map(|_| ())
    }

    /// Calls `method`; "no such device" (the object is not there) is None.
    pub(crate) async fn call_opt(&self, method: &str, params: Value) -> Result<Option<Value>> {
        match self.rpc.call(method, Some(params)).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.rpc_code() == Some(rpc_code::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Calls `method`; an error with code `ok_code` (the state is already what the call
    /// makes) counts as success.
    pub(crate) async fn call_tolerating(
        &self,
        method: &str,
        params: Value,
        ok_code: i64,
    ) -> Result<()> {
        match self.rpc.call(method, Some(params)).await {
            Ok(_) => Ok(()),
            Err(e) if e.rpc_code() == Some(ok_code) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A Protocol error for an answer of `method` this driver cannot read (quoted, short).
    pub(crate) fn bad(&self, method: &str, v: &Value) -> Error {
        let mut s = v.to_string();
        s.truncate(200);
        Error::Protocol {
            node: self.cfg.id.clone(),
            method: method.into(),
            detail: s,
        }
    }
}

/// SPDK's `size_in_mib` when the size is whole MiB (what rpc.py sends), else ballastd's
/// `size` in bytes (clusters smaller than 1 MiB).
fn size_param(p: &mut Value, size: u64) {
    if size.is_multiple_of(1 << 20) {
        p["size_in_mib"] = json!(size >> 20);
    } else {
        p["size"] = json!(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvols_are_read_from_bdev_get_bdevs() {
        let b = json!({
            "name": "7f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "aliases": ["lvs0/csi-pvc-1"],
            "block_size": 4096, "num_blocks": 512,
            "driver_specific": {"lvol": {"lvol_store_uuid": "u1", "thin_provision": true}}
        });
        let l = Lvol::from_bdev(&b).unwrap();
        assert_eq!(
            (l.name.as_str(), l.size, l.thin),
            ("csi-pvc-1", 2 << 20, true)
        );
        assert_eq!(
            Lvol::from_bdev(&json!({"name": "Malloc0", "aliases": []})),
            None
        );
    }
}
