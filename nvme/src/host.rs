//! NVMe/TCP host (initiator): the control path ([`Session`]: discovery, admin queue, Identify,
//! Keep Alive, I/O queue connects) and the data path ([`IoQpair`]: one non-blocking I/O queue
//! owned by one reactor, polled, with bounded depth and no allocation per I/O).
//!
//! ```text
//!  Session::connect ──TCP+ICReq+Connect──► admin queue (blocking, control thread)
//!        │ io_queue(qid) ──TCP+ICReq+Connect──► IoQueueConn ──► IoQpair::new (on a reactor)
//!        ▼
//!  IoQpair::submit ─► tx buffer ─(one send per poll)─► target
//!  IoQpair::poll   ◄─ rx buffer ◄─ C2HData / R2T / CapsuleResp ◄─ target  ──► HostCompletion
//! ```
//!
//! Writes up to the controller's in-capsule size travel in the capsule; larger ones wait for
//! the target's R2T and are sent as H2CData PDUs of at most MAXH2CDATA. Reads complete on the
//! CapsuleResp, or on a C2HData carrying SUCCESS when SQ flow control is disabled.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ballast_engine::IoBuf;

use crate::pdu::{self, CommonHeader, IcReq, IcResp, PduType, CH_LEN};
use crate::spec::{self, ConnectCmd, ConnectData, Cqe, PropertyCmd, Sgl, Sqe, Status};

/// Host-side errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The socket failed.
    #[error("{addr}: {op}: {source}")]
    Io {
        /// Target address.
        addr: SocketAddr,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The target answered a command with an error status.
    #[error("{addr}: {what} failed: {status:?}")]
    Command {
        /// Target address.
        addr: SocketAddr,
        /// The command.
        what: &'static str,
        /// Its status.
        status: Status,
    },
    /// The target broke the protocol (or terminated the connection).
    #[error("{addr}: protocol error: {why}")]
    Protocol {
        /// Target address.
        addr: SocketAddr,
        /// What was wrong.
        why: String,
    },
}

/// Result alias of the host.
pub type HostResult<T> = std::result::Result<T, HostError>;

/// Connection options.
#[derive(Debug, Clone)]
pub struct HostOpts {
    /// Host NQN.
    pub hostnqn: String,
    /// Host ID.
    pub hostid: [u8; 16],
    /// Request header digests.
    pub hdgst: bool,
    /// Request data digests.
    pub ddgst: bool,
    /// Keep-alive timeout asked for (ms; 0 = none).
    pub kato_ms: u32,
    /// I/O queue size (entries).
    pub queue_size: u16,
    /// Disable SQ flow control (lets the target use C2HData SUCCESS).
    pub disable_sqflow: bool,
    /// Socket timeout of control-path exchanges.
    pub timeout: Duration,
}

