//! Protocol tests of the NVMe/TCP target: hand-built PDUs for the normal paths (admin, I/O
//! with in-capsule data and R2T, digests, discovery, AEN, keep-alive) and for every kind of
//! bad input the issue lists. Each bad-input test also checks the target freed the queue pair
//! and that another host's I/O was not disturbed.

mod common;

use std::time::Duration;

use ballast_nvme::pdu::{self, Fes, IcReq, PduType};
use ballast_nvme::spec::{self, Sqe, Status};
use ballast_nvme::target::TransportOpts;
use common::*;

fn roundtrip(h: &mut Host, slba: u64, len: usize, in_capsule: bool, seed: u64) {
    let data = pattern(len, seed);
    let c = h.write(slba, &data, in_capsule);
    assert_eq!(c.status, Status::SUCCESS, "write {len} B at {slba}");
    let r = h.read(slba, (len / BLOCK as usize) as u32);
    assert_eq!(r.cqe.status, Status::SUCCESS, "read {len} B at {slba}");
    assert!(r.data == data, "read back differs ({len} B at {slba})");
}

#[test]
fn admin_and_io_paths() {
    for (hd, dd) in [(false, false), (true, true), (true, false), (false, true)] {
        let t = TestTarget::new(2);
        let (mut a, cntlid) = Host::admin(t.addr, &t.nqn, hd, dd);
        // CAP and VS.
        let cap = a.prop_get(spec::REG_CAP, true);
        assert_eq!(cap.status, Status::SUCCESS);
        assert_eq!(cap.dw0 & 0xFFFF, 127, "MQES = queue depth - 1");
        assert_eq!(a.prop_get(spec::REG_VS, false).dw0, spec::NVME_VERSION);
        // Identify controller.
        let id = a.identify(spec::CNS_CONTROLLER, 0);
        assert_eq!(id.cqe.status, Status::SUCCESS);
        assert_eq!(id.data.len(), 4096);
        assert_eq!(u16::from_le_bytes([id.data[78], id.data[79]]), cntlid);
        assert_eq!(spec::read_str(&id.data[768..1024]), t.nqn);
        assert_eq!(spec::read_str(&id.data[4..24]), "PTEST0001");
        // Identify namespace / active list / descriptors.
        let ns = a.identify(spec::CNS_NAMESPACE, 1);
        assert_eq!(
            u64::from_le_bytes(ns.data[0..8].try_into().unwrap()),
            BLOCKS
        );
        assert_eq!((ns.data[130]), 9, "LBADS = log2(512)");
        let list = a.identify(spec::CNS_ACTIVE_NS_LIST, 0);
        assert_eq!(&list.data[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
        let desc = a.identify(spec::CNS_NS_ID_DESCRIPTORS, 1);
        assert_eq!(desc.data[0], spec::NIDT_EUI64);
        assert_eq!(
            a.identify(spec::CNS_NAMESPACE, 0).cqe.status,
            Status::INVALID_NAMESPACE_OR_FORMAT
        );
        // Logs and features.
        assert_eq!(a.get_log(spec::LOG_SMART, 512).cqe.status, Status::SUCCESS);
        assert_eq!(a.get_log(0x7E, 512).cqe.status, Status::INVALID_LOG_PAGE);
        let q = a.set_queues(2);
        assert_eq!(q.status, Status::SUCCESS);
        assert_eq!(q.dw0 & 0xFFFF, 1, "2 I/O queues granted");
        assert_eq!(
            a.admin_cmd(0xC5, 0, 0, 0, 0).cqe.status,
            Status::INVALID_OPCODE
        );
        assert_eq!(a.admin_cmd(0x18, 0, 0, 0, 0).cqe.status, Status::SUCCESS); // keep alive

        let mut q1 = Host::io(t.addr, &t.nqn, cntlid, 1, hd, dd);
        let mut q2 = Host::io(t.addr, &t.nqn, cntlid, 2, hd, dd);
        // A third queue exceeds what Set Features granted.
        let mut q3 = Host::new(t.addr, hd, dd);
        let c = q3.connect(&t.nqn, HOSTNQN, 3, cntlid, 0);
        assert_eq!(c.status, Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(c.dw0, spec::CONNECT_SQE_QID_OFFSET);
        for (i, (len, icd)) in [
            (512, true),
            (4096, true),
            (8192, true),
            (65536, false),
            (131072, false),
            (4096, false),
        ]
        .into_iter()
        .enumerate()
        {
            let q = if i % 2 == 0 { &mut q1 } else { &mut q2 };
            roundtrip(q, (i * 300) as u64, len, icd, i as u64 + 1);
        }
        // Data written on one queue is visible on the other.
        let d = pattern(4096, 77);
        assert_eq!(q1.write(5000, &d, true).status, Status::SUCCESS);
        assert!(q2.read(5000, 8).data == d);
        // Write Zeroes, DSM deallocate, Flush.
        let wz = Host::rw_sqe(0x08, 1, 5000, 8);
        assert_eq!(q1.exec(wz, &[], false, 0).cqe.status, Status::SUCCESS);
        assert!(q2.read(5000, 8).data.iter().all(|&b| b == 0));
        assert_eq!(q1.write(6000, &d, true).status, Status::SUCCESS);
        let mut range = [0u8; 16];
        spec::DsmRange {
            cattr: 0,
            length: 8,
            slba: 6000,
        }
        .encode(&mut range);
        let mut dsm = Sqe::new(0x09, 0);
        dsm.set_nsid(1).set_cdw(10, 0).set_cdw(11, 1 << 2);
        assert_eq!(q1.exec(dsm, &range, true, 0).cqe.status, Status::SUCCESS);
        assert!(
            q1.read(6000, 8).data.iter().all(|&b| b == 0),
            "deallocated reads zeros"
        );
        let mut fl = Sqe::new(0x00, 0);
        fl.set_nsid(1);
        assert_eq!(q2.exec(fl, &[], false, 0).cqe.status, Status::SUCCESS);
        // Errors: out of range, wrong namespace, unknown opcode, length mismatch.
        assert_eq!(q1.read(BLOCKS - 1, 2).cqe.status, Status::LBA_OUT_OF_RANGE);
        assert_eq!(q1.write(BLOCKS, &d, true).status, Status::LBA_OUT_OF_RANGE);
        let mut bad_ns = Host::rw_sqe(0x02, 7, 0, 1);
        bad_ns.set_nsid(7);
        assert_eq!(
            q1.exec(bad_ns, &[], false, 512).cqe.status,
            Status::INVALID_NAMESPACE_OR_FORMAT
        );
        assert_eq!(
            q1.exec(Sqe::new(0x7E, 0), &[], false, 0).cqe.status,
            Status::INVALID_OPCODE
        );
        let short = Host::rw_sqe(0x02, 1, 0, 8);
        assert_eq!(
            q1.exec(short, &[], false, 512).cqe.status,
            Status::DATA_SGL_LENGTH_INVALID
        );
        // The queues still work after the errors.
        roundtrip(&mut q2, 100, 4096, true, 9);
        drop((a, q1, q2, q3));
        t.wait_for("queue pairs closed", 10, || t.qpairs() == 0);
        t.wait_for("controller freed", 10, || t.subsys.controllers().is_empty());
    }
}

#[test]
fn c2h_success_flag_when_sq_flow_control_disabled() {
    let t = TestTarget::new(1);
    let (_a, cntlid) = Host::admin(t.addr, &t.nqn, false, false);
    let mut h = Host::new(t.addr, false, false);
    let cmd = spec::ConnectCmd {
        recfmt: 0,
        qid: 1,
        sqsize: 31,
        cattr: spec::CONNECT_CATTR_DISABLE_SQFLOW,
        kato: 0,
    };
    let data = spec::ConnectData {
        hostid: [0x11; 16],
        cntlid,
        subnqn: t.nqn.clone(),
        hostnqn: HOSTNQN.into(),
    }
    .to_bytes();
    let c = h.exec(cmd.to_sqe(0, true), &data, true, 0);
    assert_eq!(c.cqe.status, Status::SUCCESS);
    let d = pattern(8192, 3);
    assert_eq!(h.write(10, &d, false).status, Status::SUCCESS);
    let r = h.read(10, 16);
    assert!(r.success_flag, "C2HData should carry SUCCESS");
    assert!(r.data == d);
    // Errors still get a CapsuleResp.
    let r = h.read(BLOCKS, 1);
    assert!(!r.success_flag);
    assert_eq!(r.cqe.status, Status::LBA_OUT_OF_RANGE);
}

/// C2HData honours the host's PDU data alignment (HPDA): PDO is the next multiple of it and
/// the bytes between header and data are zeros, with and without digests.
#[test]
fn c2h_data_is_aligned_to_the_hosts_hpda() {
    let t = TestTarget::new(1);
    let (_a, cntlid) = Host::admin(t.addr, &t.nqn, false, false);
    let d = pattern(4096, 9);
    for (hpda, dgst) in [(0u8, false), (7, true), (31, false), (31, true)] {
        let align = (hpda as usize + 1) * 4;
        let mut h = Host::tcp(t.addr);
        h.icreq_hpda(hpda, dgst, dgst);
        let c = h.connect(&t.nqn, HOSTNQN, 1, cntlid, 0);
        assert_eq!(c.status, Status::SUCCESS, "connect (HPDA {hpda})");
        assert_eq!(h.write(40, &d, false).status, Status::SUCCESS);
        let cid = h.next_cid();
        let mut sqe = Host::rw_sqe(spec::IoOpcode::Read as u8, 1, 40, 8);
        sqe.0[2..4].copy_from_slice(&cid.to_le_bytes());
        h.send_cmd(sqe, 4096);
        let p = h.recv();
        assert_eq!(p.ch.pdu_type, PduType::C2HData, "HPDA {hpda}: {p:?}");
        let hdr: usize = 24 + if dgst { 4 } else { 0 };
        assert_eq!(
            p.ch.pdo as usize,
            hdr.div_ceil(align) * align,
            "HPDA {hpda}: PDO"
        );
        assert!(
            p.pad.iter().all(|&b| b == 0),
            "HPDA {hpda}: padding {:?}",
            p.pad
        );
        assert!(p.data == d, "HPDA {hpda}: data");
        let r = h.recv();
        assert_eq!(r.ch.pdu_type, PduType::CapsuleResp);
        assert_eq!(spec::Cqe::from_bytes(&r.hdr[8..24]).status, Status::SUCCESS);
    }
}

/// Replies that do not fit the host's receive window go out in pieces: staged small reads,
/// large reads sent in place, with and without data digests, all arrive whole and in order.
#[test]
fn replies_resume_after_the_socket_fills() {
    let t = TestTarget::new(1);
    let (_a, cntlid) = Host::admin(t.addr, &t.nqn, false, false);
    let d = pattern(256 * 1024, 21);
    // All 16 KiB reads: written straight into the staging buffer (until it is full, then
    // queued), sent in pieces as the socket takes them. 4 KiB ones mixed with 128 KiB ones:
    // those queue as items (sent in place) and the 4 KiB replies behind them queue too.
    for (dgst, mixed) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut h = Host::tcp_small_rcvbuf(t.addr, 4096);
        h.icreq(dgst, dgst);
        let c = h.connect(&t.nqn, HOSTNQN, 1, cntlid, 0);
        assert_eq!(c.status, Status::SUCCESS);
        h.shrink_target_sndbuf(16384);
        for (i, chunk) in d.chunks(8192).enumerate() {
            let w = h.write(i as u64 * 16, chunk, true);
            assert_eq!(w.status, Status::SUCCESS);
        }
        // A full queue of reads without reading a byte back: ~0.5 MiB (16 KiB) or ~3 MiB
        // (mixed), far more than the host's 4 KiB window and the target's 16 KiB send buffer.
        let mut want = std::collections::HashMap::new();
        for i in 0..31u64 {
            let len: u32 = match (mixed, i % 4) {
                (false, _) => 16384,
                (true, 3) => 4096,
                (true, _) => 131072,
            };
            let slba = (i * 8192 % (128 * 1024) as u64) / BLOCK as u64;
            let cid = h.next_cid();
            let mut sqe = Host::rw_sqe(spec::IoOpcode::Read as u8, 1, slba, len / BLOCK);
            sqe.0[2..4].copy_from_slice(&cid.to_le_bytes());
            h.send_cmd(sqe, len);
            let off = slba as usize * BLOCK as usize;
            want.insert(cid, d[off..off + len as usize].to_vec());
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut got: std::collections::HashMap<u16, Vec<u8>> = Default::default();
        let mut done = 0;
        while done < want.len() {
            let p = h.recv();
            match p.ch.pdu_type {
                PduType::C2HData => {
                    let dh = pdu::DataHeader::parse(&p.hdr);
                    let v = got.entry(dh.cccid).or_default();
                    assert_eq!(dh.datao as usize, v.len(), "cid {}: data offset", dh.cccid);
                    v.extend_from_slice(&p.data);
                }
                PduType::CapsuleResp => {
                    let cqe = spec::Cqe::from_bytes(&p.hdr[8..24]);
                    assert_eq!(cqe.status, Status::SUCCESS, "cid {}", cqe.cid);
                    assert!(
                        got.get(&cqe.cid) == want.get(&cqe.cid),
                        "cid {}: data",
                        cqe.cid
                    );
                    done += 1;
                }
                t => panic!("unexpected {t:?}"),
            }
        }
    }
}

#[test]
fn discovery_log_lists_subsystem() {
    let t = TestTarget::new(1);
    let (mut d, _) = Host::admin(t.addr, ballast_nvme::target::DISCOVERY_NQN, false, false);
    let id = d.identify(spec::CNS_CONTROLLER, 0);
    assert_eq!(id.data[111], spec::CNTRLTYPE_DISCOVERY);
    let hdr = d.get_log(spec::LOG_DISCOVERY, 1024);
    assert_eq!(hdr.cqe.status, Status::SUCCESS);
    let n = u64::from_le_bytes(hdr.data[8..16].try_into().unwrap());
    assert_eq!(n, 1);
    let full = d.get_log(spec::LOG_DISCOVERY, 2048);
    let (_, entries) = spec::parse_discovery_log(&full.data).unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.subnqn, t.nqn);
    assert_eq!(e.trtype, spec::TRTYPE_TCP);
    assert_eq!(e.traddr, "127.0.0.1");
    assert_eq!(e.trsvcid, t.addr.port().to_string());
    // Discovery controllers have no I/O queues and no namespaces.
    assert_eq!(
        d.identify(spec::CNS_NAMESPACE, 1).cqe.status,
        Status::INVALID_FIELD
    );
}

#[test]
fn aen_on_namespace_change() {
    let t = TestTarget::new(2);
    let (mut a, _) = Host::admin(t.addr, &t.nqn, false, false);
    // Enable namespace attribute notices, then park an AER.
    assert_eq!(
        a.admin_cmd(0x09, 0, spec::FEAT_ASYNC_EVENT_CONFIG as u32, 1 << 8, 0)
            .cqe
            .status,
        Status::SUCCESS
    );
    let cid = a.next_cid();
    let mut aer = Sqe::new(0x0C, cid);
    aer.set_sgl(spec::Sgl {
        type_byte: spec::SGL_TRANSPORT_DATA_BLOCK,
        ..Default::default()
    });
    let c = a.capsule(&aer, &[]);
    a.send(&c);
    std::thread::sleep(Duration::from_millis(100));
    let name = format!("{}_b", t.bdev);
    ballast_engine::backend::malloc::create(ballast_engine::backend::malloc::MallocOpts {
        name: name.clone(),
        num_blocks: 2048,
        block_size: 4096,
        uuid: None,
    })
    .unwrap();
    let nsid = t.subsys.add_ns(&name, None, None, None, None).unwrap();
    let p = a.recv();
    assert_eq!(p.ch.pdu_type, PduType::CapsuleResp);
    let cqe = spec::Cqe::from_bytes(&p.hdr[8..24]);
    assert_eq!(cqe.cid, cid);
    assert_eq!(cqe.status, Status::SUCCESS);
    assert_eq!(cqe.dw0 & 0x7, 2, "notice event type");
    assert_eq!((cqe.dw0 >> 16) & 0xFF, spec::LOG_CHANGED_NS as u32);
    let log = a.get_log(spec::LOG_CHANGED_NS, 4096);
    assert_eq!(u32::from_le_bytes(log.data[0..4].try_into().unwrap()), nsid);
    // A bdev exported as a namespace cannot be deleted under it.
    assert!(ballast_engine::bdev::delete(&name).is_err());
    t.subsys.remove_ns(nsid).unwrap();
    ballast_engine::bdev::delete(&name).unwrap();
}

#[test]
fn connect_errors() {
    let t = TestTarget::with(1, false, TransportOpts::default());
    t.subsys
        .add_host("nqn.2026-11.io.ballast:allowed-host")
        .unwrap();
    // Wrong host NQN.
    let mut h = Host::new(t.addr, false, false);
    let c = h.connect(&t.nqn, HOSTNQN, 0, 0xFFFF, 0);
    assert_eq!(c.status, Status::CONNECT_INVALID_HOST);
    // Unknown subsystem: invalid parameter, offset of SUBNQN in the data.
    let c = h.connect("nqn.2026-11.io.ballast:nope", HOSTNQN, 0, 0xFFFF, 0);
    assert_eq!(c.status, Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(c.dw0, spec::CONNECT_DATA_SUBNQN_OFFSET | 1 << 16);
    // I/O queue of a controller that does not exist.
    let c = h.connect(&t.nqn, "nqn.2026-11.io.ballast:allowed-host", 1, 77, 0);
    assert_eq!(c.status, Status::CONNECT_INVALID_PARAMETERS);
    // The allowed host gets in; a second Connect on the same queue is a sequence error.
    let c = h.connect(&t.nqn, "nqn.2026-11.io.ballast:allowed-host", 0, 0xFFFF, 0);
    assert_eq!(c.status, Status::SUCCESS);
    let cntlid = c.dw0 as u16;
    let c = h.connect(&t.nqn, "nqn.2026-11.io.ballast:allowed-host", 0, 0xFFFF, 0);
    assert_eq!(c.status, Status::COMMAND_SEQUENCE_ERROR);
    // I/O queue connect before CC.EN: sequence error.
    let mut q = Host::new(t.addr, false, false);
    let c = q.connect(&t.nqn, "nqn.2026-11.io.ballast:allowed-host", 1, cntlid, 0);
    assert_eq!(c.status, Status::COMMAND_SEQUENCE_ERROR);
    // Another host may not join this host's controller.
    let c = q.connect(&t.nqn, HOSTNQN, 1, cntlid, 0);
    assert_eq!(c.status, Status::CONNECT_INVALID_HOST);
}

#[test]
fn command_before_connect() {
    let t = TestTarget::new(1);
    let mut h = Host::new(t.addr, false, false);
    let r = h.read(0, 1);
    assert_eq!(r.cqe.status, Status::COMMAND_SEQUENCE_ERROR);
    let c = h.admin_cmd(0x06, 0, 1, 0, 4096);
    assert_eq!(c.cqe.status, Status::COMMAND_SEQUENCE_ERROR);
}

/// A bystander host doing I/O while the bad host misbehaves; checked after each case.
struct Bystander {
    _a: Host,
    q: Host,
}

impl Bystander {
    fn new(t: &TestTarget) -> Self {
        let (a, cntlid) = Host::admin(t.addr, &t.nqn, false, false);
        let q = Host::io(t.addr, &t.nqn, cntlid, 1, false, false);
        Bystander { _a: a, q }
    }
    fn check(&mut self, seed: u64) {
        roundtrip(
            &mut self.q,
            1000 + seed * 16,
            8192,
            seed.is_multiple_of(2),
            seed,
        );
    }
}

fn icreq_bytes(f: impl FnOnce(&mut [u8; 128])) -> [u8; 128] {
    let mut b = [0u8; 128];
    IcReq {
        pfv: 0,
        hpda: 0,
        hdgst: false,
        ddgst: false,
        maxr2t: 0,
    }
    .encode(&mut b);
    f(&mut b);
    b
}

#[test]
fn malformed_pdus_get_term_req_and_close() {
    let t = TestTarget::new(2);
    let mut by = Bystander::new(&t);
    let base = t.qpairs();
    let mut seed = 0;
    let mut case = |name: &str, fes: Fes, fei: Option<u32>, h: &mut Host, bytes: &[u8]| {
        h.send_lossy(bytes);
        let term = h.expect_term();
        assert_eq!(term.fes, fes as u16, "{name}: FES");
        if let Some(fei) = fei {
            assert_eq!(term.fei, fei, "{name}: FEI");
        }
        seed += 1;
        by.check(seed);
    };
    // ICReq with an unsupported PFV.
    case(
        "pfv",
        Fes::UnsupportedParameter,
        Some(8),
        &mut Host::tcp(t.addr),
        &icreq_bytes(|b| b[8] = 1),
    );
    // ICReq with HPDA out of range.
    case(
        "hpda",
        Fes::InvalidHeaderField,
        Some(10),
        &mut Host::tcp(t.addr),
        &icreq_bytes(|b| b[10] = 40),
    );
    // Wrong HLEN.
    case(
        "hlen",
        Fes::InvalidHeaderField,
        Some(2),
        &mut Host::tcp(t.addr),
        &icreq_bytes(|b| b[2] = 64),
    );
    // Wrong PLEN on an ICReq.
    case(
        "plen",
        Fes::InvalidHeaderField,
        Some(4),
        &mut Host::tcp(t.addr),
        &icreq_bytes(|b| b[4] = 200),
    );
    // A capsule before the ICReq.
    {
        let h = Host::tcp(t.addr);
        let cap = h.capsule(&Sqe::new(0x06, 1), &[]);
        case(
            "capsule before ICReq",
            Fes::PduSequenceError,
            None,
            &mut Host::tcp(t.addr),
            &cap,
        );
    }
    // A second ICReq.
    {
        let mut h = Host::new(t.addr, false, false);
        case(
            "second ICReq",
            Fes::PduSequenceError,
            None,
            &mut h,
            &icreq_bytes(|_| {}),
        );
    }
    // An unknown PDU type.
    {
        let mut h = Host::new(t.addr, false, false);
        let mut b = [0u8; 24];
        b[0] = 0x0F;
        b[2] = 24;
        b[4] = 24;
        case("unknown type", Fes::InvalidHeaderField, Some(0), &mut h, &b);
    }
    // A controller-to-host PDU type from the host.
    {
        let mut h = Host::new(t.addr, false, false);
        let mut b = [0u8; 24];
        pdu::R2t {
            cccid: 1,
            ttag: 0,
            r2to: 0,
            r2tl: 512,
        }
        .encode(&mut b, false);
        case(
            "R2T from host",
            Fes::InvalidHeaderField,
            Some(0),
            &mut h,
            &b,
        );
    }
    // Bad header digest.
    {
        let mut h = Host::new(t.addr, true, false);
        let mut cap = h.capsule(&Sqe::new(0x06, 1), &[]);
        cap[74] ^= 0xFF;
        case("header digest", Fes::HeaderDigestError, None, &mut h, &cap);
    }
    // Missing header digest flag when negotiated.
    {
        let mut h = Host::new(t.addr, true, false);
        h.hdgst = false;
        let cap = h.capsule(&Sqe::new(0x06, 1), &[]);
        case(
            "no hdgst flag",
            Fes::InvalidHeaderField,
            Some(1),
            &mut h,
            &cap,
        );
    }
    // An oversized PDU (PLEN beyond anything the target accepts).
    {
        let mut h = Host::new(t.addr, false, false);
        let mut cap = h.capsule(&Sqe::new(0x01, 1), &[]);
        cap[3] = 72;
        cap[4..8].copy_from_slice(&(64u32 << 20).to_le_bytes());
        case("oversized", Fes::InvalidHeaderField, Some(4), &mut h, &cap);
    }
    // H2CData with a transfer tag no R2T gave out.
    {
        let (_a, cntlid) = Host::admin(t.addr, &t.nqn, false, false);
        let mut h = Host::io(t.addr, &t.nqn, cntlid, 1, false, false);
        let d = h.h2c(5, 3, 0, &[0u8; 512], true);
        case(
            "bad ttag",
            Fes::InvalidHeaderField,
            Some(pdu::H2C_TTAG_OFFSET),
            &mut h,
            &d,
        );
    }
    // H2CData beyond the R2T window.
    {
        let (_a, cntlid) = Host::admin(t.addr, &t.nqn, false, false);
        let mut h = Host::io(t.addr, &t.nqn, cntlid, 1, false, false);
        let mut sqe = Host::rw_sqe(0x01, 1, 0, 8);
        sqe.0[2] = 42;
        h.send_cmd(sqe, 4096);
        let p = h.recv();
        assert_eq!(p.ch.pdu_type, PduType::R2t);
        let r = pdu::R2t::parse(&p.hdr);
        let d = h.h2c(42, r.ttag, 0, &[0u8; 8192], true);
        case("beyond R2T", Fes::DataTransferOutOfRange, None, &mut h, &d);
    }
    // H2CData larger than MAXH2CDATA.
    {
        let opts = TransportOpts::default();
        let (_a, cntlid) = Host::admin(t.addr, &t.nqn, false, false);
        let mut h = Host::io(t.addr, &t.nqn, cntlid, 1, false, false);
        let len = opts.max_io_size;
        let mut sqe = Host::rw_sqe(0x01, 1, 0, len / BLOCK);
        sqe.0[2] = 43;
        sqe.set_sgl(spec::Sgl {
            address: 0,
            length: len,
            type_byte: spec::SGL_TRANSPORT_DATA_BLOCK,
        });
        let cap = h.capsule(&sqe, &[]);
        h.send(&cap);
        let p = h.recv();
        let r = pdu::R2t::parse(&p.hdr);
        // Claim more than MAXH2CDATA in one PDU (datal field only; the target must judge
        // the header before reading the payload).
        let mut d = h.h2c(43, r.ttag, 0, &[0u8; 16], true);
        let big = opts.max_h2c_data + 4096;
        d[16..20].copy_from_slice(&big.to_le_bytes());
        d[4..8].copy_from_slice(&(24 + big).to_le_bytes());
        h.send_lossy(&d);
        let term = h.expect_term();
        assert!(
            term.fes == Fes::DataTransferLimitExceeded as u16
                || term.fes == Fes::InvalidHeaderField as u16,
            "oversized H2CData: {term:?}"
        );
        by.check(99);
    }
    drop(by);
    t.wait_for("all queue pairs freed", 10, || t.qpairs() == 0);
    assert!(base >= 2);
}

#[test]
fn data_digest_error_fails_the_command_not_the_connection() {
    let t = TestTarget::new(1);
    let (_a, cntlid) = Host::admin(t.addr, &t.nqn, false, true);
    let mut h = Host::io(t.addr, &t.nqn, cntlid, 1, false, true);
    let d = pattern(4096, 5);
    let mut sqe = Host::rw_sqe(0x01, 1, 0, 8);
    sqe.0[2] = 9;
    sqe.set_sgl(spec::Sgl {
        address: 0,
        length: 4096,
        type_byte: spec::SGL_OFFSET_DATA_BLOCK,
    });
    let mut cap = h.capsule(&sqe, &d);
    let n = cap.len();
    cap[n - 1] ^= 0x5A; // corrupt the data digest
    h.send(&cap);
    let p = h.recv();
    let cqe = spec::Cqe::from_bytes(&p.hdr[8..24]);
    assert_eq!(cqe.status, Status::TRANSIENT_TRANSPORT_ERROR);
    // Nothing was written, and the queue still works.
    assert!(h.read(0, 8).data.iter().all(|&b| b == 0));
    roundtrip(&mut h, 0, 4096, true, 5);
}

#[test]
fn truncated_pdus_and_abrupt_close_free_everything() {
    let t = TestTarget::new(2);
    let mut by = Bystander::new(&t);
    let base = t.qpairs();
    for i in 0..20u64 {
        let (mut a, cntlid) = Host::admin(t.addr, &t.nqn, i.is_multiple_of(2), false);
        let mut q = Host::io(t.addr, &t.nqn, cntlid, 1, i.is_multiple_of(2), false);
        // Half a write capsule with in-capsule data, then hang up.
        let mut sqe = Host::rw_sqe(0x01, 1, 0, 16);
        sqe.set_sgl(spec::Sgl {
            address: 0,
            length: 8192,
            type_byte: spec::SGL_OFFSET_DATA_BLOCK,
        });
        let cap = q.capsule(&sqe, &pattern(8192, i));
        q.send(&cap[..(cap.len() / 2 + i as usize)]);
        a.send(&[0x04, 0, 72]);
        drop((a, q));
        by.check(i);
    }
    t.wait_for("queue pairs freed", 10, || t.qpairs() == base);
    t.wait_for("controllers freed", 10, || {
        t.subsys.controllers().len() == 1
    });
}

#[test]
fn keep_alive_timeout_frees_the_controller() {
    let t = TestTarget::new(2);
    let mut h = Host::new(t.addr, false, false);
    let c = h.connect(&t.nqn, HOSTNQN, 0, 0xFFFF, 1000);
    assert_eq!(c.status, Status::SUCCESS);
    let cntlid = c.dw0 as u16;
    assert_eq!(h.prop_set(spec::REG_CC, 1).status, Status::SUCCESS);
    let mut q = Host::io(t.addr, &t.nqn, cntlid, 1, false, false);
    assert_eq!(t.subsys.controllers().len(), 1);
    // Keep-alives keep it alive past KATO.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(h.admin_cmd(0x18, 0, 0, 0, 0).cqe.status, Status::SUCCESS);
    }
    assert_eq!(t.subsys.controllers().len(), 1);
    // Silence: the target disconnects both queues and frees the controller.
    h.expect_closed();
    q.expect_closed();
    t.wait_for("controller freed", 10, || t.subsys.controllers().is_empty());
    t.wait_for("queue pairs freed", 10, || t.qpairs() == 0);
    // A new host connects fine.
    let (_a, _) = Host::admin(t.addr, &t.nqn, false, false);
}

#[test]
fn ipv6_listener_and_two_listeners_per_subsystem() {
    let t = TestTarget::new(1);
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    t.target.add_listener(&t.nqn, v6).unwrap();
    // Both listeners serve the subsystem; the discovery log lists both, with the right family.
    let (mut a, cntlid) = Host::admin(v6, &t.nqn, false, false);
    assert_eq!(
        a.identify(spec::CNS_CONTROLLER, 0).cqe.status,
        Status::SUCCESS
    );
    let mut q = Host::io(v6, &t.nqn, cntlid, 1, false, false);
    roundtrip(&mut q, 0, 4096, true, 11);
    let (mut d, _) = Host::admin(v6, ballast_nvme::target::DISCOVERY_NQN, false, false);
    let log = d.get_log(spec::LOG_DISCOVERY, 3072);
    let (_, entries) = spec::parse_discovery_log(&log.data).unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().any(|e| e.adrfam == spec::ADRFAM_IPV6
        && e.traddr == "::1"
        && e.trsvcid == port.to_string()));
    assert!(entries.iter().any(|e| e.adrfam == spec::ADRFAM_IPV4));
    // Removing the IPv6 listener disconnects the controllers that came through it only.
    let (mut other, _) = Host::admin(t.addr, &t.nqn, false, false);
    t.target.remove_listener(&t.nqn, v6).unwrap();
    a.expect_closed();
    assert_eq!(
        other.admin_cmd(0x18, 0, 0, 0, 0).cqe.status,
        Status::SUCCESS
    );
}

/// Reads of a namespace that does not lend its memory (a crypto bdev over malloc) arrive
/// without a buffer, like lent reads, and get one only after the namespace is looked up: one
/// at a time, pipelined past the queue's depth of buffers, and with the same error statuses.
#[test]
fn reads_of_a_namespace_that_does_not_lend() {
    use ballast_engine::backend::{crypto, malloc};
    let t = TestTarget::new(2);
    let (base, cname, kname) = (
        format!("{}_cb", t.bdev),
        format!("{}_c", t.bdev),
        format!("{}_k", t.bdev),
    );
    const NB: u64 = 4096;
    malloc::create(malloc::MallocOpts {
        name: base.clone(),
        num_blocks: NB,
        block_size: BLOCK,
        uuid: None,
    })
    .unwrap();
    crypto::key_create(&kname, "AES_XTS", &[1u8; 32], &[2u8; 32]).unwrap();
    crypto::create(&cname, &base, &kname).unwrap();
    let nsid = t.subsys.add_ns(&cname, Some(2), None, None, None).unwrap();
    assert_eq!(nsid, 2);
    let (mut a, cntlid) = Host::admin(t.addr, &t.nqn, false, false);
    assert_eq!(a.set_queues(1).status, Status::SUCCESS);
    let mut q = Host::io(t.addr, &t.nqn, cntlid, 1, false, false);
    let nlb = |len: usize| (len / BLOCK as usize) as u32;
    // One at a time: in-capsule and R2T writes, each read back.
    for (i, (len, icd)) in [(512, true), (4096, true), (8192, true), (65536, false)]
        .into_iter()
        .enumerate()
    {
        let slba = i as u64 * 200;
        let data = pattern(len, 40 + i as u64);
        let w = q.exec(Host::rw_sqe(0x01, 2, slba, nlb(len)), &data, icd, 0);
        assert_eq!(w.cqe.status, Status::SUCCESS, "write {len} B");
        let r = q.exec(
            Host::rw_sqe(0x02, 2, slba, nlb(len)),
            &[],
            false,
            len as u32,
        );
        assert_eq!(r.cqe.status, Status::SUCCESS, "read {len} B");
        assert!(r.data == data, "read back differs ({len} B)");
    }
    // Pipelined: 31 reads of 4 KiB in flight at once (the whole queue), each its own data.
    let mut want = std::collections::HashMap::new();
    for i in 0..31u64 {
        let slba = 1024 + i * 8;
        let data = pattern(4096, 100 + i);
        let w = q.exec(Host::rw_sqe(0x01, 2, slba, 8), &data, true, 0);
        assert_eq!(w.cqe.status, Status::SUCCESS);
        let cid = q.next_cid();
        let mut s = Host::rw_sqe(0x02, 2, slba, 8);
        s.0[2..4].copy_from_slice(&cid.to_le_bytes());
        s.set_sgl(spec::Sgl {
            address: 0,
            length: 4096,
            type_byte: spec::SGL_TRANSPORT_DATA_BLOCK,
        });
        want.insert(cid, (s, data, Vec::new()));
    }
    let cids: Vec<u16> = want.keys().copied().collect();
    for cid in &cids {
        let c = q.capsule(&want[cid].0, &[]);
        q.send(&c);
    }
    let mut done = 0;
    while done < cids.len() {
        let p = q.recv();
        match p.ch.pdu_type {
            PduType::C2HData => {
                let d = pdu::DataHeader::parse(&p.hdr);
                let got = &mut want.get_mut(&d.cccid).expect("data for a command sent").2;
                assert_eq!(d.datao as usize, got.len());
                got.extend_from_slice(&p.data);
                done += d.success as usize;
            }
            PduType::CapsuleResp => {
                let cqe = spec::Cqe::from_bytes(&p.hdr[8..24]);
                assert_eq!(cqe.status, Status::SUCCESS, "pipelined read {cqe:?}");
                assert!(want.contains_key(&cqe.cid));
                done += 1;
            }
            t => panic!("unexpected PDU {t:?}"),
        }
    }
    for (cid, (_, data, got)) in &want {
        assert!(got == data, "pipelined read {cid} differs");
    }
    // Errors are the same as for any namespace, and the queue goes on.
    let r = q.exec(Host::rw_sqe(0x02, 2, NB - 1, 2), &[], false, 1024);
    assert_eq!(r.cqe.status, Status::LBA_OUT_OF_RANGE);
    let r = q.exec(Host::rw_sqe(0x02, 2, 0, 8), &[], false, 512);
    assert_eq!(r.cqe.status, Status::DATA_SGL_LENGTH_INVALID);
    let r = q.exec(Host::rw_sqe(0x02, 9, 0, 1), &[], false, 512);
    assert_eq!(r.cqe.status, Status::INVALID_NAMESPACE_OR_FORMAT);
    let r = q.exec(Host::rw_sqe(0x02, 2, 0, 1), &[], false, 512);
    assert!(r.data == pattern(512, 40));
    drop((a, q));
    t.wait_for("queue pairs closed", 10, || t.qpairs() == 0);
    t.subsys.remove_ns(2).unwrap();
    ballast_engine::bdev::delete(&cname).unwrap();
    ballast_engine::bdev::delete(&base).unwrap();
    crypto::key_destroy(&kname).unwrap();
}
