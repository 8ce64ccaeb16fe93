//! The mirror's write-intent bitmap and rebuilds: a member that comes back copies only the
//! regions written while it was out (also after the mirror was torn down and reassembled, as
//! after its daemon's restart); the bits are on disk before a write goes without it; a blank or
//! wiped member gets a full copy; a removed member's slot takes a new bdev; a damaged bitmap
//! chunk counts as written, never as clean.

mod common;

use std::time::Duration;

use ballast_engine::backend::error::{self, ErrorKind, Injection};
use ballast_engine::backend::mirror::{self, rebuild, MemberState, MirrorOpts, META_BYTES};
use ballast_engine::{bdev, IoStatus, IoType};
use common::{malloc_named, Harness};

const BS: u32 = 512;
/// 64 KiB regions: 128 blocks.
const REGION: u64 = (64 << 10) / BS as u64;
/// Child size: 1 MiB of metadata and 8 MiB of data (128 regions).
const CHILD_BLOCKS: u64 = (9 << 20) / BS as u64;
/// Where the bitmap starts on a child, in blocks.
const BITMAP_BLOCK: u64 = 8192 / BS as u64;

fn create(h: &Harness, name: &str, children: &[&str]) -> Result<(), String> {
    mirror::create(
        &h.rt.handle(),
        MirrorOpts {
            name: name.into(),
            children: children.iter().map(|c| c.to_string()).collect(),
            uuid: None,
            region_bytes: Some(64 << 10),
        },
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Deletes mirror `name` and assembles it again from `children` (the old mirror's claims go
/// with its last channel: retried for a while).
fn reassemble(h: &Harness, name: &str, children: &[&str]) {
    h.close_channels();
    bdev::delete(name).unwrap();
    let t = std::time::Instant::now();
    loop {
        match create(h, name, children) {
            Ok(()) => return,
            Err(_) if t.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("reassembly: {e}"),
        }
    }
}

fn write(h: &Harness, bdev: &str, off: u64, n: u64, v: u8) -> IoStatus {
    let d = vec![v; (n * BS as u64) as usize];
    h.io(
        (off % 2) as usize,
        bdev,
        IoType::Write,
        off,
        n,
        Some(d),
        0,
        None,
    )
    .0
}

/// A child's data area.
fn data(h: &Harness, child: &str) -> Vec<u8> {
    let nb = CHILD_BLOCKS - META_BYTES / BS as u64;
    let (st, b) = h.io(
        1,
        child,
        IoType::Read,
        META_BYTES / BS as u64,
        nb,
        None,
        (nb * BS as u64) as usize,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    b
}

/// Bits set in a child's first bitmap chunk (its checksum unchecked: the raw words).
fn bits_on_disk(h: &Harness, child: &str) -> u32 {
    let (st, b) = h.io(0, child, IoType::Read, BITMAP_BLOCK, 8, None, 4096, None);
    assert_eq!(st, IoStatus::Success);
    b[..4088].iter().map(|x| x.count_ones()).sum()
}

/// Faults the second member of a two-way mirror `m` (over "<p>_a", "EE_<p>_b") with one
/// failed write at block 0 of region 0.
fn fault_second(h: &Harness, m: &str, p: &str) {
    error::inject(
        &format!("EE_{p}_b"),
        Some(IoType::Write),
        Injection::new(ErrorKind::Failure, 1),
    )
    .unwrap();
    assert_eq!(write(h, m, 0, 1, 0x10), IoStatus::Success);
    assert_eq!(
        mirror::get(m).unwrap().members[1].state,
        MemberState::Faulted
    );
}

#[test]
fn a_returning_member_copies_only_what_it_missed_and_the_bits_clear() {
    let h = Harness::new(2);
    for c in ["pa_a", "pa_b"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    error::create("pa_b", None).unwrap();
    create(&h, "pa", &["pa_a", "EE_pa_b"]).unwrap();
    assert_eq!(mirror::get("pa").unwrap().region_bytes, 64 << 10);
    // Written while both were in: marked (a write is named before it goes), then swept once
    // idle and flushed.
    assert_eq!(write(&h, "pa", 5 * REGION, REGION, 0x01), IoStatus::Success);
    assert_eq!(mirror::get("pa").unwrap().dirty_regions, 1);
    assert_eq!(bits_on_disk(&h, "pa_a"), 1);
    assert_eq!(mirror::heal::sweep("pa").unwrap(), 1);
    assert_eq!(mirror::get("pa").unwrap().dirty_regions, 0);
    assert_eq!(bits_on_disk(&h, "pa_a"), 0);
    fault_second(&h, "pa", "pa");
    // The failed write's region (0) and two more, one write spanning regions 40 and 41.
    assert_eq!(write(&h, "pa", 9 * REGION + 3, 2, 0x22), IoStatus::Success);
    assert_eq!(write(&h, "pa", 41 * REGION - 1, 2, 0x33), IoStatus::Success);
    let m = mirror::get("pa").unwrap();
    assert_eq!(m.dirty_regions, 4, "{m:?}");
    // On the in-sync member's disk already (they were written before the writes went).
    assert_eq!(bits_on_disk(&h, "pa_a"), 4);
    // No sweep while a member is out.
    assert_eq!(mirror::heal::sweep("pa").unwrap(), 0);
    let kind = rebuild::rebuild(&h.rt.handle(), "pa", "EE_pa_b").unwrap();
    assert_eq!(kind, rebuild::Kind::Partial);
    let m = mirror::get("pa").unwrap();
    let last = m.last_rebuild.clone().unwrap();
    assert_eq!(last.kind, rebuild::Kind::Partial);
    assert_eq!(last.bytes_copied, 4 * (64 << 10), "{last:?}");
    assert!(last.error.is_none());
    assert!(m.members.iter().all(|c| c.state == MemberState::InSync));
    assert!(data(&h, "pa_a") == data(&h, "pa_b"), "children differ");
    // Every member in sync: the bits are swept, in memory and on both disks.
    assert_eq!(m.dirty_regions, 0);
    assert_eq!(bits_on_disk(&h, "pa_a"), 0);
    assert_eq!(bits_on_disk(&h, "pa_b"), 0);
}

#[test]
fn the_bits_are_on_disk_before_a_write_goes_without_a_member() {
    let h = Harness::new(2);
    for c in ["pw_a", "pw_b"] {
        malloc_named(c, BS, CHILD_BLOCKS);
        error::create(c, None).unwrap();
    }
    create(&h, "pw", &["EE_pw_a", "EE_pw_b"]).unwrap();
    fault_second(&h, "pw", "pw");
    // The in-sync member holds its bitmap writes: a write to a new region must not reach
    // its data area meanwhile, nor be acknowledged.
    let mut hold = Injection::new(ErrorKind::Pending, 1);
    hold.blocks = Some(BITMAP_BLOCK..BITMAP_BLOCK + 8);
    error::inject("EE_pw_a", Some(IoType::Write), hold).unwrap();
    let at = 70 * REGION;
    std::thread::scope(|s| {
        let w = s.spawn(|| write(&h, "pw", at, 4, 0x77));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!w.is_finished(), "acknowledged before its bit was on disk");
        let off = (META_BYTES / BS as u64 + at) as usize * BS as usize;
        assert_eq!(
            data(&h, "pw_a")[off - META_BYTES as usize],
            0,
            "issued too early"
        );
        error::clear("EE_pw_a").unwrap();
        assert_eq!(w.join().unwrap(), IoStatus::Success);
    });
    assert_eq!(bits_on_disk(&h, "pw_a"), 2);
    // A write to a region already marked on disk goes at once.
    let mut hold = Injection::new(ErrorKind::Pending, 1);
    hold.blocks = Some(BITMAP_BLOCK..BITMAP_BLOCK + 8);
    error::inject("EE_pw_a", Some(IoType::Write), hold).unwrap();
    assert_eq!(write(&h, "pw", at + 8, 1, 0x78), IoStatus::Success);
    error::clear("EE_pw_a").unwrap();
}

#[test]
fn the_bitmap_survives_reassembly_and_the_rebuild_is_still_partial() {
    let h = Harness::new(2);
    for c in ["pr_a", "pr_b", "pr_c"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    error::create("pr_b", None).unwrap();
    create(&h, "pr", &["pr_a", "EE_pr_b", "pr_c"]).unwrap();
    error::inject(
        "EE_pr_b",
        Some(IoType::Write),
        Injection::new(ErrorKind::Failure, 1),
    )
    .unwrap();
    for r in [3, 50, 51, 127] {
        assert_eq!(
            write(&h, "pr", r * REGION + 7, 3, r as u8),
            IoStatus::Success
        );
    }
    assert_eq!(mirror::get("pr").unwrap().dirty_regions, 4);
    // As after a kill -9 of the mirror's daemon: everything in memory is gone.
    reassemble(&h, "pr", &["pr_c", "EE_pr_b", "pr_a"]);
    let m = mirror::get("pr").unwrap();
    assert_eq!(m.members[1].state, MemberState::Faulted, "{m:?}");
    assert_eq!(
        m.dirty_regions, 4,
        "the bitmap came back from the in-sync members"
    );
    // Written after the restart, still without the member.
    assert_eq!(write(&h, "pr", 90 * REGION, 1, 0x90), IoStatus::Success);
    let kind = rebuild::rebuild(&h.rt.handle(), "pr", "EE_pr_b").unwrap();
    assert_eq!(kind, rebuild::Kind::Partial);
    let last = mirror::get("pr").unwrap().last_rebuild.unwrap();
    assert_eq!(last.bytes_copied, 5 * (64 << 10), "{last:?}");
    let a = data(&h, "pr_a");
    assert!(
        a == data(&h, "pr_b") && a == data(&h, "pr_c"),
        "children differ"
    );
}

#[test]
fn a_wiped_member_or_a_new_one_in_a_removed_slot_gets_a_full_copy() {
    let h = Harness::new(2);
    for c in ["pf_a", "pf_b", "pf_new"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    error::create("pf_b", None).unwrap();
    create(&h, "pf", &["pf_a", "EE_pf_b"]).unwrap();
    for r in 0..128 {
        assert_eq!(
            write(&h, "pf", r * REGION, 2, 0x40 + r as u8),
            IoStatus::Success
        );
    }
    fault_second(&h, "pf", "pf");
    // The member lost its disk while out (its superblock is gone): not the one that left.
    assert_eq!(
        h.io(
            0,
            "pf_b",
            IoType::Write,
            0,
            16,
            Some(vec![0; 8192]),
            0,
            None
        )
        .0,
        IoStatus::Success
    );
    let rt = h.rt.handle();
    assert_eq!(
        rebuild::rebuild(&rt, "pf", "EE_pf_b").unwrap(),
        rebuild::Kind::Full
    );
    let nb = bdev::lookup("pf").unwrap().num_blocks();
    let last = mirror::get("pf").unwrap().last_rebuild.unwrap();
    assert_eq!(last.bytes_copied, nb * BS as u64);
    assert!(data(&h, "pf_a") == data(&h, "pf_b"));

    // Removing: refused for the last in-sync member; allowed for the other.
    mirror::remove_member(&rt, "pf", "EE_pf_b").unwrap();
    let e = mirror::remove_member(&rt, "pf", "pf_a").unwrap_err();
    assert!(e.to_string().contains("last in-sync"), "{e}");
    let m = mirror::get("pf").unwrap();
    assert_eq!(m.members[1].name, "");
    assert!(m.members[1].uuid.is_nil() && m.members[1].full);
    // The removed bdev is free again; the mirror still serves, degraded.
    assert!(bdev::lookup("EE_pf_b").unwrap().claimed_by().is_none());
    assert_eq!(write(&h, "pf", 3, 1, 0x99), IoStatus::Success);
    // A new bdev fills the slot and is copied in full.
    assert_eq!(mirror::add_member(&rt, "pf", "pf_new").unwrap(), 1);
    let e = mirror::add_member(&rt, "pf", "EE_pf_b").unwrap_err();
    assert!(e.to_string().contains("no empty slot"), "{e}");
    assert_eq!(
        rebuild::rebuild(&rt, "pf", "pf_new").unwrap(),
        rebuild::Kind::Full
    );
    let m = mirror::get("pf").unwrap();
    assert!(
        m.members.iter().all(|c| c.state == MemberState::InSync),
        "{m:?}"
    );
    assert_eq!(m.members[1].name, "pf_new");
    assert!(data(&h, "pf_a") == data(&h, "pf_new"));
    // And the mirror reassembles from its members as they are now.
    reassemble(&h, "pf", &["pf_a", "pf_new"]);
    let m = mirror::get("pf").unwrap();
    assert!(
        m.members.iter().all(|c| c.state == MemberState::InSync),
        "{m:?}"
    );
}

#[test]
fn a_missing_member_that_was_out_is_not_needed_to_assemble_and_can_return() {
    let h = Harness::new(2);
    for c in ["pm_a", "pm_b"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    error::create("pm_b", None).unwrap();
    create(&h, "pm", &["pm_a", "EE_pm_b"]).unwrap();
    fault_second(&h, "pm", "pm");
    assert_eq!(write(&h, "pm", 20 * REGION, 1, 0x20), IoStatus::Success);
    // Reassembled without it (its node is down): it was out, so the mirror comes up.
    reassemble(&h, "pm", &["pm_a"]);
    let m = mirror::get("pm").unwrap();
    assert_eq!(m.members[1].name, "");
    assert!(
        !m.members[1].uuid.is_nil(),
        "the slot keeps the member's identity"
    );
    // It comes back: it takes its own slot, and a partial copy serves.
    let rt = h.rt.handle();
    assert_eq!(mirror::add_member(&rt, "pm", "EE_pm_b").unwrap(), 1);
    assert_eq!(
        rebuild::rebuild(&rt, "pm", "EE_pm_b").unwrap(),
        rebuild::Kind::Partial
    );
    assert!(data(&h, "pm_a") == data(&h, "pm_b"));
}

#[test]
fn a_damaged_bitmap_chunk_counts_as_written() {
    let h = Harness::new(1);
    for c in ["pd_a", "pd_b"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    error::create("pd_b", None).unwrap();
    create(&h, "pd", &["pd_a", "EE_pd_b"]).unwrap();
    fault_second(&h, "pd", "pd");
    assert_eq!(mirror::get("pd").unwrap().dirty_regions, 1);
    h.close_channels();
    bdev::delete("pd").unwrap();
    // A flipped byte in the in-sync member's bitmap chunk.
    let (st, mut b) = h.io(0, "pd_a", IoType::Read, BITMAP_BLOCK, 8, None, 4096, None);
    assert_eq!(st, IoStatus::Success);
    b[100] ^= 0x10;
    let (st, _) = h.io(0, "pd_a", IoType::Write, BITMAP_BLOCK, 8, Some(b), 0, None);
    assert_eq!(st, IoStatus::Success);
    reassemble_after_delete(&h, "pd", &["pd_a", "EE_pd_b"]);
    // Every region of the chunk (all 128 of this mirror) counts as written.
    assert_eq!(mirror::get("pd").unwrap().dirty_regions, 128);
}

fn reassemble_after_delete(h: &Harness, name: &str, children: &[&str]) {
    let t = std::time::Instant::now();
    while let Err(e) = create(h, name, children) {
        assert!(t.elapsed() < Duration::from_secs(5), "reassembly: {e}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn after_an_unclean_stop_the_members_are_made_equal_over_the_marked_regions() {
    let h = Harness::new(2);
    for c in ["pu_a", "pu_b"] {
        malloc_named(c, BS, CHILD_BLOCKS);
    }
    create(&h, "pu", &["pu_a", "pu_b"]).unwrap();
    assert_eq!(write(&h, "pu", 30 * REGION, 4, 0x30), IoStatus::Success);
    // As if the mirror's node died with a write in flight: it reached one child only.
    h.close_channels();
    bdev::delete("pu").unwrap();
    let off = META_BYTES / BS as u64 + 30 * REGION + 1;
    let (st, _) = h.io(
        0,
        "pu_b",
        IoType::Write,
        off,
        1,
        Some(vec![0xee; 512]),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    assert!(data(&h, "pu_a") != data(&h, "pu_b"));
    reassemble_after_delete(&h, "pu", &["pu_a", "pu_b"]);
    // The region was still marked (not swept yet): the members are equal again.
    assert!(data(&h, "pu_a") == data(&h, "pu_b"), "not resynced");
    assert_eq!(
        data(&h, "pu_b")[(30 * REGION + 1) as usize * BS as usize],
        0x30
    );
}
