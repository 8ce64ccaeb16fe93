//! Encrypted and compressed volumes (stack.rs) against a real ballastd: the stack each
//! StorageClass asks for, data through the exported top (and ciphertext underneath), key
//! checks that never echo the key, idempotency and conflicts, pieces lost and completed,
//! publish exporting the top and refusing an incomplete stack, delete removing everything,
//! clones refused. Data is read and written over NVMe/TCP on 127.0.0.1 (common/blocks.rs).

#[path = "common/blocks.rs"]
#[allow(dead_code)]
mod blocks;
mod common;

use ballast_csi::pb;
use ballast_csi::pb::volume_capability::access_mode::Mode;
use blocks::{Export, BLOCK};
use common::*;
use serde_json::{json, Value};
use tonic::Code;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:33333333-3333-4333-8333-333333333333";
/// AES-XTS-256 as one secret (K1 || K2).
const KEY: &str = "8f3a1c2b4d5e6f708192a3b4c5d6e7f80112233445566778899aabbccddeeff0\
                   0ffeeddccbbaa99887766554433221100f8e7d6c5b4a3928170f6e5d4c3b2a1f";
const OTHER_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111\
                         2222222222222222222222222222222222222222222222222222222222222222";

async fn setup() -> (Daemon, Csi) {
    let d = Daemon::with_store();
    let mut n = node("n1", &d.sock, &[]);
    n.nvmf = Some(ballast_csi::config::Nvmf {
        addr: "127.0.0.1".into(),
        advertise: None,
        port: free_port(),
    });
    let c = Csi::start(vec![n]).await;
    (d, c)
}

fn req(
    name: &str,
    mib: u64,
    params: &[(&str, &str)],
    key: Option<&str>,
) -> pb::CreateVolumeRequest {
    let mut r = create_req(name, mib * MIB, params);
    if let Some(k) = key {
        r.secrets.insert("encryptionKey".into(), k.into());
    }
    r
}

fn uuid_of(id: &str) -> String {
    id.rsplit(':').next().unwrap().to_string()
}

fn bdev(d: &Daemon, name: &str) -> Option<Value> {
    match d.call("bdev_get_bdevs", json!({ "name": name })) {
        Ok(v) => Some(v[0].clone()),
        Err((-19, _)) => None,
        Err(e) => panic!("bdev_get_bdevs {name}: {e:?}"),
    }
}

fn size(b: &Value) -> u64 {
    b["num_blocks"].as_u64().unwrap() * b["block_size"].as_u64().unwrap()
}

fn keys(d: &Daemon) -> Vec<String> {
    d.ok("accel_crypto_keys_get", Value::Null)
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect()
}

/// The names of every lvol of lvs0.
fn lvol_names(d: &Daemon) -> Vec<String> {
    d.ok("bdev_get_bdevs", Value::Null)
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| {
            b["aliases"][0]
                .as_str()?
                .strip_prefix("lvs0/")
                .map(String::from)
        })
        .collect()
}

fn publish_req(id: &str) -> pb::ControllerPublishVolumeRequest {
    pb::ControllerPublishVolumeRequest {
        volume_id: id.into(),
        node_id: HOST.into(),
        volume_capability: Some(mount_cap(Mode::SingleNodeWriter)),
        ..Default::default()
    }
}

/// Publishes `id` to HOST, returns the namespace's bdev, unpublishes.
async fn published_bdev(c: &mut Csi, d: &Daemon, id: &str) -> String {
    let ctx = c
        .ctrl
        .controller_publish_volume(publish_req(id))
        .await
        .expect("publish")
        .into_inner()
        .publish_context;
    let s = d.ok("nvmf_get_subsystems", json!({"nqn": ctx["nqn"]}));
    let b = s[0]["namespaces"][0]["bdev_name"]
        .as_str()
        .unwrap()
        .to_string();
    c.ctrl
        .controller_unpublish_volume(pb::ControllerUnpublishVolumeRequest {
            volume_id: id.into(),
            node_id: HOST.into(),
            ..Default::default()
        })
        .await
        .expect("unpublish");
    b
}

