//! NVM subsystems: namespaces backed by claimed bdevs, allowed hosts, listeners, controllers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ballast_engine::{bdev, Bdev, BdevDesc};

use super::config::ListenAddr;
use super::ctrlr::Controller;
use crate::error::{Error, Result};

/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// What a subsystem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubsystemKind {
    /// An NVM subsystem with namespaces.
    Nvm,
    /// The discovery subsystem (admin queue only, discovery log).
    Discovery,
}

/// A namespace as the I/O path sees it (immutable snapshot entry).
#[derive(Clone)]
pub struct NsEntry {
    /// Namespace ID.
    pub nsid: u32,
    /// The backing bdev.
    pub bdev: Arc<Bdev>,
    /// A descriptor for opening per-reactor channels.
    pub desc: Arc<BdevDesc>,
    /// Namespace UUID.
    pub uuid: uuid::Uuid,
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// IEEE extended unique identifier.
    pub eui64: [u8; 8],
}

/// An immutable table of a subsystem's namespaces; replaced (not mutated) on change.
#[derive(Clone, Default)]
pub struct NsTable {
    /// Entries sorted by nsid.
    pub entries: Vec<NsEntry>,
}

impl NsTable {
    /// The namespace with `nsid`.
    pub fn get(&self, nsid: u32) -> Option<&NsEntry> {
        self.entries
            .binary_search_by_key(&nsid, |e| e.nsid)
            .ok()
            .map(|i| &self.entries[i])
    }
}

struct NsRecord {
    entry: NsEntry,
    /// The claiming descriptor: dropping it releases the claim.
    _claim: BdevDesc,
}

struct Inner {
    namespaces: BTreeMap<u32, NsRecord>,
    hosts: BTreeSet<String>,
    allow_any_host: bool,
    listeners: Vec<ListenAddr>,
    controllers: BTreeMap<u16, Arc<Controller>>,
    next_cntlid: u16,
}

/// An NVMe-oF subsystem.
pub struct Subsystem {
    /// NQN.
    pub nqn: String,
    /// NVM or discovery.
    pub kind: SubsystemKind,
    /// Serial number (≤ 20 ASCII chars).
    pub serial: String,
    /// Model number (≤ 40 ASCII chars).
    pub model: String,
    /// Highest namespace ID allowed.
    pub max_namespaces: u32,
    inner: Mutex<Inner>,
    ns_table: Mutex<Arc<NsTable>>,
    ns_gen: AtomicU64,
}

impl std::fmt::Debug for Subsystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subsystem").field("nqn", &self.nqn).finish()
    }
}

/// Checks an NQN's syntax (NVMe base spec 4.5: "nqn.yyyy-mm.reverse.domain:..." or the UUID
/// form, at most 223 bytes).
pub fn validate_nqn(nqn: &str) -> Result<()> {
    let bad = |why: &str| Error::InvalidParam {
        param: "nqn",
        why: format!("{nqn:?}: {why}"),
    };
    if nqn.len() > 223 {
        return Err(bad("longer than 223 bytes"));
    }
    if !nqn.is_ascii() || nqn.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(bad("must be printable ASCII without spaces"));
    }
    if nqn == DISCOVERY_NQN {
        return Ok(());
    }
    let rest = nqn
        .strip_prefix("nqn.")
        .ok_or_else(|| bad("must start with \"nqn.\""))?;
    let date = rest.get(..7).ok_or_else(|| bad("missing yyyy-mm date"))?;
    let ok_date = date.as_bytes()[4] == b'-'
        && date[..4].chars().all(|c| c.is_ascii_digit())
        && date[5..].chars().all(|c| c.is_ascii_digit());
    if !ok_date || rest.as_bytes().get(7) != Some(&b'.') || rest.len() < 9 {
        return Err(bad("must be nqn.yyyy-mm.<reverse domain>[:<name>]"));
    }
    Ok(())
}

