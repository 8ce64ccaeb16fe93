//! Faults injected under a namespace (the error bdev) reach the host as the NVMe statuses a
//! real drive would give, the data the injection left, and a queue that keeps working.

mod common;

use ballast_engine::backend::error::{self, ErrorKind, Injection};
use ballast_engine::backend::malloc;
use ballast_engine::IoType;
use ballast_nvme::spec::Status;
use common::*;

#[test]
fn injected_faults_reach_the_host_as_nvme_statuses() {
    let t = TestTarget::new(2);
    let base = format!("{}_eb", t.bdev);
    malloc::create(malloc::MallocOpts {
        name: base.clone(),
        num_blocks: 1024,
        block_size: BLOCK,
        uuid: None,
    })
    .unwrap();
    let ee = error::create(&base, None).unwrap().name().to_string();
    assert_eq!(t.subsys.add_ns(&ee, Some(2), None, None, None).unwrap(), 2);
    let (mut a, cntlid) = Host::admin(t.addr, &t.nqn, false, false);
    assert_eq!(a.set_queues(1).status, Status::SUCCESS);
    let mut q = Host::io(t.addr, &t.nqn, cntlid, 1, false, false);
    let data = pattern(4096, 7);
    let nlb = 4096 / BLOCK;
    let write = |q: &mut Host| q.exec(Host::rw_sqe(0x01, 2, 8, nlb), &data, true, 0);
    let read = |q: &mut Host| q.exec(Host::rw_sqe(0x02, 2, 8, nlb), &[], false, 4096);

    // A failed write is a write fault; the data is not there; the next write lands.
    error::inject(
        &ee,
        Some(IoType::Write),
        Injection::new(ErrorKind::Failure, 1),
    )
    .unwrap();
    assert_eq!(write(&mut q).cqe.status, Status::WRITE_FAULT);
    assert_eq!(read(&mut q).data, vec![0u8; 4096]);
    assert_eq!(write(&mut q).cqe.status, Status::SUCCESS);
    // A failed read is an unrecovered read error; the next read returns the data.
    error::inject(
        &ee,
        Some(IoType::Read),
        Injection::new(ErrorKind::Failure, 1),
    )
    .unwrap();
    assert_eq!(read(&mut q).cqe.status, Status::UNRECOVERED_READ_ERROR);
    let r = read(&mut q);
    assert_eq!(r.cqe.status, Status::SUCCESS);
    assert!(r.data == data);
    // No memory is "not ready, retry": the host may retry, and the retry succeeds.
    error::inject(&ee, Some(IoType::Read), Injection::new(ErrorKind::NoMem, 1)).unwrap();
    assert_eq!(read(&mut q).cqe.status, Status::NAMESPACE_NOT_READY_RETRY);
    assert_eq!(read(&mut q).cqe.status, Status::SUCCESS);
    // Silent corruption is silent at this layer: the status is success, one byte differs
    // (what a mirror's or a checksum's check above must catch).
    let mut inj = Injection::new(ErrorKind::CorruptData, 1);
    inj.corrupt_offset = 100;
    inj.corrupt_value = 0xff;
    error::inject(&ee, Some(IoType::Read), inj).unwrap();
    let r = read(&mut q);
    assert_eq!(r.cqe.status, Status::SUCCESS);
    let diff: Vec<usize> = (0..4096).filter(|&i| r.data[i] != data[i]).collect();
    assert_eq!(diff, vec![100]);
    // Namespace 1 (no injection) was never affected, and the queue still works.
    let w = q.exec(Host::rw_sqe(0x01, 1, 0, nlb), &data, true, 0);
    assert_eq!(w.cqe.status, Status::SUCCESS);
    assert!(read(&mut q).data == data);
}
