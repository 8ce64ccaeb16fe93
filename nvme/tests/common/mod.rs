//! Test scaffolding for the NVMe/TCP target: an in-process target on a free loopback port and
//! a deliberately simple blocking host that builds every PDU by hand (so tests can also build
//! wrong ones).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_engine::backend::malloc;
use ballast_nvme::pdu::{self, CommonHeader, IcReq, IcResp, PduType, TermReq};
use ballast_nvme::spec::{self, ConnectCmd, ConnectData, Cqe, PropertyCmd, Sgl, Sqe, Status};
use ballast_nvme::target::{Subsystem, Target, TransportOpts};
use ballast_reactor::{Runtime, RuntimeConfig};

pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
pub const BLOCK: u32 = 512;
pub const BLOCKS: u64 = 16384; // 8 MiB

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A free loopback port (bind, read, drop).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An in-process target with one subsystem holding one malloc namespace.
pub struct TestTarget {
    pub rt: Runtime,
    pub target: Arc<Target>,
    pub subsys: Arc<Subsystem>,
    pub nqn: String,
    pub addr: SocketAddr,
    pub bdev: String,
}

impl TestTarget {
    pub fn new(reactors: usize) -> Self {
        Self::with(reactors, true, TransportOpts::default())
    }

    pub fn with(reactors: usize, allow_any: bool, opts: TransportOpts) -> Self {
        let rt = Runtime::start(RuntimeConfig {
            cores: (0..reactors).collect(),
            pin: false,
            ..Default::default()
        })
        .unwrap();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let bdev = format!("ptest{pid}_{n}");
        malloc::create(malloc::MallocOpts {
            name: bdev.clone(),
            num_blocks: BLOCKS,
            block_size: BLOCK,
            uuid: None,
        })
        .unwrap();
        let target = Target::new(rt.handle(), opts).unwrap();
        let nqn = format!("nqn.2026-11.io.ballast:ptest{n}");
        let subsys = target
            .create_subsystem(&nqn, "PTEST0001", "ballast-test", 32, allow_any)
            .unwrap();
        subsys.add_ns(&bdev, Some(1), None, None, None).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        target.add_listener(&nqn, addr).unwrap();
        TestTarget {
            rt,
            target,
            subsys,
            nqn,
            addr,
            bdev,
        }
    }

    /// Number of queue pairs alive on all reactors.
    pub fn qpairs(&self) -> usize {
        let h = self.rt.handle();
        h.cores()
            .into_iter()
            .map(|c| {
                h.call(c, ballast_nvme::target::tcp::local_qpair_count)
                    .unwrap()
            })
            .sum()
    }

