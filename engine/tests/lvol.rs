//! Logical volumes: the shared conformance body on thick, thin, clone and
//! snapshot-then-written lvols; snapshots frozen while their origin changes; clones diverging;
//! delete merging; resize; a full pool; 1000 lvols; unload and examine bring everything back;
//! the metadata checker.

mod common;

use ballast_engine::backend::lvol::{self, ClearMethod, LvsOpts};
use ballast_engine::backend::uring;
use ballast_engine::{bdev, Error, IoStatus, IoType};
use common::{
    conformance, conformance_from, lend_read, lend_read_keep, malloc_named, release_kept, Harness,
    Model,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CL: u64 = 16 * 1024;

fn store(h: &Harness, base: &str, lvs: &str, cluster: u64) -> lvol::LvsInfo {
    lvol::create_lvstore(
        &h.rt.handle(),
        &LvsOpts {
            bdev_name: base.into(),
            lvs_name: lvs.into(),
            cluster_sz: Some(cluster),
            clear_method: ClearMethod::Unmap,
        },
    )
    .unwrap()
}

fn mk(lvs: &str, name: &str, bytes: u64, thin: bool) -> String {
    lvol::create_lvol(None, Some(lvs), name, bytes, thin, ClearMethod::Unmap)
        .unwrap()
        .uuid
        .to_string()
}

/// Asserts `got == want` (naming the first differing byte, not printing megabytes).
#[track_caller]
fn same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: byte {i} is {:#x}, want {:#x}", got[i], want[i]);
    }
}

/// Reads all of bdev `name`.
fn read_all(h: &Harness, name: &str) -> Vec<u8> {
    let b = bdev::lookup(name).unwrap();
    let (bs, nb) = (b.block_size() as u64, b.num_blocks());
    let mut out = Vec::new();
    let mut off = 0;
    while off < nb {
        let n = 256.min(nb - off);
        let (st, got) = h.io(0, name, IoType::Read, off, n, None, (n * bs) as usize, None);
        assert_eq!(st, IoStatus::Success, "{name}: read {off}+{n}");
        out.extend(got);
        off += n;
    }
    out
}

/// Writes random data over random ranges of `name` and into `model`.
fn scribble(h: &Harness, name: &str, model: &mut [u8], seed: u64, n_ops: usize) {
    let b = bdev::lookup(name).unwrap();
    let (bs, nb) = (b.block_size() as usize, b.num_blocks());
    let mut rng = SmallRng::seed_from_u64(seed);
    for _ in 0..n_ops {
        let n = rng.gen_range(1..=80u64.min(nb));
        let off = rng.gen_range(0..=nb - n);
        let mut data = vec![0u8; n as usize * bs];
        rng.fill(&mut data[..]);
        let (st, _) = h.io(0, name, IoType::Write, off, n, Some(data.clone()), 0, None);
        assert_eq!(st, IoStatus::Success);
        model[off as usize * bs..(off + n) as usize * bs].copy_from_slice(&data);
    }
}

