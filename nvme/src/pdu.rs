//! NVMe/TCP 1.0 PDU codec: every PDU type's header, digests and alignment.
//!
//! Headers are decoded from and encoded into caller-provided byte slices; payloads are never
//! copied here (the queue pair moves them straight between the socket and I/O buffers).
//!
//! ```text
//!  0      1      2      3      4          8                hlen    pdo          plen
//!  +------+------+------+------+----------+-----------------+--------+-----+------+-------+
//!  | type |flags | hlen | pdo  |   plen   | PDU-specific hdr | HDGST? | pad | DATA | DDGST?|
//!  +------+------+------+------+----------+-----------------+--------+-----+------+-------+
//! ```

use crate::spec::{Cqe, Sqe, CQE_LEN, SQE_LEN};

/// Length of the common header.
pub const CH_LEN: usize = 8;
/// Largest header (with digest) a host may send: the ICReq.
pub const MAX_RX_HDR: usize = 128;
/// Room for the largest header the target builds: a C2HTermReq with the offending header,
/// or a C2HData header padded to the host's alignment.
pub const MAX_TX_HDR: usize = 160;
/// Most bytes of the offending PDU copied into a C2HTermReq.
pub const TERM_REQ_MAX_DATA: usize = 128;

/// Header length of ICReq/ICResp.
pub const IC_HLEN: u8 = 128;
/// Header length of a CapsuleCmd.
pub const CAPSULE_CMD_HLEN: u8 = 72;
/// Header length of CapsuleResp, H2CData, C2HData, R2T and the TermReqs.
pub const SHORT_HLEN: u8 = 24;

/// Flag: a header digest follows the header.
pub const FLAG_HDGST: u8 = 0x01;
/// Flag: a data digest follows the data.
pub const FLAG_DDGST: u8 = 0x02;
/// Flag (H2CData/C2HData): last PDU of the transfer.
pub const FLAG_LAST_PDU: u8 = 0x04;
/// Flag (C2HData): command succeeded; no CapsuleResp follows.
pub const FLAG_SUCCESS: u8 = 0x08;

/// Byte offset of TTAG in an H2CData header.
pub const H2C_TTAG_OFFSET: u32 = 10;
/// Byte offset of DATAO in an H2CData/C2HData header.
pub const DATA_DATAO_OFFSET: u32 = 12;
/// Byte offset of DATAL in an H2CData/C2HData header.
pub const DATA_DATAL_OFFSET: u32 = 16;

/// PDU types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduType {
    /// Initialize connection request.
    IcReq,
    /// Initialize connection response.
    IcResp,
    /// Host-to-controller terminate connection request.
    H2CTermReq,
    /// Controller-to-host terminate connection request.
    C2HTermReq,
    /// Command capsule.
    CapsuleCmd,
    /// Response capsule.
    CapsuleResp,
    /// Host-to-controller data.
    H2CData,
    /// Controller-to-host data.
    C2HData,
    /// Ready to transfer.
    R2t,
    /// Anything else (rejected).
    Unknown(u8),
}

impl PduType {
    /// Decodes a type byte.
    pub fn from_u8(v: u8) -> Self {
        match v {
            0x00 => Self::IcReq,
            0x01 => Self::IcResp,
            0x02 => Self::H2CTermReq,
            0x03 => Self::C2HTermReq,
            0x04 => Self::CapsuleCmd,
            0x05 => Self::CapsuleResp,
            0x06 => Self::H2CData,
            0x07 => Self::C2HData,
            0x09 => Self::R2t,
            x => Self::Unknown(x),
        }
    }
    /// The type byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::IcReq => 0x00,
            Self::IcResp => 0x01,
            Self::H2CTermReq => 0x02,
            Self::C2HTermReq => 0x03,
            Self::CapsuleCmd => 0x04,
            Self::CapsuleResp => 0x05,
            Self::H2CData => 0x06,
            Self::C2HData => 0x07,
            Self::R2t => 0x09,
            Self::Unknown(x) => x,
        }
    }
    /// The header length the spec fixes for this type.
    pub fn hlen(self) -> Option<u8> {
        match self {
            Self::IcReq | Self::IcResp => Some(IC_HLEN),
            Self::CapsuleCmd => Some(CAPSULE_CMD_HLEN),
            Self::Unknown(_) => None,
            _ => Some(SHORT_HLEN),
        }
    }
    /// Whether this type carries digests when they are negotiated.
    pub fn digestible(self) -> bool {
        matches!(
            self,
            Self::CapsuleCmd | Self::CapsuleResp | Self::H2CData | Self::C2HData | Self::R2t
        )
    }
    /// Whether a host may send this type.
    pub fn from_host(self) -> bool {
        matches!(
            self,
            Self::IcReq | Self::H2CTermReq | Self::CapsuleCmd | Self::H2CData
        )
    }
}

