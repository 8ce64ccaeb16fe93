//! Errors of the RPC crate: setup errors ([`Error`]) and JSON-RPC error objects
//! ([`RpcError`]) with SPDK's codes where SPDK has them.

use serde_json::{json, Value};

/// Setting up the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket path is served by a live daemon.
    #[error("{0} is in use by a running daemon (not replacing it)")]
    SocketInUse(String),
    /// A socket operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reactors refused.
    #[error(transparent)]
    Reactor(#[from] ballast_reactor::Error),
    /// The configuration file kept with `--save-config` cannot be kept or written.
    #[error("--save-config {path}: {op}: {source}")]
    SaveConfig {
        /// What was attempted.
        op: &'static str,
        /// The file kept.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A config file could not be applied.
    #[error("config: {0}")]
    Config(String),
}

impl Error {
    /// The OS error number behind the error, if an OS call failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::SaveConfig { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// JSON-RPC parse error.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC invalid request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC method not found.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC invalid params.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC internal error.
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Code (JSON-RPC's, or a negative errno as SPDK uses).
    pub code: i64,
    /// Plain-language message.
    pub message: String,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
    /// -32602 with a message naming the parameter.
    pub fn params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }
    /// The error object.
    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

/// `s` if it fits in `max` bytes; else its head and tail around a marker saying how much was
/// left out, all within `max` bytes and cut on char boundaries. Keeping the tail keeps what a
/// message says after a quoted value ("bdev <huge name> not found"). A `max` below the
/// marker's length (about 30 bytes) yields the marker alone.
pub fn cap(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    // The marker's longest form (the elided count is below s.len()).
    let reserve = format!(" … ({} bytes elided) … ", s.len()).len();
    let room = max.saturating_sub(reserve);
    let tail_room = room / 4;
    let mut head = room - tail_room;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - tail_room;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} … ({} bytes elided) … {}",
        &s[..head],
        tail - head,
        &s[tail..]
    )
    .into()
}

const ENOSPC: i64 = -28;
const EINVAL: i64 = -22;
const ENODEV: i64 = -19;
const EEXIST: i64 = -17;
const EBUSY: i64 = -16;
const EIO: i64 = -5;

impl From<ballast_engine::Error> for RpcError {
    fn from(e: ballast_engine::Error) -> Self {
        use ballast_engine::Error as E;
        let code = match &e {
            E::NotFound(_) | E::KeyNotFound(_) | E::NoSuch { .. } => ENODEV,
            E::Exists(_) | E::KeyExists(_) => EEXIST,
            E::Claimed { .. } | E::Removing(_) | E::KeyInUse { .. } | E::Busy(_) => EBUSY,
            E::InvalidParam { .. } => INVALID_PARAMS,
            E::NoSpace(_) => ENOSPC,
            // Metadata that failed its checks: an I/O error, as SPDK's blobstore reports it.
            E::Corrupt(_) => EIO,
            _ => INTERNAL_ERROR,
        };
        RpcError::new(code, e.to_string())
    }
}

impl From<ballast_nvme::Error> for RpcError {
    fn from(e: ballast_nvme::Error) -> Self {
        use ballast_nvme::Error as E;
        match e {
            E::Bdev(b) => b.into(),
            E::SubsystemExists(_) | E::TransportExists(_) => RpcError::new(EEXIST, e.to_string()),
            E::SubsystemNotFound(_) => RpcError::new(ENODEV, e.to_string()),
            E::Namespace { .. } | E::InvalidParam { .. } | E::Listener { .. } => {
                RpcError::new(INVALID_PARAMS, e.to_string())
            }
            _ => RpcError::new(EINVAL, e.to_string()),
        }
    }
}

impl From<ballast_reactor::Error> for RpcError {
    fn from(e: ballast_reactor::Error) -> Self {
        RpcError::new(INTERNAL_ERROR, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvol_store_errors_have_spdks_errnos() {
        use ballast_engine::Error as E;
        for (e, code) in [
            (
                E::NoSuch {
                    kind: "lvol store",
                    name: "lvs0".into(),
                },
                ENODEV,
            ),
            (E::NoSpace("lvol store lvs0 is full".into()), ENOSPC),
            (E::Corrupt("checksum".into()), EIO),
        ] {
            let message = e.to_string();
            assert_eq!(RpcError::from(e), RpcError::new(code, message));
        }
    }
}
