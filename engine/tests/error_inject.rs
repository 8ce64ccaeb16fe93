//! The fault-injection stage: conformance with nothing armed, then each injection kind does
//! what it says, for as many I/Os as asked, and the base's data is as the injection left it.

mod common;

use std::time::Duration;

use ballast_engine::backend::error::{self, ErrorKind, Injection};
use ballast_engine::{IoStatus, IoType};
use common::{conformance, malloc_named, Harness, Model};

#[test]
fn error_bdev_passes_conformance_when_nothing_is_armed() {
    let h = Harness::new(2);
    malloc_named("errconf", 512, 4096);
    let b = error::create("errconf", None).unwrap();
    assert_eq!(b.name(), "EE_errconf");
    conformance(&h, "EE_errconf", Model::Persistent, 11);
}

#[test]
fn each_injection_kind_takes_as_many_ios_as_armed() {
    let h = Harness::new(2);
    malloc_named("errinj", 512, 1024);
    error::create("errinj", None).unwrap();
    let ee = "EE_errinj";
    let block = |v: u8| vec![v; 512];
    let write = |core, off, v: u8| h.io(core, ee, IoType::Write, off, 1, Some(block(v)), 0, None);
    let read = |core, off| h.io(core, ee, IoType::Read, off, 1, None, 512, None);
    let base_read = |off| h.io(0, "errinj", IoType::Read, off, 1, None, 512, None).1;

    // failure: two writes fail with EIO and never reach the base; the third goes through.
    error::inject(
        ee,
        Some(IoType::Write),
        Injection::new(ErrorKind::Failure, 2),
    )
    .unwrap();
    assert_eq!(write(0, 1, 0x11).0, IoStatus::Failed(libc::EIO));
    assert_eq!(write(1, 1, 0x11).0, IoStatus::Failed(libc::EIO));
    assert_eq!(base_read(1), block(0));
    assert_eq!(error::remaining(ee, IoType::Write).unwrap(), 0);
    assert_eq!(write(0, 1, 0x11).0, IoStatus::Success);
    assert_eq!(base_read(1), block(0x11));
    // Reads were not armed.
    assert_eq!(read(0, 1), (IoStatus::Success, block(0x11)));

    // nomem: the retryable status, once.
    error::inject(ee, Some(IoType::Read), Injection::new(ErrorKind::NoMem, 1)).unwrap();
    assert_eq!(read(1, 1).0, IoStatus::NoMemory);
    assert_eq!(read(1, 1), (IoStatus::Success, block(0x11)));

    // corrupt_data on a read: the returned byte is flipped, the stored data is not.
    let mut inj = Injection::new(ErrorKind::CorruptData, 1);
    inj.corrupt_offset = 7;
    inj.corrupt_value = 0x80;
    error::inject(ee, Some(IoType::Read), inj.clone()).unwrap();
    let (st, got) = read(0, 1);
    assert_eq!(st, IoStatus::Success);
    let mut want = block(0x11);
    want[7] ^= 0x80;
    assert_eq!(got, want);
    assert_eq!(base_read(1), block(0x11));
    // ... on a write: the stored byte is flipped, the caller's buffer is not.
    error::inject(ee, Some(IoType::Write), inj.clone()).unwrap();
    let (st, back) = write(1, 2, 0x22);
    assert_eq!(st, IoStatus::Success);
    assert_eq!(back, block(0x22), "the caller's buffer was changed");
    let mut want = block(0x22);
    want[7] ^= 0x80;
    assert_eq!(base_read(2), want);
    // corrupt_value 0 would change nothing: refused.
    inj.corrupt_value = 0;
    assert!(error::inject(ee, Some(IoType::Write), inj).is_err());

    // pending: a write is held (it does not complete, the base is unchanged) until cleared,
    // then it completes and lands.
    error::inject(
        ee,
        Some(IoType::Write),
        Injection::new(ErrorKind::Pending, 1),
    )
    .unwrap();
    let held = std::thread::scope(|s| {
        let t = s.spawn(|| write(0, 3, 0x33));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!t.is_finished(), "a held write completed");
        assert_eq!(base_read(3), block(0));
        error::clear(ee).unwrap();
        t.join().unwrap()
    });
    assert_eq!(held.0, IoStatus::Success);
    assert_eq!(base_read(3), block(0x33));

    // All operations at once, and clear disarms.
    error::inject(ee, None, Injection::new(ErrorKind::Failure, 5)).unwrap();
    let (st, _) = h.io(0, ee, IoType::Flush, 0, 1, None, 0, None);
    assert_eq!(st, IoStatus::Failed(libc::EIO));
    error::clear(ee).unwrap();
    assert_eq!(read(0, 1).0, IoStatus::Success);
    assert_eq!(write(0, 1, 0x44).0, IoStatus::Success);

    // The base is claimed by the stage.
    assert!(ballast_engine::bdev::delete("errinj").is_err());
    h.close_channels();
    ballast_engine::bdev::delete(ee).unwrap();
    assert!(error::inject(ee, None, Injection::new(ErrorKind::Failure, 1)).is_err());
    // The claim goes with the stage's last channel, closed by its reactor's poller.
    let t = std::time::Instant::now();
    while ballast_engine::bdev::delete("errinj").is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the base stayed claimed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
