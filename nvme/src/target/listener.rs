//! TCP listeners: a non-blocking listening socket polled on the main reactor; accepted
//! connections are handed round-robin to the reactors, which own them from then on.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use ballast_reactor::{PollStatus, PollerHandle};

use super::config::ListenAddr;
use super::Target;
use crate::error::{Error, Result};

/// Shortest gap between two accept attempts of a listener.
const ACCEPT_INTERVAL: std::time::Duration = std::time::Duration::from_micros(200);

/// A running listener (lives on the main reactor).
pub(crate) struct Listener {
    /// The address bound (never port 0).
    pub(crate) addr: ListenAddr,
    poller: PollerHandle,
    fd: std::os::fd::RawFd,
}

/// Binds `addr` and starts accepting on the current (main) reactor. `SO_REUSEADDR` is set by
/// std on Unix so a restarted daemon can bind again at once.
///
/// The listener is known by the address actually bound ([`Listener::addr`]): for port 0 that
/// is the port the kernel picked, so connections, reports and removal all name the real port.
pub(crate) fn start(target: &Arc<Target>, addr: ListenAddr) -> Result<Listener> {
    let fail = |e: std::io::Error| Error::Listener {
        addr: addr.to_string(),
        why: e.to_string(),
    };
    let l = TcpListener::bind(addr.0).map_err(fail)?;
    l.set_nonblocking(true).map_err(fail)?;
    let addr = ListenAddr(l.local_addr().map_err(fail)?);
    let fd = l.as_raw_fd();
    ballast_reactor::add_wake_fd(fd)?;
    let t = Arc::downgrade(target);
    let mut gate = ballast_reactor::AcceptGate::new(fd, ACCEPT_INTERVAL);
    let poller = ballast_reactor::register_poller(format!("nvmf_tcp_accept:{addr}"), move || {
        if !gate.open() {
            return PollStatus::Idle;
        }
        let mut busy = false;
        // Accept a bounded batch per poll.
        for _ in 0..16 {
            match l.accept() {
                Ok((stream, peer)) => {
                    busy = true;
                    let Some(target) = t.upgrade() else { break };
                    target.dispatch_connection(stream, peer, addr);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(%addr, "accept: {e}");
                    break;
                }
            }
        }
        PollStatus::from(busy)
    })?;
    tracing::info!(%addr, "NVMe/TCP listener started");
    Ok(Listener { addr, poller, fd })
}

impl Listener {
    /// Stops accepting (on the main reactor); established connections are not affected.
    pub(crate) fn stop(self) {
        ballast_reactor::remove_wake_fd(self.fd);
        ballast_reactor::unregister_poller(self.poller);
        tracing::info!(addr = %self.addr, "NVMe/TCP listener stopped");
    }
}