/// Writes `data` at block `lba` in pieces of 16 blocks (the host library's transfer size).
fn write(e: &Export, lba: u64, data: &[u8]) {
    for (i, c) in data.chunks(16 * BLOCK).enumerate() {
        e.write(lba + 16 * i as u64, c);
    }
}

/// Reads `blocks` blocks at `lba` in pieces of 16.
fn read(e: &Export, lba: u64, blocks: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in (0..blocks).step_by(16) {
        out.extend(e.read(lba + i as u64, 16.min(blocks - i)));
    }
    out
}

async fn delete(c: &mut Csi, id: &str) {
    c.ctrl
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("DeleteVolume");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Compressible blocks: text that repeats.
fn text(blocks: usize) -> Vec<u8> {
    let line = b"ballast csi stack test: the quick brown fox jumps over the lazy dog 0123456789\n";
    line.iter().copied().cycle().take(blocks * BLOCK).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_keys_are_checked_and_never_echoed() {
    let (_d, mut c) = setup().await;
    let enc = [("encryption", "true")];
    let (cd, m) = code(c.ctrl.create_volume(req("pvc-k", 8, &enc, None)).await);
    assert_eq!(cd, Code::InvalidArgument, "{m}");
    assert!(m.contains("encryptionKey"), "{m}");
    let short = &KEY[..40];
    let notehex = format!("{}zz", &KEY[..126]);
    let same = format!("{}{}", &KEY[..64], &KEY[..64]);
    for bad in [short, notehex.as_str(), same.as_str()] {
        let (cd, m) = code(c.ctrl.create_volume(req("pvc-k", 8, &enc, Some(bad))).await);
        assert_eq!(cd, Code::InvalidArgument, "{m}");
        assert!(!m.contains(&bad[..16]) && !m.contains(&KEY[64..80]), "{m}");
    }
    // Two secrets of unequal lengths.
    let mut r = req("pvc-k", 8, &enc, Some(&KEY[..64]));
    r.secrets
        .insert("encryptionKey2".into(), KEY[64..96].into());
    let (cd, m) = code(c.ctrl.create_volume(r).await);
    assert_eq!(cd, Code::InvalidArgument, "{m}");
    assert!(!m.contains(&KEY[..16]), "{m}");
    for (k, v) in [("compression", "gzip"), ("encryption", "yes")] {
        let (cd, m) = code(
            c.ctrl
                .create_volume(req("pvc-k", 8, &[(k, v)], Some(KEY)))
                .await,
        );
        assert_eq!(cd, Code::InvalidArgument, "{m}");
        assert!(m.contains(k), "{m}");
    }
    // Nothing was made.
    let l = lvol_names(&_d);
    assert!(l.is_empty(), "{l:?}");
    assert!(keys(&_d).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_volume_holds_ciphertext_and_goes_with_its_key() {
    let (d, mut c) = setup().await;
    let enc = [("encryption", "true")];
    let v = vol(c
        .ctrl
        .create_volume(req("pvc-e", 16, &enc, Some(KEY)))
        .await);
    let u = uuid_of(&v.volume_id);
    let crypto = format!("csi-e-{u}");
    assert_eq!(v.capacity_bytes as u64, 16 * MIB);
    assert_eq!(
        v.volume_context.get("encryption").map(String::as_str),
        Some("true")
    );
    let b = bdev(&d, &crypto).expect("crypto bdev");
    assert_eq!(b["driver_specific"]["crypto"]["base_bdev_name"], json!(u));
    assert_eq!(
        b["driver_specific"]["crypto"]["key_name"],
        json!(format!("csi-k-{u}"))
    );
    assert_eq!(keys(&d), vec![format!("csi-k-{u}")]);
    let names = lvol_names(&d);
    assert!(names.iter().any(|n| n.starts_with("csk-")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("cst-")), "{names:?}");

    // Idempotent; other parameters or another key: ALREADY_EXISTS (the key never shown).
    let again = vol(c
        .ctrl
        .create_volume(req("pvc-e", 16, &enc, Some(KEY)))
        .await);
    assert_eq!(again.volume_id, v.volume_id);
    assert_eq!(again.capacity_bytes, v.capacity_bytes);
    for (params, key) in [
        (&[("encryption", "true"), ("compression", "lz4")][..], KEY),
        (&[][..], KEY),
        (&enc[..], OTHER_KEY),
    ] {
        let (cd, m) = code(
            c.ctrl
                .create_volume(req("pvc-e", 16, params, Some(key)))
                .await,
        );
        assert_eq!(cd, Code::AlreadyExists, "{m}");
        assert!(
            !m.contains(&KEY[..16]) && !m.contains(&OTHER_KEY[..16]),
            "{m}"
        );
    }
    // Validate: the stack must match the parameters.
    let validate = |params: &[(&str, &str)]| pb::ValidateVolumeCapabilitiesRequest {
        volume_id: v.volume_id.clone(),
        volume_capabilities: rwo(),
        parameters: params
            .iter()
            .map(|(k, x)| (k.to_string(), x.to_string()))
            .collect(),
        ..Default::default()
    };
    let ok = c
        .ctrl
        .validate_volume_capabilities(validate(&enc))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some(), "{}", ok.message);
    let no = c
        .ctrl
        .validate_volume_capabilities(validate(&[]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        no.confirmed.is_none() && no.message.contains("encryption"),
        "{}",
        no.message
    );

    // Publish exports the top; data written there reads back.
    assert_eq!(published_bdev(&mut c, &d, &v.volume_id).await, crypto);
    let data = text(8);
    {
        let e = Export::new(&d, &crypto);
        write(&e, 0, &data);
        assert_eq!(read(&e, 0, 8), data);
    }

    // The stage is lost (a ballastd restarted without its saved config): never exported
    // bare, reported abnormal; the lvol holds ciphertext only.
    d.ok("bdev_crypto_delete", json!({ "name": crypto }));
    let (cd, m) = code(
        c.ctrl
            .controller_publish_volume(publish_req(&v.volume_id))
            .await,
    );
    assert_eq!(cd, Code::FailedPrecondition, "{m}");
    assert!(m.contains(&crypto), "{m}");
    let g = c
        .ctrl
        .controller_get_volume(pb::ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let cond = g.status.unwrap().volume_condition.unwrap();
    assert!(cond.abnormal && cond.message.contains(&crypto), "{cond:?}");
    {
        let e = Export::new(&d, &u);
        let raw = read(&e, 0, 8);
        assert_ne!(raw, data);
        assert!(!contains(&raw, b"quick brown fox"), "plaintext on the lvol");
    }
    // CreateVolume again completes the stack; the data is there through it.
    let again = vol(c
        .ctrl
        .create_volume(req("pvc-e", 16, &enc, Some(KEY)))
        .await);
    assert_eq!(again.volume_id, v.volume_id);
    assert!(bdev(&d, &crypto).is_some());
    {
        let e = Export::new(&d, &crypto);
        assert_eq!(read(&e, 0, 8), data);
    }

    // No growth for stacked volumes.
    let (cd, m) = code(
        c.ctrl
            .controller_expand_volume(pb::ControllerExpandVolumeRequest {
                volume_id: v.volume_id.clone(),
                capacity_range: Some(pb::CapacityRange {
                    required_bytes: (32 * MIB) as i64,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(cd, Code::FailedPrecondition, "{m}");

    // Delete: stage, key, lvol and record go.
    delete(&mut c, &v.volume_id).await;
    assert!(bdev(&d, &crypto).is_none());
    assert!(keys(&d).is_empty());
    let names = lvol_names(&d);
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_encrypted_volume_compresses_before_encrypting() {
    let (d, mut c) = setup().await;
    let both = [("encryption", "true"), ("compression", "lz4")];
    let v = vol(c
        .ctrl
        .create_volume(req("pvc-ez", 24, &both, Some(KEY)))
        .await);
    let u = uuid_of(&v.volume_id);
    let (crypto, comp) = (format!("csi-e-{u}"), format!("csi-z-{u}"));
    let top = bdev(&d, &comp).expect("compress bdev");
    assert_eq!(
        top["driver_specific"]["compress"]["base_bdev_name"],
        json!(crypto)
    );
    assert_eq!(
        top["driver_specific"]["compress"]["algorithm"],
        json!("lz4")
    );
    assert_eq!(v.capacity_bytes as u64, size(&top));
    assert!(v.capacity_bytes as u64 >= 24 * MIB);
    let lvol = bdev(&d, &u).unwrap();
    assert!(size(&lvol) > size(&top));
    assert_eq!(
        v.volume_context.get("compression").map(String::as_str),
        Some("lz4")
    );
    assert_eq!(
        v.volume_context.get("encryption").map(String::as_str),
        Some("true")
    );
    assert_eq!(published_bdev(&mut c, &d, &v.volume_id).await, comp);

    let data = text(256); // 1 MiB
    {
        let e = Export::new(&d, &comp);
        write(&e, 0, &data);
        assert_eq!(read(&e, 0, 256), data);
    }
    let s = &d.ok("bdev_compress_get_stats", json!({ "name": comp }))[0];
    let ratio = s["compression_ratio"].as_f64().unwrap();
    assert!(ratio > 2.0, "compression ratio {ratio}: {s}");

    // Underneath the stages: no plaintext on the lvol.
    d.ok("bdev_compress_delete", json!({ "name": comp }));
    d.ok("bdev_crypto_delete", json!({ "name": crypto }));
    {
        let e = Export::new(&d, &u);
        let raw = read(&e, 0, 512);
        assert!(!contains(&raw, b"quick brown fox"), "plaintext on the lvol");
    }
    // Completed by CreateVolume: the compressed volume is opened again through the key.
    let again = vol(c
        .ctrl
        .create_volume(req("pvc-ez", 24, &both, Some(KEY)))
        .await);
    assert_eq!(again.volume_id, v.volume_id);
    assert_eq!(again.capacity_bytes, v.capacity_bytes);
    {
        let e = Export::new(&d, &comp);
        assert_eq!(read(&e, 0, 256), data);
    }
    let (cd, m) = code(
        c.ctrl
            .create_volume(req(
                "pvc-ez",
                24,
                &[("encryption", "true"), ("compression", "zstd")],
                Some(KEY),
            ))
            .await,
    );
    assert_eq!(cd, Code::AlreadyExists, "{m}");

    delete(&mut c, &v.volume_id).await;
    assert!(bdev(&d, &comp).is_none() && bdev(&d, &crypto).is_none());
    assert!(keys(&d).is_empty());
    assert!(lvol_names(&d).is_empty(), "{:?}", lvol_names(&d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_volume_and_crash_leftovers() {
    let (d, mut c) = setup().await;
    let z = [("compression", "zstd")];
    // A stale intent of the name (a create cut short before its lvol) is replaced.
    let lname = "csi-pvc-z";
    let hash: String = <sha2::Sha256 as sha2::Digest>::digest(lname.as_bytes())
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect();
    d.ok(
        "bdev_lvol_create",
        json!({"lvol_name": format!("cst-{hash}-p-lz4"), "lvs_name": "lvs0",
               "size_in_mib": 4, "thin_provision": true}),
    );
    let v = vol(c.ctrl.create_volume(req("pvc-z", 20, &z, None)).await);
    let u = uuid_of(&v.volume_id);
    let comp = format!("csi-z-{u}");
    assert!(v.capacity_bytes as u64 >= 20 * MIB);
    assert!(!v.volume_context.contains_key("encryption"));
    assert_eq!(
        v.volume_context.get("compression").map(String::as_str),
        Some("zstd")
    );
    assert!(keys(&d).is_empty());
    let names = lvol_names(&d);
    let rec = names
        .iter()
        .find(|n| n.starts_with("csk-"))
        .expect("record")
        .clone();
    assert!(rec.ends_with("-p-zstd"), "{rec}");
    assert!(!names.iter().any(|n| n.starts_with("cst-")), "{names:?}");

    let data = text(64);
    {
        let e = Export::new(&d, &comp);
        write(&e, 16, &data);
    }
    let s = &d.ok("bdev_compress_get_stats", json!({ "name": comp }))[0];
    assert!(s["compression_ratio"].as_f64().unwrap() > 2.0, "{s}");

    // A crash after the lvol, before the commit: the record is still an intent and the stage
    // is missing. Not exported; the next CreateVolume commits and completes it.
    d.ok("bdev_compress_delete", json!({ "name": comp }));
    d.ok(
        "bdev_lvol_rename",
        json!({"old_name": format!("lvs0/{rec}"), "new_name": format!("cst-{hash}-p-zstd")}),
    );
    let (cd, m) = code(
        c.ctrl
            .controller_publish_volume(publish_req(&v.volume_id))
            .await,
    );
    assert_eq!(cd, Code::FailedPrecondition, "{m}");
    assert!(m.contains(&comp), "{m}");
    let again = vol(c.ctrl.create_volume(req("pvc-z", 20, &z, None)).await);
    assert_eq!(
        (again.volume_id.as_str(), again.capacity_bytes),
        (v.volume_id.as_str(), v.capacity_bytes)
    );
    assert!(lvol_names(&d).contains(&rec));
    {
        let e = Export::new(&d, &comp);
        assert_eq!(read(&e, 16, 64), data);
    }
    assert_eq!(published_bdev(&mut c, &d, &v.volume_id).await, comp);

    // ListVolumes reports the compressed capacity and context.
    let l = c
        .ctrl
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let e = l.entries[0].volume.as_ref().unwrap();
    assert_eq!(
        (
            e.capacity_bytes,
            e.volume_context.get("compression").cloned()
        ),
        (v.capacity_bytes, Some("zstd".into()))
    );

    delete(&mut c, &v.volume_id).await;
    assert!(bdev(&d, &comp).is_none());
    assert!(lvol_names(&d).is_empty(), "{:?}", lvol_names(&d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_stacked_volumes_are_refused_and_snapshots_work() {
    let (d, mut c) = setup().await;
    let enc = [("encryption", "true")];
    let v = vol(c.ctrl.create_volume(req("pvc-s", 8, &enc, Some(KEY))).await);
    let plain = vol(c.ctrl.create_volume(req("pvc-plain", 8, &[], None)).await);
    let snap = |name: &str, src: &str| pb::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: src.into(),
        ..Default::default()
    };
    let s = c
        .ctrl
        .create_snapshot(snap("snap-s", &v.volume_id))
        .await
        .expect("snapshot of an encrypted volume")
        .into_inner()
        .snapshot
        .unwrap();
    let ps = c
        .ctrl
        .create_snapshot(snap("snap-plain", &plain.volume_id))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    use pb::volume_content_source::{SnapshotSource, Type, VolumeSource};
    let from = |t: Type, params: &[(&str, &str)], key: Option<&str>| {
        let mut r = req("pvc-clone", 8, params, key);
        r.volume_content_source = Some(pb::VolumeContentSource { r#type: Some(t) });
        r
    };
    let snap_src = |id: &str| {
        Type::Snapshot(SnapshotSource {
            snapshot_id: id.into(),
        })
    };
    let vol_src = |id: &str| {
        Type::Volume(VolumeSource {
            volume_id: id.into(),
        })
    };
    for r in [
        from(snap_src(&s.snapshot_id), &[], None),
        from(vol_src(&v.volume_id), &[], None),
        from(snap_src(&ps.snapshot_id), &enc, Some(KEY)),
    ] {
        let (cd, m) = code(c.ctrl.create_volume(r).await);
        assert_eq!(cd, Code::InvalidArgument, "{m}");
        assert!(m.contains("not built yet"), "{m}");
    }
    // The volume deleted, its snapshot stays and is still refused as a source.
    delete(&mut c, &v.volume_id).await;
    assert!(keys(&d).is_empty());
    let (cd, m) = code(
        c.ctrl
            .create_volume(from(snap_src(&s.snapshot_id), &[], None))
            .await,
    );
    assert_eq!(cd, Code::InvalidArgument, "{m}");
    // A plain snapshot still clones.
    vol(c
        .ctrl
        .create_volume(from(snap_src(&ps.snapshot_id), &[], None))
        .await);
}
