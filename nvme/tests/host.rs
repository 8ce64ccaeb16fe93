//! The host library against the in-process target: discovery, connect, Identify, I/O with
//! in-capsule and R2T writes, digests, queue-depth bounds, and failure surfacing.

mod common;

use std::time::{Duration, Instant};

use ballast_engine::IoBuf;
use ballast_nvme::host::{HostOp, HostOpts, IoQpair, Session};
use ballast_nvme::spec::Status;
use common::*;

fn opts(hd: bool, dd: bool) -> HostOpts {
    HostOpts {
        hostnqn: HOSTNQN.into(),
        hdgst: hd,
        ddgst: dd,
        queue_size: 32,
        ..Default::default()
    }
}

#[test]
fn discover_connect_and_verify_io() {
    let t = TestTarget::new(2);
    let entries = Session::discover(t.addr, &opts(false, false)).unwrap();
    assert!(entries.iter().any(|e| e.subnqn == t.nqn));
    for (hd, dd) in [(false, false), (true, true)] {
        let mut s = Session::connect(t.addr, &t.nqn, 2, &opts(hd, dd)).unwrap();
        assert_eq!(s.ctrl.serial, "PTEST0001");
        assert_eq!(s.io_queues, 2);
        assert!(s.ctrl.icdsz >= 4096);
        let ns = s.namespace(1).unwrap();
        assert_eq!((ns.blocks, ns.block_size), (BLOCKS, BLOCK));
        assert!(s.namespace(9).is_err());
        s.keep_alive().unwrap();
        let mut qp = IoQpair::new(s.io_queue(1).unwrap());
        assert_eq!(qp.depth(), 31);
        // Writes of many sizes (in-capsule and R2T), all in flight at once, then reads.
        let sizes = [512usize, 4096, 8192, 12288, 65536, 131072, 1024, 32768];
        let mut out = Vec::new();
        let mut lba = 0u64;
        let mut layout = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let data = pattern(len, i as u64 + 100 * hd as u64);
            let nlb = (len / BLOCK as usize) as u32;
            qp.submit(
                HostOp::Write,
                1,
                lba,
                nlb,
                Some(IoBuf::from_slice(&data)),
                i as u64,
            )
            .unwrap();
            layout.push((lba, nlb, data));
            lba += nlb as u64 + 3;
        }
        run_until(&mut qp, &mut out, sizes.len(), Duration::from_secs(20));
        assert!(out.iter().all(|c| c.status == Status::SUCCESS), "{out:?}");
        out.clear();
        for (i, (lba, nlb, _)) in layout.iter().enumerate() {
            let buf = IoBuf::heap(*nlb as usize * BLOCK as usize);
            qp.submit(HostOp::Read, 1, *lba, *nlb, Some(buf), i as u64)
                .unwrap();
        }
        run_until(&mut qp, &mut out, sizes.len(), Duration::from_secs(20));
        for c in &out {
            assert_eq!(c.status, Status::SUCCESS);
            let want = &layout[c.tag as usize].2;
            assert!(
                c.buf.as_ref().unwrap()[..] == want[..],
                "read back {}",
                c.tag
            );
        }
        // Errors come back as statuses.
        out.clear();
        qp.submit(HostOp::Read, 1, BLOCKS, 1, Some(IoBuf::heap(512)), 7)
            .unwrap();
        qp.submit(HostOp::WriteZeroes, 1, 0, 8, None, 8).unwrap();
        qp.submit(HostOp::Flush, 1, 0, 1, None, 9).unwrap();
        run_until(&mut qp, &mut out, 3, Duration::from_secs(20));
        out.sort_by_key(|c| c.tag);
        assert_eq!(out[0].status, Status::LBA_OUT_OF_RANGE);
        assert_eq!(out[1].status, Status::SUCCESS);
        assert_eq!(out[2].status, Status::SUCCESS);
        // The queue depth is bounded: submissions beyond it are handed back.
        let mut n = 0;
        while qp
            .submit(HostOp::Read, 1, 0, 1, Some(IoBuf::heap(512)), 100 + n)
            .is_ok()
        {
            n += 1;
        }
        assert_eq!(n as usize, qp.depth());
        out.clear();
        run_until(&mut qp, &mut out, n as usize, Duration::from_secs(20));
    }
}

#[test]
fn dead_target_fails_outstanding_io() {
    let t = TestTarget::new(1);
    let s = Session::connect(t.addr, &t.nqn, 1, &opts(false, false)).unwrap();
    let mut qp = IoQpair::new(s.io_queue(1).unwrap());
    let mut out = Vec::new();
    // Make sure the queue works, then kill the subsystem under it.
    qp.submit(HostOp::Read, 1, 0, 8, Some(IoBuf::heap(4096)), 1)
        .unwrap();
    run_until(&mut qp, &mut out, 1, Duration::from_secs(20));
    t.target.delete_subsystem(&t.nqn).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    out.clear();
    let _ = qp.submit(HostOp::Read, 1, 0, 8, Some(IoBuf::heap(4096)), 2);
    let t0 = Instant::now();
    while qp.failure().is_none() {
        qp.poll(&mut out);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    qp.poll(&mut out);
    assert!(out.iter().all(|c| c.status != Status::SUCCESS));
    assert!(qp
        .submit(HostOp::Read, 1, 0, 8, Some(IoBuf::heap(4096)), 3)
        .is_err());
    // Connecting to the deleted subsystem is a clear error.
    let e = Session::connect(t.addr, &t.nqn, 1, &opts(false, false));
    assert!(e.is_err());
}