    /// Waits (bounded) until `f` holds.
    pub fn wait_for(&self, what: &str, secs: u64, f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Attaches controller `name` to target `t` (the host library's remote bdevs) with
/// `io_queues` I/O queues and the given loss timeout and reconnect delay.
pub fn attach_remote(
    t: &TestTarget,
    name: &str,
    io_queues: u16,
    ctrlr_loss: Duration,
    reconnect_delay: Duration,
) -> Vec<String> {
    ballast_nvme::remote::attach(ballast_nvme::remote::AttachOpts {
        name: name.into(),
        addr: t.addr,
        subnqn: t.nqn.clone(),
        host: ballast_nvme::host::HostOpts {
            hostnqn: HOSTNQN.into(),
            kato_ms: 3000,
            ..Default::default()
        },
        ctrlr_loss_timeout: ctrlr_loss,
        reconnect_delay,
        io_queues,
    })
    .unwrap()
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        self.target.shutdown();
        let h = self.rt.handle();
        for c in h.cores() {
            let _ = h.call(c, || {
                ballast_nvme::target::tcp::close_all_local("test done")
            });
        }
        let _ = self.target.delete_subsystem(&self.nqn);
        let _ = ballast_engine::bdev::delete(&self.bdev);
    }
}

/// A received PDU.
#[derive(Debug)]
pub struct Pdu {
    pub ch: CommonHeader,
    pub hdr: Vec<u8>,
    /// Padding between the header (and its digest) and the data (PDO).
    pub pad: Vec<u8>,
    pub data: Vec<u8>,
}

/// What a command returned.
#[derive(Debug)]
pub struct Done {
    pub cqe: Cqe,
    pub data: Vec<u8>,
    /// The C2HData carried the SUCCESS flag (no CapsuleResp).
    pub success_flag: bool,
}

/// A blocking NVMe/TCP host that builds PDUs by hand.
pub struct Host {
    pub s: TcpStream,
    pub hdgst: bool,
    pub ddgst: bool,
    pub maxh2cdata: u32,
    cid: u16,
    pub qid: u16,
}

/// Sets a socket's SO_RCVBUF or SO_SNDBUF (`opt`) to `bytes`.
fn set_buf_size(fd: i32, opt: i32, bytes: i32) {
    // SAFETY: setsockopt with a valid i32 option value and its size; a bad fd only fails.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt({opt}, {bytes})");
}

/// Fixes at about `bytes` the send buffer of every TCP socket of this process whose (local,
/// peer) addresses `matches` (SO_SNDBUF also ends the kernel's autotuning, which on loopback
/// grows it to megabytes); returns how many it changed. Tests use it to make an end of a
/// connection in this process (the target's, or the host library's) find its socket full.
pub fn pin_sndbuf(matches: impl Fn(SocketAddr, SocketAddr) -> bool, bytes: i32) -> usize {
    fn addrs(fd: i32) -> Option<(SocketAddr, SocketAddr)> {
        let get = |peer: bool| {
            // SAFETY: `sa` is a zeroed sockaddr_in and `len` its size; the calls only write
            // within it (a non-socket or non-IPv4 fd fails or reports another family).
            unsafe {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                let p = (&mut sa as *mut libc::sockaddr_in).cast();
                let r = if peer {
                    libc::getpeername(fd, p, &mut len)
                } else {
                    libc::getsockname(fd, p, &mut len)
                };
                (r == 0 && sa.sin_family == libc::AF_INET as libc::sa_family_t).then(|| {
                    SocketAddr::from((
                        u32::from_be(sa.sin_addr.s_addr).to_be_bytes(),
                        u16::from_be(sa.sin_port),
                    ))
                })
            }
        };
        Some((get(false)?, get(true)?))
    }
    let mut n = 0;
    for e in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = e.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if addrs(fd).is_some_and(|(local, peer)| matches(local, peer)) {
            set_buf_size(fd, libc::SO_SNDBUF, bytes);
            n += 1;
        }
    }
    n
}

impl Host {
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).unwrap())
    }

    fn from_stream(s: TcpStream) -> Self {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Host {
            s,
            hdgst: false,
            ddgst: false,
            maxh2cdata: 0,
            cid: 0,
            qid: 0,
        }
    }

    /// A TCP connection whose receive buffer is `rcvbuf` bytes (set before connecting, so the
    /// window stays small): the target's sends fill it and must resume where they stopped.
    pub fn tcp_small_rcvbuf(addr: SocketAddr, rcvbuf: i32) -> Self {
        use std::os::fd::FromRawFd;
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4 only")
        };
        // SAFETY: plain socket calls on a descriptor this function owns; the sockaddr_in is
        // fully initialised and its size is passed with it.
        let fd = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket");
            set_buf_size(fd, libc::SO_RCVBUF, rcvbuf);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = v4.port().to_be();
            sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            let r = libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(r, 0, "connect");
            fd
        };
        // SAFETY: `fd` is a connected socket owned by nothing else.
        Self::from_stream(unsafe { TcpStream::from_raw_fd(fd) })
    }

    /// Fixes the send buffer of the target's end of this connection at about `bytes` (the
    /// target runs in this process: its socket is found by its addresses). On loopback the
    /// kernel otherwise grows it to megabytes, so replies would rarely find the socket full.
    pub fn shrink_target_sndbuf(&self, bytes: i32) {
        let want = (self.s.peer_addr().unwrap(), self.s.local_addr().unwrap());
        let n = pin_sndbuf(|local, peer| (local, peer) == want, bytes);
        assert!(n > 0, "the target's end of {want:?} is not in this process");
    }

    /// TCP connect + ICReq/ICResp.
    pub fn new(addr: SocketAddr, hdgst: bool, ddgst: bool) -> Self {
        let mut h = Self::tcp(addr);
        let r = h.icreq(hdgst, ddgst);
        assert_eq!((r.hdgst, r.ddgst), (hdgst, ddgst));
        assert!(r.maxh2cdata >= 4096);
        h
    }

    pub fn icreq(&mut self, hdgst: bool, ddgst: bool) -> IcResp {
        self.icreq_hpda(0, hdgst, ddgst)
    }

    /// ICReq asking for C2H data aligned to `(hpda + 1) * 4` bytes.
    pub fn icreq_hpda(&mut self, hpda: u8, hdgst: bool, ddgst: bool) -> IcResp {
        let mut b = [0u8; 128];
        IcReq {
            pfv: 0,
            hpda,
            hdgst,
            ddgst,
            maxr2t: 0,
        }
        .encode(&mut b);
        self.send(&b);
        let p = self.recv();
        assert_eq!(p.ch.pdu_type, PduType::IcResp, "expected ICResp, got {p:?}");
        let r = IcResp::parse(&p.hdr);
        self.hdgst = r.hdgst;
        self.ddgst = r.ddgst;
        self.maxh2cdata = r.maxh2cdata;
        r
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Sends, ignoring errors (the target may already have closed).
    pub fn send_lossy(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.s.read_exact(&mut v).unwrap();
        v
    }

    /// Receives one PDU, checking its digests.
    pub fn recv(&mut self) -> Pdu {
        self.try_recv()
            .expect("connection closed while expecting a PDU")
    }

    pub fn try_recv(&mut self) -> Option<Pdu> {
        let mut raw = [0u8; 8];
        match self.s.read_exact(&mut raw) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("recv: {e}"),
        }
        let ch = CommonHeader::parse(&raw);
        let mut hdr = raw.to_vec();
        hdr.extend(self.read_exact(ch.hlen as usize - 8));
        if ch.has_header_digest() {
            let d = self.read_exact(4);
            assert!(
                pdu::verify_header_digest(&hdr, &d),
                "bad header digest from target"
            );
        }
        let mut data = Vec::new();
        let mut pad = Vec::new();
        let hd = ch.hlen as usize + if ch.has_header_digest() { 4 } else { 0 };
        if (ch.plen as usize) > hd {
            if ch.pdu_type == PduType::C2HTermReq {
                data = self.read_exact(ch.plen as usize - hd);
            } else {
                pad = self.read_exact(ch.pdo as usize - hd);
                let dl =
                    ch.plen as usize - ch.pdo as usize - if ch.has_data_digest() { 4 } else { 0 };
                data = self.read_exact(dl);
                if ch.has_data_digest() {
                    let d = self.read_exact(4);
                    assert_eq!(
                        u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
                        crc32c::crc32c(&data),
                        "bad data digest from target"
                    );
                }
            }
        }
        Some(Pdu { ch, hdr, pad, data })
    }

    /// Expects a C2HTermReq and then the connection closing.
    pub fn expect_term(&mut self) -> TermReq {
        let p = self.recv();
        assert_eq!(
            p.ch.pdu_type,
            PduType::C2HTermReq,
            "expected C2HTermReq, got {p:?}"
        );
        let t = TermReq::parse(&p.hdr);
        self.expect_closed();
        t
    }

    /// Expects EOF (the target closed the connection).
    pub fn expect_closed(&mut self) {
        let mut b = [0u8; 512];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected the target to close the connection: {e}"),
            }
        }
    }

    pub fn next_cid(&mut self) -> u16 {
        self.cid = self.cid.wrapping_add(1);
        self.cid
    }

    /// Builds a CapsuleCmd PDU for `sqe` with optional in-capsule data.
    /// Sends `sqe` as a capsule without data, its SGL a transport data block of `len` bytes
    /// (data to come by R2T/H2CData, or to go by C2HData).
    pub fn send_cmd(&mut self, mut sqe: Sqe, len: u32) {
        sqe.set_sgl(Sgl {
            address: 0,
            length: len,
            type_byte: spec::SGL_TRANSPORT_DATA_BLOCK,
        });
        let c = self.capsule(&sqe, &[]);
        self.send(&c);
    }

    pub fn capsule(&self, sqe: &Sqe, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 76];
        let n = pdu::encode_capsule_cmd(&mut b, sqe, data.len() as u32, self.hdgst, self.ddgst);
        b.truncate(n);
        b.extend_from_slice(data);
        if self.ddgst && !data.is_empty() {
            b.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        }
        b
    }

    pub fn h2c(&self, cccid: u16, ttag: u16, datao: u32, data: &[u8], last: bool) -> Vec<u8> {
        let mut b = vec![0u8; 28];
        let n = pdu::H2CData {
            cccid,
            ttag,
            datao,
            datal: data.len() as u32,
            last_pdu: last,
        }
        .encode(&mut b, self.hdgst, self.ddgst);
        b.truncate(n);
        b.extend_from_slice(data);
        if self.ddgst {
            b.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        }
        b
    }

    /// Runs one command to completion: in-capsule data if `in_capsule`, else R2T-driven
    /// H2CData for `data_out`; gathers C2HData.
    pub fn exec(&mut self, mut sqe: Sqe, data_out: &[u8], in_capsule: bool, read_len: u32) -> Done {
        let cid = self.next_cid();
        sqe.0[2..4].copy_from_slice(&cid.to_le_bytes());
        let (sgl, icd) = if !data_out.is_empty() && in_capsule {
            (
                Sgl {
                    address: 0,
                    length: data_out.len() as u32,
                    type_byte: spec::SGL_OFFSET_DATA_BLOCK,
                },
                data_out,
            )
        } else {
            (
                Sgl {
                    address: 0,
                    length: if data_out.is_empty() {
                        read_len
                    } else {
                        data_out.len() as u32
                    },
                    type_byte: spec::SGL_TRANSPORT_DATA_BLOCK,
                },
                &[][..],
            )
        };
        sqe.set_sgl(sgl);
        let c = self.capsule(&sqe, icd);
        self.send(&c);
        let mut data = Vec::new();
        loop {
            let p = self.recv();
            match p.ch.pdu_type {
                PduType::R2t => {
                    let r = pdu::R2t::parse(&p.hdr);
                    assert_eq!(r.cccid, cid);
                    let end = (r.r2to + r.r2tl) as usize;
                    let mut off = r.r2to as usize;
                    while off < end {
                        let n = (end - off).min(self.maxh2cdata as usize);
                        let last = off + n == end;
                        let pdu = self.h2c(cid, r.ttag, off as u32, &data_out[off..off + n], last);
                        self.send(&pdu);
                        off += n;
                    }
                }
                PduType::C2HData => {
                    let d = pdu::DataHeader::parse(&p.hdr);
                    assert_eq!(d.cccid, cid);
                    assert_eq!(d.datao as usize, data.len());
                    data.extend_from_slice(&p.data);
                    if d.success {
                        return Done {
                            cqe: Cqe {
                                cid,
                                ..Default::default()
                            },
                            data,
                            success_flag: true,
                        };
                    }
                }
                PduType::CapsuleResp => {
                    let cqe = Cqe::from_bytes(&p.hdr[8..24]);
                    assert_eq!(cqe.cid, cid, "completion for another command: {cqe:?}");
                    return Done {
                        cqe,
                        data,
                        success_flag: false,
                    };
                }
                t => panic!("unexpected PDU {t:?}: {p:?}"),
            }
        }
    }

    /// Fabrics Connect; returns the completion.
    pub fn connect(
        &mut self,
        subnqn: &str,
        hostnqn: &str,
        qid: u16,
        cntlid: u16,
        kato: u32,
    ) -> Cqe {
        let cmd = ConnectCmd {
            recfmt: 0,
            qid,
            sqsize: 31,
            cattr: 0,
            kato,
        };
        let data = ConnectData {
            hostid: [0x11; 16],
            cntlid,
            subnqn: subnqn.into(),
            hostnqn: hostnqn.into(),
        }
        .to_bytes();
        let sqe = cmd.to_sqe(0, true);
        let d = self.exec(sqe, &data, true, 0);
        if d.cqe.status.is_success() {
            self.qid = qid;
        }
        d.cqe
    }

    pub fn prop_get(&mut self, offset: u32, size8: bool) -> Cqe {
        let sqe = PropertyCmd {
            set: false,
            offset,
            size8,
            value: 0,
        }
        .to_sqe(0);
        self.exec(sqe, &[], false, 0).cqe
    }

    pub fn prop_set(&mut self, offset: u32, value: u64) -> Cqe {
        let sqe = PropertyCmd {
            set: true,
            offset,
            size8: false,
            value,
        }
        .to_sqe(0);
        self.exec(sqe, &[], false, 0).cqe
    }

    /// Admin queue: connect, enable the controller; returns the controller ID.
    pub fn admin(addr: SocketAddr, subnqn: &str, hdgst: bool, ddgst: bool) -> (Self, u16) {
        let mut h = Host::new(addr, hdgst, ddgst);
        let c = h.connect(subnqn, HOSTNQN, 0, 0xFFFF, 0);
        assert_eq!(c.status, Status::SUCCESS, "admin connect");
        let cntlid = c.dw0 as u16;
        assert_eq!(
            h.prop_set(spec::REG_CC, 0x0046_0001).status,
            Status::SUCCESS
        );
        let csts = h.prop_get(spec::REG_CSTS, false);
        assert_eq!(csts.dw0 & 1, 1, "CSTS.RDY after CC.EN");
        (h, cntlid)
    }

    /// An I/O queue of controller `cntlid`.
    pub fn io(
        addr: SocketAddr,
        subnqn: &str,
        cntlid: u16,
        qid: u16,
        hdgst: bool,
        ddgst: bool,
    ) -> Self {
        let mut h = Host::new(addr, hdgst, ddgst);
        let c = h.connect(subnqn, HOSTNQN, qid, cntlid, 0);
        assert_eq!(c.status, Status::SUCCESS, "I/O connect");
        h
    }

    pub fn admin_cmd(
        &mut self,
        opcode: u8,
        nsid: u32,
        cdw10: u32,
        cdw11: u32,
        read_len: u32,
    ) -> Done {
        let mut sqe = Sqe::new(opcode, 0);
        sqe.set_nsid(nsid).set_cdw(10, cdw10).set_cdw(11, cdw11);
        self.exec(sqe, &[], false, read_len)
    }

    pub fn identify(&mut self, cns: u8, nsid: u32) -> Done {
        self.admin_cmd(0x06, nsid, cns as u32, 0, 4096)
    }

    pub fn set_queues(&mut self, n: u16) -> Cqe {
        let v = (n - 1) as u32;
        self.admin_cmd(0x09, 0, spec::FEAT_NUMBER_OF_QUEUES as u32, v | v << 16, 0)
            .cqe
    }

    pub fn get_log(&mut self, lid: u8, len: u32) -> Done {
        let numd = len / 4 - 1;
        self.admin_cmd(
            0x02,
            0xFFFF_FFFF,
            lid as u32 | (numd & 0xFFFF) << 16,
            numd >> 16,
            len,
        )
    }

    pub fn rw_sqe(opcode: u8, nsid: u32, slba: u64, nlb: u32) -> Sqe {
        let mut s = Sqe::new(opcode, 0);
        s.set_nsid(nsid)
            .set_cdw(10, slba as u32)
            .set_cdw(11, (slba >> 32) as u32)
            .set_cdw(12, nlb - 1);
        s
    }

    pub fn write(&mut self, slba: u64, data: &[u8], in_capsule: bool) -> Cqe {
        let nlb = (data.len() / BLOCK as usize) as u32;
        self.exec(Self::rw_sqe(0x01, 1, slba, nlb), data, in_capsule, 0)
            .cqe
    }

    pub fn read(&mut self, slba: u64, nlb: u32) -> Done {
        self.exec(Self::rw_sqe(0x02, 1, slba, nlb), &[], false, nlb * BLOCK)
    }
}

/// Polls a host queue until `n` completions are in `out` (panics after `limit`); naps briefly
/// when a poll brought nothing, so a slow (emulated) target is not spun against.
pub fn run_until(
    qp: &mut ballast_nvme::host::IoQpair,
    out: &mut Vec<ballast_nvme::host::HostCompletion>,
    n: usize,
    limit: Duration,
) {
    let t = Instant::now();
    while out.len() < n {
        if !qp.poll(out) {
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(t.elapsed() < limit, "I/O timed out");
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
