//! The nvme crate's error type.

/// Errors of the NVMe-oF target's control path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subsystem with that NQN exists already.
    #[error("subsystem {0} already exists")]
    SubsystemExists(String),
    /// No subsystem has that NQN.
    #[error("subsystem {0} not found")]
    SubsystemNotFound(String),
    /// The namespace ID is taken, out of range, or absent.
    #[error("subsystem {nqn}: {why}")]
    Namespace {
        /// The subsystem.
        nqn: String,
        /// What is wrong.
        why: String,
    },
    /// The transport exists already.
    #[error("transport {0} already exists")]
    TransportExists(String),
    /// A parameter is invalid; names the parameter.
    #[error("invalid parameter {param}: {why}")]
    InvalidParam {
        /// The parameter.
        param: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The listener could not be created or found.
    #[error("listener {addr}: {why}")]
    Listener {
        /// The address.
        addr: String,
        /// What went wrong.
        why: String,
    },
    /// The bdev layer refused (not found, claimed, ...).
    #[error(transparent)]
    Bdev(#[from] ballast_engine::Error),
    /// The reactors refused (shut down, ...).
    #[error(transparent)]
    Reactor(#[from] ballast_reactor::Error),
}

/// The nvme crate's result alias.
pub type Result<T> = std::result::Result<T, Error>;
