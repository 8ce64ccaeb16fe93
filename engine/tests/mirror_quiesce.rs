//! Pausing a mirror's writes (`mirror::quiesce`): writes issued during the pause are held and
//! complete after it (never failed), reads go on, writes in flight are waited for, the pause
//! ends by itself at its deadline, and I/O stays correct while pauses come and go
//! (conformance).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ballast_engine::backend::error::{self, ErrorKind, Injection};
use ballast_engine::backend::mirror::{self, META_BYTES};
use ballast_engine::{Error, IoStatus, IoType};
use common::{conformance, malloc_named, mirror_over, Harness, Model};

const BS: u32 = 512;
/// Child size: 1 MiB of metadata and 2 MiB of data.
const CHILD_BLOCKS: u64 = (3 << 20) / BS as u64;
/// Where the data area starts on a child.
const DATA: u64 = META_BYTES / BS as u64;

/// Reactors and mirror `name` over malloc children `kids` (those in `faulty` behind an error
/// bdev, `EE_<kid>`).
fn setup(reactors: usize, name: &str, kids: &[&str], faulty: &[&str]) -> Harness {
    let h = Harness::new(reactors);
    let mut members = Vec::new();
    for k in kids {
        malloc_named(k, BS, CHILD_BLOCKS);
        if faulty.contains(k) {
            error::create(k, None).unwrap();
            members.push(format!("EE_{k}"));
        } else {
            members.push(k.to_string());
        }
    }
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    mirror_over(&h, name, &refs);
    h
}

fn write(h: &Harness, core: usize, bdev: &str, off: u64, v: u8) -> IoStatus {
    h.io(
        core,
        bdev,
        IoType::Write,
        off,
        1,
        Some(vec![v; BS as usize]),
        0,
        None,
    )
    .0
}

/// The first byte of block `off` of `bdev`.
fn byte(h: &Harness, bdev: &str, off: u64) -> u8 {
    let (st, b) = h.io(0, bdev, IoType::Read, off, 1, None, BS as usize, None);
    assert_eq!(st, IoStatus::Success, "read {bdev}");
    b[0]
}

fn quiesced(name: &str) -> bool {
    mirror::get(name).unwrap().quiesced_for.is_some()
}

#[test]
fn writes_during_a_pause_wait_for_its_end_and_reads_go_on() {
    let h = setup(2, "qh", &["qh_a", "qh_b"], &[]);
    let rt = h.rt.handle();
    assert_eq!(write(&h, 0, "qh", 3, 0x11), IoStatus::Success);
    mirror::quiesce(&rt, "qh", Duration::from_secs(20)).unwrap();
    assert!(quiesced("qh"));
    std::thread::scope(|s| {
        // One write per reactor: each channel holds its own.
        let w0 = s.spawn(|| write(&h, 0, "qh", 3, 0x22));
        let w1 = s.spawn(|| write(&h, 1, "qh", 4, 0x33));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !w0.is_finished() && !w1.is_finished(),
            "a write went during the pause"
        );
        for c in ["qh_a", "qh_b"] {
            assert_eq!(byte(&h, c, DATA + 3), 0x11, "{c} changed during the pause");
            assert_eq!(byte(&h, c, DATA + 4), 0, "{c} changed during the pause");
        }
        // Reads are served meanwhile, with what was acknowledged before the pause.
        assert_eq!(byte(&h, "qh", 3), 0x11);
        // Again while paused: the deadline is renewed, the held writes stay held.
        mirror::quiesce(&rt, "qh", Duration::from_secs(20)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!w0.is_finished());
        assert!(mirror::unquiesce("qh").unwrap(), "a pause was in force");
        assert_eq!(w0.join().unwrap(), IoStatus::Success);
        assert_eq!(w1.join().unwrap(), IoStatus::Success);
    });
    for c in ["qh_a", "qh_b"] {
        assert_eq!(byte(&h, c, DATA + 3), 0x22, "{c}");
        assert_eq!(byte(&h, c, DATA + 4), 0x33, "{c}");
    }
    assert!(!quiesced("qh"));
    assert!(
        !mirror::unquiesce("qh").unwrap(),
        "none in force: false, no error"
    );
    assert_eq!(write(&h, 1, "qh", 5, 0x44), IoStatus::Success);
}

