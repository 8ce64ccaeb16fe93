//! The reactor crate's error type.

/// Errors from starting, addressing or stopping reactors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A core mask or core list could not be parsed.
    #[error("invalid core mask {mask:?}: {why}")]
    CoreMask {
        /// The mask as given.
        mask: String,
        /// What is wrong with it.
        why: String,
    },
    /// A core in the mask does not exist on this machine (and pinning was requested).
    #[error("core {core} is not available on this machine (available: {available:?})")]
    CoreUnavailable {
        /// The requested core.
        core: usize,
        /// The cores the OS reports.
        available: Vec<usize>,
    },
    /// No reactor runs on that core.
    #[error("no reactor on core {0}")]
    NoSuchReactor(usize),
    /// The target reactor's message ring is full (it is bounded); the message was not sent.
    #[error("message ring of reactor on core {0} is full")]
    RingFull(usize),
    /// The runtime is shutting down or has stopped.
    #[error("reactors are shut down")]
    ShutDown,
    /// A call that must run on a reactor thread was made elsewhere.
    #[error("{0} must be called on a reactor thread")]
    NotOnReactor(&'static str),
    /// An OS resource (eventfd, epoll, thread) could not be created.
    #[error("{op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The reactor crate's result alias.
pub type Result<T> = std::result::Result<T, Error>;
