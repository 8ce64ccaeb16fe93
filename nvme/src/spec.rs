//! NVMe base 2.0 and NVMe-oF 1.1 structures the target and host exchange: submission and
//! completion queue entries, status codes, fabrics commands, Identify data, log pages,
//! feature identifiers and controller registers.
//!
//! Everything is little-endian on the wire; structures are encoded to and decoded from byte
//! slices explicitly (no `repr(C)` transmutes), so a malformed buffer can never be UB.

// ------------------------------------------------------------------ helpers ----

#[inline]
fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

#[inline]
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

#[inline]
fn le64(b: &[u8], o: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(v)
}

#[inline]
fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Copies `s` into `dst`, padding the rest with `pad` (spaces for Identify strings, NULs for
/// NQNs and addresses). Truncates if `s` is too long.
fn put_str(dst: &mut [u8], s: &str, pad: u8) {
    let n = s.len().min(dst.len());
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    dst[n..].fill(pad);
}

/// Reads a NUL-terminated (or full-width) ASCII field, trimming trailing NULs and spaces.
pub fn read_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end])
        .trim_end_matches(' ')
        .to_string()
}

// ------------------------------------------------------------- queue entries ----

/// Opcode of every fabrics command (Connect, Property Get/Set, ...).
pub const FABRICS_OPCODE: u8 = 0x7F;

/// Length of a submission queue entry.
pub const SQE_LEN: usize = 64;
/// Length of a completion queue entry.
pub const CQE_LEN: usize = 16;

/// Direction of a command's data transfer (opcode bits 1:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirection {
    /// No data.
    None,
    /// Host to controller (writes).
    HostToController,
    /// Controller to host (reads).
    ControllerToHost,
    /// Both (not used by NVMe/TCP).
    Bidirectional,
}

/// The SGL descriptor in an SQE's data pointer (fabrics always use SGLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sgl {
    /// Address (an offset for in-capsule data).
    pub address: u64,
    /// Length in bytes.
    pub length: u32,
    /// Descriptor type (bits 7:4) and subtype (bits 3:0).
    pub type_byte: u8,
}

/// SGL type: Data Block, subtype Offset (data in the command capsule).
pub const SGL_OFFSET_DATA_BLOCK: u8 = 0x01;
/// SGL type: Transport Data Block, transport-specific subtype A (data moved by R2T/C2HData).
pub const SGL_TRANSPORT_DATA_BLOCK: u8 = 0x5A;

impl Sgl {
    /// In-capsule data (Data Block descriptor, Offset subtype).
    pub fn is_offset_data_block(&self) -> bool {
        self.type_byte == SGL_OFFSET_DATA_BLOCK
    }
    /// Data transferred by the transport (Transport SGL Data Block).
    pub fn is_transport_data_block(&self) -> bool {
        self.type_byte == SGL_TRANSPORT_DATA_BLOCK
    }
}

/// A 64-byte submission queue entry, kept as its wire bytes; accessors decode fields.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sqe(pub [u8; SQE_LEN]);

impl Default for Sqe {
    fn default() -> Self {
        Sqe([0; SQE_LEN])
    }
}

impl std::fmt::Debug for Sqe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqe")
            .field("opcode", &format_args!("{:#04x}", self.opcode()))
            .field("cid", &self.cid())
            .field("nsid", &self.nsid())
            .field("cdw10", &format_args!("{:#x}", self.cdw10()))
            .finish()
    }
}

impl Sqe {
    /// An entry with `opcode` and command identifier `cid`; all else zero.
    pub fn new(opcode: u8, cid: u16) -> Self {
        let mut s = Sqe::default();
        s.0[0] = opcode;
        put16(&mut s.0, 2, cid);
        s
    }
    /// Decodes the first 64 bytes of `b` (panics if shorter: callers pass a header slice).
    pub fn from_bytes(b: &[u8]) -> Self {
        let mut s = Sqe::default();
        s.0.copy_from_slice(&b[..SQE_LEN]);
        s
    }
    /// Wire bytes.
    pub fn as_bytes(&self) -> &[u8; SQE_LEN] {
        &self.0
    }
    /// Opcode.
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }
    /// Command identifier.
    pub fn cid(&self) -> u16 {
        le16(&self.0, 2)
    }
    /// Namespace ID.
    pub fn nsid(&self) -> u32 {
        le32(&self.0, 4)
    }
    /// Fabrics command type (byte 4 of a fabrics SQE).
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }
    /// Command dword `n` (2..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        le32(&self.0, n * 4)
    }
    /// CDW10.
    pub fn cdw10(&self) -> u32 {
        self.cdw(10)
    }
    /// CDW11.
    pub fn cdw11(&self) -> u32 {
        self.cdw(11)
    }
    /// CDW12.
    pub fn cdw12(&self) -> u32 {
        self.cdw(12)
    }
    /// The data pointer's SGL descriptor.
    pub fn sgl(&self) -> Sgl {
        Sgl {
            address: le64(&self.0, 24),
            length: le32(&self.0, 32),
            type_byte: self.0[39],
        }
    }
    /// The data direction of the command (for fabrics commands, of its fctype).
    pub fn data_direction(&self) -> DataDirection {
        let bits = if self.opcode() == FABRICS_OPCODE {
            self.fctype()
        } else {
            self.opcode()
        };
        match bits & 3 {
            0 => DataDirection::None,
            1 => DataDirection::HostToController,
            2 => DataDirection::ControllerToHost,
            _ => DataDirection::Bidirectional,
        }
    }
    /// Sets the namespace ID.
    pub fn set_nsid(&mut self, nsid: u32) -> &mut Self {
        put32(&mut self.0, 4, nsid);
        self
    }
    /// Sets command dword `n`.
    pub fn set_cdw(&mut self, n: usize, v: u32) -> &mut Self {
        put32(&mut self.0, n * 4, v);
        self
    }
    /// Sets the fabrics command type.
    pub fn set_fctype(&mut self, t: u8) -> &mut Self {
        self.0[4] = t;
        self
    }
    /// Sets the data pointer's SGL descriptor.
    pub fn set_sgl(&mut self, sgl: Sgl) -> &mut Self {
        put64(&mut self.0, 24, sgl.address);
        put32(&mut self.0, 32, sgl.length);
        self.0[36..39].fill(0);
        self.0[39] = sgl.type_byte;
        self.0[1] = (self.0[1] & !0xC0) | 0x40; // PSDT: SGL for data
        self
    }
    /// Raw byte access for building odd commands in tests.
    pub fn set_byte(&mut self, off: usize, v: u8) -> &mut Self {
        self.0[off] = v;
        self
    }
}

