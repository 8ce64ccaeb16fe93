//! Replicated volumes (src/replicas.rs) against real ballastd daemons.
//!
//! The multi-node test runs one ballastd per "node", each in its own network namespace, the
//! namespaces joined by a bridge in one more namespace (the "switch"): nodes reach each other
//! on 10.253.T.0/24 and nothing else, and nothing is added to the root namespace. Namespaces
//! and daemons are removed on drop (also when an assertion fails). Skipped, with a message,
//! when not root or `ip netns` cannot be used. The stores are lvol stores on sparse files
//! (uring bdevs), so a node killed and restarted from its saved config keeps its replica.
//!
//! The snapshot test reads and writes the volumes' blocks from threads that enter a node's
//! namespace (common/blocks.rs' export on the node's own 127.0.0.1).
//!
//! The other tests need no namespace.

#[path = "common/blocks.rs"]
mod blocks;
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ballast_csi::config::{Node, Nvmf};
use ballast_csi::pb;
use ballast_csi::pb::volume_content_source::{SnapshotSource, Type as Src, VolumeSource};
use ballast_csi::replicas::{mirror_name, replica_nqn, META_BYTES};
use ballast_csi::rsnap::copy_name;
use ballast_csi::volume::VolumeId;
use blocks::{pattern, Export, BLOCK};
use common::*;
use serde_json::{json, Value};
use tonic::Code;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be used here, if they cannot.
fn netns_unusable() -> Option<String> {
    if std::fs::metadata("/proc/self").map_or(1, |m| m.uid()) != 0 {
        return Some("not root".into());
    }
    let probe = format!("bcprobe{}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(e);
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

/// Nodes in network namespaces on one bridge (see the module doc); removed on drop.
struct Net {
    tag: String,
    sw: String,
    nodes: Vec<String>,
    addrs: Vec<String>,
}

impl Net {
    /// `count` nodes; `test` (1-9) keeps the names and subnets of concurrent tests apart.
    fn new(test: u8, count: usize) -> Net {
        let tag = format!("bc{}{test}", std::process::id() % 100_000);
        let mut net = Net {
            sw: format!("{tag}s"),
            tag,
            nodes: Vec::new(),
            addrs: Vec::new(),
        };
        // Leftovers of a run with the same pid that died without its drop.
        let _ = ip(&["netns", "del", &net.sw]);
        for i in 0..count {
            let _ = ip(&["netns", "del", &format!("{}n{i}", net.tag)]);
        }
        net.setup(test, count)
            .unwrap_or_else(|e| panic!("making the test namespaces: {e}"));
        net
    }

    fn setup(&mut self, test: u8, count: usize) -> Result<(), String> {
        let sw = self.sw.clone();
        ip(&["netns", "add", &sw])?;
        self.nodes.push(sw.clone()); // deleted with the nodes
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..count {
            let ns = format!("{}n{i}", self.tag);
            let (a, b) = (format!("{}a{i}", self.tag), format!("{}b{i}", self.tag));
            let addr = format!("10.253.{test}.{}", i + 1);
            ip(&["netns", "add", &ns])?;
            self.nodes.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &ns, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &sw,
            ])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &a])?;
            ip(&["-n", &ns, "link", "set", &a, "up"])?;
            ip(&["-n", &sw, "link", "set", &b, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &b, "up"])?;
            self.addrs.push(addr);
        }
        Ok(())
    }

    fn ns(&self, i: usize) -> &str {
        &self.nodes[i + 1]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.nodes.iter().rev() {
            // Only processes in the namespaces this test made (its own daemons, perf).
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A node's persistent parts: its store file, saved config, and the socket path the CSI
/// config names (a symlink to the running daemon's socket, re-pointed on restart).
struct NodeFiles {
    dir: tempfile::TempDir,
}

impl NodeFiles {
    fn sock(&self) -> PathBuf {
        self.dir.path().join("rpc.sock")
    }
    fn point_at(&self, d: &Daemon) {
        let _ = std::fs::remove_file(self.sock());
        std::os::unix::fs::symlink(&d.sock, self.sock()).unwrap();
    }
}

/// ballastd in namespace `ns` with an lvol store `lvs0` (4 MiB clusters) on a sparse
/// 256 MiB file.
fn start_node(ns: &str) -> (Daemon, NodeFiles) {
    let f = NodeFiles {
        dir: tempfile::tempdir().unwrap(),
    };
    let img = f.dir.path().join("pool.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(256 * MIB)
        .unwrap();
    let d = Daemon::start_with(&["ip", "netns", "exec", ns], &["--default-size-mib", "0"]);
    d.ok(
        "bdev_uring_create",
        json!({"name": "Pool0", "filename": img, "block_size": 4096}),
    );
    d.ok(
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": "Pool0", "lvs_name": "lvs0", "cluster_sz": CLUSTER}),
    );
    f.point_at(&d);
    (d, f)
}

fn csi_node(i: usize, f: &NodeFiles, addr: &str) -> Node {
    let mut n = node(&format!("n{i}"), &f.sock(), &[]);
    n.nvmf = Some(Nvmf {
        addr: addr.into(),
        advertise: None,
        port: 4420,
    });
    n
}

fn node_index(id: &str) -> usize {
    id.trim_start_matches('n').parse().unwrap()
}

/// Names of the lvols of `lvs0` on a daemon.
fn lvol_names(d: &Daemon) -> Vec<String> {
    d.ok("bdev_lvol_get_lvols", json!({"lvs_name": "lvs0"}))
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn raid(d: &Daemon, name: &str) -> Option<Value> {
    match d.call("bdev_raid_get_bdevs", json!({"name": name})) {
        Ok(v) => Some(v[0].clone()),
        Err((-19, _)) => None,
        Err(e) => panic!("bdev_raid_get_bdevs: {e:?}"),
    }
}

async fn get_volume(c: &mut Csi, id: &str) -> pb::ControllerGetVolumeResponse {
    c.ctrl
        .controller_get_volume(pb::ControllerGetVolumeRequest {
            volume_id: id.into(),
        })
        .await
        .expect("ControllerGetVolume")
        .into_inner()
}

fn condition(r: &pb::ControllerGetVolumeResponse) -> (bool, String) {
    let c = r
        .status
        .as_ref()
        .and_then(|s| s.volume_condition.clone())
        .expect("a volume condition");
    (c.abnormal, c.message)
}

/// Polls ControllerGetVolume until `want(abnormal, message)`; the last condition seen.
async fn wait_condition(
    c: &mut Csi,
    id: &str,
    secs: u64,
    want: impl Fn(bool, &str) -> bool,
    seen: &mut Vec<String>,
) -> Option<(bool, String)> {
    let t0 = Instant::now();
    loop {
        let (ab, m) = condition(&get_volume(c, id).await);
        if seen.last() != Some(&m) {
            seen.push(m.clone());
        }
        if want(ab, &m) {
            return Some((ab, m));
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Three nodes in namespaces (test `test`, see [`Net::new`]) with their files, and the CSI
/// controller over them; None (skipped, with a message) when namespaces cannot be used.
async fn three_nodes(test: u8) -> Option<(Net, Vec<Daemon>, Vec<NodeFiles>, Csi)> {
    if let Some(why) = netns_unusable() {
        eprintln!("skipped: network namespaces are not usable here ({why}); run as root");
        return None;
    }
    let net = Net::new(test, 3);
    let mut files = Vec::new();
    let mut ds = Vec::new();
    for i in 0..3 {
        let (d, f) = start_node(net.ns(i));
        ds.push(d);
        files.push(f);
    }
    let cfg: Vec<Node> = (0..3)
        .map(|i| csi_node(i, &files[i], &net.addrs[i]))
        .collect();
    let c = Csi::start(cfg).await;
    Some((net, ds, files, c))
}

fn delete_req(id: &str) -> pb::DeleteVolumeRequest {
    pb::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_volume_lifecycle_across_namespaced_nodes() {
    let Some((net, mut ds, files, mut c)) = three_nodes(1).await else {
        return;
    };

    // --- pieces an interrupted CreateVolume left are torn down, then the volume is built
    let left_r = ds[0]
        .ok(
            "bdev_lvol_create",
            json!({"lvol_name": "csr-pvc-crash", "lvs_name": "lvs0", "size_in_mib": 8, "thin_provision": true}),
        )
        .as_str()
        .unwrap()
        .to_string();
    ds[0].ok(
        "nvmf_create_subsystem",
        json!({"nqn": replica_nqn(&left_r)}),
    );
    ds[0].ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": replica_nqn(&left_r), "namespace": {"bdev_name": left_r}}),
    );
    ds[1].ok(
        "bdev_lvol_create",
        json!({"lvol_name": "csp-pvc-crash", "lvs_name": "lvs0", "size_in_mib": 8, "thin_provision": true}),
    );
    let v = vol(c
        .ctrl
        .create_volume(create_req("pvc-crash", 8 * MIB, &[("replicas", "2")]))
        .await);
    assert!(
        ds[0].lvol(&left_r).is_none(),
        "the leftover replica lvol is gone"
    );
    assert!(
        ds[0]
            .call("nvmf_get_subsystems", json!({"nqn": replica_nqn(&left_r)}))
            .is_err(),
        "the leftover replica subsystem is gone"
    );
    for d in &ds {
        let names = lvol_names(d);
        assert!(
            !names.iter().any(|n| n.starts_with("csp-")),
            "no pending lvol left: {names:?}"
        );
    }
    c.ctrl
        .delete_volume(delete_req(&v.volume_id))
        .await
        .expect("DeleteVolume pvc-crash");

    // --- create: two distinct nodes, a mirror of two members
    let v = vol(c
        .ctrl
        .create_volume(create_req("pvc-r1", 20 * MIB, &[("replicas", "2")]))
        .await);
    let id = VolumeId::parse(&v.volume_id).expect("a ballast-csi id");
    let p = node_index(&id.node);
    assert!(v.capacity_bytes as u64 >= 20 * MIB, "{}", v.capacity_bytes);
    assert_eq!(
        v.volume_context.get("replicas").map(String::as_str),
        Some("2")
    );
    let m = raid(&ds[p], &mirror_name(&id.lvol_uuid)).expect("the mirror on the primary");
    let members: Vec<&str> = m["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(members.len(), 2, "{m}");
    assert_eq!(members[0], id.lvol_uuid, "{m}");
    assert!(members[1].starts_with("csi-r-"), "{m}");
    assert_eq!(m["state"], "online", "{m}");
    let holders: Vec<usize> = (0..3)
        .filter(|&i| lvol_names(&ds[i]).iter().any(|n| n == "csr-pvc-r1"))
        .collect();
    assert_eq!(holders.len(), 1, "one replica lvol: on nodes {holders:?}");
    let r = holders[0];
    assert_ne!(r, p, "the replica is on another node than the primary");
    assert_eq!(
        lvol_names(&ds[p])
            .iter()
            .filter(|n| n.ends_with("pvc-r1"))
            .count(),
        1
    );
    assert!(lvol_names(&ds[p]).contains(&"csm-pvc-r1".to_string()));
    let third = (0..3).find(|&i| i != p && i != r).unwrap();
    assert!(
        !lvol_names(&ds[third]).iter().any(|n| n.ends_with("pvc-r1")),
        "the third node holds nothing"
    );
    let replica_uuid = members[1]
        .trim_start_matches("csi-r-")
        .trim_end_matches("n1")
        .to_string();
    let sub = &ds[r].ok(
        "nvmf_get_subsystems",
        json!({"nqn": replica_nqn(&replica_uuid)}),
    )[0];
    assert_eq!(sub["allow_any_host"], false, "{sub}");
    assert_eq!(
        sub["hosts"],
        json!([{"nqn": format!("nqn.2026-11.io.ballast:csi-mirror-host:n{p}")}]),
        "{sub}"
    );
    assert_eq!(
        sub["listen_addresses"][0]["traddr"],
        net.addrs[r].as_str(),
        "{sub}"
    );

    // --- idempotent, conflicts, listing, validation, health, expansion
    let again = vol(c
        .ctrl
        .create_volume(create_req("pvc-r1", 20 * MIB, &[("replicas", "2")]))
        .await);
    assert_eq!(again.volume_id, v.volume_id);
    assert_eq!(again.capacity_bytes, v.capacity_bytes);
    for other in ["1", "3"] {
        let (k, msg) = code(
            c.ctrl
                .create_volume(create_req("pvc-r1", 20 * MIB, &[("replicas", other)]))
                .await,
        );
        assert_eq!(k, Code::AlreadyExists, "replicas={other}: {msg}");
        assert!(msg.contains("replicas=2"), "{msg}");
    }
    let list = c
        .ctrl
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(list.len(), 1, "one volume, not one per replica: {list:?}");
    assert_eq!(list[0].volume.as_ref().unwrap().volume_id, v.volume_id);
    let st = list[0].status.as_ref().unwrap();
    assert!(!st.volume_condition.as_ref().unwrap().abnormal, "{st:?}");
    let validate = |replicas: &str| pb::ValidateVolumeCapabilitiesRequest {
        volume_id: v.volume_id.clone(),
        volume_capabilities: rwo(),
        parameters: [("replicas".to_string(), replicas.to_string())].into(),
        ..Default::default()
    };
    let ok = c
        .ctrl
        .validate_volume_capabilities(validate("2"))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some(), "{}", ok.message);
    let no = c
        .ctrl
        .validate_volume_capabilities(validate("1"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        no.confirmed.is_none() && no.message.contains("replicas=2"),
        "{no:?}"
    );
    let (ab, msg) = condition(&get_volume(&mut c, &v.volume_id).await);
    assert!(!ab && msg.contains("2 of 2"), "healthy: {msg}");
    let (k, msg) = code(
        c.ctrl
            .controller_expand_volume(pb::ControllerExpandVolumeRequest {
                volume_id: v.volume_id.clone(),
                capacity_range: Some(pb::CapacityRange {
                    required_bytes: 64 * MIB as i64,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(k, Code::FailedPrecondition, "{msg}");

    // --- the replica's node dies while the mirror is written
    let saved = files[r].dir.path().join("saved.json");
    std::fs::write(&saved, ds[r].ok("save_config", Value::Null).to_string()).unwrap();
    // What ControllerPublish does: export_bdev's bdev (the mirror) in a subsystem.
    let export = "nqn.2026-11.io.ballast:csi-test-export";
    let perf_host = "nqn.2026-11.io.ballast:csi-test-perf";
    let mname = mirror_name(&id.lvol_uuid);
    ds[p].ok("nvmf_create_subsystem", json!({"nqn": export}));
    ds[p].ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": export, "namespace": {"bdev_name": mname}}),
    );
    ds[p].ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": export, "host": perf_host}),
    );
    ds[p].ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": export, "listen_address":
            {"trtype": "tcp", "traddr": net.addrs[p], "trsvcid": "4421"}}),
    );
    let perf_bin = ballastd_bin().with_file_name("ballast-perf");
    let perf = perf_bin.exists().then(|| {
        Command::new("ip")
            .args(["netns", "exec", net.ns(p)])
            .arg(&perf_bin)
            .args(["-w", "randwrite", "-q", "4", "-t", "6", "--warmup", "0"])
            .args(["--no-pin", "--quiet", "-r"])
            .arg(format!(
                "trtype:tcp traddr:{} trsvcid:4421 subnqn:{export} hostnqn:{perf_host}",
                net.addrs[p]
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ballast-perf")
    });
    if perf.is_none() {
        eprintln!(
            "note: no {} (cargo build --release -p ballast-bench): the replica's loss is \
             seen through its transport only",
            perf_bin.display()
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ds[r].kill();
    let mut seen = Vec::new();
    let got = wait_condition(
        &mut c,
        &v.volume_id,
        40,
        |ab, m| ab && m.contains(&format!("n{r}")),
        &mut seen,
    )
    .await;
    assert!(
        got.is_some(),
        "abnormal, naming n{r}, after its ballastd was killed; conditions seen: {seen:?}\n{}",
        ds[p].log_tail()
    );
    if let Some(perf) = perf {
        let out = perf.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writes through the mirror go on without the replica: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // ListVolumes asks every node (README: a node that cannot be reached fails it).
    let (k, msg) = code(c.ctrl.list_volumes(pb::ListVolumesRequest::default()).await);
    assert_eq!(k, Code::Unavailable, "{msg}");

    // A member's node that cannot be asked: DeleteVolume fails and deletes nothing.
    let (k, msg) = code(c.ctrl.delete_volume(delete_req(&v.volume_id)).await);
    assert_eq!(k, Code::Unavailable, "{msg}");
    assert!(
        ds[p].lvol(&id.lvol_uuid).is_some(),
        "the primary's lvol stays"
    );
    assert!(raid(&ds[p], &mname).is_some(), "the mirror stays");

    // --- the node comes back (its saved config): the mirror heals by itself
    let d = Daemon::start_with(
        &["ip", "netns", "exec", net.ns(r)],
        &["-c", saved.to_str().unwrap()],
    );
    files[r].point_at(&d);
    ds[r] = d;
    let mut seen = Vec::new();
    let healed = wait_condition(&mut c, &v.volume_id, 60, |ab, _| !ab, &mut seen).await;
    assert!(
        healed.is_some(),
        "healthy again after the replica's node restarted; conditions seen: {seen:?}\n{}",
        ds[p].log_tail()
    );
    let m = raid(&ds[p], &mname).unwrap();
    assert!(
        m["last_rebuild"]["target"] == json!(format!("csi-r-{replica_uuid}n1")),
        "the replica was rebuilt: {m}"
    );
    eprintln!("conditions while healing: {seen:?}");

    // --- delete: refused while exported, then every piece on every node goes
    let (k, msg) = code(c.ctrl.delete_volume(delete_req(&v.volume_id)).await);
    assert_eq!(k, Code::FailedPrecondition, "exported: {msg}");
    ds[p].ok("nvmf_delete_subsystem", json!({"nqn": export}));
    c.ctrl
        .delete_volume(delete_req(&v.volume_id))
        .await
        .expect("DeleteVolume");
    for (i, d) in ds.iter().enumerate() {
        let names = lvol_names(d);
        assert!(
            !names.iter().any(|n| n.contains("pvc-")),
            "node n{i} has lvols left: {names:?}"
        );
        let subs = d.ok("nvmf_get_subsystems", Value::Null);
        assert!(
            !subs.to_string().contains("csi-replica-"),
            "node n{i} has replica subsystems left: {subs}"
        );
        assert_eq!(
            d.ok("bdev_raid_get_bdevs", json!({"category": "all"})),
            json!([])
        );
        assert_eq!(d.ok("bdev_nvme_get_controllers", Value::Null), json!([]));
    }
    c.ctrl
        .delete_volume(delete_req(&v.volume_id))
        .await
        .expect("DeleteVolume again");
    let (k, _) = code(
        c.ctrl
            .controller_get_volume(pb::ControllerGetVolumeRequest {
                volume_id: v.volume_id.clone(),
            })
            .await,
    );
    assert_eq!(k, Code::NotFound);
    c.stop().await;
    drop(ds);
    drop(net);
}

/// Nodes a replicated volume cannot use, and too few nodes: RESOURCE_EXHAUSTED, nothing made.
/// (No NVMe/TCP traffic: runs without namespaces.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_nodes_is_resource_exhausted() {
    let (a, b, no_nvmf) = (
        Daemon::with_store(),
        Daemon::with_store(),
        Daemon::with_store(),
    );
    let with_nvmf = |id: &str, d: &Daemon, zone: &str| {
        let mut n = node(id, &d.sock, &[("zone", zone)]);
        n.nvmf = Some(Nvmf {
            addr: "127.0.0.1".into(),
            advertise: None,
            port: 4420,
        });
        n
    };
    let mut c = Csi::start(vec![
        with_nvmf("a", &a, "z1"),
        with_nvmf("b", &b, "z2"),
        node("c", &no_nvmf.sock, &[("zone", "z1")]),
    ])
    .await;
    let (k, m) = code(
        c.ctrl
            .create_volume(create_req("pvc-3", 8 * MIB, &[("replicas", "3")]))
            .await,
    );
    assert_eq!(k, Code::ResourceExhausted, "{m}");
    assert!(m.contains("replicas=3") && m.contains("c: no nvmf"), "{m}");

    let mut r = create_req("pvc-z1", 8 * MIB, &[("replicas", "2")]);
    r.accessibility_requirements = Some(pb::TopologyRequirement {
        requisite: vec![topology(&[("zone", "z1")])],
        preferred: vec![],
    });
    let (k, m) = code(c.ctrl.create_volume(r).await);
    assert_eq!(k, Code::ResourceExhausted, "{m}");
    assert!(m.contains("outside the requisite topology"), "{m}");

    let mut r = create_req(
        "pvc-big",
        100 * MIB,
        &[("replicas", "2"), ("thin", "false")],
    );
    r.capacity_range.as_mut().unwrap().required_bytes = 200 * MIB as i64;
    let (k, m) = code(c.ctrl.create_volume(r).await);
    assert_eq!(k, Code::ResourceExhausted, "{m}");

    for d in [&a, &b, &no_nvmf] {
        assert_eq!(lvol_names(d), Vec::<String>::new(), "nothing was made");
    }
    c.stop().await;
}

/// ControllerGetVolume of a plain volume: normal; unknown ids are NOT_FOUND; a node that
/// cannot be asked gives an abnormal volume, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_volume_of_plain_volumes() {
    let mut d = Daemon::with_store();
    let mut c = Csi::start(vec![node("n1", &d.sock, &[])]).await;
    let v = vol(c
        .ctrl
        .create_volume(create_req("pvc-p", 8 * MIB, &[]))
        .await);
    let r = get_volume(&mut c, &v.volume_id).await;
    assert_eq!(r.volume.as_ref().unwrap().capacity_bytes, 8 * MIB as i64);
    assert_eq!(condition(&r), (false, String::new()));
    assert!(r.status.unwrap().published_node_ids.is_empty());
    for bad in ["", "nonsense", &v.volume_id.replace("v1:n1", "v1:n9")] {
        let (k, m) = code(
            c.ctrl
                .controller_get_volume(pb::ControllerGetVolumeRequest {
                    volume_id: bad.into(),
                })
                .await,
        );
        let want = if bad.is_empty() {
            Code::InvalidArgument
        } else {
            Code::NotFound
        };
        assert_eq!(k, want, "{bad:?}: {m}");
    }
    d.kill();
    let r = get_volume(&mut c, &v.volume_id).await;
    let (ab, m) = condition(&r);
    assert!(ab && m.contains("cannot be asked"), "{m}");
    assert_eq!(r.volume.unwrap().volume_id, v.volume_id);
    c.stop().await;
}

/// Runs `f` on a thread of its own inside network namespace `ns`: its sockets are that
/// namespace's (the node's ballastd on its own 127.0.0.1).
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_ns(ns);
            f()
        })
        .join()
        .expect("a thread in the namespace")
    })
}

fn enter_ns(ns: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("netns {ns}: {e}"));
    // SAFETY: setns(2) with a valid namespace descriptor moves only the calling thread (one
    // of the test's own, which ends with its closure) into the namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// The mirror's data blocks ahead of a member's data.
const META_BLOCKS: u64 = META_BYTES / BLOCK as u64;

/// `blocks` blocks of the data area (after the mirror's metadata) of member lvol `bdev` of
/// daemon `d` in namespace `ns`.
fn member_data(ns: &str, d: &Daemon, bdev: &str, blocks: usize) -> Vec<u8> {
    in_ns(ns, || Export::new(d, bdev).read_many(META_BLOCKS, blocks))
}

fn snap_req(name: &str, source: &str) -> pb::CreateSnapshotRequest {
    pb::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    }
}

/// Each node's copy of CSI snapshot `s` (the primary's lvol, or a replica's `csisnpr-`): the
/// lvol's UUID per node index, None where there is none.
fn copies(ds: &[Daemon], s: &pb::Snapshot) -> Vec<Option<String>> {
    let id = VolumeId::parse(&s.snapshot_id).unwrap();
    let p = node_index(&id.node);
    let primary = ds[p]
        .lvol(&id.lvol_uuid)
        .expect("the primary's snapshot lvol");
    let alias = primary["aliases"][0].as_str().unwrap().to_string();
    let name = alias.trim_start_matches("lvs0/");
    assert!(name.starts_with("csisnpm-"), "{name}");
    (0..ds.len())
        .map(|i| {
            if i == p {
                return Some(id.lvol_uuid.clone());
            }
            let l = ds[i].lvol(&format!("lvs0/{}", copy_name(name)))?;
            Some(l["name"].as_str().unwrap().to_string())
        })
        .collect()
}

async fn list_snapshots(c: &mut Csi) -> Vec<pb::Snapshot> {
    c.ctrl
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .expect("ListSnapshots")
        .into_inner()
        .entries
        .into_iter()
        .filter_map(|e| e.snapshot)
        .collect()
}

/// CreateSnapshot of a replicated volume pauses its mirror and snapshots every in-sync member
/// (rsnap.rs): the copies hold the same data, also with writes going on through the mirror;
/// one CSI snapshot per call; a degraded mirror gets copies on its in-sync members; restores
/// are refused; DeleteSnapshot removes every copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_snapshots_are_consistent_across_members() {
    let Some((net, ds, _files, mut c)) = three_nodes(2).await else {
        return;
    };
    let v = vol(c
        .ctrl
        .create_volume(create_req("pvc-rs", 16 * MIB, &[("replicas", "3")]))
        .await);
    let id = VolumeId::parse(&v.volume_id).unwrap();
    let p = node_index(&id.node);
    let mname = mirror_name(&id.lvol_uuid);
    let blocks = v.capacity_bytes as usize / BLOCK;

    // --- known data through the mirror, then a snapshot: every member's copy holds it
    let known = pattern(0x5c, 32);
    in_ns(net.ns(p), || Export::new(&ds[p], &mname).write(100, &known));
    let s1 = c
        .ctrl
        .create_snapshot(snap_req("snap-rs1", &v.volume_id))
        .await
        .expect("CreateSnapshot")
        .into_inner()
        .snapshot
        .unwrap();
    assert!(s1.ready_to_use);
    assert_eq!(s1.source_volume_id, v.volume_id);
    assert_eq!(
        s1.size_bytes, v.capacity_bytes,
        "the volume's size, not the lvol's"
    );
    let c1 = copies(&ds, &s1);
    assert!(
        c1.iter().all(Option::is_some),
        "a copy on every node: {c1:?}"
    );
    for (i, u) in c1.iter().enumerate() {
        let got = member_data(net.ns(i), &ds[i], u.as_ref().unwrap(), 132);
        assert!(
            got[100 * BLOCK..] == known[..],
            "n{i}'s copy lacks the data"
        );
    }
    let again = c
        .ctrl
        .create_snapshot(snap_req("snap-rs1", &v.volume_id))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(again.snapshot_id, s1.snapshot_id, "idempotent");
    assert!(raid(&ds[p], &mname).unwrap()["quiesced"] == json!(false));

    // --- writes go on through the mirror during the snapshot: the copies are equal
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (s2, writes) = tokio::task::block_in_place(|| {
        std::thread::scope(|sc| {
            let w = sc.spawn(|| {
                enter_ns(net.ns(p));
                Export::new(&ds[p], &mname).write_while(|k| {
                    let go = !stop.load(std::sync::atomic::Ordering::Acquire);
                    go.then(|| ((k * 7919) % (blocks as u64 - 8), pattern(k as u8, 8)))
                })
            });
            std::thread::sleep(Duration::from_millis(800));
            let s = tokio::runtime::Handle::current()
                .block_on(c.ctrl.create_snapshot(snap_req("snap-rs2", &v.volume_id)));
            std::thread::sleep(Duration::from_millis(500));
            stop.store(true, std::sync::atomic::Ordering::Release);
            (s, w.join().expect("no write failed"))
        })
    });
    let s2 = s2
        .expect("CreateSnapshot under writes")
        .into_inner()
        .snapshot
        .unwrap();
    assert!(writes > 10, "{writes} writes");
    let c2 = copies(&ds, &s2);
    let datas: Vec<Vec<u8>> = (0..3)
        .map(|i| member_data(net.ns(i), &ds[i], c2[i].as_ref().unwrap(), blocks))
        .collect();
    for i in 1..3 {
        assert!(
            datas[i] == datas[0],
            "n{i}'s copy differs from n0's ({writes} writes went on meanwhile)"
        );
    }
    assert!(
        datas[0].iter().any(|&b| b != 0),
        "the copies hold the writes"
    );
    eprintln!("{writes} writes through the mirror around the snapshot");

    // --- one CSI snapshot per call; restores and clones are refused plainly
    let listed = list_snapshots(&mut c).await;
    let mut ids: Vec<&str> = listed.iter().map(|s| s.snapshot_id.as_str()).collect();
    ids.sort();
    let mut want = vec![s1.snapshot_id.as_str(), s2.snapshot_id.as_str()];
    want.sort();
    assert_eq!(ids, want, "copies are not listed");
    let mut from_snap = create_req("pvc-rs-restore", 16 * MIB, &[]);
    from_snap.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(Src::Snapshot(SnapshotSource {
            snapshot_id: s1.snapshot_id.clone(),
        })),
    });
    let (k, msg) = code(c.ctrl.create_volume(from_snap).await);
    assert_eq!(k, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("not built yet"), "{msg}");
    let mut from_vol = create_req("pvc-rs-clone", 16 * MIB, &[]);
    from_vol.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(Src::Volume(VolumeSource {
            volume_id: v.volume_id.clone(),
        })),
    });
    let (k, msg) = code(c.ctrl.create_volume(from_vol).await);
    assert_eq!(k, Code::InvalidArgument, "{msg}");

    // --- leftovers of an interrupted CreateSnapshot of a name go before it is made
    let m = raid(&ds[p], &mname).unwrap();
    let replica_member = m["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .find(|n| n.starts_with("csi-r-"))
        .unwrap();
    let ruuid = replica_member
        .trim_start_matches("csi-r-")
        .trim_end_matches("n1")
        .to_string();
    let r = (0..3)
        .find(|&i| i != p && ds[i].lvol(&ruuid).is_some())
        .unwrap();
    let key = ballast_csi::snapshot::key_of("snap-rs3");
    let orphan_name = format!("csisnpr-{key}{}00000001", id.lvol_uuid.replace('-', ""));
    let orphan = ds[r]
        .ok(
            "bdev_lvol_snapshot",
            json!({"lvol_name": ruuid, "snapshot_name": orphan_name}),
        )
        .as_str()
        .unwrap()
        .to_string();

    // --- a degraded mirror (a replica's slot emptied): copies on the in-sync members only
    ds[p].ok(
        "bdev_raid_remove_base_bdev",
        json!({"name": replica_member}),
    );
    let s3 = c
        .ctrl
        .create_snapshot(snap_req("snap-rs3", &v.volume_id))
        .await
        .expect("CreateSnapshot of a degraded volume")
        .into_inner()
        .snapshot
        .unwrap();
    assert!(ds[r].lvol(&orphan).is_none(), "the leftover copy is gone");
    let c3 = copies(&ds, &s3);
    assert!(
        c3[r].is_none(),
        "no copy on the member out of the mirror: {c3:?}"
    );
    assert_eq!(c3.iter().filter(|c| c.is_some()).count(), 2, "{c3:?}");
    assert_eq!(list_snapshots(&mut c).await.len(), 3);

    // --- DeleteSnapshot: every copy goes, on every node; again is fine
    for s in [&s1, &s2, &s3] {
        for _ in 0..2 {
            c.ctrl
                .delete_snapshot(pb::DeleteSnapshotRequest {
                    snapshot_id: s.snapshot_id.clone(),
                    ..Default::default()
                })
                .await
                .expect("DeleteSnapshot");
        }
    }
    for (i, d) in ds.iter().enumerate() {
        let names = lvol_names(d);
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("csisnp") || n.starts_with("csigone")),
            "n{i} keeps snapshot lvols: {names:?}"
        );
    }
    assert!(list_snapshots(&mut c).await.is_empty());
    // The volume still reads through its mirror after the merges of its snapshots.
    let now = in_ns(net.ns(p), || Export::new(&ds[p], &mname).read_many(0, 256));
    assert!(now.iter().any(|&b| b != 0), "the written data is there");
    c.ctrl
        .delete_volume(delete_req(&v.volume_id))
        .await
        .expect("DeleteVolume");
    for d in &ds {
        let names = lvol_names(d);
        assert!(!names.iter().any(|n| n.contains("pvc-rs")), "{names:?}");
    }
    c.stop().await;
    drop(ds);
    drop(net);
}