#[test]
fn conformance_thick_thin_clone_and_snapshotted_origin() {
    let h = Harness::new(2);
    malloc_named("lv_conf_base", 512, 64 * 1024);
    let info = store(&h, "lv_conf_base", "lvc", CL);
    assert_eq!(info.cluster_size, CL);
    let thick = mk("lvc", "thick", 2 << 20, false);
    conformance(&h, &thick, Model::Persistent, 11);
    let thin = mk("lvc", "thin", 2 << 20, true);
    conformance(&h, &thin, Model::Persistent, 12);

    // An lvol written, then snapshotted: the origin (now a clone) keeps its content and
    // passes the body; the snapshot keeps the content of the snapshot moment.
    let origin = mk("lvc", "origin", 1 << 20, true);
    let mut model = vec![0u8; 1 << 20];
    scribble(&h, &origin, &mut model, 13, 60);
    let snap = lvol::snapshot("lvc/origin", "snap").unwrap();
    assert!(snap.is_snapshot && snap.read_only);
    conformance_from(&h, &origin, Model::Persistent, 14, Some(model.clone()));
    same(
        &read_all(&h, &snap.uuid.to_string()),
        &model,
        "snapshot changed",
    );

    // A clone of the snapshot starts with its content and goes its own way.
    let clone = lvol::clone("lvc/snap", "clone").unwrap();
    assert!(clone.is_clone && clone.thin);
    assert_eq!(clone.base_snapshot.as_deref(), Some("snap"));
    conformance_from(
        &h,
        &clone.uuid.to_string(),
        Model::Persistent,
        15,
        Some(model.clone()),
    );
    same(
        &read_all(&h, &snap.uuid.to_string()),
        &model,
        "snapshot changed by its clone",
    );
    // Writes to a snapshot are refused.
    let (st, _) = h.io(
        0,
        "lvc/snap",
        IoType::Write,
        0,
        1,
        Some(vec![1; 512]),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Failed(libc::EROFS));
    let rep = lvol::check(&h.rt.handle(), "lv_conf_base").unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    h.close_channels();
}

