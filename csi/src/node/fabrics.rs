//! The kernel's NVMe-oF host as the node plugin drives it: connect by writing an option
//! string to /dev/nvme-fabrics (what `nvme connect` does), find a namespace's disk by its
//! UUID in sysfs, rescan and disconnect through the controller's sysfs files. No nvme-cli
//! needed in the plugin's image.
//!
//! Every path is under a root (`/` on a node; a temporary tree in unit tests).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The kernel's fabrics control device.
pub const FABRICS_DEV: &str = "/dev/nvme-fabrics";

/// How to connect (kernel option names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub nqn: String,
    pub traddr: String,
    pub trsvcid: String,
    pub hostnqn: String,
    pub hostid: String,
    /// Seconds the kernel keeps reconnecting after losing the controller (-1: forever).
    pub ctrl_loss_tmo: i32,
    pub reconnect_delay: u32,
    pub keep_alive_tmo: u32,
}

impl Connect {
    /// The option string written to /dev/nvme-fabrics; INVALID_ARGUMENT when a value holds
    /// a separator (it would add options of its own).
    pub fn options(&self) -> Result<String> {
        for v in [
            &self.nqn,
            &self.traddr,
            &self.trsvcid,
            &self.hostnqn,
            &self.hostid,
        ] {
            if v.is_empty() || v.contains([',', '=', '\n', '\0']) {
                return Err(Error::InvalidArgument(format!(
                    "connect option {:?} is empty or holds a separator",
                    crate::volume::cap(v)
                )));
            }
        }
        Ok(format!(
            "nqn={},transport=tcp,traddr={},trsvcid={},hostnqn={},hostid={},\
             ctrl_loss_tmo={},reconnect_delay={},keep_alive_tmo={}",
            self.nqn,
            self.traddr,
            self.trsvcid,
            self.hostnqn,
            self.hostid,
            self.ctrl_loss_tmo,
            self.reconnect_delay,
            self.keep_alive_tmo
        ))
    }
}

/// A fabrics controller in /sys/class/nvme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctrl {
    /// `nvme3`.
    pub name: String,
    pub subsysnqn: String,
    pub transport: String,
    pub traddr: String,
    pub trsvcid: String,
    pub hostnqn: String,
    /// `live`, `connecting`, `resetting`, `deleting`, ...
    pub state: String,
}

/// A namespace's block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `nvme3n1`.
    pub name: String,
    /// `/dev/nvme3n1` (under the root).
    pub dev: PathBuf,
    pub size_bytes: u64,
}

/// The host's sysfs and /dev, under `root`.
#[derive(Debug, Clone)]
pub struct Sys {
    root: PathBuf,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `traddr=10.0.2.2,trsvcid=4420[,src_addr=...]` → (traddr, trsvcid).
fn parse_address(a: &str) -> (String, String) {
    let mut t = (String::new(), String::new());
    for kv in a.split(',') {
        match kv.split_once('=') {
            Some(("traddr", v)) => t.0 = v.to_string(),
            Some(("trsvcid", v)) => t.1 = v.to_string(),
            _ => {}
        }
    }
    t
}

/// `nvme<digits>n<digits>` (not a multipath path device `nvme0c1n1`).
fn is_ns_disk(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let Some((c, n)) = rest.split_once('n') else {
        return false;
    };
    !c.is_empty()
        && !n.is_empty()
        && c.bytes().all(|b| b.is_ascii_digit())
        && n.bytes().all(|b| b.is_ascii_digit())
}

impl Sys {
    pub fn new(root: impl Into<PathBuf>) -> Sys {
        Sys { root: root.into() }
    }