/// Status field of a completion (SCT, SC, DNR), stored as bits 14:0 of the CQE status word
/// without the phase tag: SC 7:0, SCT 10:8, CRD 12:11, More 13, DNR 14.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Status(pub u16);

const DNR: u16 = 1 << 14;

const fn st(sct: u16, sc: u16, dnr: bool) -> Status {
    Status(sc | (sct << 8) | if dnr { DNR } else { 0 })
}

impl Status {
    /// Successful completion.
    pub const SUCCESS: Status = st(0, 0x00, false);
    /// Invalid command opcode.
    pub const INVALID_OPCODE: Status = st(0, 0x01, true);
    /// Invalid field in command.
    pub const INVALID_FIELD: Status = st(0, 0x02, true);
    /// Data transfer error.
    pub const DATA_TRANSFER_ERROR: Status = st(0, 0x04, false);
    /// Internal error.
    pub const INTERNAL_ERROR: Status = st(0, 0x06, false);
    /// Command aborted due to SQ deletion (queue torn down).
    pub const ABORTED_SQ_DELETION: Status = st(0, 0x08, false);
    /// Invalid namespace or format.
    pub const INVALID_NAMESPACE_OR_FORMAT: Status = st(0, 0x0B, true);
    /// Command sequence error.
    pub const COMMAND_SEQUENCE_ERROR: Status = st(0, 0x0C, true);
    /// Data SGL length invalid.
    pub const DATA_SGL_LENGTH_INVALID: Status = st(0, 0x0F, true);
    /// SGL descriptor type invalid.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Status = st(0, 0x11, true);
    /// Transient transport error (e.g. a data digest mismatch): the host may retry.
    pub const TRANSIENT_TRANSPORT_ERROR: Status = st(0, 0x22, false);
    /// LBA out of range.
    pub const LBA_OUT_OF_RANGE: Status = st(0, 0x80, true);
    /// Capacity Exceeded: a thin namespace's pool is full (Linux: ENOSPC).
    pub const CAPACITY_EXCEEDED: Status = st(0, 0x81, true);
    /// Namespace is Write Protected (a read-only lvol: a snapshot).
    pub const NAMESPACE_WRITE_PROTECTED: Status = st(0, 0x20, true);
    /// Namespace not ready, do not retry (removed).
    pub const NAMESPACE_NOT_READY: Status = st(0, 0x82, true);
    /// Namespace not ready, retry later (transient resource shortage).
    pub const NAMESPACE_NOT_READY_RETRY: Status = st(0, 0x82, false);
    /// Asynchronous event request limit exceeded.
    pub const ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED: Status = st(1, 0x05, true);
    /// Invalid log page.
    pub const INVALID_LOG_PAGE: Status = st(1, 0x09, true);
    /// Feature identifier not saveable.
    pub const FEATURE_NOT_SAVEABLE: Status = st(1, 0x0D, true);
    /// Connect: incompatible format.
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = st(1, 0x80, true);
    /// Connect: controller busy.
    pub const CONNECT_CONTROLLER_BUSY: Status = st(1, 0x81, false);
    /// Connect: invalid parameters (dw0 tells which).
    pub const CONNECT_INVALID_PARAMETERS: Status = st(1, 0x82, true);
    /// Connect: invalid host (not on the subsystem's allowed hosts).
    pub const CONNECT_INVALID_HOST: Status = st(1, 0x84, true);
    /// Media: write fault.
    pub const WRITE_FAULT: Status = st(2, 0x80, false);
    /// Media: unrecovered read error.
    pub const UNRECOVERED_READ_ERROR: Status = st(2, 0x81, false);

    /// Status code type.
    pub fn sct(self) -> u8 {
        ((self.0 >> 8) & 0x7) as u8
    }
    /// Status code.
    pub fn sc(self) -> u8 {
        (self.0 & 0xFF) as u8
    }
    /// Do Not Retry.
    pub fn dnr(self) -> bool {
        self.0 & DNR != 0
    }
    /// Success?
    pub fn is_success(self) -> bool {
        self.sct() == 0 && self.sc() == 0
    }
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Status(sct={:#x}, sc={:#04x}{})",
            self.sct(),
            self.sc(),
            if self.dnr() { ", dnr" } else { "" }
        )
    }
}