fn valid_ascii_field(param: &'static str, v: &str, max: usize) -> Result<()> {
    if v.len() > max || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::InvalidParam {
            param,
            why: format!("{v:?} must be printable ASCII of at most {max} characters"),
        });
    }
    Ok(())
}

impl Subsystem {
    /// A new subsystem (not yet registered with a target).
    pub fn new(
        nqn: &str,
        kind: SubsystemKind,
        serial: &str,
        model: &str,
        max_namespaces: u32,
    ) -> Result<Arc<Self>> {
        validate_nqn(nqn)?;
        valid_ascii_field("serial_number", serial, 20)?;
        valid_ascii_field("model_number", model, 40)?;
        if max_namespaces == 0 || max_namespaces > 1024 {
            return Err(Error::InvalidParam {
                param: "max_namespaces",
                why: format!("{max_namespaces} (must be 1..=1024)"),
            });
        }
        Ok(Arc::new(Self {
            nqn: nqn.to_string(),
            kind,
            serial: serial.to_string(),
            model: model.to_string(),
            max_namespaces,
            inner: Mutex::new(Inner {
                namespaces: BTreeMap::new(),
                hosts: BTreeSet::new(),
                allow_any_host: false,
                listeners: Vec::new(),
                controllers: BTreeMap::new(),
                next_cntlid: 1,
            }),
            ns_table: Mutex::default(),
            ns_gen: AtomicU64::new(1),
        }))
    }

    fn owner(&self) -> String {
        format!("NVMe-oF subsystem {}", self.nqn)
    }

    /// Current namespace table (cheap: an `Arc` clone).
    pub fn ns_table(&self) -> Arc<NsTable> {
        self.ns_table.lock().unwrap().clone()
    }

    /// Generation of the namespace table; changes whenever a namespace is added or removed.
    pub fn ns_generation(&self) -> u64 {
        self.ns_gen.load(Ordering::Acquire)
    }