impl Default for HostOpts {
    fn default() -> Self {
        HostOpts {
            hostnqn: "nqn.2026-11.io.ballast:host".into(),
            hostid: *uuid::Uuid::new_v4().as_bytes(),
            hdgst: false,
            ddgst: false,
            kato_ms: 30_000,
            queue_size: 128,
            disable_sqflow: true,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a blocking exchange returned.
struct Reply {
    cqe: Cqe,
    data: Vec<u8>,
}

/// A connected TCP stream past ICReq/ICResp, with the negotiated parameters.
struct Wire {
    s: TcpStream,
    addr: SocketAddr,
    hdgst: bool,
    ddgst: bool,
    maxh2cdata: u32,
    cid: u16,
}

impl Wire {
    fn open(addr: SocketAddr, o: &HostOpts) -> HostResult<Wire> {
        let io = |op, source| HostError::Io { addr, op, source };
        let s = TcpStream::connect_timeout(&addr, o.timeout).map_err(|e| io("connect", e))?;
        s.set_nodelay(true).map_err(|e| io("nodelay", e))?;
        s.set_read_timeout(Some(o.timeout))
            .map_err(|e| io("timeout", e))?;
        let mut w = Wire {
            s,
            addr,
            hdgst: false,
            ddgst: false,
            maxh2cdata: 0,
            cid: 0,
        };
        let mut b = [0u8; 128];
        IcReq {
            pfv: 0,
            hpda: 0,
            hdgst: o.hdgst,
            ddgst: o.ddgst,
            maxr2t: 0,
        }
        .encode(&mut b);
        w.s.write_all(&b).map_err(|e| io("ICReq", e))?;
        let (ch, hdr, _) = w.recv()?;
        if ch.pdu_type != PduType::IcResp {
            return Err(w.proto(format!("expected ICResp, got {:?}", ch.pdu_type)));
        }
        let r = IcResp::parse(&hdr);
        if r.pfv != 0 || r.maxh2cdata < 4096 {
            return Err(w.proto(format!("bad ICResp {r:?}")));
        }
        w.hdgst = r.hdgst;
        w.ddgst = r.ddgst;
        w.maxh2cdata = r.maxh2cdata;
        Ok(w)
    }

    fn proto(&self, why: String) -> HostError {
        HostError::Protocol {
            addr: self.addr,
            why,
        }
    }

    fn read_exact(&mut self, n: usize) -> HostResult<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.s.read_exact(&mut v).map_err(|e| HostError::Io {
            addr: self.addr,
            op: "recv",
            source: e,
        })?;
        Ok(v)
    }

    /// Receives one PDU: (common header, header bytes, data).
    fn recv(&mut self) -> HostResult<(CommonHeader, Vec<u8>, Vec<u8>)> {
        let raw = self.read_exact(CH_LEN)?;
        let mut chb = [0u8; CH_LEN];
        chb.copy_from_slice(&raw);
        let ch = CommonHeader::parse(&chb);
        if (ch.hlen as usize) < CH_LEN || ch.plen < ch.hlen as u32 || ch.plen > 16 << 20 {
            return Err(self.proto(format!("bad PDU header {ch:?}")));
        }
        let mut hdr = raw;
        hdr.extend(self.read_exact(ch.hlen as usize - CH_LEN)?);
        let hd = if ch.has_header_digest() {
            let d = self.read_exact(4)?;
            if !pdu::verify_header_digest(&hdr, &d) {
                return Err(self.proto("header digest mismatch".into()));
            }
            4
        } else {
            0
        };
        let mut data = Vec::new();
        let hdr_total = ch.hlen as usize + hd;
        if ch.plen as usize > hdr_total {
            if ch.pdu_type == PduType::C2HTermReq {
                let t = pdu::TermReq::parse(&hdr);
                return Err(self.proto(format!(
                    "target terminated the connection: FES {} FEI {}",
                    t.fes, t.fei
                )));
            }
            let pdo = (ch.pdo as usize).max(hdr_total);
            self.read_exact(pdo - hdr_total)?;
            let dg = if ch.has_data_digest() { 4 } else { 0 };
            let n = (ch.plen as usize)
                .checked_sub(pdo + dg)
                .ok_or_else(|| self.proto("bad PLEN".into()))?;
            data = self.read_exact(n)?;
            if dg == 4 {
                let d = self.read_exact(4)?;
                if u32::from_le_bytes([d[0], d[1], d[2], d[3]]) != crc32c::crc32c(&data) {
                    return Err(self.proto("data digest mismatch".into()));
                }
            }
        } else if ch.pdu_type == PduType::C2HTermReq {
            let t = pdu::TermReq::parse(&hdr);
            return Err(self.proto(format!(
                "target terminated the connection: FES {} FEI {}",
                t.fes, t.fei
            )));
        }
        Ok((ch, hdr, data))
    }

    /// Runs one command to completion (blocking): in-capsule data out, C2HData in.
    fn exec(&mut self, mut sqe: Sqe, data_out: &[u8], read_len: u32) -> HostResult<Reply> {
        self.cid = self.cid.wrapping_add(1);
        let cid = self.cid;
        sqe.0[2..4].copy_from_slice(&cid.to_le_bytes());
        let icd = !data_out.is_empty();
        sqe.set_sgl(Sgl {
            address: 0,
            length: if icd { data_out.len() as u32 } else { read_len },
            type_byte: if icd {
                spec::SGL_OFFSET_DATA_BLOCK
            } else {
                spec::SGL_TRANSPORT_DATA_BLOCK
            },
        });
        let mut b = vec![0u8; 76];
        let n =
            pdu::encode_capsule_cmd(&mut b, &sqe, data_out.len() as u32, self.hdgst, self.ddgst);
        b.truncate(n);
        b.extend_from_slice(data_out);
        if self.ddgst && icd {
            b.extend_from_slice(&crc32c::crc32c(data_out).to_le_bytes());
        }
        self.s.write_all(&b).map_err(|e| HostError::Io {
            addr: self.addr,
            op: "send",
            source: e,
        })?;
        let mut data = Vec::new();
        loop {
            let (ch, hdr, d) = self.recv()?;
            match ch.pdu_type {
                PduType::C2HData => {
                    let dh = pdu::DataHeader::parse(&hdr);
                    data.extend_from_slice(&d);
                    if dh.success {
                        return Ok(Reply {
                            cqe: Cqe {
                                cid,
                                ..Default::default()
                            },
                            data,
                        });
                    }
                }
                PduType::CapsuleResp => {
                    let cqe = Cqe::from_bytes(&hdr[8..24]);
                    if cqe.cid != cid {
                        return Err(
                            self.proto(format!("completion for cid {} (want {cid})", cqe.cid))
                        );
                    }
                    return Ok(Reply { cqe, data });
                }
                t => return Err(self.proto(format!("unexpected {t:?} on a control exchange"))),
            }
        }
    }

    fn connect(
        &mut self,
        subnqn: &str,
        o: &HostOpts,
        qid: u16,
        cntlid: u16,
        sqsize: u16,
    ) -> HostResult<u16> {
        let cmd = ConnectCmd {
            recfmt: 0,
            qid,
            sqsize: sqsize - 1,
            cattr: if o.disable_sqflow {
                spec::CONNECT_CATTR_DISABLE_SQFLOW
            } else {
                0
            },
            kato: if qid == 0 { o.kato_ms } else { 0 },
        };
        let data = ConnectData {
            hostid: o.hostid,
            cntlid,
            subnqn: subnqn.into(),
            hostnqn: o.hostnqn.clone(),
        }
        .to_bytes();
        let r = self.exec(cmd.to_sqe(0, true), &data, 0)?;
        if !r.cqe.status.is_success() {
            return Err(HostError::Command {
                addr: self.addr,
                what: "Connect",
                status: r.cqe.status,
            });
        }
        Ok(r.cqe.dw0 as u16)
    }
}

/// Controller facts the host needs.
#[derive(Debug, Clone)]
pub struct CtrlInfo {
    /// Controller ID.
    pub cntlid: u16,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Maximum transfer size in bytes (0 = unlimited).
    pub max_xfer: u32,
    /// In-capsule data bytes accepted on I/O queues.
    pub icdsz: u32,
    /// Maximum outstanding commands.
    pub maxcmd: u16,
    /// CAP.MQES + 1.
    pub mqes: u32,
}

/// A namespace's geometry.
#[derive(Debug, Clone, Copy)]
pub struct NsInfo {
    /// Namespace ID.
    pub nsid: u32,
    /// Size in blocks.
    pub blocks: u64,
    /// Block size in bytes.
    pub block_size: u32,
}

/// An admin-queue session with a controller (control path, blocking).
pub struct Session {
    w: Wire,
    opts: HostOpts,
    /// The controller.
    pub ctrl: CtrlInfo,
    /// I/O queues granted by Set Features.
    pub io_queues: u16,
}

impl Session {
    /// Reads the discovery log of the target at `addr`.
    pub fn discover(addr: SocketAddr, o: &HostOpts) -> HostResult<Vec<spec::DiscoveryEntry>> {
        let mut w = Wire::open(addr, o)?;
        let mut o2 = o.clone();
        o2.kato_ms = 0;
        w.connect(crate::target::DISCOVERY_NQN, &o2, 0, 0xFFFF, 32)?;
        // Targets (Linux nvmet among them) refuse admin commands until CC.EN.
        enable(&mut w)?;
        let mut log = Vec::new();
        for len in [1024u32, 0] {
            let want = if len == 0 {
                let n = u64::from_le_bytes(log[8..16].try_into().expect("8 bytes")) as u32;
                1024 * (n + 1)
            } else {
                len
            };
            let numd = want / 4 - 1;
            let mut s = Sqe::new(spec::AdminOpcode::GetLogPage as u8, 0);
            s.set_cdw(10, spec::LOG_DISCOVERY as u32 | (numd & 0xFFFF) << 16)
                .set_cdw(11, numd >> 16);
            let r = w.exec(s, &[], want)?;
            check(&w, "Get Log Page (discovery)", r.cqe.status)?;
            log = r.data;
        }
        spec::parse_discovery_log(&log)
            .map(|(_, e)| e)
            .ok_or_else(|| w.proto("short discovery log".into()))
    }

    /// Connects the admin queue, enables the controller, identifies it and asks for
    /// `io_queues` I/O queues.
    pub fn connect(
        addr: SocketAddr,
        subnqn: &str,
        io_queues: u16,
        o: &HostOpts,
    ) -> HostResult<Session> {
        let mut w = Wire::open(addr, o)?;
        let cntlid = w.connect(subnqn, o, 0, 0xFFFF, 32)?;
        let cap = enable(&mut w)?;
        let mut s = Sqe::new(spec::AdminOpcode::Identify as u8, 0);
        s.set_cdw(10, spec::CNS_CONTROLLER as u32);
        let r = w.exec(s, &[], 4096)?;
        check(&w, "Identify Controller", r.cqe.status)?;
        let id = &r.data;
        if id.len() < 4096 {
            return Err(w.proto("short Identify data".into()));
        }
        let mdts = id[77];
        let ioccsz = u32::from_le_bytes(id[1792..1796].try_into().expect("4"));
        let ctrl = CtrlInfo {
            cntlid,
            subnqn: spec::read_str(&id[768..1024]),
            serial: spec::read_str(&id[4..24]),
            model: spec::read_str(&id[24..64]),
            max_xfer: if mdts == 0 { 0 } else { 4096u32 << mdts },
            icdsz: (ioccsz * 16).saturating_sub(64),
            maxcmd: u16::from_le_bytes([id[514], id[515]]),
            mqes: (cap & 0xFFFF) as u32 + 1,
        };
        let mut granted = 0;
        if io_queues > 0 {
            let v = (io_queues - 1) as u32;
            let mut s = Sqe::new(spec::AdminOpcode::SetFeatures as u8, 0);
            s.set_cdw(10, spec::FEAT_NUMBER_OF_QUEUES as u32)
                .set_cdw(11, v | v << 16);
            let r = w.exec(s, &[], 0)?;
            check(&w, "Set Features (queues)", r.cqe.status)?;
            granted = ((r.cqe.dw0 & 0xFFFF) + 1).min((r.cqe.dw0 >> 16) + 1) as u16;
        }
        Ok(Session {
            w,
            opts: o.clone(),
            ctrl,
            io_queues: granted.min(io_queues),
        })
    }

    /// Identify Namespace `nsid`.
    pub fn namespace(&mut self, nsid: u32) -> HostResult<NsInfo> {
        let mut s = Sqe::new(spec::AdminOpcode::Identify as u8, 0);
        s.set_nsid(nsid).set_cdw(10, spec::CNS_NAMESPACE as u32);
        let r = self.w.exec(s, &[], 4096)?;
        check(&self.w, "Identify Namespace", r.cqe.status)?;
        let d = &r.data;
        let blocks = u64::from_le_bytes(d[0..8].try_into().expect("8"));
        let flbas = (d[26] & 0xF) as usize;
        let lbads = d[128 + flbas * 4 + 2];
        if blocks == 0 || !(9..=16).contains(&lbads) {
            return Err(self.w.proto(format!("namespace {nsid} is inactive or odd")));
        }
        Ok(NsInfo {
            nsid,
            blocks,
            block_size: 1 << lbads,
        })
    }

    /// Sends a Keep Alive.
    pub fn keep_alive(&mut self) -> HostResult<()> {
        let r = self
            .w
            .exec(Sqe::new(spec::AdminOpcode::KeepAlive as u8, 0), &[], 0)?;
        check(&self.w, "Keep Alive", r.cqe.status)
    }

    /// Connects I/O queue `qid` (blocking); hand the result to [`IoQpair::new`] on the
    /// reactor that will own it.
    pub fn io_queue(&self, qid: u16) -> HostResult<IoQueueConn> {
        let mut w = Wire::open(self.w.addr, &self.opts)?;
        let size = self
            .opts
            .queue_size
            .min(self.ctrl.mqes.min(u16::MAX as u32) as u16)
            .max(2);
        w.connect(&self.ctrl.subnqn, &self.opts, qid, self.ctrl.cntlid, size)?;
        w.s.set_nonblocking(true).map_err(|e| HostError::Io {
            addr: w.addr,
            op: "set_nonblocking",
            source: e,
        })?;
        Ok(IoQueueConn {
            s: w.s,
            addr: w.addr,
            hdgst: w.hdgst,
            ddgst: w.ddgst,
            maxh2cdata: w.maxh2cdata,
            icdsz: self.ctrl.icdsz,
            depth: size - 1,
        })
    }
}

/// Enables the controller (CC.EN, 64-byte SQEs, 16-byte CQEs) and waits for CSTS.RDY;
/// returns CAP.
fn enable(w: &mut Wire) -> HostResult<u64> {
    let cap = prop(w, false, spec::REG_CAP, true, 0)?;
    prop(w, true, spec::REG_CC, false, 0x0046_0001)?;
    let t = std::time::Instant::now();
    loop {
        let csts = prop(w, false, spec::REG_CSTS, false, 0)?;
        if csts & 1 == 1 {
            return Ok(cap);
        }
        if csts & 2 != 0 || t.elapsed() > Duration::from_secs(5) {
            return Err(w.proto(format!("controller not ready after CC.EN (CSTS {csts:#x})")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check(w: &Wire, what: &'static str, status: Status) -> HostResult<()> {
    if status.is_success() {
        Ok(())
    } else {
        Err(HostError::Command {
            addr: w.addr,
            what,
            status,
        })
    }
}

fn prop(w: &mut Wire, set: bool, offset: u32, size8: bool, value: u64) -> HostResult<u64> {
    let r = w.exec(
        PropertyCmd {
            set,
            offset,
            size8,
            value,
        }
        .to_sqe(0),
        &[],
        0,
    )?;
    check(
        w,
        if set { "Property Set" } else { "Property Get" },
        r.cqe.status,
    )?;
    Ok(r.cqe.dw0 as u64 | (r.cqe.dw1 as u64) << 32)
}

/// A connected I/O queue, ready to be owned by a reactor.
#[derive(Debug)]
pub struct IoQueueConn {
    s: TcpStream,
    addr: SocketAddr,
    hdgst: bool,
    ddgst: bool,
    maxh2cdata: u32,
    icdsz: u32,
    depth: u16,
}

/// A host I/O operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOp {
    /// Read blocks into the buffer.
    Read,
    /// Write the buffer.
    Write,
    /// Flush.
    Flush,
    /// Write Zeroes.
    WriteZeroes,
    /// Dataset Management, deallocate (one range: `nlb` blocks at `slba`).
    Deallocate,
}

/// A finished host I/O.
#[derive(Debug)]
pub struct HostCompletion {
    /// The caller's tag.
    pub tag: u64,
    /// Completion status.
    pub status: Status,
    /// The buffer given to `submit` (holding read data).
    pub buf: Option<IoBuf>,
}

#[derive(Default)]
struct HostReq {
    busy: bool,
    op: Option<HostOp>,
    tag: u64,
    buf: Option<IoBuf>,
    got: usize,
}

#[derive(Debug, Clone, Copy)]
enum Rx {
    Ch,
    Hdr(CommonHeader),
    /// C2HData payload for `slot` at `off`, `left` bytes to go, then `dg` digest bytes.
    Data {
        slot: u16,
        pad: usize,
        off: usize,
        left: usize,
        dg: usize,
        success: bool,
        /// CRC32C of the payload so far, and the digest bytes received.
        crc: u32,
        got: [u8; 4],
    },
}

/// Bytes of socket input buffered per queue.
const RX_BUF: usize = 256 * 1024;

/// One I/O queue pair on the reactor that polls it. Single-threaded; not `Send` once
/// created (create it on its reactor).
pub struct IoQpair {
    s: TcpStream,
    addr: SocketAddr,
    hdgst: bool,
    ddgst: bool,
    maxh2cdata: u32,
    icdsz: u32,
    reqs: Vec<HostReq>,
    free: Vec<u16>,
    tx: Vec<u8>,
    tx_sent: usize,
    rx: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    state: Rx,
    failed: Option<String>,
}

impl IoQpair {
    /// Takes ownership of a connected queue.
    pub fn new(c: IoQueueConn) -> Self {
        let depth = c.depth.max(1) as usize;
        IoQpair {
            s: c.s,
            addr: c.addr,
            hdgst: c.hdgst,
            ddgst: c.ddgst,
            maxh2cdata: c.maxh2cdata,
            icdsz: c.icdsz,
            reqs: (0..depth).map(|_| HostReq::default()).collect(),
            free: (0..depth as u16).rev().collect(),
            tx: Vec::with_capacity(depth * (80 + c.icdsz as usize)),
            tx_sent: 0,
            rx: vec![0u8; RX_BUF].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            state: Rx::Ch,
            failed: None,
        }
    }

    /// Commands that can still be submitted.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Queue depth.
    pub fn depth(&self) -> usize {
        self.reqs.len()
    }

    /// True if queued bytes (commands, write data) wait for room in the socket.
    pub fn send_pending(&self) -> bool {
        self.tx_sent < self.tx.len()
    }

    /// The raw socket (to register as a reactor wake fd).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.s.as_raw_fd()
    }

    /// Why the queue failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Queues a command: `nlb` blocks at `slba` of namespace `nsid`; `buf` holds write data
    /// or receives read data. Returns the buffer back if the queue is full or failed.
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &mut self,
        op: HostOp,
        nsid: u32,
        slba: u64,
        nlb: u32,
        buf: Option<IoBuf>,
        tag: u64,
    ) -> Result<(), Option<IoBuf>> {
        if self.failed.is_some() || nlb == 0 {
            return Err(buf);
        }
        let Some(slot) = self.free.pop() else {
            return Err(buf);
        };
        let opcode = match op {
            HostOp::Read => spec::IoOpcode::Read,
            HostOp::Write => spec::IoOpcode::Write,
            HostOp::Flush => spec::IoOpcode::Flush,
            HostOp::WriteZeroes => spec::IoOpcode::WriteZeroes,
            HostOp::Deallocate => spec::IoOpcode::DatasetManagement,
        } as u8;
        let mut sqe = Sqe::new(opcode, slot);
        sqe.set_nsid(nsid);
        let mut range = [0u8; 16];
        if op == HostOp::Deallocate {
            // One range (NR = 0), attribute deallocate.
            sqe.set_cdw(10, 0).set_cdw(11, 1 << 2);
            spec::DsmRange {
                cattr: 0,
                length: nlb,
                slba,
            }
            .encode(&mut range);
        } else if op != HostOp::Flush {
            sqe.set_cdw(10, slba as u32)
                .set_cdw(11, (slba >> 32) as u32)
                .set_cdw(12, nlb - 1);
        }
        let len = match op {
            HostOp::Read | HostOp::Write => buf.as_ref().map_or(0, |b| b.len()),
            HostOp::Deallocate => range.len(),
            _ => 0,
        };
        let icd = (op == HostOp::Write && len as u32 <= self.icdsz) || op == HostOp::Deallocate;
        sqe.set_sgl(Sgl {
            address: 0,
            length: len as u32,
            type_byte: if icd {
                spec::SGL_OFFSET_DATA_BLOCK
            } else {
                spec::SGL_TRANSPORT_DATA_BLOCK
            },
        });
        let data: &[u8] = match (&buf, icd) {
            _ if op == HostOp::Deallocate => &range,
            (Some(b), true) => &b[..len],
            _ => &[],
        };
        let start = self.tx.len();
        self.tx.resize(start + 76, 0);
        let n = pdu::encode_capsule_cmd(
            &mut self.tx[start..],
            &sqe,
            data.len() as u32,
            self.hdgst,
            self.ddgst,
        );
        self.tx.truncate(start + n);
        self.tx.extend_from_slice(data);
        if self.ddgst && !data.is_empty() {
            self.tx
                .extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        }
        self.reqs[slot as usize] = HostReq {
            busy: true,
            op: Some(op),
            tag,
            buf,
            got: 0,
        };
        Ok(())
    }

    /// Gives the queue up (its controller association is gone): every outstanding command
    /// completes with a transport error at the next [`IoQpair::poll`], buffers returned.
    pub fn abort(&mut self, why: &str) {
        self.fail(why.to_string());
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            tracing::warn!(addr = %self.addr, "I/O queue failed: {why}");
            self.failed = Some(why);
        }
    }

    fn flush(&mut self) -> bool {
        let mut did = false;
        while self.tx_sent < self.tx.len() {
            match self.s.write(&self.tx[self.tx_sent..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx_sent += n;
                    did = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(format!("send: {e}"));
                    break;
                }
            }
        }
        if self.tx_sent == self.tx.len() {
            self.tx.clear();
            self.tx_sent = 0;
        }
        did
    }

    /// Sends queued commands, receives what the target sent, and appends finished I/O to
    /// `out`. Returns whether anything happened. After a failure every outstanding command
    /// completes with a transport error status.
    pub fn poll(&mut self, out: &mut Vec<HostCompletion>) -> bool {
        let mut did = self.flush();
        if self.failed.is_none() {
            loop {
                if self.rx_start == self.rx_end {
                    self.rx_start = 0;
                    self.rx_end = 0;
                } else if self.rx_end == self.rx.len() {
                    self.rx.copy_within(self.rx_start..self.rx_end, 0);
                    self.rx_end -= self.rx_start;
                    self.rx_start = 0;
                }
                let n = match self.s.read(&mut self.rx[self.rx_end..]) {
                    Ok(0) => {
                        self.fail("target closed the connection".into());
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.fail(format!("recv: {e}"));
                        break;
                    }
                };
                self.rx_end += n;
                did = true;
                if let Err(why) = self.parse(out) {
                    self.fail(why);
                    break;
                }
                if self.rx_end < self.rx.len() {
                    break;
                }
            }
            // R2T answers queued by parse().
            did |= self.flush();
        }
        if self.failed.is_some() {
            for (i, r) in self.reqs.iter_mut().enumerate() {
                if r.busy {
                    r.busy = false;
                    out.push(HostCompletion {
                        tag: r.tag,
                        status: Status::TRANSIENT_TRANSPORT_ERROR,
                        buf: r.buf.take(),
                    });
                    self.free.push(i as u16);
                    did = true;
                }
            }
        }
        did
    }

    fn parse(&mut self, out: &mut Vec<HostCompletion>) -> Result<(), String> {
        loop {
            let avail = self.rx_end - self.rx_start;
            match self.state {
                Rx::Ch => {
                    if avail < CH_LEN {
                        return Ok(());
                    }
                    let mut b = [0u8; CH_LEN];
                    b.copy_from_slice(&self.rx[self.rx_start..self.rx_start + CH_LEN]);
                    let ch = CommonHeader::parse(&b);
                    if ch.hlen as usize > 128 || (ch.hlen as usize) < CH_LEN {
                        return Err(format!("bad PDU header {ch:?}"));
                    }
                    self.state = Rx::Hdr(ch);
                }
                Rx::Hdr(ch) => {
                    let hd = if ch.has_header_digest() { 4 } else { 0 };
                    let need = ch.hlen as usize + hd;
                    if avail < need {
                        return Ok(());
                    }
                    let s = self.rx_start;
                    let hlen = ch.hlen as usize;
                    if hd == 4
                        && !pdu::verify_header_digest(
                            &self.rx[s..s + hlen],
                            &self.rx[s + hlen..s + need],
                        )
                    {
                        return Err("header digest mismatch".into());
                    }
                    let mut hdr = [0u8; 128];
                    hdr[..hlen].copy_from_slice(&self.rx[s..s + hlen]);
                    self.rx_start += need;
                    self.state = self.on_header(ch, &hdr[..hlen], need, out)?;
                }
                Rx::Data {
                    slot,
                    mut pad,
                    mut off,
                    mut left,
                    mut dg,
                    success,
                    mut crc,
                    mut got,
                } => {
                    if avail == 0 {
                        return Ok(());
                    }
                    let mut a = avail;
                    let n = pad.min(a);
                    pad -= n;
                    self.rx_start += n;
                    a -= n;
                    if pad == 0 && left > 0 && a > 0 {
                        let n = left.min(a);
                        let src = self.rx_start;
                        let r = &mut self.reqs[slot as usize];
                        let chunk = &self.rx[src..src + n];
                        if dg > 0 {
                            crc = crc32c::crc32c_append(crc, chunk);
                        }
                        if let Some(b) = r.buf.as_mut() {
                            if off + n <= b.len() {
                                b[off..off + n].copy_from_slice(chunk);
                            }
                        }
                        off += n;
                        left -= n;
                        self.rx_start += n;
                        a -= n;
                    }
                    if pad == 0 && left == 0 && dg > 0 && a > 0 {
                        let n = dg.min(a);
                        let at = 4 - dg;
                        let src = self.rx_start;
                        got[at..at + n].copy_from_slice(&self.rx[src..src + n]);
                        dg -= n;
                        self.rx_start += n;
                        if dg == 0 && u32::from_le_bytes(got) != crc {
                            return Err("data digest mismatch".into());
                        }
                    }
                    if pad == 0 && left == 0 && dg == 0 {
                        self.reqs[slot as usize].got = off;
                        self.state = Rx::Ch;
                        if success {
                            self.complete(slot, Status::SUCCESS, out);
                        }
                    } else {
                        self.state = Rx::Data {
                            slot,
                            pad,
                            off,
                            left,
                            dg,
                            success,
                            crc,
                            got,
                        };
                    }
                }
            }
        }
    }

    fn on_header(
        &mut self,
        ch: CommonHeader,
        hdr: &[u8],
        hdr_total: usize,
        out: &mut Vec<HostCompletion>,
    ) -> Result<Rx, String> {
        match ch.pdu_type {
            PduType::CapsuleResp => {
                let cqe = Cqe::from_bytes(&hdr[8..24]);
                let slot = cqe.cid;
                if !self.reqs.get(slot as usize).is_some_and(|r| r.busy) {
                    return Err(format!("completion for unknown cid {slot}"));
                }
                self.complete(slot, cqe.status, out);
                Ok(Rx::Ch)
            }
            PduType::C2HData => {
                let d = pdu::DataHeader::parse(hdr);
                let slot = d.cccid;
                let ok = self.reqs.get(slot as usize).is_some_and(|r| {
                    r.busy
                        && r.op == Some(HostOp::Read)
                        && r.buf
                            .as_ref()
                            .is_some_and(|b| d.datao as usize + d.datal as usize <= b.len())
                });
                if !ok {
                    return Err(format!("C2HData for cid {slot} out of range"));
                }
                let pdo = (ch.pdo as usize).max(hdr_total);
                Ok(Rx::Data {
                    slot,
                    pad: pdo - hdr_total,
                    off: d.datao as usize,
                    left: d.datal as usize,
                    dg: if ch.has_data_digest() { 4 } else { 0 },
                    success: d.success,
                    crc: 0,
                    got: [0; 4],
                })
            }
            PduType::R2t => {
                let r = pdu::R2t::parse(hdr);
                let slot = r.cccid;
                let Some(req) = self.reqs.get(slot as usize).filter(|q| q.busy) else {
                    return Err(format!("R2T for unknown cid {slot}"));
                };
                let Some(buf) = req.buf.as_ref() else {
                    return Err("R2T for a command without data".into());
                };
                let end = r.r2to as usize + r.r2tl as usize;
                if end > buf.len() {
                    return Err("R2T beyond the command's data".into());
                }
                let mut off = r.r2to as usize;
                while off < end {
                    let n = (end - off).min(self.maxh2cdata as usize);
                    let start = self.tx.len();
                    self.tx.resize(start + 28, 0);
                    let h = pdu::H2CData {
                        cccid: slot,
                        ttag: r.ttag,
                        datao: off as u32,
                        datal: n as u32,
                        last_pdu: off + n == end,
                    }
                    .encode(&mut self.tx[start..], self.hdgst, self.ddgst);
                    self.tx.truncate(start + h);
                    let data =
                        &self.reqs[slot as usize].buf.as_ref().expect("checked")[off..off + n];
                    self.tx.extend_from_slice(data);
                    if self.ddgst {
                        let c = crc32c::crc32c(data);
                        self.tx.extend_from_slice(&c.to_le_bytes());
                    }
                    off += n;
                }
                Ok(Rx::Ch)
            }
            PduType::C2HTermReq => {
                let t = pdu::TermReq::parse(hdr);
                Err(format!(
                    "target terminated the connection: FES {} FEI {}",
                    t.fes, t.fei
                ))
            }
            t => Err(format!("unexpected PDU {t:?}")),
        }
    }

    fn complete(&mut self, slot: u16, status: Status, out: &mut Vec<HostCompletion>) {
        let r = &mut self.reqs[slot as usize];
        r.busy = false;
        out.push(HostCompletion {
            tag: r.tag,
            status,
            buf: r.buf.take(),
        });
        self.free.push(slot);
    }
}