/// A completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cqe {
    /// Command-specific dword 0.
    pub dw0: u32,
    /// Command-specific dword 1.
    pub dw1: u32,
    /// SQ head pointer.
    pub sqhd: u16,
    /// SQ identifier.
    pub sqid: u16,
    /// Command identifier.
    pub cid: u16,
    /// Status (phase tag is always 0 on fabrics).
    pub status: Status,
}

impl Cqe {
    /// Encodes into 16 bytes.
    pub fn encode(&self, b: &mut [u8]) {
        put32(b, 0, self.dw0);
        put32(b, 4, self.dw1);
        put16(b, 8, self.sqhd);
        put16(b, 10, self.sqid);
        put16(b, 12, self.cid);
        put16(b, 14, self.status.0 << 1);
    }
    /// Decodes 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Self {
        Cqe {
            dw0: le32(b, 0),
            dw1: le32(b, 4),
            sqhd: le16(b, 8),
            sqid: le16(b, 10),
            cid: le16(b, 12),
            status: Status(le16(b, 14) >> 1),
        }
    }
}

// ------------------------------------------------------------------- opcodes ----

/// NVM command set I/O opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IoOpcode {
    /// Flush.
    Flush = 0x00,
    /// Write.
    Write = 0x01,
    /// Read.
    Read = 0x02,
    /// Write Uncorrectable (not supported by ballast).
    WriteUncorrectable = 0x04,
    /// Compare (not supported by ballast).
    Compare = 0x05,
    /// Write Zeroes.
    WriteZeroes = 0x08,
    /// Dataset Management.
    DatasetManagement = 0x09,
}

impl IoOpcode {
    /// Decodes an opcode.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Self::Flush,
            0x01 => Self::Write,
            0x02 => Self::Read,
            0x04 => Self::WriteUncorrectable,
            0x05 => Self::Compare,
            0x08 => Self::WriteZeroes,
            0x09 => Self::DatasetManagement,
            _ => return None,
        })
    }
}

/// Admin opcodes a fabrics controller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminOpcode {
    /// Get Log Page.
    GetLogPage = 0x02,
    /// Identify.
    Identify = 0x06,
    /// Abort.
    Abort = 0x08,
    /// Set Features.
    SetFeatures = 0x09,
    /// Get Features.
    GetFeatures = 0x0A,
    /// Asynchronous Event Request.
    AsyncEventRequest = 0x0C,
    /// Keep Alive.
    KeepAlive = 0x18,
}

impl AdminOpcode {
    /// Decodes an opcode.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x02 => Self::GetLogPage,
            0x06 => Self::Identify,
            0x08 => Self::Abort,
            0x09 => Self::SetFeatures,
            0x0A => Self::GetFeatures,
            0x0C => Self::AsyncEventRequest,
            0x18 => Self::KeepAlive,
            _ => return None,
        })
    }
}

/// Fabrics command types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FabricsType {
    /// Property Set.
    PropertySet = 0x00,
    /// Connect.
    Connect = 0x01,
    /// Property Get.
    PropertyGet = 0x04,
    /// Authentication Send (not supported).
    AuthSend = 0x05,
    /// Authentication Receive (not supported).
    AuthRecv = 0x06,
    /// Disconnect (not supported).
    Disconnect = 0x08,
}

impl FabricsType {
    /// Decodes a fabrics command type.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Self::PropertySet,
            0x01 => Self::Connect,
            0x04 => Self::PropertyGet,
            0x05 => Self::AuthSend,
            0x06 => Self::AuthRecv,
            0x08 => Self::Disconnect,
            _ => return None,
        })
    }
}

// ------------------------------------------------------------------- connect ----

/// Length of the Connect command's data.
pub const CONNECT_DATA_LEN: usize = 1024;
/// Byte offset of CNTLID in the Connect data (for the invalid-parameter offset).
pub const CONNECT_DATA_CNTLID_OFFSET: u32 = 16;
/// Byte offset of SUBNQN in the Connect data.
pub const CONNECT_DATA_SUBNQN_OFFSET: u32 = 256;
/// Byte offset of HOSTNQN in the Connect data.
pub const CONNECT_DATA_HOSTNQN_OFFSET: u32 = 512;
/// Byte offset of QID in the Connect SQE.
pub const CONNECT_SQE_QID_OFFSET: u32 = 42;
/// Byte offset of SQSIZE in the Connect SQE.
pub const CONNECT_SQE_SQSIZE_OFFSET: u32 = 44;
/// Connect attribute: the host disables SQ flow control (SQHD need not be reported).
pub const CONNECT_CATTR_DISABLE_SQFLOW: u8 = 0x04;

/// The Connect command's SQE fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectCmd {
    /// Record format (0).
    pub recfmt: u16,
    /// Queue ID (0 = admin).
    pub qid: u16,
    /// Submission queue size, 0's based.
    pub sqsize: u16,
    /// Connect attributes.
    pub cattr: u8,
    /// Keep-alive timeout in ms (admin queue only).
    pub kato: u32,
}

