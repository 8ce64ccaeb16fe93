//! The crate's one error type, and how each kind maps to a gRPC status code.

use std::path::PathBuf;

use tonic::{Code, Status};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// JSON-RPC error codes ballastd answers with (negated errno values, as SPDK's).
pub mod rpc_code {
    pub const ENODEV: i64 = -19;
    pub const EEXIST: i64 = -17;
    pub const EBUSY: i64 = -16;
    pub const ENOSPC: i64 = -28;
    pub const INVALID_PARAMS: i64 = -32602;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or asks for something this driver refuses.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named volume does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A volume of that name exists with incompatible properties.
    #[error("{0}")]
    AlreadyExists(String),
    /// A pagination token that this driver did not hand out.
    #[error("{0}")]
    Aborted(String),
    /// No node can take the volume (topology, space).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A capacity range no whole number of clusters satisfies.
    #[error("{0}")]
    OutOfRange(String),
    /// The state forbids the call (a volume in use, a node missing from the config).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A CSI call made by `ballast-csi call` failed (the gRPC status).
    #[error("{code}: {message}")]
    Call { code: String, message: String },
    /// Something on the node failed (a command, the kernel's answer).
    #[error("{0}")]
    Internal(String),
    /// A ballastd node could not be reached (socket missing, refused, timed out).
    #[error("node {node}: ballastd at {socket} unreachable: {detail}")]
    Unavailable {
        node: String,
        socket: PathBuf,
        detail: String,
    },
    /// A ballastd node answered a JSON-RPC call with an error.
    #[error("node {node}: {method} failed: {message} (code {code})")]
    Rpc {
        node: String,
        method: String,
        code: i64,
        message: String,
    },
    /// A ballastd node answered something this driver does not understand.
    #[error("node {node}: unexpected answer to {method}: {detail}")]
    Protocol {
        node: String,
        method: String,
        detail: String,
    },
    /// The node configuration file is missing or wrong.
    #[error("config {path}: {detail}")]
    Config { path: PathBuf, detail: String },
    /// Serving the gRPC socket failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl Error {
    /// The ballastd JSON-RPC error code, if this is one.
    pub fn rpc_code(&self) -> Option<i64> {
        match self {
            Error::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Aborted(_) => Code::Aborted,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unavailable { .. } => Code::Unavailable,
            Error::Rpc { code, .. } => match *code {
                rpc_code::ENODEV => Code::NotFound,
                rpc_code::EEXIST => Code::AlreadyExists,
                rpc_code::EBUSY => Code::FailedPrecondition,
                rpc_code::ENOSPC => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            Error::Protocol { .. }
            | Error::Config { .. }
            | Error::Io { .. }
            | Error::Internal(_)
            | Error::Call { .. } => Code::Internal,
            Error::Transport(_) => Code::Unavailable,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballastd_errors_map_to_csi_codes() {
        let rpc = |code| Error::Rpc {
            node: "n".into(),
            method: "m".into(),
            code,
            message: "x".into(),
        };
        assert_eq!(Status::from(rpc(-19)).code(), Code::NotFound);
        assert_eq!(Status::from(rpc(-16)).code(), Code::FailedPrecondition);
        assert_eq!(Status::from(rpc(-28)).code(), Code::ResourceExhausted);
        assert_eq!(Status::from(rpc(-32603)).code(), Code::Internal);
        let s = Status::from(Error::Aborted("bad token".into()));
        assert_eq!((s.code(), s.message()), (Code::Aborted, "bad token"));
    }
}