    fn publish_table(&self, inner: &Inner) {
        let table = NsTable {
            entries: inner.namespaces.values().map(|r| r.entry.clone()).collect(),
        };
        *self.ns_table.lock().unwrap() = Arc::new(table);
        self.ns_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Adds a namespace backed by `bdev_name` (claimed while exported). Returns its NSID.
    pub fn add_ns(
        &self,
        bdev_name: &str,
        nsid: Option<u32>,
        uuid: Option<uuid::Uuid>,
        nguid: Option<[u8; 16]>,
        eui64: Option<[u8; 8]>,
    ) -> Result<u32> {
        if self.kind == SubsystemKind::Discovery {
            return Err(Error::InvalidParam {
                param: "nqn",
                why: "the discovery subsystem has no namespaces".into(),
            });
        }
        let changed = {
            let mut inner = self.inner.lock().unwrap();
            let nsid = match nsid {
                Some(0) | None => (1..=self.max_namespaces)
                    .find(|n| !inner.namespaces.contains_key(n))
                    .ok_or_else(|| Error::Namespace {
                        nqn: self.nqn.clone(),
                        why: format!("all {} namespace IDs are in use", self.max_namespaces),
                    })?,
                Some(n) if n > self.max_namespaces || n == u32::MAX => {
                    return Err(Error::InvalidParam {
                        param: "nsid",
                        why: format!("{n} exceeds max_namespaces {}", self.max_namespaces),
                    })
                }
                Some(n) if inner.namespaces.contains_key(&n) => {
                    return Err(Error::Namespace {
                        nqn: self.nqn.clone(),
                        why: format!("namespace ID {n} already in use"),
                    })
                }
                Some(n) => n,
            };
            let mut claim = bdev::open(bdev_name, None)?;
            claim.claim(&self.owner())?;
            let io_desc = Arc::new(bdev::open(bdev_name, None)?);
            let b = claim.bdev().clone();
            let uuid = uuid.unwrap_or(b.info().uuid);
            let nguid = nguid.unwrap_or(*uuid.as_bytes());
            let eui64 = eui64.unwrap_or_else(|| {
                let mut e = [0u8; 8];
                e.copy_from_slice(&uuid.as_bytes()[8..]);
                e
            });
            inner.namespaces.insert(
                nsid,
                NsRecord {
                    entry: NsEntry {
                        nsid,
                        bdev: b,
                        desc: io_desc,
                        uuid,
                        nguid,
                        eui64,
                    },
                    _claim: claim,
                },
            );
            self.publish_table(&inner);
            tracing::info!(nqn = %self.nqn, nsid, bdev = bdev_name, "namespace added");
            (
                nsid,
                inner.controllers.values().cloned().collect::<Vec<_>>(),
            )
        };
        for c in changed.1 {
            c.namespace_changed(changed.0);
        }
        Ok(changed.0)
    }

    /// Removes namespace `nsid` (its bdev's claim is released). Hosts get an AEN.
    pub fn remove_ns(&self, nsid: u32) -> Result<()> {
        let ctrlrs = {
            let mut inner = self.inner.lock().unwrap();
            if inner.namespaces.remove(&nsid).is_none() {
                return Err(Error::Namespace {
                    nqn: self.nqn.clone(),
                    why: format!("namespace ID {nsid} not found"),
                });
            }
            self.publish_table(&inner);
            tracing::info!(nqn = %self.nqn, nsid, "namespace removed");
            inner.controllers.values().cloned().collect::<Vec<_>>()
        };
        for c in ctrlrs {
            c.namespace_changed(nsid);
        }
        Ok(())
    }

    /// `bdev` changed size: namespaces it backs are republished (queue pairs pick up the new
    /// size) and hosts get a namespace-attribute-changed notice.
    pub fn bdev_resized(&self, bdev: &Arc<ballast_engine::Bdev>) {
        let (nsids, ctrlrs) = {
            let inner = self.inner.lock().unwrap();
            let nsids: Vec<u32> = inner
                .namespaces
                .iter()
                .filter(|(_, r)| Arc::ptr_eq(&r.entry.bdev, bdev))
                .map(|(&n, _)| n)
                .collect();
            if nsids.is_empty() {
                return;
            }
            self.publish_table(&inner);
            (
                nsids,
                inner.controllers.values().cloned().collect::<Vec<_>>(),
            )
        };
        tracing::info!(nqn = %self.nqn, ?nsids, blocks = bdev.num_blocks(), "namespace resized");
        for c in ctrlrs {
            for &n in &nsids {
                c.namespace_changed(n);
            }
        }
    }

    /// Namespaces (nsid, bdev name, uuid).
    pub fn namespaces(&self) -> Vec<NsEntry> {
        self.ns_table().entries.clone()
    }

    /// Allows `hostnqn` to connect.
    pub fn add_host(&self, hostnqn: &str) -> Result<()> {
        validate_nqn(hostnqn).map_err(|_| Error::InvalidParam {
            param: "host",
            why: format!("{hostnqn:?} is not a valid NQN"),
        })?;
        if !self.inner.lock().unwrap().hosts.insert(hostnqn.to_string()) {
            return Err(Error::InvalidParam {
                param: "host",
                why: format!("{hostnqn} is already allowed"),
            });
        }
        Ok(())
    }

    /// Revokes `hostnqn`; its controllers are disconnected.
    pub fn remove_host(&self, hostnqn: &str) -> Result<()> {
        let ctrlrs = {
            let mut inner = self.inner.lock().unwrap();
            if !inner.hosts.remove(hostnqn) {
                return Err(Error::InvalidParam {
                    param: "host",
                    why: format!("{hostnqn} is not in the allowed hosts of {}", self.nqn),
                });
            }
            if inner.allow_any_host {
                Vec::new()
            } else {
                inner
                    .controllers
                    .values()
                    .filter(|c| c.hostnqn == hostnqn)
                    .cloned()
                    .collect()
            }
        };
        for c in ctrlrs {
            c.disconnect("host removed from the subsystem");
        }
        Ok(())
    }

    /// Sets allow-any-host. Turning it off disconnects controllers of hosts not in the list.
    pub fn set_allow_any_host(&self, allow: bool) {
        let ctrlrs: Vec<_> = {
            let mut inner = self.inner.lock().unwrap();
            inner.allow_any_host = allow;
            if allow {
                Vec::new()
            } else {
                inner
                    .controllers
                    .values()
                    .filter(|c| !inner.hosts.contains(&c.hostnqn))
                    .cloned()
                    .collect()
            }
        };
        for c in ctrlrs {
            c.disconnect("allow_any_host turned off");
        }
    }

    /// True if `hostnqn` may connect.
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        let inner = self.inner.lock().unwrap();
        self.kind == SubsystemKind::Discovery
            || inner.allow_any_host
            || inner.hosts.contains(hostnqn)
    }