/// Fatal error status of a C2HTermReq/H2CTermReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Fes {
    /// Invalid PDU header field (FEI: byte offset of the field).
    InvalidHeaderField = 1,
    /// PDU sequence error.
    PduSequenceError = 2,
    /// Header digest error.
    HeaderDigestError = 3,
    /// Data transfer out of range (FEI: byte offset of the field).
    DataTransferOutOfRange = 4,
    /// Data transfer limit exceeded (H2C data beyond MAXH2CDATA) or R2T limit exceeded.
    DataTransferLimitExceeded = 5,
    /// Unsupported parameter (FEI: byte offset of the field).
    UnsupportedParameter = 6,
}

/// The 8-byte common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    /// PDU type.
    pub pdu_type: PduType,
    /// Flags.
    pub flags: u8,
    /// Header length (without the header digest).
    pub hlen: u8,
    /// PDU data offset (0 if no data).
    pub pdo: u8,
    /// Total PDU length.
    pub plen: u32,
}

impl CommonHeader {
    /// Decodes 8 bytes (never fails; `validate` judges the fields).
    pub fn parse(b: &[u8; CH_LEN]) -> Self {
        CommonHeader {
            pdu_type: PduType::from_u8(b[0]),
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Encodes into the first 8 bytes of `b`.
    pub fn encode(&self, b: &mut [u8]) {
        b[0] = self.pdu_type.to_u8();
        b[1] = self.flags;
        b[2] = self.hlen;
        b[3] = self.pdo;
        b[4..8].copy_from_slice(&self.plen.to_le_bytes());
    }

    /// Whether the HDGST flag is set.
    pub fn has_header_digest(&self) -> bool {
        self.flags & FLAG_HDGST != 0
    }

    /// Whether the DDGST flag is set.
    pub fn has_data_digest(&self) -> bool {
        self.flags & FLAG_DDGST != 0
    }

    /// Bytes of header to read: hlen plus the header digest if present.
    pub fn header_len_with_digest(&self, hdgst: bool) -> usize {
        self.hlen as usize
            + if hdgst && self.has_header_digest() {
                4
            } else {
                0
            }
    }

    /// Checks a header received from a host, given the negotiated digests and the largest
    /// PDU accepted. On error returns the fatal error status and the byte offset of the
    /// offending field (for the C2HTermReq).
    pub fn validate(&self, hdgst: bool, ddgst: bool, max_plen: u32) -> Result<(), (Fes, u32)> {
        let t = self.pdu_type;
        if !t.from_host() {
            return Err((Fes::InvalidHeaderField, 0));
        }
        if Some(self.hlen) != t.hlen() {
            return Err((Fes::InvalidHeaderField, 2));
        }
        // Digest flags: only digestible types, and exactly as negotiated.
        let want_hd = hdgst && t.digestible();
        if self.has_header_digest() != want_hd {
            return Err((Fes::InvalidHeaderField, 1));
        }
        if self.has_data_digest() && !(ddgst && t.digestible()) {
            return Err((Fes::InvalidHeaderField, 1));
        }
        let hdr = self.hlen as u32 + if want_hd { 4 } else { 0 };
        if self.plen < hdr || self.plen > max_plen {
            return Err((Fes::InvalidHeaderField, 4));
        }
        match t {
            PduType::IcReq => {
                if self.plen != IC_HLEN as u32 {
                    return Err((Fes::InvalidHeaderField, 4));
                }
                if self.pdo != 0 {
                    return Err((Fes::InvalidHeaderField, 3));
                }
            }
            PduType::H2CTermReq
                if self.plen > SHORT_HLEN as u32 + TERM_REQ_MAX_DATA as u32 + 24 =>
            {
                return Err((Fes::InvalidHeaderField, 4));
            }
            PduType::H2CData => {
                // H2CData always carries data.
                if self.plen == hdr {
                    return Err((Fes::InvalidHeaderField, 4));
                }
                if ddgst && !self.has_data_digest() {
                    return Err((Fes::InvalidHeaderField, 1));
                }
                if (self.pdo as u32) < hdr {
                    return Err((Fes::InvalidHeaderField, 3));
                }
            }
            PduType::CapsuleCmd => {
                if self.plen > hdr {
                    if ddgst && !self.has_data_digest() {
                        return Err((Fes::InvalidHeaderField, 1));
                    }
                    if (self.pdo as u32) < hdr {
                        return Err((Fes::InvalidHeaderField, 3));
                    }
                    let dg = if self.has_data_digest() { 4 } else { 0 };
                    if self.plen < self.pdo as u32 + dg {
                        return Err((Fes::InvalidHeaderField, 4));
                    }
                } else if self.has_data_digest() {
                    return Err((Fes::InvalidHeaderField, 1));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// CRC32C header digest of `hdr`.
pub fn header_digest(hdr: &[u8]) -> [u8; 4] {
    crc32c::crc32c(hdr).to_le_bytes()
}

/// Checks a header digest.
pub fn verify_header_digest(hdr: &[u8], dgst: &[u8]) -> bool {
    dgst.len() == 4 && header_digest(hdr) == dgst[..4]
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Writes CH + the header digest (if `hdgst`) for a header whose PSH is already in
/// `b[8..hlen]`; returns hlen (+4).
fn finish_header(b: &mut [u8], ch: CommonHeader, hdgst: bool) -> usize {
    ch.encode(b);
    let hlen = ch.hlen as usize;
    if hdgst {
        let d = header_digest(&b[..hlen]);
        b[hlen..hlen + 4].copy_from_slice(&d);
        hlen + 4
    } else {
        hlen
    }
}

// --------------------------------------------------------------- ICReq/ICResp ----

/// Initialize Connection Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    /// PDU format version (0).
    pub pfv: u16,
    /// Host PDU data alignment: (hpda+1)*4 bytes.
    pub hpda: u8,
    /// Header digest requested.
    pub hdgst: bool,
    /// Data digest requested.
    pub ddgst: bool,
    /// Maximum outstanding R2Ts per command, 0's based.
    pub maxr2t: u32,
}

impl IcReq {
    /// Decodes and checks a full ICReq header (128 bytes).
    pub fn parse(b: &[u8]) -> Result<Self, (Fes, u32)> {
        let pfv = le16(b, 8);
        if pfv != 0 {
            return Err((Fes::UnsupportedParameter, 8));
        }
        let hpda = b[10];
        if hpda > 31 {
            return Err((Fes::InvalidHeaderField, 10));
        }
        let dgst = b[11];
        Ok(IcReq {
            pfv,
            hpda,
            hdgst: dgst & 1 != 0,
            ddgst: dgst & 2 != 0,
            maxr2t: le32(b, 12),
        })
    }
    /// Encodes (128 bytes); returns the length.
    pub fn encode(&self, b: &mut [u8]) -> usize {
        b[..IC_HLEN as usize].fill(0);
        b[8..10].copy_from_slice(&self.pfv.to_le_bytes());
        b[10] = self.hpda;
        b[11] = self.hdgst as u8 | (self.ddgst as u8) << 1;
        b[12..16].copy_from_slice(&self.maxr2t.to_le_bytes());
        finish_header(b, ic_ch(PduType::IcReq), false)
    }
}

fn ic_ch(t: PduType) -> CommonHeader {
    CommonHeader {
        pdu_type: t,
        flags: 0,
        hlen: IC_HLEN,
        pdo: 0,
        plen: IC_HLEN as u32,
    }
}

/// Initialize Connection Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    /// PDU format version (0).
    pub pfv: u16,
    /// Controller PDU data alignment.
    pub cpda: u8,
    /// Header digest enabled.
    pub hdgst: bool,
    /// Data digest enabled.
    pub ddgst: bool,
    /// Maximum H2CData payload.
    pub maxh2cdata: u32,
}

impl IcResp {
    /// Encodes (128 bytes); returns the length.
    pub fn encode(&self, b: &mut [u8]) -> usize {
        b[..IC_HLEN as usize].fill(0);
        b[8..10].copy_from_slice(&self.pfv.to_le_bytes());
        b[10] = self.cpda;
        b[11] = self.hdgst as u8 | (self.ddgst as u8) << 1;
        b[12..16].copy_from_slice(&self.maxh2cdata.to_le_bytes());
        finish_header(b, ic_ch(PduType::IcResp), false)
    }
    /// Decodes a full ICResp header.
    pub fn parse(b: &[u8]) -> Self {
        IcResp {
            pfv: le16(b, 8),
            cpda: b[10],
            hdgst: b[11] & 1 != 0,
            ddgst: b[11] & 2 != 0,
            maxh2cdata: le32(b, 12),
        }
    }
}

// ------------------------------------------------------------------ TermReq ----

/// H2CTermReq / C2HTermReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermReq {
    /// Controller-to-host (true) or host-to-controller.
    pub c2h: bool,
    /// Fatal error status.
    pub fes: u16,
    /// Fatal error information (e.g. the offending field's offset).
    pub fei: u32,
}

impl TermReq {
    /// Decodes a TermReq header.
    pub fn parse(b: &[u8]) -> Self {
        TermReq {
            c2h: b[0] == PduType::C2HTermReq.to_u8(),
            fes: le16(b, 8),
            fei: le32(b, 10),
        }
    }
    /// Encodes the header followed by (up to 128 bytes of) the offending PDU header;
    /// returns the total length. TermReqs never carry digests.
    pub fn encode(&self, b: &mut [u8], offending: &[u8]) -> usize {
        let n = offending.len().min(TERM_REQ_MAX_DATA);
        let h = SHORT_HLEN as usize;
        b[..h].fill(0);
        b[8..10].copy_from_slice(&self.fes.to_le_bytes());
        b[10..14].copy_from_slice(&self.fei.to_le_bytes());
        b[h..h + n].copy_from_slice(&offending[..n]);
        CommonHeader {
            pdu_type: if self.c2h {
                PduType::C2HTermReq
            } else {
                PduType::H2CTermReq
            },
            flags: 0,
            hlen: SHORT_HLEN,
            pdo: 0,
            plen: (h + n) as u32,
        }
        .encode(b);
        h + n
    }
}

// ----------------------------------------------------------------- capsules ----

/// Encodes a CapsuleResp header for `cqe`; returns its length (24, or 28 with a digest).
pub fn encode_capsule_resp(b: &mut [u8], cqe: &Cqe, hdgst: bool) -> usize {
    cqe.encode(&mut b[8..8 + CQE_LEN]);
    let ch = CommonHeader {
        pdu_type: PduType::CapsuleResp,
        flags: if hdgst { FLAG_HDGST } else { 0 },
        hlen: SHORT_HLEN,
        pdo: 0,
        plen: SHORT_HLEN as u32 + if hdgst { 4 } else { 0 },
    };
    finish_header(b, ch, hdgst)
}

/// Encodes a CapsuleCmd header for `sqe` carrying `data_len` bytes of in-capsule data (the
/// caller appends the data and, if `ddgst` and there is data, its digest). Returns the header
/// length (72, or 76 with a digest).
pub fn encode_capsule_cmd(
    b: &mut [u8],
    sqe: &Sqe,
    data_len: u32,
    hdgst: bool,
    ddgst: bool,
) -> usize {
    b[8..8 + SQE_LEN].copy_from_slice(sqe.as_bytes());
    let hdr = CAPSULE_CMD_HLEN as u32 + if hdgst { 4 } else { 0 };
    let dd = ddgst && data_len > 0;
    let ch = CommonHeader {
        pdu_type: PduType::CapsuleCmd,
        flags: if hdgst { FLAG_HDGST } else { 0 } | if dd { FLAG_DDGST } else { 0 },
        hlen: CAPSULE_CMD_HLEN,
        pdo: if data_len > 0 { hdr as u8 } else { 0 },
        plen: hdr + data_len + if dd { 4 } else { 0 },
    };
    finish_header(b, ch, hdgst)
}

// --------------------------------------------------------------------- data ----

/// The PDU-specific header of H2CData and C2HData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag (H2CData: from the R2T).
    pub ttag: u16,
    /// Data offset within the command's transfer.
    pub datao: u32,
    /// Data length in this PDU.
    pub datal: u32,
    /// LAST_PDU flag.
    pub last_pdu: bool,
    /// SUCCESS flag (C2HData).
    pub success: bool,
}

impl DataHeader {
    /// Decodes a data PDU header (CH included).
    pub fn parse(b: &[u8]) -> Self {
        DataHeader {
            cccid: le16(b, 8),
            ttag: le16(b, 10),
            datao: le32(b, 12),
            datal: le32(b, 16),
            last_pdu: b[1] & FLAG_LAST_PDU != 0,
            success: b[1] & FLAG_SUCCESS != 0,
        }
    }
}

fn data_flags(hdgst: bool, ddgst: bool, last_pdu: bool) -> u8 {
    (if hdgst { FLAG_HDGST } else { 0 })
        | (if ddgst { FLAG_DDGST } else { 0 })
        | (if last_pdu { FLAG_LAST_PDU } else { 0 })
}

fn encode_data_psh(b: &mut [u8], cccid: u16, ttag: u16, datao: u32, datal: u32) {
    b[8..10].copy_from_slice(&cccid.to_le_bytes());
    b[10..12].copy_from_slice(&ttag.to_le_bytes());
    b[12..16].copy_from_slice(&datao.to_le_bytes());
    b[16..20].copy_from_slice(&datal.to_le_bytes());
    b[20..24].fill(0);
}

/// A C2HData header to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct C2HData {
    /// Command capsule CID.
    pub cccid: u16,
    /// Data offset.
    pub datao: u32,
    /// Data length.
    pub datal: u32,
    /// Last PDU of the transfer.
    pub last_pdu: bool,
    /// The command succeeded and no CapsuleResp follows (requires `last_pdu`).
    pub success: bool,
}

impl C2HData {
    /// Encodes the header and its digest, with PDO the next multiple of `hpda_bytes` (the
    /// host's alignment) and PLEN covering the padding, data and data digest. Returns
    /// `(header bytes, PDO)`: the `PDO - header` bytes of zero padding between them are the
    /// caller's to send (so a header buffer need not hold them).
    pub fn encode(
        &self,
        b: &mut [u8],
        hdgst: bool,
        ddgst: bool,
        hpda_bytes: u32,
    ) -> (usize, usize) {
        encode_data_psh(b, self.cccid, 0, self.datao, self.datal);
        let hdr = SHORT_HLEN as usize + if hdgst { 4 } else { 0 };
        let align = hpda_bytes.max(1) as usize;
        let pdo = hdr.div_ceil(align) * align;
        let mut flags = data_flags(hdgst, ddgst, self.last_pdu);
        if self.success {
            flags |= FLAG_SUCCESS | FLAG_LAST_PDU;
        }
        let ch = CommonHeader {
            pdu_type: PduType::C2HData,
            flags,
            hlen: SHORT_HLEN,
            pdo: pdo as u8,
            plen: (pdo as u32) + self.datal + if ddgst { 4 } else { 0 },
        };
        (finish_header(b, ch, hdgst), pdo)
    }
}

/// An H2CData header to encode (host side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2CData {
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag from the R2T.
    pub ttag: u16,
    /// Data offset.
    pub datao: u32,
    /// Data length.
    pub datal: u32,
    /// Last PDU of this R2T's transfer.
    pub last_pdu: bool,
}

impl H2CData {
    /// Encodes the header (+ digest; CPDA 0, so PDO directly follows). Returns its length.
    pub fn encode(&self, b: &mut [u8], hdgst: bool, ddgst: bool) -> usize {
        encode_data_psh(b, self.cccid, self.ttag, self.datao, self.datal);
        let hdr = SHORT_HLEN as u32 + if hdgst { 4 } else { 0 };
        let flags = data_flags(hdgst, ddgst, self.last_pdu);
        let ch = CommonHeader {
            pdu_type: PduType::H2CData,
            flags,
            hlen: SHORT_HLEN,
            pdo: hdr as u8,
            plen: hdr + self.datal + if ddgst { 4 } else { 0 },
        };
        finish_header(b, ch, hdgst)
    }
}

/// Ready to Transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag the host echoes in its H2CData.
    pub ttag: u16,
    /// Offset of the requested data.
    pub r2to: u32,
    /// Length of the requested data.
    pub r2tl: u32,
}

impl R2t {
    /// Encodes (24 or 28 bytes); returns the length.
    pub fn encode(&self, b: &mut [u8], hdgst: bool) -> usize {
        encode_data_psh(b, self.cccid, self.ttag, self.r2to, self.r2tl);
        let ch = CommonHeader {
            pdu_type: PduType::R2t,
            flags: if hdgst { FLAG_HDGST } else { 0 },
            hlen: SHORT_HLEN,
            pdo: 0,
            plen: SHORT_HLEN as u32 + if hdgst { 4 } else { 0 },
        };
        finish_header(b, ch, hdgst)
    }
    /// Decodes an R2T header.
    pub fn parse(b: &[u8]) -> Self {
        R2t {
            cccid: le16(b, 8),
            ttag: le16(b, 10),
            r2to: le32(b, 12),
            r2tl: le32(b, 16),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Status;

    fn ch(b: &[u8]) -> CommonHeader {
        let mut r = [0u8; CH_LEN];
        r.copy_from_slice(&b[..CH_LEN]);
        CommonHeader::parse(&r)
    }

    #[test]
    fn icreq_round_trip_and_checks() {
        let mut b = [0u8; 128];
        let ic = IcReq {
            pfv: 0,
            hpda: 0,
            hdgst: true,
            ddgst: true,
            maxr2t: 0,
        };
        assert_eq!(ic.encode(&mut b), 128);
        let h = ch(&b);
        assert_eq!(h.validate(false, false, 1 << 20), Ok(()));
        assert_eq!(IcReq::parse(&b), Ok(ic));
        b[8] = 1;
        assert_eq!(IcReq::parse(&b), Err((Fes::UnsupportedParameter, 8)));
        b[8] = 0;
        b[10] = 32;
        assert_eq!(IcReq::parse(&b), Err((Fes::InvalidHeaderField, 10)));
        b[2] = 100;
        assert_eq!(
            ch(&b).validate(false, false, 1 << 20),
            Err((Fes::InvalidHeaderField, 2))
        );
    }

    #[test]
    fn capsule_digests() {
        let sqe = Sqe::new(0x02, 7);
        let mut b = [0u8; 128];
        let n = encode_capsule_cmd(&mut b, &sqe, 0, true, true);
        assert_eq!(n, 76);
        let h = ch(&b);
        assert_eq!(h.plen, 76);
        assert!(h.has_header_digest() && !h.has_data_digest());
        assert_eq!(h.validate(true, true, 9000), Ok(()));
        assert!(verify_header_digest(&b[..72], &b[72..76]));
        b[20] ^= 1;
        assert!(!verify_header_digest(&b[..72], &b[72..76]));
        // Digest flag without negotiation.
        assert_eq!(
            h.validate(false, false, 9000),
            Err((Fes::InvalidHeaderField, 1))
        );
        // With data and data digest.
        let n = encode_capsule_cmd(&mut b, &sqe, 512, false, true);
        let h = ch(&b);
        assert_eq!((n, h.pdo, h.plen), (72, 72, 72 + 512 + 4));
        assert_eq!(h.validate(false, true, 9000), Ok(()));
        assert_eq!(
            h.validate(false, true, 200),
            Err((Fes::InvalidHeaderField, 4))
        );
    }

    #[test]
    fn c2h_alignment_and_flags() {
        let mut b = [0u8; MAX_TX_HDR];
        let d = C2HData {
            cccid: 3,
            datao: 0,
            datal: 4096,
            last_pdu: true,
            success: true,
        };
        assert_eq!(d.encode(&mut b, true, true, 32), (28, 32));
        let h = ch(&b);
        assert_eq!(h.pdo, 32);
        assert_eq!(h.plen, 32 + 4096 + 4);
        assert_eq!(
            h.flags,
            FLAG_HDGST | FLAG_DDGST | FLAG_LAST_PDU | FLAG_SUCCESS
        );
        assert!(verify_header_digest(&b[..24], &b[24..28]));
        let dh = DataHeader::parse(&b);
        assert_eq!(
            (dh.cccid, dh.datal, dh.last_pdu, dh.success),
            (3, 4096, true, true)
        );
        assert_eq!(d.encode(&mut b, false, false, 4), (24, 24));
        assert_eq!(d.encode(&mut b, false, false, 128), (24, 128));
    }

    #[test]
    fn resp_r2t_term() {
        let mut b = [0u8; MAX_TX_HDR];
        let cqe = Cqe {
            cid: 9,
            status: Status::INVALID_FIELD,
            ..Default::default()
        };
        assert_eq!(encode_capsule_resp(&mut b, &cqe, false), 24);
        assert_eq!(Cqe::from_bytes(&b[8..24]), cqe);
        let r = R2t {
            cccid: 1,
            ttag: 2,
            r2to: 0,
            r2tl: 65536,
        };
        assert_eq!(r.encode(&mut b, true), 28);
        assert_eq!(R2t::parse(&b), r);
        let t = TermReq {
            c2h: true,
            fes: Fes::PduSequenceError as u16,
            fei: 0,
        };
        let n = t.encode(&mut b, &[0xAA; 200]);
        assert_eq!(n, 24 + TERM_REQ_MAX_DATA);
        assert_eq!(TermReq::parse(&b), t);
        assert_eq!(ch(&b).plen as usize, n);
    }

    #[test]
    fn h2c_checks() {
        let mut b = [0u8; 64];
        let n = H2CData {
            cccid: 1,
            ttag: 0,
            datao: 0,
            datal: 4096,
            last_pdu: true,
        }
        .encode(&mut b, false, false);
        assert_eq!(n, 24);
        let h = ch(&b);
        assert_eq!(h.validate(false, false, 1 << 20), Ok(()));
        // Data digest negotiated but not flagged.
        assert_eq!(
            h.validate(false, true, 1 << 20),
            Err((Fes::InvalidHeaderField, 1))
        );
        // Controller-to-host types are never valid from the host.
        b[0] = PduType::C2HData.to_u8();
        assert_eq!(
            ch(&b).validate(false, false, 1 << 20),
            Err((Fes::InvalidHeaderField, 0))
        );
    }
}