impl ConnectCmd {
    /// Decodes from an SQE.
    pub fn from_sqe(s: &Sqe) -> Self {
        ConnectCmd {
            recfmt: le16(&s.0, 40),
            qid: le16(&s.0, 42),
            sqsize: le16(&s.0, 44),
            cattr: s.0[46],
            kato: le32(&s.0, 48),
        }
    }
    /// Encodes into a Connect SQE (with a transport SGL of the connect data length, or an
    /// in-capsule one if `in_capsule`).
    pub fn to_sqe(&self, cid: u16, in_capsule: bool) -> Sqe {
        let mut s = Sqe::new(FABRICS_OPCODE, cid);
        s.set_fctype(FabricsType::Connect as u8);
        put16(&mut s.0, 40, self.recfmt);
        put16(&mut s.0, 42, self.qid);
        put16(&mut s.0, 44, self.sqsize);
        s.0[46] = self.cattr;
        put32(&mut s.0, 48, self.kato);
        s.set_sgl(Sgl {
            address: 0,
            length: CONNECT_DATA_LEN as u32,
            type_byte: if in_capsule {
                SGL_OFFSET_DATA_BLOCK
            } else {
                SGL_TRANSPORT_DATA_BLOCK
            },
        });
        s
    }
}

/// The Connect command's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectData {
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Controller ID (0xFFFF = dynamic, for the admin queue).
    pub cntlid: u16,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
}

impl ConnectData {
    /// Decodes 1024 bytes of Connect data.
    pub fn parse(b: &[u8]) -> Self {
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&b[0..16]);
        ConnectData {
            hostid,
            cntlid: le16(b, 16),
            subnqn: read_str(&b[256..512]),
            hostnqn: read_str(&b[512..768]),
        }
    }
    /// Encodes into 1024 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; CONNECT_DATA_LEN];
        b[0..16].copy_from_slice(&self.hostid);
        put16(&mut b, 16, self.cntlid);
        put_str(&mut b[256..512], &self.subnqn, 0);
        put_str(&mut b[512..768], &self.hostnqn, 0);
        b
    }
}

/// A Property Get/Set command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyCmd {
    /// Set (true) or Get.
    pub set: bool,
    /// Register offset.
    pub offset: u32,
    /// 8-byte (true) or 4-byte access.
    pub size8: bool,
    /// Value to set.
    pub value: u64,
}

impl PropertyCmd {
    /// Decodes from an SQE.
    pub fn from_sqe(s: &Sqe) -> Self {
        PropertyCmd {
            set: s.fctype() == FabricsType::PropertySet as u8,
            size8: s.0[40] & 0x7 == 1,
            offset: le32(&s.0, 44),
            value: le64(&s.0, 48),
        }
    }
    /// Encodes into an SQE.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let mut s = Sqe::new(FABRICS_OPCODE, cid);
        s.set_fctype(if self.set {
            FabricsType::PropertySet as u8
        } else {
            FabricsType::PropertyGet as u8
        });
        s.0[40] = self.size8 as u8;
        put32(&mut s.0, 44, self.offset);
        put64(&mut s.0, 48, self.value);
        s.set_sgl(Sgl {
            type_byte: SGL_TRANSPORT_DATA_BLOCK,
            ..Sgl::default()
        });
        s
    }
}

/// Controller Capabilities register.
pub const REG_CAP: u32 = 0x00;
/// Upper half of CAP (4-byte accesses).
pub const REG_CAP_HI: u32 = 0x04;
/// Version register.
pub const REG_VS: u32 = 0x08;
/// Controller Configuration register.
pub const REG_CC: u32 = 0x14;
/// Controller Status register.
pub const REG_CSTS: u32 = 0x1C;

/// NVMe version reported (1.3.0).
pub const NVME_VERSION: u32 = 0x0001_0300;

/// The fields of CAP a fabrics controller reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Maximum queue entries supported, 0's based.
    pub mqes: u16,
    /// Contiguous queues required.
    pub cqr: bool,
    /// Ready timeout in 500 ms units.
    pub to_500ms: u8,
    /// NVM command set supported.
    pub css_nvm: bool,
    /// Memory page size minimum (2^(12+n)).
    pub mpsmin: u8,
    /// Memory page size maximum.
    pub mpsmax: u8,
}

impl Cap {
    /// The register value.
    pub fn to_u64(&self) -> u64 {
        self.mqes as u64
            | (self.cqr as u64) << 16
            | (self.to_500ms as u64) << 24
            | (self.css_nvm as u64) << 37
            | ((self.mpsmin & 0xF) as u64) << 48
            | ((self.mpsmax & 0xF) as u64) << 52
    }
}

// ------------------------------------------------------------------ identify ----

/// Identify CNS: namespace.
pub const CNS_NAMESPACE: u8 = 0x00;
/// Identify CNS: controller.
pub const CNS_CONTROLLER: u8 = 0x01;
/// Identify CNS: active namespace ID list.
pub const CNS_ACTIVE_NS_LIST: u8 = 0x02;
/// Identify CNS: namespace identification descriptor list.
pub const CNS_NS_ID_DESCRIPTORS: u8 = 0x03;

/// Controller type: I/O controller.
pub const CNTRLTYPE_IO: u8 = 1;
/// Controller type: discovery controller.
pub const CNTRLTYPE_DISCOVERY: u8 = 2;

/// ONCS: Dataset Management supported.
pub const ONCS_DSM: u16 = 1 << 2;
/// ONCS: Write Zeroes supported.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;