    /// Allowed hosts and the allow-any-host flag.
    pub fn hosts(&self) -> (bool, Vec<String>) {
        let inner = self.inner.lock().unwrap();
        (inner.allow_any_host, inner.hosts.iter().cloned().collect())
    }

    /// Listeners of this subsystem.
    pub fn listeners(&self) -> Vec<ListenAddr> {
        self.inner.lock().unwrap().listeners.clone()
    }

    pub(crate) fn add_listener_record(&self, addr: ListenAddr) -> Result<()> {
        let mut inner = self.inner.lock().unwrap();
        if inner.listeners.contains(&addr) {
            return Err(Error::Listener {
                addr: addr.to_string(),
                why: format!("already a listener of {}", self.nqn),
            });
        }
        inner.listeners.push(addr);
        Ok(())
    }

    pub(crate) fn remove_listener_record(&self, addr: ListenAddr) -> Result<Vec<Arc<Controller>>> {
        let mut inner = self.inner.lock().unwrap();
        let before = inner.listeners.len();
        inner.listeners.retain(|l| *l != addr);
        if inner.listeners.len() == before {
            return Err(Error::Listener {
                addr: addr.to_string(),
                why: format!("not a listener of {}", self.nqn),
            });
        }
        Ok(inner
            .controllers
            .values()
            .filter(|c| c.listener == addr)
            .cloned()
            .collect())
    }

    /// True if the subsystem accepts connections arriving on `addr`.
    pub fn listens_on(&self, addr: ListenAddr) -> bool {
        self.kind == SubsystemKind::Discovery
            || self.inner.lock().unwrap().listeners.contains(&addr)
    }

    /// Registers a new controller, assigning a dynamic controller ID (1..=0xFFEF).
    pub(crate) fn add_controller(
        &self,
        make: impl FnOnce(u16) -> Arc<Controller>,
    ) -> Option<Arc<Controller>> {
        let mut inner = self.inner.lock().unwrap();
        let start = inner.next_cntlid;
        let mut id = start;
        loop {
            if !inner.controllers.contains_key(&id) {
                break;
            }
            id = if id >= 0xFFEF { 1 } else { id + 1 };
            if id == start {
                return None;
            }
        }
        inner.next_cntlid = if id >= 0xFFEF { 1 } else { id + 1 };
        let c = make(id);
        inner.controllers.insert(id, c.clone());
        Some(c)
    }

    /// Forgets a controller (after its admin queue is gone).
    pub(crate) fn remove_controller(&self, cntlid: u16) {
        self.inner.lock().unwrap().controllers.remove(&cntlid);
    }

    /// The controller with `cntlid`.
    pub fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.inner.lock().unwrap().controllers.get(&cntlid).cloned()
    }

    /// All live controllers.
    pub fn controllers(&self) -> Vec<Arc<Controller>> {
        self.inner
            .lock()
            .unwrap()
            .controllers
            .values()
            .cloned()
            .collect()
    }

    /// Disconnects every controller and releases every namespace (subsystem deletion).
    pub(crate) fn shutdown(&self) {
        let ctrlrs = self.controllers();
        for c in ctrlrs {
            c.disconnect("subsystem deleted");
        }
        let mut inner = self.inner.lock().unwrap();
        inner.namespaces.clear();
        self.publish_table(&inner);
    }
}
