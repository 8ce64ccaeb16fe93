//! JSON-RPC 2.0 management for ballast, speaking SPDK's method and parameter names so SPDK
//! scripts and `rpc.py -s <socket>` configure ballast unchanged for what ballast implements.
//!
//! ```text
//!  clients ──unix socket──► main-reactor poller (accept, read, frame JSON values, write)
//!                                 │ bounded channel            ▲ bounded channel + wake
//!                                 ▼                            │
//!                           rpc worker thread ── methods::call ─┘
//!                                 │  (may wait on any reactor without blocking one)
//!                                 ▼
//!                   engine::bdev registry · nvme::Target · reactor stats
//! ```
//!
//! The socket I/O never blocks the main reactor; method bodies run on a dedicated control
//! thread, so a method that waits for another reactor cannot deadlock or stall the data path.
//! [`config`] renders and replays SPDK's `save_config` format; [`config_file`] keeps it on
//! disk as it changes (`ballastd --save-config`).
#![warn(missing_docs)]

pub mod config;
pub mod config_file;
mod error;
pub mod log;
pub mod methods;
pub mod server;

pub use config_file::ConfigFile;
pub use error::{Error, RpcError};
pub use methods::Context;
pub use server::{BoundSocket, RpcServer};

/// Default RPC socket path.
pub const DEFAULT_SOCKET: &str = "/var/tmp/ballast.sock";