/// SGLS: SGLs supported (no alignment requirement).
pub const SGLS_SUPPORTED: u32 = 1;
/// SGLS: the address of a Data Block descriptor may be an offset (in-capsule data).
pub const SGLS_OFFSET: u32 = 1 << 20;
/// SGLS: Transport SGL Data Block descriptors supported.
pub const SGLS_TRANSPORT: u32 = 1 << 21;

/// The Identify Controller fields ballast fills (everything else is zero).
#[derive(Debug, Clone, Default)]
pub struct IdentifyController {
    /// Serial number (20 ASCII).
    pub serial: String,
    /// Model number (40 ASCII).
    pub model: String,
    /// Firmware revision.
    pub firmware: [u8; 8],
    /// Recommended arbitration burst.
    pub rab: u8,
    /// IEEE OUI.
    pub ieee: [u8; 3],
    /// Multi-path I/O and namespace sharing capabilities.
    pub cmic: u8,
    /// Maximum data transfer size (2^n pages of CAP.MPSMIN).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// Version.
    pub ver: u32,
    /// Optional asynchronous events supported.
    pub oaes: u32,
    /// Controller attributes.
    pub ctratt: u32,
    /// Controller type.
    pub cntrltype: u8,
    /// Abort command limit (0's based).
    pub acl: u8,
    /// Asynchronous event request limit (0's based).
    pub aerl: u8,
    /// Firmware updates.
    pub frmw: u8,
    /// Log page attributes.
    pub lpa: u8,
    /// Error log page entries (0's based).
    pub elpe: u8,
    /// Keep-alive support (granularity, 100 ms units).
    pub kas: u16,
    /// SQ entry size (required 3:0, max 7:4), log2.
    pub sqes: u8,
    /// CQ entry size.
    pub cqes: u8,
    /// Maximum outstanding commands.
    pub maxcmd: u16,
    /// Number of namespaces (highest NSID).
    pub nn: u32,
    /// Optional NVM command support.
    pub oncs: u16,
    /// Volatile write cache present.
    pub vwc: u8,
    /// SGL support.
    pub sgls: u32,
    /// Subsystem NQN.
    pub subnqn: String,
    /// I/O queue command capsule supported size (16-byte units).
    pub ioccsz: u32,
    /// I/O queue response capsule supported size (16-byte units).
    pub iorcsz: u32,
    /// In-capsule data offset (16-byte units).
    pub icdoff: u16,
    /// Fabrics controller attributes.
    pub fcatt: u8,
    /// Maximum SGL data block descriptors.
    pub msdbd: u8,
}

impl IdentifyController {
    /// Encodes the 4096-byte data structure.
    pub fn to_bytes(&self) -> Box<[u8; 4096]> {
        let mut b = Box::new([0u8; 4096]);
        put_str(&mut b[4..24], &self.serial, b' ');
        put_str(&mut b[24..64], &self.model, b' ');
        b[64..72].copy_from_slice(&self.firmware);
        b[72] = self.rab;
        b[73..76].copy_from_slice(&self.ieee);
        b[76] = self.cmic;
        b[77] = self.mdts;
        put16(&mut b[..], 78, self.cntlid);
        put32(&mut b[..], 80, self.ver);
        put32(&mut b[..], 92, self.oaes);
        put32(&mut b[..], 96, self.ctratt);
        b[111] = self.cntrltype;
        b[258] = self.acl;
        b[259] = self.aerl;
        b[260] = self.frmw;
        b[261] = self.lpa;
        b[262] = self.elpe;
        // Warning / critical composite temperature thresholds (K).
        put16(&mut b[..], 266, 0x0157);
        put16(&mut b[..], 268, 0x0175);
        put16(&mut b[..], 320, self.kas);
        b[512] = self.sqes;
        b[513] = self.cqes;
        put16(&mut b[..], 514, self.maxcmd);
        put32(&mut b[..], 516, self.nn);
        put16(&mut b[..], 520, self.oncs);
        b[525] = self.vwc;
        put32(&mut b[..], 536, self.sgls);
        put_str(&mut b[768..1024], &self.subnqn, 0);
        put32(&mut b[..], 1792, self.ioccsz);
        put32(&mut b[..], 1796, self.iorcsz);
        put16(&mut b[..], 1800, self.icdoff);
        b[1802] = self.fcatt;
        b[1803] = self.msdbd;
        b
    }
}

/// The Identify Namespace fields ballast fills (one LBA format, no metadata).
#[derive(Debug, Clone, Default)]
pub struct IdentifyNamespace {
    /// Namespace size in blocks.
    pub nsze: u64,
    /// Capacity in blocks.
    pub ncap: u64,
    /// Utilization in blocks.
    pub nuse: u64,
    /// LBA data size in bytes (512 or 4096).
    pub lba_data_size: u32,
    /// Namespace GUID.
    pub nguid: [u8; 16],
    /// IEEE EUI-64.
    pub eui64: [u8; 8],
    /// Deallocate logical block features.
    pub dlfeat: u8,
    /// Namespace multi-path and sharing capabilities.
    pub nmic: u8,
    /// Optimal I/O boundary in blocks (0 = none).
    pub noiob: u16,
}

