//! The ballast engine: the block-device (bdev) layer and its backends.
//!
//! A [`Bdev`] is global (any reactor may use it); I/O goes through a per-reactor
//! [`IoChannel`], so the data path takes no locks. Completions come back through a callback on
//! the submitting reactor, always deferred to the channel's poller (never re-entrant).
//!
//! ```text
//!   registry (name/alias/UUID, open/claim, hot-remove)     buf: per-reactor aligned pools
//!        │ open(name) → BdevDesc ── claim(owner)
//!        ▼
//!   BdevDesc::channel() ─► IoChannel (per reactor) ─► BackendChannel
//!                               ▲                      ├─ malloc (RAM, mmap, memcpy; lends)
//!                               │ poller: reap, stats,  ├─ null   (zeros / discard; lends)
//!                               └── callbacks ◄─────────├─ uring  (io_uring, O_DIRECT)
//!                                                       ├─ crypto   (AES-XTS stage) ─► base
//!                                                       ├─ compress (lz4/zstd stage) ─► base
//!                                                       ├─ mirror (raid1) ─► 2–5 children
//!                                                       ├─ lvol (thin, snapshots) ─► store base
//!                                                       └─ error  (fault injection) ─► base
//! ```
//!
//! Stages (crypto, compress, mirror, lvol, error) are bdevs over claimed base bdevs and stack in any
//! order, e.g. namespace ← compress ← crypto ← mirror ← remote replicas (the replicas hold
//! ciphertext only; see [`backend::mirror`] for the superblock, write-intent bitmap, rebuilds
//! and self-healing). A base that copies data anyway (malloc) can fuse a
//! stage's transform into that copy ([`bdev::CopyTransform`]): crypto over malloc encrypts and
//! decrypts straight between the caller's buffers and RAM.
//!
//! Zero-copy reads: a caller that only needs to look at the data (the NVMe/TCP target, which
//! hands it to the socket) submits a read with [`BdevIo::lend`] and no buffers; a bdev whose
//! [`IoChannel::lends_reads`] is true completes it with a window on its own memory
//! ([`IoBuf::lent`]: malloc's region, null's read-only zeros) instead of copying.
//!
//! ```text
//!   read  (bufs=[caller's]) ──► malloc: memcpy region → caller's buffer
//!   read  (lend, bufs=[])   ──► malloc: bufs=[window on region] (kept mapped by an Rc)
//!                               target: window → socket (one copy: staged with the
//!                               C2H header for small reads, by the kernel for large)
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod bdev;
pub mod buf;
pub mod crypto;
mod error;

pub use bdev::{
    BackendChannel, Bdev, BdevBackend, BdevDesc, BdevInfo, BdevIo, Completions, IoCallback,
    IoChannel, IoSink, IoStat, IoStatus, IoType, SgList,
};
pub use buf::{IoBuf, Lender};
pub use error::{Error, Result};