#[test]
fn conformance_thin_over_a_file_with_4k_blocks() {
    let h = Harness::new(2);
    let path = std::env::temp_dir().join(format!("ballast-lv-conf-{}.img", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    uring::create(uring::UringOpts {
        name: "lv_conf_file".into(),
        filename: path.to_string_lossy().into_owned(),
        block_size: 4096,
        uuid: None,
    })
    .unwrap();
    store(&h, "lv_conf_file", "lvf", 64 * 1024);
    let thin = mk("lvf", "thin", 4 << 20, true);
    conformance(&h, &thin, Model::Persistent, 21);
    h.close_channels();
    lvol::delete_lvstore(None, Some("lvf")).unwrap();
    bdev::delete("lv_conf_file").unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn snapshots_stay_frozen_clones_diverge_and_delete_merges() {
    let h = Harness::new(1);
    malloc_named("lv_snap_base", 512, 32 * 1024);
    store(&h, "lv_snap_base", "lvs_s", CL);
    let a = mk("lvs_s", "a", 512 << 10, true);
    let mut m0 = vec![0u8; 512 << 10];
    scribble(&h, &a, &mut m0, 1, 40);
    let s1 = lvol::snapshot(&a, "s1").unwrap().uuid.to_string();
    let mut m1 = m0.clone();
    scribble(&h, &a, &mut m1, 2, 40);
    let s2 = lvol::snapshot(&a, "s2").unwrap().uuid.to_string();
    let mut m2 = m1.clone();
    scribble(&h, &a, &mut m2, 3, 40);
    same(&read_all(&h, &s1), &m0, "&s1");
    same(&read_all(&h, &s2), &m1, "&s2");
    same(&read_all(&h, &a), &m2, "&a");

    // Two clones of s1 diverge independently.
    let c1 = lvol::clone(&s1, "c1").unwrap().uuid.to_string();
    let c2 = lvol::clone(&s1, "c2").unwrap().uuid.to_string();
    let (mut mc1, mut mc2) = (m0.clone(), m0.clone());
    scribble(&h, &c1, &mut mc1, 4, 30);
    scribble(&h, &c2, &mut mc2, 5, 30);
    same(&read_all(&h, &c1), &mc1, "&c1");
    same(&read_all(&h, &c2), &mc2, "&c2");
    same(&read_all(&h, &s1), &m0, "&s1");

    // s1 has three clones now (s2, c1, c2): refused.
    let e = lvol::delete_lvol(&s1).unwrap_err();
    assert!(e.to_string().contains("clones"), "{e}");
    h.close_channels();
    lvol::delete_lvol(&c1).unwrap();
    lvol::delete_lvol(&c2).unwrap();
    // s2 has one clone (a): deleting it merges it into a, whose content stays.
    let before = lvol::get_lvstores(None, Some("lvs_s")).unwrap()[0].free_clusters;
    lvol::delete_lvol(&s2).unwrap();
    same(&read_all(&h, &a), &m2, "&a");
    let info = lvol::lvol_info(&a).unwrap();
    assert_eq!(info.base_snapshot.as_deref(), Some("s1"));
    let after = lvol::get_lvstores(None, Some("lvs_s")).unwrap()[0].free_clusters;
    assert!(
        after >= before,
        "merge freed nothing it should keep: {before} -> {after}"
    );
    // Inflate: a owns every cluster, no parent; s1 then has no clones and goes.
    lvol::inflate(&a).unwrap();
    let info = lvol::lvol_info(&a).unwrap();
    assert!(!info.is_clone && !info.thin);
    assert_eq!(info.num_allocated_clusters, (512 << 10) / CL);
    same(&read_all(&h, &a), &m2, "&a");
    h.close_channels();
    lvol::delete_lvol(&s1).unwrap();
    same(&read_all(&h, &a), &m2, "&a");
    let rep = lvol::check(&h.rt.handle(), "lv_snap_base").unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(rep.lvols, 1);
    h.close_channels();
}

#[test]
fn decouple_keeps_content_and_thin_clusters() {
    let h = Harness::new(1);
    malloc_named("lv_dec_base", 512, 16 * 1024);
    store(&h, "lv_dec_base", "lvs_d", CL);
    let a = mk("lvs_d", "a", 256 << 10, true);
    let mut m = vec![0u8; 256 << 10];
    // Only the first half written: the second stays thin through decouple.
    let (st, _) = h.io(
        0,
        &a,
        IoType::Write,
        0,
        64,
        Some(vec![7; 64 * 512]),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    m[..64 * 512].fill(7);
    let s = lvol::snapshot(&a, "s").unwrap();
    let c = lvol::clone("lvs_d/s", "c").unwrap().uuid.to_string();
    lvol::decouple_parent(&c).unwrap();
    let info = lvol::lvol_info(&c).unwrap();
    assert!(!info.is_clone);
    assert!(info.thin);
    assert_eq!(info.num_allocated_clusters, 2);
    same(&read_all(&h, &c), &m, "&c");
    assert!(lvol::decouple_parent(&c).is_err(), "no parent left");
    assert_eq!(
        lvol::lvol_info(&s.uuid.to_string()).unwrap().clones,
        vec!["a".to_string()]
    );
    h.close_channels();
}

#[test]
fn a_full_pool_fails_writes_with_enospc_and_neighbours_carry_on() {
    let h = Harness::new(1);
    // 2 MiB of data clusters (plus metadata) in 64 KiB clusters.
    malloc_named("lv_full_base", 512, 8 * 1024);
    let info = store(&h, "lv_full_base", "lvs_f", 64 * 1024);
    let total = info.total_data_clusters;
    let thick = mk("lvs_f", "thick", 4 * 64 * 1024, false);
    let big = mk("lvs_f", "big", 1 << 30, true);
    assert!(lvol::create_lvol(
        None,
        Some("lvs_f"),
        "huge",
        1 << 40,
        false,
        ClearMethod::None
    )
    .unwrap_err()
    .to_string()
    .contains("free clusters"));
    let mut full = false;
    for c in 0..total + 2 {
        let (st, _) = h.io(
            0,
            &big,
            IoType::Write,
            c * 128,
            1,
            Some(vec![9; 512]),
            0,
            None,
        );
        if st == IoStatus::Failed(libc::ENOSPC) {
            full = true;
            assert_eq!(c, total - 4, "wrote until the pool was full");
            break;
        }
        assert_eq!(st, IoStatus::Success);
    }
    assert!(full, "the pool never filled");
    // Written clusters of the full volume and the thick neighbour still work.
    let (st, _) = h.io(
        0,
        &big,
        IoType::Write,
        0,
        8,
        Some(vec![3; 8 * 512]),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    let (st, _) = h.io(
        0,
        &thick,
        IoType::Write,
        0,
        8,
        Some(vec![4; 8 * 512]),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    let (_, got) = h.io(0, &big, IoType::Read, 0, 8, None, 8 * 512, None);
    assert!(got.iter().all(|&b| b == 3));
    // Inflating a clone that needs more than is free is refused before anything is copied.
    lvol::resize(&big, (total - 6) * 64 * 1024).unwrap();
    let free = || lvol::get_lvstores(None, Some("lvs_f")).unwrap()[0].free_clusters;
    assert_eq!(free(), 2);
    lvol::snapshot(&thick, "ts").unwrap();
    let e = lvol::inflate(&thick).unwrap_err();
    assert!(matches!(e, Error::NoSpace(_)), "{e}");
    assert_eq!(lvol::lvol_info(&thick).unwrap().num_allocated_clusters, 0);
    assert_eq!(free(), 2);
    // Deleting the thin volume gives its clusters back, cleared.
    h.close_channels();
    lvol::delete_lvol(&big).unwrap();
    assert_eq!(
        lvol::get_lvstores(None, Some("lvs_f")).unwrap()[0].free_clusters,
        total - 4
    );
    let again = mk("lvs_f", "again", 1 << 20, false);
    assert!(
        read_all(&h, &again).iter().all(|&b| b == 0),
        "freed clusters not cleared"
    );
    h.close_channels();
}

#[test]
fn resize_grows_and_shrinks_the_bdev() {
    let h = Harness::new(1);
    malloc_named("lv_rs_base", 512, 16 * 1024);
    store(&h, "lv_rs_base", "lvs_r", CL);
    let a = mk("lvs_r", "a", 100 << 10, true);
    let b = bdev::lookup(&a).unwrap();
    assert_eq!(b.num_blocks() * 512, 112 << 10, "rounded up to clusters");
    let (st, _) = h.io(0, &a, IoType::Write, 200, 8, Some(vec![5; 4096]), 0, None);
    assert_eq!(st, IoStatus::Success);
    lvol::resize(&a, 1 << 20).unwrap();
    assert_eq!(b.num_blocks(), 2048);
    let (st, _) = h.io(0, &a, IoType::Write, 2000, 8, Some(vec![6; 4096]), 0, None);
    assert_eq!(st, IoStatus::Success);
    lvol::resize(&a, 112 << 10).unwrap();
    assert_eq!(b.num_blocks(), 224);
    let (st, _) = h.io(0, &a, IoType::Read, 2000, 8, None, 4096, None);
    assert_eq!(st, IoStatus::OutOfRange);
    let (_, got) = h.io(0, &a, IoType::Read, 200, 8, None, 4096, None);
    assert!(got.iter().all(|&x| x == 5));
    assert_eq!(lvol::lvol_info(&a).unwrap().num_allocated_clusters, 1);
    // Growing back reads zeros where the shrink cut.
    lvol::resize(&a, 1 << 20).unwrap();
    let (_, got) = h.io(0, &a, IoType::Read, 2000, 8, None, 4096, None);
    assert!(got.iter().all(|&x| x == 0));
    let s = lvol::snapshot(&a, "s").unwrap();
    assert!(
        lvol::resize(&s.uuid.to_string(), 2 << 20).is_err(),
        "snapshots are read-only"
    );
    // Beyond what an lvol can hold: refused as a bad size, nothing changes.
    for e in [
        lvol::resize(&a, u64::MAX).unwrap_err(),
        lvol::create_lvol(
            None,
            Some("lvs_r"),
            "huge",
            u64::MAX,
            true,
            ClearMethod::Unmap,
        )
        .unwrap_err(),
    ] {
        assert!(matches!(e, Error::InvalidParam { .. }), "{e}");
    }
    assert_eq!(b.num_blocks(), 2048);
    h.close_channels();
}

#[test]
fn a_shrink_is_refused_under_a_stage_and_io_beyond_the_new_end_fails() {
    use ballast_engine::backend::crypto;
    let h = Harness::new(1);
    malloc_named("lv_sh_base", 512, 16 * 1024);
    store(&h, "lv_sh_base", "lvs_sh", CL);
    let a = mk("lvs_sh", "a", 1 << 20, true);
    let k1: Vec<u8> = (0..32u8).collect();
    let k2: Vec<u8> = (0..32u8).map(|x| x ^ 0x33).collect();
    crypto::key_create("lv_sh_key", "AES_XTS", &k1, &k2).unwrap();
    crypto::create("lv_sh_crypt", &a, "lv_sh_key").unwrap();
    // The stage sized itself by the lvol: shrinking under it is refused, growing is not.
    let e = lvol::resize(&a, 512 << 10).unwrap_err();
    assert!(matches!(e, Error::Claimed { .. }), "{e}");
    assert_eq!(bdev::lookup(&a).unwrap().num_blocks(), 2048);
    lvol::resize(&a, 2 << 20).unwrap();
    assert_eq!(bdev::lookup(&a).unwrap().num_blocks(), 4096);
    h.close_channels();
    bdev::delete("lv_sh_crypt").unwrap();
    // Unclaimed: the shrink holds at the channel too (I/O there past the new end fails).
    lvol::resize(&a, 512 << 10).unwrap();
    let b = bdev::lookup(&a).unwrap();
    assert_eq!(b.num_blocks(), 1024);
    let (st, _) = h.io(0, &a, IoType::Write, 1020, 8, Some(vec![1; 4096]), 0, None);
    assert_eq!(st, IoStatus::OutOfRange);
    let (st, _) = h.io(0, &a, IoType::Write, 1016, 8, Some(vec![1; 4096]), 0, None);
    assert_eq!(st, IoStatus::Success);
    let rep = lvol::check(&h.rt.handle(), "lv_sh_base").unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    h.close_channels();
}

#[test]
fn names_renames_and_bad_requests() {
    let h = Harness::new(1);
    malloc_named("lv_nm_base", 512, 16 * 1024);
    malloc_named("lv_nm_other", 512, 1024);
    store(&h, "lv_nm_base", "lvs_n", CL);
    let a = mk("lvs_n", "a", 64 << 10, true);
    let w = mk("lvs_n", "w", 64 << 10, true);
    // A snapshot of a snapshot is refused (clone it instead).
    let snap = lvol::snapshot(&w, "snap").unwrap().uuid.to_string();
    assert!(bdev::lookup("lvs_n/a").is_some());
    lvol::rename("lvs_n/a", "b").unwrap();
    assert!(bdev::lookup("lvs_n/a").is_none());
    assert!(bdev::lookup("lvs_n/b").is_some());
    lvol::rename_lvstore("lvs_n", "lvs_m").unwrap();
    assert!(bdev::lookup("lvs_m/b").is_some());
    assert_eq!(lvol::lvol_info(&a).unwrap().alias, "lvs_m/b");
    let bad = [
        lvol::create_lvol(None, Some("lvs_m"), "b", 1, true, ClearMethod::Unmap).err(),
        lvol::create_lvol(None, Some("lvs_m"), "x/y", 1, true, ClearMethod::Unmap).err(),
        lvol::create_lvol(None, Some("lvs_m"), "", 1, true, ClearMethod::Unmap).err(),
        lvol::create_lvol(None, Some("lvs_m"), "z", 0, true, ClearMethod::Unmap).err(),
        lvol::create_lvol(None, Some("nope"), "z", 1, true, ClearMethod::Unmap).err(),
        lvol::create_lvol(Some("x"), Some("lvs_m"), "z", 1, true, ClearMethod::Unmap).err(),
        lvol::delete_lvol("lv_nm_other").err(),
        lvol::delete_lvol("nope").err(),
        lvol::clone(&a, "c").err(),
        lvol::snapshot(&a, "b").err(),
        lvol::snapshot(&snap, "snap2").err(),
        lvol::get_lvstores(None, Some("nope")).err(),
    ];
    for (i, e) in bad.iter().enumerate() {
        assert!(e.is_some(), "bad request {i} accepted");
    }
    assert!(bad[6]
        .as_ref()
        .unwrap()
        .to_string()
        .contains("not a logical volume"));
    // A second store on a claimed bdev, a store on an lvol: refused.
    let dup = LvsOpts {
        bdev_name: "lv_nm_base".into(),
        lvs_name: "again".into(),
        cluster_sz: None,
        clear_method: ClearMethod::None,
    };
    assert!(lvol::create_lvstore(&h.rt.handle(), &dup).is_err());
    let on_lvol = LvsOpts {
        bdev_name: a.clone(),
        ..dup
    };
    assert!(lvol::create_lvstore(&h.rt.handle(), &on_lvol).is_err());
    // The store's base cannot be deleted under it; the store with an lvol in use neither.
    assert!(bdev::delete("lv_nm_base").is_err());
    lvol::delete_lvstore(None, Some("lvs_m")).unwrap();
    assert!(bdev::lookup(&a).is_none());
    assert!(
        !lvol::examine(&h.rt.handle(), "lv_nm_base").unwrap(),
        "erased"
    );
    bdev::delete("lv_nm_base").unwrap();
}

#[test]
fn a_thousand_lvols_and_back_after_unload() {
    let h = Harness::new(1);
    malloc_named("lv_many_base", 4096, 64 * 1024);
    store(&h, "lv_many_base", "lvs_k", 64 * 1024);
    let t0 = std::time::Instant::now();
    let mut ids = Vec::new();
    for i in 0..1000 {
        ids.push(mk("lvs_k", &format!("v{i}"), 1 << 30, true));
    }
    eprintln!("1000 thin lvols created in {:?}", t0.elapsed());
    assert_eq!(lvol::get_lvols(None, Some("lvs_k")).unwrap().len(), 1000);
    // Some data, a snapshot and a resize, then unload and examine.
    let (st, _) = h.io(
        0,
        &ids[7],
        IoType::Write,
        9,
        2,
        Some(vec![0x77; 8192]),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    lvol::snapshot(&ids[7], "snap7").unwrap();
    lvol::resize(&ids[8], 2 << 30).unwrap();
    lvol::delete_lvol(&ids[9]).unwrap();
    h.close_channels();
    let mem = lvol::lvstore_mem_bytes(None, Some("lvs_k")).unwrap();
    eprintln!("metadata memory of 1001 lvols: {mem} bytes");
    lvol::unload_lvstore(None, Some("lvs_k")).unwrap();
    assert!(bdev::lookup(&ids[7]).is_none());
    assert!(lvol::examine(&h.rt.handle(), "lv_many_base").unwrap());
    let lv = lvol::get_lvols(None, Some("lvs_k")).unwrap();
    assert_eq!(lv.len(), 1000);
    let (_, got) = h.io(0, &ids[7], IoType::Read, 9, 2, None, 8192, None);
    assert!(got.iter().all(|&b| b == 0x77));
    let (_, got) = h.io(0, "lvs_k/snap7", IoType::Read, 9, 2, None, 8192, None);
    assert!(got.iter().all(|&b| b == 0x77));
    assert_eq!(bdev::lookup(&ids[8]).unwrap().num_blocks() * 4096, 2 << 30);
    assert!(bdev::lookup(&ids[9]).is_none());
    let rep = lvol::check(&h.rt.handle(), "lv_many_base").unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(rep.lvols, 1000);
    h.close_channels();
}

#[test]
fn damaged_metadata_is_reported_not_trusted() {
    let h = Harness::new(1);
    malloc_named("lv_bad_base", 512, 16 * 1024);
    store(&h, "lv_bad_base", "lvs_b", CL);
    let a = mk("lvs_b", "a", 64 << 10, false);
    let _ = a;
    lvol::unload_lvstore(None, Some("lvs_b")).unwrap();
    // Flip a byte in each superblock slot through the bdev: examine refuses, check reports.
    for slot in 0..2u64 {
        let (st, mut blk) = h.io(0, "lv_bad_base", IoType::Read, slot * 8, 1, None, 512, None);
        assert_eq!(st, IoStatus::Success);
        blk[20] ^= 0xFF;
        let (st, _) = h.io(
            0,
            "lv_bad_base",
            IoType::Write,
            slot * 8,
            1,
            Some(blk),
            0,
            None,
        );
        assert_eq!(st, IoStatus::Success);
    }
    h.close_channels();
    let e = lvol::examine(&h.rt.handle(), "lv_bad_base").unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
    let rep = lvol::check(&h.rt.handle(), "lv_bad_base").unwrap();
    assert!(!rep.errors.is_empty());
    assert!(lvol::get_lvstores(None, Some("lvs_b")).is_err());
}

#[test]
fn lvols_under_stages_and_as_mirror_children() {
    use ballast_engine::backend::{crypto, mirror};
    let h = Harness::new(2);
    malloc_named("lv_stg_a", 512, 32 * 1024);
    malloc_named("lv_stg_b", 512, 32 * 1024);
    store(&h, "lv_stg_a", "lvs_sa", CL);
    store(&h, "lv_stg_b", "lvs_sb", CL);
    // A mirror over a thin lvol of each store (two "nodes"), passing the body.
    let a = mk("lvs_sa", "m0", 4 << 20, true);
    let b = mk("lvs_sb", "m1", 4 << 20, true);
    mirror::create(
        &h.rt.handle(),
        mirror::MirrorOpts {
            name: "lv_mirror".into(),
            children: vec![a.clone(), b.clone()],
            uuid: None,
            region_bytes: None,
        },
    )
    .unwrap();
    conformance(&h, "lv_mirror", Model::Persistent, 31);
    // An encrypted volume (crypto over a thin lvol), snapshotted and cloned: the clone,
    // under the same key, starts with the volume's data and passes the body.
    let c = mk("lvs_sa", "plain", 1 << 20, true);
    let k1: Vec<u8> = (0..32u8).collect();
    let k2: Vec<u8> = (0..32u8).map(|x| x ^ 0x5A).collect();
    crypto::key_create("lv_stg_key", "AES_XTS", &k1, &k2).unwrap();
    crypto::create("lv_crypt0", &c, "lv_stg_key").unwrap();
    let mut m = vec![0u8; 1 << 20];
    scribble(&h, "lv_crypt0", &mut m, 32, 20);
    h.close_channels();
    bdev::delete("lv_crypt0").unwrap();
    lvol::snapshot(&c, "ps").unwrap();
    let cl = lvol::clone("lvs_sa/ps", "pc").unwrap().uuid.to_string();
    crypto::create("lv_crypt", &cl, "lv_stg_key").unwrap();
    conformance_from(&h, "lv_crypt", Model::Persistent, 33, Some(m));
    // The stages claim their lvols: deleting them is refused.
    assert!(lvol::delete_lvol(&a).is_err());
    assert!(lvol::delete_lvol(&cl).is_err());
    for s in ["lv_stg_a", "lv_stg_b"] {
        let rep = lvol::check(&h.rt.handle(), s).unwrap();
        assert!(rep.errors.is_empty(), "{s}: {:?}", rep.errors);
    }
    h.close_channels();
}

/// A uring bdev `name` with 512-byte blocks over `path`.
fn uring_on(name: &str, path: &std::path::Path) {
    uring::create(uring::UringOpts {
        name: name.into(),
        filename: path.to_string_lossy().into_owned(),
        block_size: 512,
        uuid: None,
    })
    .unwrap();
}

#[test]
fn a_second_path_to_an_open_store_is_refused_untouched() {
    // Two bdevs over one file (as two controllers to one namespace): examining the second
    // must not write the live store's metadata (it once checkpointed into it, and what the
    // live store committed afterwards was lost at the next crash).
    let h = Harness::new(1);
    let dir = std::env::temp_dir();
    let path = dir.join(format!("ballast-lv-2path-{}.img", std::process::id()));
    let copy = dir.join(format!("ballast-lv-2path-{}-crash.img", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    uring_on("lv_2p_a", &path);
    store(&h, "lv_2p_a", "lvs_2p", 64 * 1024);
    let v1 = mk("lvs_2p", "v1", 1 << 20, true);
    let before = std::fs::read(&path).unwrap();
    uring_on("lv_2p_b", &path);
    let e = lvol::examine(&h.rt.handle(), "lv_2p_b").unwrap_err();
    assert!(e.to_string().contains("is open on lv_2p_a"), "{e}");
    let after = std::fs::read(&path).unwrap();
    assert!(
        before == after,
        "the second path's examine wrote the live store"
    );
    // The live store goes on; a crash image then holds all of it.
    mk("lvs_2p", "v2", 1 << 20, true);
    let (st, _) = h.io(0, &v1, IoType::Write, 0, 8, Some(vec![0x5a; 4096]), 0, None);
    assert_eq!(st, IoStatus::Success);
    let (st, _) = h.io(0, &v1, IoType::Flush, 0, 0, None, 0, None);
    assert_eq!(st, IoStatus::Success);
    std::fs::copy(&path, &copy).unwrap();
    uring_on("lv_2p_c", &copy);
    let rep = lvol::check(&h.rt.handle(), "lv_2p_c").unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!((rep.lvols, rep.used_clusters), (2, 1));
    h.close_channels();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&copy);
}

#[test]
fn reads_lend_the_base_memory_and_no_cluster_is_freed_under_a_window() {
    let h = Harness::new(1);
    malloc_named("lv_lend_base", 512, 16 * 1024);
    store(&h, "lv_lend_base", "lvs_l", CL);
    let a = mk("lvs_l", "a", 4 * CL, true);
    let bpc = CL / 512;
    let data: Vec<u8> = (0..2 * CL).map(|i| (i % 251) as u8).collect();
    let (st, _) = h.io(
        0,
        &a,
        IoType::Write,
        0,
        2 * bpc,
        Some(data.clone()),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    // One allocated cluster: a window on the base (lent, no copy), same address each time.
    let (st, n, lent, addr, got) = lend_read(&h, &a, IoType::Read, 8, 8, false);
    assert_eq!((st, n, lent), (IoStatus::Success, 1, true));
    same(&got, &data[8 * 512..16 * 512], "lent read");
    assert_eq!(lend_read(&h, &a, IoType::Read, 8, 8, false).3, addr);
    // Unallocated: lent zeros; across clusters: one buffer with both pieces.
    let (st, n, lent, _, z) = lend_read(&h, &a, IoType::Read, 2 * bpc, 16, false);
    assert_eq!((st, n, lent), (IoStatus::Success, 1, true));
    assert!(z.iter().all(|&b| b == 0));
    let (st, n, _, _, got) = lend_read(&h, &a, IoType::Read, bpc - 4, 8, false);
    assert_eq!((st, n), (IoStatus::Success, 1));
    same(
        &got,
        &data[(bpc as usize - 4) * 512..(bpc as usize + 4) * 512],
        "across",
    );
    let (st, n, _, _, got) = lend_read(&h, &a, IoType::Read, 2 * bpc - 4, 8, false);
    assert_eq!((st, n), (IoStatus::Success, 1));
    assert!(got[..2048] == data[2 * CL as usize - 2048..] && got[2048..].iter().all(|&b| b == 0));
    // A window still out (a host that has not read its socket yet): the lvol's clusters are
    // not cleared or freed under it; the delete finishes once the window is back.
    let (st, held) = lend_read_keep(&h, &a, 0, 8);
    assert_eq!(st, IoStatus::Success);
    h.close_channels();
    let del = {
        let a = a.clone();
        std::thread::spawn(move || lvol::delete_lvol(&a))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!del.is_finished(), "deleted under a lent window");
    let free = lvol::get_lvstores(None, Some("lvs_l")).unwrap()[0].free_clusters;
    release_kept(&h);
    del.join().unwrap().unwrap();
    assert_eq!(
        lvol::get_lvstores(None, Some("lvs_l")).unwrap()[0].free_clusters,
        free + 2
    );
    assert_eq!(held, data[..8 * 512]);
    h.close_channels();
}