#[test]
fn quiesce_returns_once_the_writes_in_flight_are_on_every_member() {
    let h = setup(2, "qd", &["qd_a", "qd_b"], &["qd_a"]);
    let rt = h.rt.handle();
    // The first member holds data writes (not the metadata at its start).
    let hold = || {
        let mut i = Injection::new(ErrorKind::Pending, 1);
        i.blocks = Some(DATA..CHILD_BLOCKS);
        error::inject("EE_qd_a", Some(IoType::Write), i).unwrap();
    };
    hold();
    std::thread::scope(|s| {
        let w = s.spawn(|| write(&h, 1, "qd", 7, 0x55));
        std::thread::sleep(Duration::from_millis(200));
        let q = s.spawn(|| mirror::quiesce(&rt, "qd", Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!q.is_finished(), "quiesced with a write still in flight");
        error::clear("EE_qd_a").unwrap();
        assert_eq!(w.join().unwrap(), IoStatus::Success);
        q.join().unwrap().unwrap();
    });
    // Paused: the write acknowledged before is on both members.
    assert_eq!(byte(&h, "qd_a", DATA + 7), 0x55);
    assert_eq!(byte(&h, "qd_b", DATA + 7), 0x55);
    assert!(mirror::unquiesce("qd").unwrap());

    // A write that does not finish before the deadline: the quiesce fails and the mirror is
    // not left paused.
    hold();
    std::thread::scope(|s| {
        let w = s.spawn(|| write(&h, 0, "qd", 8, 0x66));
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let e = mirror::quiesce(&rt, "qd", Duration::from_millis(400)).unwrap_err();
        assert!(matches!(e, Error::Busy(_)), "{e}");
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(!quiesced("qd"));
        assert_eq!(write(&h, 1, "qd", 9, 0x67), IoStatus::Success, "not paused");
        error::clear("EE_qd_a").unwrap();
        assert_eq!(w.join().unwrap(), IoStatus::Success);
    });
}

#[test]
fn a_pause_ends_by_itself_at_its_deadline() {
    let h = setup(2, "qt", &["qt_a", "qt_b"], &[]);
    let rt = h.rt.handle();
    let t0 = Instant::now();
    mirror::quiesce(&rt, "qt", Duration::from_millis(500)).unwrap();
    // The write waits for the deadline (the caller that paused never comes back).
    assert_eq!(write(&h, 0, "qt", 1, 0x77), IoStatus::Success);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(!quiesced("qt"));
    assert_eq!(byte(&h, "qt_b", DATA + 1), 0x77);
    // Its caller learns that the pause was over before it said so.
    assert!(!mirror::unquiesce("qt").unwrap());
    // A renewed pause runs to its own deadline, not the first one's.
    mirror::quiesce(&rt, "qt", Duration::from_millis(300)).unwrap();
    mirror::quiesce(&rt, "qt", Duration::from_secs(20)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(quiesced("qt"), "the renewed deadline holds");
    assert!(mirror::unquiesce("qt").unwrap());
}

#[test]
fn bad_requests_are_refused_plainly() {
    let h = setup(1, "qb", &["qb_a", "qb_b"], &[]);
    let rt = h.rt.handle();
    let e = mirror::quiesce(&rt, "qb_none", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert!(matches!(
        mirror::unquiesce("qb_none"),
        Err(Error::NotFound(_))
    ));
    for t in [Duration::ZERO, Duration::from_secs(3600)] {
        let e = mirror::quiesce(&rt, "qb", t).unwrap_err();
        assert!(e.to_string().contains("timeout_ms"), "{e}");
    }
    assert!(!quiesced("qb"));
    // A pause on a mirror that is deleted ends with it.
    mirror::quiesce(&rt, "qb", Duration::from_secs(20)).unwrap();
    h.close_channels();
    ballast_engine::bdev::delete("qb").unwrap();
    let t0 = Instant::now();
    while mirror::get("qb").is_some() {
        assert!(t0.elapsed() < Duration::from_secs(5), "the mirror stays");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn io_stays_correct_while_pauses_come_and_go() {
    let h = setup(2, "qc", &["qc_a", "qc_b", "qc_c"], &[]);
    let rt = h.rt.handle();
    let stop = AtomicBool::new(false);
    let pauses = std::thread::scope(|s| {
        let p = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                mirror::quiesce(&rt, "qc", Duration::from_secs(20)).unwrap();
                std::thread::sleep(Duration::from_millis(3));
                assert!(mirror::unquiesce("qc").unwrap());
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        });
        conformance(&h, "qc", Model::Persistent, 77);
        stop.store(true, Ordering::Release);
        p.join().unwrap()
    });
    assert!(pauses > 0);
    let blocks = ballast_engine::bdev::lookup("qc").unwrap().num_blocks();
    let area = |c: &str| {
        h.io(
            1,
            c,
            IoType::Read,
            DATA,
            blocks,
            None,
            (blocks * BS as u64) as usize,
            None,
        )
        .1
    };
    let first = area("qc_a");
    assert!(area("qc_b") == first && area("qc_c") == first);
}