impl IdentifyNamespace {
    /// Encodes the 4096-byte data structure.
    pub fn to_bytes(&self) -> Box<[u8; 4096]> {
        let mut b = Box::new([0u8; 4096]);
        put64(&mut b[..], 0, self.nsze);
        put64(&mut b[..], 8, self.ncap);
        put64(&mut b[..], 16, self.nuse);
        b[25] = 0; // NLBAF: one format
        b[26] = 0; // FLBAS: format 0
        b[30] = self.nmic;
        b[33] = self.dlfeat;
        put16(&mut b[..], 46, self.noiob);
        b[104..120].copy_from_slice(&self.nguid);
        b[120..128].copy_from_slice(&self.eui64);
        let lbads = self.lba_data_size.max(1).trailing_zeros();
        put32(&mut b[..], 128, lbads << 16);
        b
    }
}

/// The active namespace ID list (up to 1024 IDs, ascending).
pub fn active_ns_list(ids: &[u32]) -> Box<[u8; 4096]> {
    let mut b = Box::new([0u8; 4096]);
    let mut v: Vec<u32> = ids.to_vec();
    v.sort_unstable();
    for (i, id) in v.iter().take(1024).enumerate() {
        put32(&mut b[..], i * 4, *id);
    }
    b
}

/// Namespace identification descriptor type: EUI-64.
pub const NIDT_EUI64: u8 = 1;
/// Namespace identification descriptor type: NGUID.
pub const NIDT_NGUID: u8 = 2;
/// Namespace identification descriptor type: UUID.
pub const NIDT_UUID: u8 = 3;

/// The namespace identification descriptor list (EUI-64, NGUID, UUID).
pub fn ns_id_descriptors(eui64: [u8; 8], nguid: [u8; 16], uuid: [u8; 16]) -> Box<[u8; 4096]> {
    let mut b = Box::new([0u8; 4096]);
    let mut o = 0;
    for (t, id) in [
        (NIDT_EUI64, &eui64[..]),
        (NIDT_NGUID, &nguid[..]),
        (NIDT_UUID, &uuid[..]),
    ] {
        b[o] = t;
        b[o + 1] = id.len() as u8;
        b[o + 4..o + 4 + id.len()].copy_from_slice(id);
        o += 4 + id.len();
    }
    b
}

// ----------------------------------------------------------------- log pages ----

/// Log page: error information.
pub const LOG_ERROR: u8 = 0x01;
/// Log page: SMART / health information.
pub const LOG_SMART: u8 = 0x02;
/// Log page: firmware slot information.
pub const LOG_FIRMWARE_SLOT: u8 = 0x03;
/// Log page: changed namespace list.
pub const LOG_CHANGED_NS: u8 = 0x04;
/// Log page: discovery.
pub const LOG_DISCOVERY: u8 = 0x70;

/// A Get Log Page command's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetLogPage {
    /// Log page identifier.
    pub lid: u8,
    /// Log specific field.
    pub lsp: u8,
    /// Retain asynchronous event.
    pub rae: bool,
    /// Number of dwords, 0's based.
    pub numd: u32,
    /// Byte offset into the page.
    pub offset: u64,
}

impl GetLogPage {
    /// Decodes from an SQE.
    pub fn from_sqe(s: &Sqe) -> Self {
        let c10 = s.cdw10();
        let c11 = s.cdw11();
        GetLogPage {
            lid: (c10 & 0xFF) as u8,
            lsp: ((c10 >> 8) & 0xF) as u8,
            rae: c10 & (1 << 15) != 0,
            numd: (c10 >> 16) | (c11 & 0xFFFF) << 16,
            offset: s.cdw(12) as u64 | (s.cdw(13) as u64) << 32,
        }
    }
    /// Bytes requested.
    pub fn len_bytes(&self) -> usize {
        (self.numd as usize + 1) * 4
    }
}

/// SMART / health information (log page 02h). Counters are 128-bit on the wire.
#[derive(Debug, Clone, Default)]
pub struct SmartLog {
    /// Critical warning bits.
    pub critical_warning: u8,
    /// Composite temperature in kelvin.
    pub temperature_k: u16,
    /// Available spare (%).
    pub available_spare: u8,
    /// Available spare threshold (%).
    pub available_spare_threshold: u8,
    /// Percentage used.
    pub percentage_used: u8,
    /// Data units read (thousands of 512-byte units).
    pub data_units_read: u128,
    /// Data units written.
    pub data_units_written: u128,
    /// Host read commands.
    pub host_read_commands: u128,
    /// Host write commands.
    pub host_write_commands: u128,
    /// Controller busy time (minutes).
    pub controller_busy_time: u128,
    /// Power cycles.
    pub power_cycles: u128,
    /// Power-on hours.
    pub power_on_hours: u128,
    /// Unsafe shutdowns.
    pub unsafe_shutdowns: u128,
    /// Media and data integrity errors.
    pub media_errors: u128,
    /// Number of error information log entries.
    pub num_err_log_entries: u128,
}

