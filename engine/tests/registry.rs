//! Registry semantics: unique names, lookup by alias/UUID, claims, delete, hot-remove, iostat.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ballast_engine::backend::{malloc, null};
use ballast_engine::{bdev, BdevInfo, Error, IoStatus, IoType};
use common::Harness;

fn mk(name: &str) -> Arc<ballast_engine::Bdev> {
    malloc::create(malloc::MallocOpts {
        name: name.into(),
        num_blocks: 256,
        block_size: 512,
        uuid: None,
    })
    .unwrap()
}

#[test]
fn names_aliases_and_uuids_are_unique() {
    let b = mk("reg_unique");
    assert!(matches!(mk_err("reg_unique"), Error::Exists(n) if n == "reg_unique"));
    let u = b.info().uuid;
    assert_eq!(bdev::lookup(&u.to_string()).unwrap().name(), "reg_unique");
    let mut info = BdevInfo::new("reg_alias_owner", 512, 8);
    info.aliases = vec!["reg_alias".into()];
    null::create("reg_alias_x", 8, 512, None).unwrap();
    assert!(bdev::register(info, Box::new(NoopBackend)).is_ok());
    assert_eq!(bdev::lookup("reg_alias").unwrap().name(), "reg_alias_owner");
    // A UUID collision is refused too.
    assert!(matches!(
        null::create("reg_uuid_dup", 8, 512, Some(u)),
        Err(Error::Exists(_))
    ));
    // Bad geometry.
    assert!(matches!(
        null::create("reg_bad_bs", 8, 1000, None),
        Err(Error::InvalidParam {
            param: "block_size",
            ..
        })
    ));
    assert!(matches!(
        malloc::create(malloc::MallocOpts {
            name: "reg_zero".into(),
            num_blocks: 0,
            block_size: 512,
            uuid: None
        }),
        Err(Error::InvalidParam { .. })
    ));
    assert!(matches!(bdev::delete("reg_nope"), Err(Error::NotFound(_))));
    for n in ["reg_unique", "reg_alias_owner", "reg_alias_x"] {
        bdev::delete(n).unwrap();
    }
    assert!(bdev::lookup("reg_alias").is_none());
}

fn mk_err(name: &str) -> Error {
    malloc::create(malloc::MallocOpts {
        name: name.into(),
        num_blocks: 8,
        block_size: 512,
        uuid: None,
    })
    .unwrap_err()
}

struct NoopBackend;
impl ballast_engine::BdevBackend for NoopBackend {
    fn product_name(&self) -> &'static str {
        "noop"
    }
    fn supports(&self, _: IoType) -> bool {
        false
    }
    fn create_channel(&self) -> ballast_engine::Result<Box<dyn ballast_engine::BackendChannel>> {
        Err(Error::NotOnReactor("noop"))
    }
}

#[test]
fn claimed_bdev_cannot_be_deleted_or_claimed_twice() {
    mk("reg_claim");
    let mut d1 = bdev::open("reg_claim", None).unwrap();
    let mut d2 = bdev::open("reg_claim", None).unwrap();
    d1.claim("subsystem nqn.2026-11.io.ballast:a").unwrap();
    let e = d2.claim("someone else").unwrap_err();
    assert_eq!(
        e.to_string(),
        "bdev reg_claim is claimed by subsystem nqn.2026-11.io.ballast:a"
    );
    let e = bdev::delete("reg_claim").unwrap_err();
    assert!(matches!(e, Error::Claimed { ref by, .. } if by.contains("io.ballast:a")));
    assert!(
        bdev::lookup("reg_claim").is_some(),
        "refused delete must keep the bdev"
    );
    drop(d1); // closing releases the claim
    d2.claim("b").unwrap();
    d2.release_claim();
    bdev::delete("reg_claim").unwrap();
    assert!(matches!(
        bdev::open("reg_claim", None),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn delete_notifies_openers_on_their_reactor_and_fails_new_io() {
    let h = Harness::new(2);
    mk("reg_hot");
    // Warm a channel on reactor 1 via the harness (it keeps its own descriptor).
    let (st, _) = h.io(
        1,
        "reg_hot",
        IoType::Write,
        0,
        1,
        Some(vec![7; 512]),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    let (tx, rx) = mpsc::channel();
    let desc =
        h.rt.call(1, move || {
            bdev::open(
                "reg_hot",
                Some(Box::new(move || {
                    tx.send(ballast_reactor::current_core()).unwrap();
                })),
            )
            .unwrap()
        })
        .unwrap();
    bdev::delete("reg_hot").unwrap();
    let core = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("hot-remove callback");
    assert_eq!(core, Some(1), "hot-remove must run on the opener's reactor");
    // New I/O on the still-open channel fails cleanly.
    let (st, _) = h.io(1, "reg_hot", IoType::Read, 0, 1, None, 512, None);
    assert_eq!(st, IoStatus::Removed);
    // The name is free again.
    assert!(bdev::lookup("reg_hot").is_none());
    let again = mk("reg_hot");
    drop(desc);
    bdev::delete(again.name()).unwrap();
}

#[test]
fn iostat_counts_completed_io() {
    let h = Harness::new(2);
    mk("reg_stat");
    for core in [0, 1] {
        h.io(
            core,
            "reg_stat",
            IoType::Write,
            0,
            2,
            Some(vec![1; 1024]),
            0,
            None,
        );
        h.io(core, "reg_stat", IoType::Read, 0, 4, None, 2048, None);
    }
    h.io(0, "reg_stat", IoType::Unmap, 0, 4, None, 0, None);
    h.io(0, "reg_stat", IoType::Read, 1000, 1, None, 512, None); // out of range → error
    let s = bdev::lookup("reg_stat").unwrap().iostat();
    assert_eq!((s.num_write_ops, s.bytes_written), (2, 2048));
    assert_eq!((s.num_read_ops, s.bytes_read), (2, 4096));
    assert_eq!((s.num_unmap_ops, s.num_errors), (1, 1));
    h.close_channels();
    // Closed channels' counters are kept.
    let s2 = bdev::lookup("reg_stat").unwrap().iostat();
    assert_eq!(s, s2);
    bdev::delete("reg_stat").unwrap();
}

#[test]
fn channels_are_per_reactor_and_shared_within_one() {
    let h = Harness::new(2);
    mk("reg_chan");
    let opened = Arc::new(AtomicUsize::new(0));
    let o = opened.clone();
    h.rt.call(0, move || {
        let d = bdev::open("reg_chan", None).unwrap();
        let a = d.channel().unwrap();
        let b = d.channel().unwrap();
        let p = ballast_reactor::handle().unwrap();
        // Two handles on one reactor share one channel (one poller).
        let pollers = p.stats()[0].pollers;
        assert!(pollers >= 1);
        drop((a, b));
        o.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    // Not on a reactor: refused with a clear error.
    let d = bdev::open("reg_chan", None).unwrap();
    assert!(matches!(d.channel(), Err(Error::NotOnReactor(_))));
    drop(d);
    bdev::delete("reg_chan").unwrap();
}
