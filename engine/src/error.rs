//! The engine crate's error type.

/// Errors from the bdev layer's control path (I/O errors are [`crate::IoStatus`] values).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No bdev has that name, alias or UUID.
    #[error("bdev {0} not found")]
    NotFound(String),
    /// A bdev (or alias, or UUID) with that name already exists.
    #[error("bdev name {0} already exists")]
    Exists(String),
    /// The bdev is claimed by another user and cannot be deleted or claimed again.
    #[error("bdev {bdev} is claimed by {by}")]
    Claimed {
        /// The bdev.
        bdev: String,
        /// Who holds the claim (e.g. "subsystem nqn...").
        by: String,
    },
    /// No crypto key has that name.
    #[error("crypto key {0} not found")]
    KeyNotFound(String),
    /// A crypto key with that name already exists.
    #[error("crypto key {0} already exists")]
    KeyExists(String),
    /// The crypto key is used by crypto bdevs and cannot be destroyed.
    #[error("crypto key {key} is in use by {users} crypto bdev(s); delete them first")]
    KeyInUse {
        /// The key's name.
        key: String,
        /// How many crypto bdevs use it.
        users: usize,
    },
    /// The bdev is being removed; it cannot be opened.
    #[error("bdev {0} is being removed")]
    Removing(String),
    /// The object is busy with something that rules the request out (a rebuild running,
    /// the last in-sync member of a mirror).
    #[error("{0}")]
    Busy(String),
    /// Invalid creation parameters.
    #[error("invalid parameter {param}: {why}")]
    InvalidParam {
        /// The parameter's name.
        param: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// No object of that kind (an lvol store, an lvol) has that name.
    #[error("{kind} {name} not found")]
    NoSuch {
        /// What was looked for ("lvol store", "lvol").
        kind: &'static str,
        /// The name, UUID or alias given.
        name: String,
    },
    /// Not enough free space (an lvol store's clusters).
    #[error("{0}")]
    NoSpace(String),
    /// On-disk metadata failed its checks: it is reported, never trusted.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// A call that must run on a reactor thread was made elsewhere.
    #[error("{0} must be called on a reactor thread")]
    NotOnReactor(&'static str),
    /// An OS call failed.
    #[error("{op} {path}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The file or device involved ("" if none).
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The engine crate's result alias.
pub type Result<T> = std::result::Result<T, Error>;
