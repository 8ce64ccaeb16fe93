//! NVMe over Fabrics / TCP for ballast: the wire codec, the target, the discovery controller
//! and (later) the host library.
//!
//! ```text
//!   socket bytes ──► pdu::PduParser ──► capsule / data ──► controller ──► bdev channel
//!        ▲                                                                    │
//!        └──────────── pdu::encode_* (C2HData, CapsuleResp, R2T) ◄────────────┘
//! ```
#![warn(missing_docs)]

pub mod pdu;
pub mod spec;
