//! Thread-per-core reactors for ballast, in the style of SPDK's reactor/spdk_thread.
//!
//! One OS thread per core in a core mask, pinned, each running a loop over three sources of
//! work. Other threads talk to a reactor only through its bounded lock-free message ring.
//!
//! ```text
//!        other reactors / control threads
//!                 │ send(core, closure)
//!                 ▼
//!   ┌──────── reactor (one per core) ───────────────────────────────┐
//!   │ loop {                                                        │
//!   │   drain message ring (ArrayQueue, bounded MPSC)               │
//!   │   run pollers   (FnMut() -> Busy | Idle; periodic ones too)   │
//!   │   run expired timers                                          │
//!   │   idle ≥ threshold?  → sleep in epoll_wait on                 │
//!   │        eventfd (messages) · timerfd (next deadline) ·         │
//!   │        wake fds (sockets, io_uring eventfds)                  │
//!   │ }                                                             │
//!   └───────────────────────────────────────────────────────────────┘
//! ```
//!
//! Under load a reactor spins and makes no blocking syscall; with nothing to do for
//! [`RuntimeConfig::idle_threshold`] it blocks, so an idle daemon costs ≈0 % CPU. A sender
//! writes the eventfd only when the target is asleep (it swaps the target's `sleeping` flag),
//! so the busy path stays syscall-free.
//!
//! ```
//! use ballast_reactor::{Runtime, RuntimeConfig};
//! let rt = Runtime::start(RuntimeConfig { cores: vec![0], pin: false, ..Default::default() })?;
//! let answer = rt.call(0, || ballast_reactor::current_core())?;
//! assert_eq!(answer, Some(0));
//! rt.shutdown();
//! # Ok::<(), ballast_reactor::Error>(())
//! ```
#![warn(missing_docs)]

mod cpuset;
mod error;
mod reactor;
mod sys;

pub use cpuset::parse_core_mask;
pub use error::{Error, Result};
pub use reactor::{
    add_wake_fd, cancel_timer, current_core, handle, is_draining, on_shutdown,
    register_periodic_poller, register_poller, remove_wake_fd, send, thread_cpu_time_of,
    timer_after, unregister_poller, wake_when_writable, Msg, PollStatus, PollerHandle,
    ReactorStats, Runtime, RuntimeConfig, RuntimeHandle, SendRoom, TimerHandle,
};
pub use sys::{thread_cpu_time, AcceptGate, IoVecs, ReadySet};