impl SmartLog {
    /// Encodes the 512-byte page.
    pub fn to_bytes(&self) -> Box<[u8; 512]> {
        let mut b = Box::new([0u8; 512]);
        b[0] = self.critical_warning;
        put16(&mut b[..], 1, self.temperature_k);
        b[3] = self.available_spare;
        b[4] = self.available_spare_threshold;
        b[5] = self.percentage_used;
        let counters = [
            self.data_units_read,
            self.data_units_written,
            self.host_read_commands,
            self.host_write_commands,
            self.controller_busy_time,
            self.power_cycles,
            self.power_on_hours,
            self.unsafe_shutdowns,
            self.media_errors,
            self.num_err_log_entries,
        ];
        for (i, v) in counters.iter().enumerate() {
            let o = 32 + i * 16;
            b[o..o + 16].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// Firmware slot information (log page 03h): slot 1 active, holding `fr`.
pub fn firmware_slot_log(fr: [u8; 8]) -> Box<[u8; 512]> {
    let mut b = Box::new([0u8; 512]);
    b[0] = 1; // AFI: slot 1 active
    b[8..16].copy_from_slice(&fr);
    b
}

/// Changed namespace list (log page 04h).
pub fn changed_ns_list(ids: &[u32]) -> Box<[u8; 4096]> {
    let mut b = Box::new([0u8; 4096]);
    for (i, id) in ids.iter().take(1024).enumerate() {
        put32(&mut b[..], i * 4, *id);
    }
    b
}

/// Transport type: TCP.
pub const TRTYPE_TCP: u8 = 3;
/// Address family: IPv4.
pub const ADRFAM_IPV4: u8 = 1;
/// Address family: IPv6.
pub const ADRFAM_IPV6: u8 = 2;
/// Discovery entry subsystem type: an NVM subsystem.
pub const SUBTYPE_NVME: u8 = 2;
/// Discovery entry subsystem type: the current discovery subsystem.
pub const SUBTYPE_CURRENT_DISCOVERY: u8 = 3;

/// One discovery log page entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveryEntry {
    /// Transport type.
    pub trtype: u8,
    /// Address family.
    pub adrfam: u8,
    /// Subsystem type.
    pub subtype: u8,
    /// Transport requirements.
    pub treq: u8,
    /// Port ID.
    pub portid: u16,
    /// Controller ID (0xFFFF: dynamic).
    pub cntlid: u16,
    /// Admin max SQ size.
    pub asqsz: u16,
    /// Transport service identifier (port).
    pub trsvcid: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport address.
    pub traddr: String,
    /// TCP security type (0 = none).
    pub sectype: u8,
}

/// Size of one discovery log entry (and of the header).
pub const DISCOVERY_ENTRY_LEN: usize = 1024;

impl DiscoveryEntry {
    fn encode(&self, b: &mut [u8]) {
        b[0] = self.trtype;
        b[1] = self.adrfam;
        b[2] = self.subtype;
        b[3] = self.treq;
        put16(b, 4, self.portid);
        put16(b, 6, self.cntlid);
        put16(b, 8, self.asqsz);
        put_str(&mut b[32..64], &self.trsvcid, 0);
        put_str(&mut b[256..512], &self.subnqn, 0);
        put_str(&mut b[512..768], &self.traddr, 0);
        b[768] = self.sectype;
    }
    /// Decodes one 1024-byte entry.
    pub fn parse(b: &[u8]) -> Self {
        DiscoveryEntry {
            trtype: b[0],
            adrfam: b[1],
            subtype: b[2],
            treq: b[3],
            portid: le16(b, 4),
            cntlid: le16(b, 6),
            asqsz: le16(b, 8),
            trsvcid: read_str(&b[32..64]),
            subnqn: read_str(&b[256..512]),
            traddr: read_str(&b[512..768]),
            sectype: b[768],
        }
    }
}

/// The discovery log page: a 1024-byte header (generation counter, record count) followed
/// by the entries.
pub fn discovery_log(genctr: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let mut b = vec![0u8; DISCOVERY_ENTRY_LEN * (1 + entries.len())];
    put64(&mut b, 0, genctr);
    put64(&mut b, 8, entries.len() as u64);
    for (i, e) in entries.iter().enumerate() {
        let o = DISCOVERY_ENTRY_LEN * (1 + i);
        e.encode(&mut b[o..o + DISCOVERY_ENTRY_LEN]);
    }
    b
}

/// Parses a discovery log page: (genctr, entries).
pub fn parse_discovery_log(b: &[u8]) -> Option<(u64, Vec<DiscoveryEntry>)> {
    if b.len() < DISCOVERY_ENTRY_LEN {
        return None;
    }
    let genctr = le64(b, 0);
    let n = le64(b, 8) as usize;
    let mut v = Vec::new();
    for i in 0..n {
        let o = DISCOVERY_ENTRY_LEN * (1 + i);
        let e = b.get(o..o + DISCOVERY_ENTRY_LEN)?;
        v.push(DiscoveryEntry::parse(e));
    }
    Some((genctr, v))
}

// ------------------------------------------------------------------ features ----

/// Feature: arbitration.
pub const FEAT_ARBITRATION: u8 = 0x01;
/// Feature: power management.
pub const FEAT_POWER_MANAGEMENT: u8 = 0x02;
/// Feature: temperature threshold.
pub const FEAT_TEMPERATURE_THRESHOLD: u8 = 0x04;
/// Feature: error recovery.
pub const FEAT_ERROR_RECOVERY: u8 = 0x05;
/// Feature: volatile write cache.
pub const FEAT_VOLATILE_WRITE_CACHE: u8 = 0x06;
/// Feature: number of queues.
pub const FEAT_NUMBER_OF_QUEUES: u8 = 0x07;
/// Feature: asynchronous event configuration.
pub const FEAT_ASYNC_EVENT_CONFIG: u8 = 0x0B;
/// Feature: keep-alive timer.
pub const FEAT_KEEP_ALIVE_TIMER: u8 = 0x0F;

// ------------------------------------------------------------------------ DSM ----

/// One Dataset Management range (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DsmRange {
    /// Context attributes.
    pub cattr: u32,
    /// Length in blocks.
    pub length: u32,
    /// Starting LBA.
    pub slba: u64,
}

impl DsmRange {
    /// Decodes consecutive 16-byte ranges.
    pub fn parse_list(b: &[u8]) -> Vec<DsmRange> {
        b.chunks_exact(16)
            .map(|c| DsmRange {
                cattr: le32(c, 0),
                length: le32(c, 4),
                slba: le64(c, 8),
            })
            .collect()
    }
    /// Encodes into 16 bytes.
    pub fn encode(&self, b: &mut [u8]) {
        put32(b, 0, self.cattr);
        put32(b, 4, self.length);
        put64(b, 8, self.slba);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_encoding_round_trips() {
        let c = Cqe {
            dw0: 7,
            dw1: 0,
            sqhd: 3,
            sqid: 1,
            cid: 0xBEEF,
            status: Status::LBA_OUT_OF_RANGE,
        };
        let mut b = [0u8; 16];
        c.encode(&mut b);
        // SC 0x80, SCT 0, DNR: status word = (0x80 | 1<<14) << 1.
        assert_eq!(u16::from_le_bytes([b[14], b[15]]), (0x80 | 1 << 14) << 1);
        assert_eq!(Cqe::from_bytes(&b), c);
        assert_eq!(Status::CONNECT_INVALID_HOST.sct(), 1);
        assert_eq!(Status::CONNECT_INVALID_HOST.sc(), 0x84);
        assert!(!Status::TRANSIENT_TRANSPORT_ERROR.dnr());
    }

    #[test]
    fn connect_round_trip() {
        let cmd = ConnectCmd {
            recfmt: 0,
            qid: 2,
            sqsize: 127,
            cattr: CONNECT_CATTR_DISABLE_SQFLOW,
            kato: 5000,
        };
        let sqe = cmd.to_sqe(9, true);
        assert_eq!(sqe.opcode(), FABRICS_OPCODE);
        assert_eq!(sqe.cid(), 9);
        assert_eq!(ConnectCmd::from_sqe(&sqe), cmd);
        assert_eq!(sqe.data_direction(), DataDirection::HostToController);
        assert!(sqe.sgl().is_offset_data_block());
        let d = ConnectData {
            hostid: [7; 16],
            cntlid: 0xFFFF,
            subnqn: "nqn.2026-11.io.ballast:default".into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:1".into(),
        };
        assert_eq!(ConnectData::parse(&d.to_bytes()), d);
    }

    #[test]
    fn identify_controller_layout() {
        let id = IdentifyController {
            serial: "SN1".into(),
            model: "ballast".into(),
            cntlid: 0x1234,
            maxcmd: 128,
            subnqn: "nqn.x".into(),
            ..Default::default()
        };
        let b = id.to_bytes();
        assert_eq!(&b[4..8], b"SN1 ");
        assert_eq!(&b[24..32], b"ballast ");
        assert_eq!(u16::from_le_bytes([b[78], b[79]]), 0x1234);
        assert_eq!(u16::from_le_bytes([b[514], b[515]]), 128);
        assert_eq!(read_str(&b[768..1024]), "nqn.x");
    }

    #[test]
    fn discovery_log_round_trip() {
        let e = DiscoveryEntry {
            trtype: TRTYPE_TCP,
            adrfam: ADRFAM_IPV4,
            subtype: SUBTYPE_NVME,
            trsvcid: "4420".into(),
            subnqn: "nqn.a".into(),
            traddr: "127.0.0.1".into(),
            cntlid: 0xFFFF,
            ..Default::default()
        };
        let log = discovery_log(5, &[e.clone(), e.clone()]);
        assert_eq!(log.len(), 3 * 1024);
        let (g, es) = parse_discovery_log(&log).unwrap();
        assert_eq!(g, 5);
        assert_eq!(es, vec![e.clone(), e]);
    }

    #[test]
    fn get_log_page_fields() {
        let mut s = Sqe::new(AdminOpcode::GetLogPage as u8, 1);
        s.set_cdw(10, 0x02 | 1 << 15 | 127 << 16).set_cdw(12, 512);
        let g = GetLogPage::from_sqe(&s);
        assert_eq!((g.lid, g.rae, g.len_bytes(), g.offset), (2, true, 512, 512));
    }

    #[test]
    fn dsm_ranges() {
        let mut b = [0u8; 32];
        DsmRange {
            cattr: 0,
            length: 8,
            slba: 100,
        }
        .encode(&mut b[..16]);
        DsmRange {
            cattr: 1,
            length: 0,
            slba: 7,
        }
        .encode(&mut b[16..]);
        let r = DsmRange::parse_list(&b);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].slba, r[0].length), (100, 8));
        assert_eq!(r[1].cattr, 1);
    }

    #[test]
    fn cap_register() {
        let c = Cap {
            mqes: 127,
            cqr: true,
            to_500ms: 30,
            css_nvm: true,
            mpsmin: 0,
            mpsmax: 0,
        }
        .to_u64();
        assert_eq!(c & 0xFFFF, 127);
        assert_eq!((c >> 16) & 1, 1);
        assert_eq!((c >> 24) & 0xFF, 30);
        assert_eq!((c >> 37) & 1, 1);
    }
}
