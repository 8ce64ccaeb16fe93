//! NVMe over Fabrics / TCP for ballast: the wire codec, the target, the discovery controller
//! and (later) the host library.
//!
//! ```text
//!   socket ─► target::tcp::Qpair (RecvState: CH → PSH → payload) ─► admin / fabrics / I/O
//!     ▲            pdu::CommonHeader::validate, pdu::*::parse          │
//!     │                                                                ▼
//!     └── one sendmsg per poll ◄── pdu::{C2HData,R2t,encode_capsule_resp} ◄── bdev channel
//!                                                       (per-reactor, no locks)
//! ```
#![warn(missing_docs)]

mod error;
pub mod host;
pub mod pdu;
pub mod remote;
pub mod spec;
pub mod target;

pub use error::{Error, Result};
