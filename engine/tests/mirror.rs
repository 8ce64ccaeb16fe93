//! The mirror stage: conformance over 2 and 3 children (and the children identical after it),
//! faults driven by the error bdev (a write error faults the child durably before the write is
//! acknowledged; a read error is retried on another child), the last child's loss fails I/O
//! instead of hanging, and reassembly from the superblocks.

mod common;

use std::time::Duration;

use ballast_engine::backend::error::{self, ErrorKind, Injection};
use ballast_engine::backend::mirror::{self, MemberState, MirrorOpts, Superblock, META_BYTES};
use ballast_engine::{bdev, IoStatus, IoType};
use common::{conformance, malloc_named, Harness, Model};

const BS: u32 = 512;
/// Child size: 1 MiB of metadata and 2 MiB of data.
const CHILD_BLOCKS: u64 = (3 << 20) / BS as u64;

use common::mirror_over as mirror;

/// A child's own superblock (read from the child, beside the mirror).
fn superblock(h: &Harness, child: &str) -> Option<Superblock> {
    let (st, b) = h.io(0, child, IoType::Read, 0, 16, None, 8192, None);
    assert_eq!(st, IoStatus::Success);
    Superblock::newest(&b[..4096], &b[4096..])
}

/// The data area of `child` (what the mirror stores there).
fn data(h: &Harness, child: &str, blocks: u64) -> Vec<u8> {
    let off = META_BYTES / BS as u64;
    let (st, b) = h.io(
        1,
        child,
        IoType::Read,
        off,
        blocks,
        None,
        (blocks * BS as u64) as usize,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    b
}

#[test]
fn two_and_three_way_mirrors_pass_conformance_and_end_identical() {
    let h = Harness::new(2);
    for (n, name) in [(2, "mconf2"), (3, "mconf3")] {
        let kids: Vec<String> = (0..n).map(|i| format!("{name}_c{i}")).collect();
        for k in &kids {
            malloc_named(k, BS, CHILD_BLOCKS);
        }
        let refs: Vec<&str> = kids.iter().map(String::as_str).collect();
        mirror(&h, name, &refs);
        let b = bdev::lookup(name).unwrap();
        assert_eq!(b.num_blocks(), CHILD_BLOCKS - META_BYTES / BS as u64);
        conformance(&h, name, Model::Persistent, 21 + n as u64);
        let first = data(&h, &kids[0], b.num_blocks());
        for k in &kids[1..] {
            assert!(
                data(&h, k, b.num_blocks()) == first,
                "{k} differs from {}",
                kids[0]
            );
        }
        let sb = superblock(&h, &kids[0]).expect("superblock");
        assert_eq!(sb.generation, 1);
        assert!(sb.members.iter().all(|m| m.state == MemberState::InSync));
    }
}

#[test]
fn a_write_error_faults_the_child_on_disk_before_the_write_is_acknowledged() {
    let h = Harness::new(2);
    for c in ["mf_a", "mf_b", "mf_c"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    error::create("mf_a", None).unwrap();
    mirror(&h, "mf", &["EE_mf_a", "mf_b", "mf_c"]);
    let block = |v: u8| vec![v; BS as usize];
    let write = |off, v| {
        h.io(0, "mf", IoType::Write, off, 1, Some(block(v)), 0, None)
            .0
    };
    let read = |core, off| h.io(core, "mf", IoType::Read, off, 1, None, BS as usize, None);

    assert_eq!(write(5, 0x11), IoStatus::Success);
    error::inject(
        "EE_mf_a",
        Some(IoType::Write),
        Injection::new(ErrorKind::Failure, 1),
    )
    .unwrap();
    assert_eq!(write(5, 0x22), IoStatus::Success, "two children hold it");
    // Acknowledged: so the survivors' superblocks already say the first child is out.
    for c in ["mf_b", "mf_c"] {
        let sb = superblock(&h, c).unwrap();
        assert_eq!(sb.generation, 2, "{c}");
        assert_eq!(sb.members[0].state, MemberState::Faulted, "{c}");
        assert_eq!(sb.members[1].state, MemberState::InSync, "{c}");
    }
    // The faulted child got no new superblock (it still holds generation 1) and not the
    // data; it is never read from again.
    assert_eq!(superblock(&h, "mf_a").unwrap().generation, 1);
    assert_eq!(data(&h, "mf_a", 6)[5 * BS as usize], 0x11);
    for core in [0, 1, 0, 1] {
        assert_eq!(read(core, 5), (IoStatus::Success, block(0x22)));
    }
    let m = mirror::get("mf").unwrap();
    assert_eq!(m.members[0].state, MemberState::Faulted);
    assert_eq!(m.generation, 2);

    // Reassembled from the superblocks, the stale child stays out (no split brain).
    h.close_channels();
    bdev::delete("mf").unwrap();
    let t = std::time::Instant::now();
    loop {
        match mirror::create(
            &h.rt.handle(),
            MirrorOpts {
                name: "mf".into(),
                children: vec!["EE_mf_a".into(), "mf_b".into(), "mf_c".into()],
                uuid: None,
                region_bytes: None,
            },
        ) {
            Ok(_) => break,
            // The old mirror's claims go with its last channel.
            Err(e) if t.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("reassembly: {e}"),
        }
    }
    let m = mirror::get("mf").unwrap();
    assert_eq!(m.members[0].state, MemberState::Faulted);
    // Reassembly writes the next generation into the other slot (the current one stays).
    assert_eq!(m.generation, 3);
    assert_eq!(superblock(&h, "mf_b").unwrap().generation, 3);
    for core in [0, 1] {
        assert_eq!(read(core, 5), (IoStatus::Success, block(0x22)));
    }
}

#[test]
fn a_write_waits_until_the_fault_is_on_every_survivor() {
    let h = Harness::new(2);
    for c in ["mw_a", "mw_b", "mw_c"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    error::create("mw_a", None).unwrap();
    error::create("mw_b", None).unwrap();
    mirror(&h, "mw", &["EE_mw_a", "EE_mw_b", "mw_c"]);
    // The first child fails the write; the second holds the superblock write that records it
    // (blocks 0..16: the superblock slots), not the data write.
    error::inject(
        "EE_mw_a",
        Some(IoType::Write),
        Injection::new(ErrorKind::Failure, 1),
    )
    .unwrap();
    let mut hold = Injection::new(ErrorKind::Pending, 1);
    hold.blocks = Some(0..16);
    error::inject("EE_mw_b", Some(IoType::Write), hold).unwrap();
    let data = vec![0x77; BS as usize];
    let st = std::thread::scope(|s| {
        let w = s.spawn(|| {
            h.io(0, "mw", IoType::Write, 3, 1, Some(data.clone()), 0, None)
                .0
        });
        std::thread::sleep(Duration::from_millis(300));
        // Both survivors hold the data; only one holds the new membership: not acknowledged.
        assert!(
            !w.is_finished(),
            "acknowledged before the fault was on every survivor"
        );
        assert_eq!(superblock(&h, "mw_c").unwrap().generation, 2);
        assert_eq!(superblock(&h, "mw_b").unwrap().generation, 1);
        error::clear("EE_mw_b").unwrap();
        w.join().unwrap()
    });
    assert_eq!(st, IoStatus::Success);
    assert_eq!(superblock(&h, "mw_b").unwrap().generation, 2);
}

#[test]
fn a_read_error_is_retried_on_another_child_and_losing_all_fails_io() {
    let h = Harness::new(2);
    for c in ["mr_a", "mr_b"] {
        malloc_named(c, BS, CHILD_BLOCKS);
        error::create(c, None).unwrap();
    }
    mirror(&h, "mr", &["EE_mr_a", "EE_mr_b"]);
    let block = vec![0x5a; BS as usize];
    let (st, _) = h.io(0, "mr", IoType::Write, 9, 1, Some(block.clone()), 0, None);
    assert_eq!(st, IoStatus::Success);
    // The first child's reads fail: every read still succeeds, from the other child, and the
    // first child is faulted by the first read that reaches it.
    error::inject(
        "EE_mr_a",
        Some(IoType::Read),
        Injection::new(ErrorKind::Failure, 100),
    )
    .unwrap();
    for core in [0, 1, 0, 1, 0, 1] {
        let (st, got) = h.io(core, "mr", IoType::Read, 9, 1, None, BS as usize, None);
        assert_eq!((st, got), (IoStatus::Success, block.clone()));
    }
    assert!(
        error::remaining("EE_mr_a", IoType::Read).unwrap() == 99,
        "one read reached it"
    );
    let m = mirror::get("mr").unwrap();
    let faulted: Vec<_> = m
        .members
        .iter()
        .filter(|c| c.state == MemberState::Faulted)
        .collect();
    assert_eq!(faulted.len(), 1, "{m:?}");
    // Out of resources is not a fault.
    let last = m
        .members
        .iter()
        .find(|c| c.state == MemberState::InSync)
        .unwrap()
        .name
        .clone();
    error::inject(
        &last,
        Some(IoType::Read),
        Injection::new(ErrorKind::NoMem, 1),
    )
    .unwrap();
    let (st, _) = h.io(1, "mr", IoType::Read, 9, 1, None, BS as usize, None);
    assert_eq!(st, IoStatus::NoMemory);
    assert_eq!(
        mirror::get("mr")
            .unwrap()
            .members
            .iter()
            .filter(|c| c.state == MemberState::InSync)
            .count(),
        1
    );
    // The last in-sync child fails a write: the write fails, and so does what follows: errors,
    // never a hang.
    error::clear(&last).unwrap();
    error::inject(
        &last,
        Some(IoType::Write),
        Injection::new(ErrorKind::Failure, 1),
    )
    .unwrap();
    let (st, _) = h.io(0, "mr", IoType::Write, 9, 1, Some(block.clone()), 0, None);
    assert_eq!(st, IoStatus::Failed(libc::EIO));
    let (st, _) = h.io(1, "mr", IoType::Read, 9, 1, None, BS as usize, None);
    assert_eq!(st, IoStatus::Failed(libc::EIO));
    let (st, _) = h.io(1, "mr", IoType::Write, 9, 1, Some(block), 0, None);
    assert_eq!(st, IoStatus::Failed(libc::EIO));
}

#[test]
fn a_healthy_mirror_reassembles_with_its_data() {
    let h = Harness::new(2);
    for c in ["mh_a", "mh_b"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    mirror(&h, "mh", &["mh_a", "mh_b"]);
    let block = vec![0x5a; BS as usize];
    let (st, _) = h.io(0, "mh", IoType::Write, 7, 1, Some(block.clone()), 0, None);
    assert_eq!(st, IoStatus::Success);
    h.close_channels();
    bdev::delete("mh").unwrap();
    let t = std::time::Instant::now();
    while mirror::create(
        &h.rt.handle(),
        MirrorOpts {
            name: "mh".into(),
            children: vec!["mh_b".into(), "mh_a".into()],
            uuid: None,
            region_bytes: None,
        },
    )
    .is_err()
    {
        assert!(t.elapsed() < Duration::from_secs(5), "reassembly refused");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Generation 1 reassembled is not a new mirror: nothing was zeroed.
    assert_eq!(mirror::get("mh").unwrap().generation, 2);
    for core in [0, 1] {
        let (st, got) = h.io(core, "mh", IoType::Read, 7, 1, None, BS as usize, None);
        assert_eq!((st, got), (IoStatus::Success, block.clone()));
    }
    assert_eq!(data(&h, "mh_a", 8)[7 * BS as usize], 0x5a);
}

#[test]
fn creation_refuses_what_would_mix_mirrors() {
    let h = Harness::new(1);
    for c in ["mx_a", "mx_b", "mx_c", "mx_d"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    malloc_named("mx_4k", 4096, CHILD_BLOCKS / 8);
    malloc_named("mx_small", BS, 100);
    let try_create = |name: &str, kids: &[&str]| {
        mirror::create(
            &h.rt.handle(),
            MirrorOpts {
                name: name.into(),
                children: kids.iter().map(|c| c.to_string()).collect(),
                uuid: None,
                region_bytes: None,
            },
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let e = try_create("mx0", &["mx_a"]).unwrap_err();
    assert!(e.contains("2 to 5 children"), "{e}");
    let e = try_create("mx0", &["mx_a", "mx_a"]).unwrap_err();
    assert!(e.contains("named twice"), "{e}");
    let e = try_create("mx0", &["mx_a", "mx_4k"]).unwrap_err();
    assert!(e.contains("block size"), "{e}");
    let e = try_create("mx0", &["mx_a", "mx_small"]).unwrap_err();
    assert!(e.contains("metadata"), "{e}");
    // A failed create leaves its children free.
    try_create("mx1", &["mx_a", "mx_b"]).unwrap();
    try_create("mx2", &["mx_c", "mx_d"]).unwrap();
    bdev::delete("mx1").unwrap();
    bdev::delete("mx2").unwrap();
    // Children of two mirrors, or a blank child with members: refused.
    let e = try_create("mx3", &["mx_a", "mx_c"]).unwrap_err();
    assert!(e.contains("belongs to mirror"), "{e}");
    malloc_named("mx_blank", BS, CHILD_BLOCKS);
    let e = try_create("mx3", &["mx_a", "mx_blank"]).unwrap_err();
    assert!(e.contains("holds no mirror superblock"), "{e}");
    // One member alone: the other, missing, was in sync (it may hold newer data).
    let e = try_create("mx3", &["mx_a"]).unwrap_err();
    assert!(e.contains("missing"), "{e}");
    // A copy of a member given in place of another member: refused.
    let (st, head) = h.io(0, "mx_a", IoType::Read, 0, 16, None, 8192, None);
    assert_eq!(st, IoStatus::Success);
    malloc_named("mx_clone", BS, CHILD_BLOCKS);
    let (st, _) = h.io(0, "mx_clone", IoType::Write, 0, 16, Some(head), 0, None);
    assert_eq!(st, IoStatus::Success);
    let e = try_create("mx3", &["mx_a", "mx_clone"]).unwrap_err();
    assert!(e.contains("same member"), "{e}");
    // The members of one mirror reassemble it.
    try_create("mx1", &["mx_b", "mx_a"]).unwrap();
}

#[test]
fn a_faulted_member_is_rebuilt_under_foreground_writes_and_ends_identical() {
    use rand::{Rng, SeedableRng};
    let h = Harness::new(2);
    // 4 MiB of data per child: four rebuild windows.
    let blocks = (5 << 20) / BS as u64;
    for c in ["mb_a", "mb_b"] {
        malloc_named(c, BS, blocks);
    }
    error::create("mb_b", None).unwrap();
    mirror(&h, "mb", &["mb_a", "EE_mb_b"]);
    let nb = bdev::lookup("mb").unwrap().num_blocks();
    let mut model = vec![0u8; (nb * BS as u64) as usize];
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let write = |rng: &mut rand::rngs::SmallRng, model: &mut Vec<u8>, core: usize| {
        let n = rng.gen_range(1..=16u64);
        let off = rng.gen_range(0..=nb - n);
        let mut d = vec![0u8; (n * BS as u64) as usize];
        rng.fill(&mut d[..]);
        let (st, _) = h.io(core, "mb", IoType::Write, off, n, Some(d.clone()), 0, None);
        assert_eq!(st, IoStatus::Success);
        model[(off * BS as u64) as usize..((off + n) * BS as u64) as usize].copy_from_slice(&d);
    };
    for _ in 0..50 {
        write(&mut rng, &mut model, 0);
    }
    // The second child fails a write: out of the mirror; writes go on without it.
    error::inject(
        "EE_mb_b",
        Some(IoType::Write),
        Injection::new(ErrorKind::Failure, 1),
    )
    .unwrap();
    for i in 0..100 {
        write(&mut rng, &mut model, i % 2);
    }
    assert_eq!(
        mirror::get("mb").unwrap().members[1].state,
        MemberState::Faulted
    );
    // Refusals: an in-sync member, a stranger.
    let rt = h.rt.handle();
    assert!(mirror::rebuild::rebuild(&rt, "mb", "mb_a").is_err());
    assert!(mirror::rebuild::rebuild(&rt, "mb", "nobody").is_err());
    // Rebuild while another thread keeps writing on both reactors.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(6);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) || n < 50 {
                write(&mut rng, &mut model, n % 2);
                n += 1;
            }
            n
        });
        mirror::rebuild::rebuild(&rt, "mb", "EE_mb_b").unwrap();
        stop.store(true, std::sync::atomic::Ordering::Release);
        assert!(writer.join().unwrap() >= 50);
    });
    let m = mirror::get("mb").unwrap();
    assert!(
        m.members.iter().all(|c| c.state == MemberState::InSync),
        "{m:?}"
    );
    assert!(mirror::rebuild::progress("mb").is_none());
    // Both children hold exactly what was acknowledged, and the mirror reads it.
    assert!(
        data(&h, "mb_a", nb) == model,
        "the source differs from the model"
    );
    assert!(data(&h, "mb_b", nb) == model, "the rebuilt member differs");
    let sb = superblock(&h, "mb_b").unwrap();
    assert!(sb.members.iter().all(|c| c.state == MemberState::InSync));
}

#[test]
fn a_rebuild_that_meets_a_member_error_leaves_it_out_and_can_be_run_again() {
    let h = Harness::new(2);
    for c in ["me_a", "me_b"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    error::create("me_b", None).unwrap();
    mirror(&h, "me", &["me_a", "EE_me_b"]);
    let block = |v: u8| vec![v; BS as usize];
    error::inject(
        "EE_me_b",
        Some(IoType::Write),
        Injection::new(ErrorKind::Failure, 1),
    )
    .unwrap();
    let (st, _) = h.io(0, "me", IoType::Write, 4, 1, Some(block(0x31)), 0, None);
    assert_eq!(st, IoStatus::Success);
    let rt = h.rt.handle();
    // The member fails a write during its rebuild (the copy of the one region it missed):
    // the rebuild stops, and the member is out again — never called in sync without the data.
    let mut fail = Injection::new(ErrorKind::Failure, 1);
    let at = META_BYTES / BS as u64 + 4;
    fail.blocks = Some(at..at + 1);
    error::inject("EE_me_b", Some(IoType::Write), fail).unwrap();
    assert!(mirror::rebuild::rebuild(&rt, "me", "EE_me_b").is_err());
    let m = mirror::get("me").unwrap();
    assert_eq!(m.members[1].state, MemberState::Faulted, "{m:?}");
    assert!(mirror::rebuild::progress("me").is_none());
    assert_eq!(
        superblock(&h, "me_a").unwrap().members[1].state,
        MemberState::Faulted
    );
    // Writes were never blocked for good: the mirror still writes and reads.
    let (st, _) = h.io(1, "me", IoType::Write, 4, 1, Some(block(0x32)), 0, None);
    assert_eq!(st, IoStatus::Success);
    // Run again: in sync, with everything.
    mirror::rebuild::rebuild(&rt, "me", "EE_me_b").unwrap();
    assert_eq!(
        mirror::get("me").unwrap().members[1].state,
        MemberState::InSync
    );
    assert_eq!(data(&h, "me_b", 5)[4 * BS as usize], 0x32);
    assert_eq!(
        superblock(&h, "me_b").unwrap().members[1].state,
        MemberState::InSync
    );
}

#[test]
fn two_faults_in_one_round_never_overwrite_the_newest_superblock() {
    let h = Harness::new(1);
    for c in ["m2f_a", "m2f_b", "m2f_c"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    error::create("m2f_a", None).unwrap();
    error::create("m2f_b", None).unwrap();
    mirror(&h, "m2f", &["EE_m2f_a", "EE_m2f_b", "m2f_c"]);
    for c in ["EE_m2f_a", "EE_m2f_b"] {
        error::inject(
            c,
            Some(IoType::Write),
            Injection::new(ErrorKind::Failure, 1),
        )
        .unwrap();
    }
    let (st, _) = h.io(0, "m2f", IoType::Write, 1, 1, Some(vec![1; 512]), 0, None);
    assert_eq!(st, IoStatus::Success);
    // Generation 1 is in slot 0; the next write goes to slot 1 whatever its generation, so
    // a torn write of it would leave generation 1 readable.
    let (st, b) = h.io(0, "m2f_c", IoType::Read, 0, 16, None, 8192, None);
    assert_eq!(st, IoStatus::Success);
    let gens: Vec<Option<u64>> = [&b[..4096], &b[4096..]]
        .iter()
        .map(|s| Superblock::decode(s).map(|s| s.generation))
        .collect();
    assert_eq!(gens[0], Some(1), "{gens:?}");
    assert!(gens[1].is_some_and(|g| g >= 2), "{gens:?}");
}