    fn p(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// Every fabrics controller of subsystem `nqn`.
    pub fn controllers(&self, nqn: &str) -> Vec<Ctrl> {
        let Ok(rd) = std::fs::read_dir(self.p("/sys/class/nvme")) else {
            return Vec::new();
        };
        let mut v: Vec<Ctrl> = rd
            .flatten()
            .filter_map(|e| {
                let d = e.path();
                let subsysnqn = read_trim(&d.join("subsysnqn"))?;
                if subsysnqn != nqn {
                    return None;
                }
                let (traddr, trsvcid) = parse_address(&read_trim(&d.join("address"))?);
                Some(Ctrl {
                    name: e.file_name().to_string_lossy().into_owned(),
                    subsysnqn,
                    transport: read_trim(&d.join("transport")).unwrap_or_default(),
                    traddr,
                    trsvcid,
                    hostnqn: read_trim(&d.join("hostnqn")).unwrap_or_default(),
                    state: read_trim(&d.join("state")).unwrap_or_default(),
                })
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The disk whose namespace UUID is `uuid`, of subsystem `nqn` (a disk of another
    /// subsystem with the same UUID — a local drive, another target — is never taken; the
    /// check is skipped only where sysfs does not say).
    pub fn disk_by_uuid(&self, uuid: &str, nqn: &str) -> Option<Disk> {
        let rd = std::fs::read_dir(self.p("/sys/block")).ok()?;
        let uuid = uuid.to_ascii_lowercase();
        let mut found: Vec<Disk> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if !is_ns_disk(&name) {
                    return None;
                }
                let d = e.path();
                if read_trim(&d.join("uuid"))?.to_ascii_lowercase() != uuid {
                    return None;
                }
                // device → the multipath head's nvme-subsysN, or the controller nvmeN.
                if let Some(sub) = read_trim(&d.join("device/subsysnqn")) {
                    if sub != nqn {
                        return None;
                    }
                }
                let sectors: u64 = read_trim(&d.join("size"))?.parse().ok()?;
                Some(Disk {
                    dev: self.p(&format!("/dev/{name}")),
                    name,
                    size_bytes: sectors * 512,
                })
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.into_iter().next()
    }

    /// Waits up to `timeout` for `disk_by_uuid(uuid)` (namespaces appear after a connect,
    /// and the disk node after udev or devtmpfs).
    pub fn wait_disk(&self, uuid: &str, nqn: &str, timeout: Duration) -> Option<Disk> {
        let t0 = Instant::now();
        loop {
            if let Some(d) = self.disk_by_uuid(uuid, nqn) {
                if d.dev.exists() {
                    return Some(d);
                }
            }
            if t0.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connects (the kernel answers `instance=N,cntlid=M`); returns the controller's name.
    pub fn connect(&self, c: &Connect) -> Result<String> {
        let dev = self.p(FABRICS_DEV);
        if !dev.exists() && self.root == Path::new("/") {
            // The plugin's container may not see modules; try, then say what is missing.
            let _ = std::process::Command::new("modprobe")
                .arg("nvme-tcp")
                .status();
        }
        if !dev.exists() {
            return Err(Error::FailedPrecondition(format!(
                "{} is missing: load the nvme-tcp kernel module on this node (modprobe nvme-tcp)",
                dev.display()
            )));
        }
        use std::io::{Read, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .map_err(|e| Error::io(format!("opening {}", dev.display()), e))?;
        let opts = c.options()?;
        f.write_all(opts.as_bytes()).map_err(|e| {
            Error::io(
                format!(
                    "connecting to {} at {}:{} (the kernel's log has the reason)",
                    c.nqn, c.traddr, c.trsvcid
                ),
                e,
            )
        })?;
        let mut out = String::new();
        f.read_to_string(&mut out)
            .map_err(|e| Error::io(format!("reading {}", dev.display()), e))?;
        out.trim()
            .split(',')
            .find_map(|kv| kv.strip_prefix("instance="))
            .map(|i| format!("nvme{i}"))
            .ok_or_else(|| Error::Internal(format!("unexpected answer from the kernel: {out:?}")))
    }

    fn ctrl_write(&self, ctrl: &str, file: &str) -> Result<()> {
        let p = self.p(&format!("/sys/class/nvme/{ctrl}/{file}"));
        match std::fs::write(&p, "1") {
            Ok(()) => Ok(()),
            // Gone meanwhile: nothing left to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("writing {}", p.display()), e)),
        }
    }

    /// Deletes controller `ctrl` (the kernel's disconnect).
    pub fn disconnect(&self, ctrl: &str) -> Result<()> {
        self.ctrl_write(ctrl, "delete_controller")
    }

    /// Asks controller `ctrl` to re-read its namespaces (sizes after a resize).
    pub fn rescan(&self, ctrl: &str) -> Result<()> {
        self.ctrl_write(ctrl, "rescan_controller")
    }
}

/// A host ID for `hostnqn`: the UUID in a `...:uuid:<uuid>` NQN, else one derived from the
/// NQN (stable, so reconnects present the same ID).
pub fn host_id(hostnqn: &str) -> String {
    if let Some(u) = hostnqn
        .rsplit_once(":uuid:")
        .and_then(|(_, u)| uuid::Uuid::parse_str(u).ok())
    {
        return u.hyphenated().to_string();
    }
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(hostnqn.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_sha1_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, s: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn finds_controllers_and_disks_in_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        put(r, "sys/class/nvme/nvme0/subsysnqn", "nqn.other\n");
        put(
            r,
            "sys/class/nvme/nvme0/address",
            "traddr=1.2.3.4,trsvcid=4420\n",
        );
        put(r, "sys/class/nvme/nvme3/subsysnqn", "nqn.a\n");
        put(
            r,
            "sys/class/nvme/nvme3/address",
            "traddr=10.0.2.2,trsvcid=4421,src_addr=10.0.2.15\n",
        );
        put(r, "sys/class/nvme/nvme3/transport", "tcp\n");
        put(r, "sys/class/nvme/nvme3/state", "live\n");
        put(r, "sys/class/nvme/nvme3/hostnqn", "nqn.h\n");
        let s = Sys::new(r);
        let c = s.controllers("nqn.a");
        assert_eq!(c.len(), 1);
        assert_eq!(
            (
                c[0].name.as_str(),
                c[0].traddr.as_str(),
                c[0].trsvcid.as_str()
            ),
            ("nvme3", "10.0.2.2", "4421")
        );
        assert_eq!(c[0].state, "live");
        assert!(s.controllers("nqn.none").is_empty());

        let u = "0f6b2f9e-8a4d-4c1e-9d55-0a2b3c4d5e6f";
        put(
            r,
            "sys/block/nvme3n1/uuid",
            &format!("{}\n", u.to_uppercase()),
        );
        put(r, "sys/block/nvme3n1/size", "2048\n");
        // A multipath path device with the same UUID is not the disk to use.
        put(r, "sys/block/nvme3c3n1/uuid", &format!("{u}\n"));
        put(r, "sys/block/nvme3c3n1/size", "2048\n");
        put(r, "dev/nvme3n1", "");
        put(r, "sys/block/nvme3n1/device/subsysnqn", "nqn.a\n");
        assert!(
            s.disk_by_uuid(u, "nqn.other").is_none(),
            "another subsystem's disk"
        );
        let disk = s.disk_by_uuid(u, "nqn.a").unwrap();
        assert_eq!(disk.name, "nvme3n1");
        assert_eq!(disk.size_bytes, 1 << 20);
        assert_eq!(disk.dev, r.join("dev/nvme3n1"));
        assert!(s.wait_disk(u, "nqn.a", Duration::ZERO).is_some());
        assert!(s
            .disk_by_uuid("00000000-0000-0000-0000-000000000000", "nqn.a")
            .is_none());
    }

    #[test]
    fn names_options_and_host_ids() {
        assert!(is_ns_disk("nvme0n1") && is_ns_disk("nvme12n34"));
        assert!(!is_ns_disk("nvme0c1n1") && !is_ns_disk("nvme0") && !is_ns_disk("sda"));
        let c = Connect {
            nqn: "nqn.s".into(),
            traddr: "10.0.2.2".into(),
            trsvcid: "4420".into(),
            hostnqn: "nqn.h".into(),
            hostid: "x".into(),
            ctrl_loss_tmo: 60,
            reconnect_delay: 2,
            keep_alive_tmo: 5,
        };
        assert_eq!(
            c.options().unwrap(),
            "nqn=nqn.s,transport=tcp,traddr=10.0.2.2,trsvcid=4420,hostnqn=nqn.h,hostid=x,\
             ctrl_loss_tmo=60,reconnect_delay=2,keep_alive_tmo=5"
        );
        for bad in ["10.0.0.1,duplicate_connect", "a=b", "x\ny", ""] {
            let c = Connect {
                traddr: bad.into(),
                ..c.clone()
            };
            assert!(c.options().is_err(), "{bad:?} accepted");
        }
        let u = "0f6b2f9e-8a4d-4c1e-9d55-0a2b3c4d5e6f";
        assert_eq!(host_id(&format!("nqn.2014-08.org.nvmexpress:uuid:{u}")), u);
        let a = host_id("nqn.2026-11.io.example:node-a");
        assert_eq!(a, host_id("nqn.2026-11.io.example:node-a"));
        assert_ne!(a, host_id("nqn.2026-11.io.example:node-b"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
