//! The NVMe-oF/TCP target: subsystems, controllers, listeners, and the queue pairs that move
//! commands and data between sockets and bdevs.
//!
//! ```text
//!  listener (main reactor) ── accept ──► round-robin ──► reactor N: tcp::Qpair
//!                                                         │ recv → PDU state machine
//!   Subsystem ── namespaces (claimed bdevs) ──────────────┤ Connect → Controller (shared)
//!      └── controllers (cntlid) ◄── admin cmds, AEN, KATO ┤ I/O cmd → IoChannel (this reactor)
//!                                                         └ C2HData/CapsuleResp → one sendmsg
//! ```

mod admin;
pub mod config;
pub mod ctrlr;
mod listener;
pub mod subsystem;
pub mod tcp;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ballast_reactor::RuntimeHandle;

pub use config::{ListenAddr, TransportOpts};
pub use ctrlr::Controller;
pub use subsystem::{NsEntry, Subsystem, SubsystemKind, DISCOVERY_NQN};

use crate::error::{Error, Result};

thread_local! {
    /// Listeners running on this (main) reactor.
    static LISTENERS: RefCell<HashMap<ListenAddr, listener::Listener>> = RefCell::default();
}

/// The NVMe-oF target of one daemon.
pub struct Target {
    rt: RuntimeHandle,
    /// Options of the TCP transport once created (explicitly, or implicitly by the first
    /// listener with `default_opts`).
    opts: std::sync::OnceLock<TransportOpts>,
    default_opts: TransportOpts,
    subsystems: Mutex<BTreeMap<String, Arc<Subsystem>>>,
    /// Listen address → number of subsystems using it.
    listeners: Mutex<BTreeMap<ListenAddr, usize>>,
    rr: AtomicUsize,
    discovery: Arc<Subsystem>,
    genctr: AtomicU64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").finish_non_exhaustive()
    }
}

impl Target {
    /// A target whose connections run on the reactors of `rt`.
    pub fn new(rt: RuntimeHandle, opts: TransportOpts) -> Result<Arc<Target>> {
        opts.validate().map_err(|why| Error::InvalidParam {
            param: "transport",
            why,
        })?;
        let discovery = Subsystem::new(
            DISCOVERY_NQN,
            SubsystemKind::Discovery,
            "",
            "ballast discovery",
            1,
        )?;
        let t = Arc::new(Target {
            rt,
            opts: std::sync::OnceLock::new(),
            default_opts: opts,
            subsystems: Mutex::default(),
            listeners: Mutex::default(),
            rr: AtomicUsize::new(0),
            discovery,
            genctr: AtomicU64::new(1),
        });
        // A resized bdev (an lvol): hosts of the namespaces it backs get the
        // namespace-attribute-changed notice and read the new size.
        let weak = Arc::downgrade(&t);
        ballast_engine::bdev::on_resize(move |b| {
            if let Some(t) = weak.upgrade() {
                for s in t.subsystems() {
                    s.bdev_resized(b);
                }
            }
        });
        Ok(t)
    }

    /// The options the transport gets when it is created implicitly (by the first listener),
    /// as given to [`Target::new`].
    pub fn default_opts(&self) -> &TransportOpts {
        &self.default_opts
    }

    /// Transport options.
    pub fn opts(&self) -> &TransportOpts {
        self.opts.get().unwrap_or(&self.default_opts)
    }

    /// The reactors.
    pub fn runtime(&self) -> &RuntimeHandle {
        &self.rt
    }

    /// Discovery log generation counter.
    pub fn genctr(&self) -> u64 {
        self.genctr.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.genctr.fetch_add(1, Ordering::AcqRel);
    }

    /// Creates an NVM subsystem.
    pub fn create_subsystem(
        &self,
        nqn: &str,
        serial: &str,
        model: &str,
        max_namespaces: u32,
        allow_any_host: bool,
    ) -> Result<Arc<Subsystem>> {
        if nqn == DISCOVERY_NQN {
            return Err(Error::SubsystemExists(nqn.to_string()));
        }
        let s = Subsystem::new(nqn, SubsystemKind::Nvm, serial, model, max_namespaces)?;
        s.set_allow_any_host(allow_any_host);
        let mut subs = self.subsystems.lock().unwrap();
        if subs.contains_key(nqn) {
            return Err(Error::SubsystemExists(nqn.to_string()));
        }
        subs.insert(nqn.to_string(), s.clone());
        drop(subs);
        self.changed();
        tracing::info!(nqn, "subsystem created");
        Ok(s)
    }

    /// Deletes a subsystem: its controllers are disconnected, namespaces released, and
    /// listeners no longer used by any subsystem stopped.
    pub fn delete_subsystem(&self, nqn: &str) -> Result<()> {
        let s = self
            .subsystems
            .lock()
            .unwrap()
            .remove(nqn)
            .ok_or_else(|| Error::SubsystemNotFound(nqn.to_string()))?;
        for l in s.listeners() {
            let _ = s.remove_listener_record(l);
            self.release_listener(l);
        }
        s.shutdown();
        self.changed();
        tracing::info!(nqn, "subsystem deleted");
        Ok(())
    }

    /// The subsystem with `nqn` (including the discovery subsystem).
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        if nqn == DISCOVERY_NQN {
            return Some(self.discovery.clone());
        }
        self.subsystems.lock().unwrap().get(nqn).cloned()
    }

    /// All NVM subsystems, by NQN.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.subsystems.lock().unwrap().values().cloned().collect()
    }

    /// The discovery subsystem.
    pub fn discovery(&self) -> &Arc<Subsystem> {
        &self.discovery
    }

    /// Creates the TCP transport with `opts` (SPDK's nvmf_create_transport). Fails if it
    /// exists already (created explicitly, or implicitly by a listener).
    pub fn create_transport(&self, opts: TransportOpts) -> Result<()> {
        opts.validate().map_err(|why| Error::InvalidParam {
            param: "transport",
            why,
        })?;
        self.opts
            .set(opts)
            .map_err(|_| Error::TransportExists("TCP".into()))
    }

    /// The transport's options, if it has been created.
    pub fn transport(&self) -> Option<&TransportOpts> {
        self.opts.get()
    }

    /// Adds a listener to a subsystem, starting the socket listener if it is new, and returns
    /// the address bound. Port 0 asks the kernel for a free port: every such call starts a new
    /// listener, and the subsystem records (and reports, and removes by) the port actually
    /// bound, never 0.
    pub fn add_listener(self: &Arc<Self>, nqn: &str, addr: SocketAddr) -> Result<SocketAddr> {
        let s = self
            .subsystem(nqn)
            .filter(|s| s.kind == SubsystemKind::Nvm)
            .ok_or_else(|| Error::SubsystemNotFound(nqn.to_string()))?;
        let addr = ListenAddr(addr);
        if s.listeners().contains(&addr) {
            return Err(Error::Listener {
                addr: addr.to_string(),
                why: format!("already a listener of {nqn}"),
            });
        }
        self.opts.get_or_init(|| self.default_opts.clone());
        let bound = self.acquire_listener(addr)?;
        if let Err(e) = s.add_listener_record(bound) {
            self.release_listener(bound);
            return Err(e);
        }
        self.changed();
        Ok(bound.0)
    }

    /// Removes a listener from a subsystem; controllers that connected through it are
    /// disconnected; the socket closes when no subsystem uses the address.
    pub fn remove_listener(&self, nqn: &str, addr: SocketAddr) -> Result<()> {
        let s = self
            .subsystem(nqn)
            .ok_or_else(|| Error::SubsystemNotFound(nqn.to_string()))?;
        let addr = ListenAddr(addr);
        let affected = s.remove_listener_record(addr)?;
        for c in affected {
            c.disconnect("listener removed");
        }
        self.release_listener(addr);
        self.changed();
        Ok(())
    }

    /// Every address the target listens on.
    pub fn listen_addrs(&self) -> Vec<ListenAddr> {
        self.listeners.lock().unwrap().keys().copied().collect()
    }

    /// Takes a reference on the socket listener of `addr`, starting it if needed; returns the
    /// address bound (differs from `addr` only for port 0, which always starts a new one).
    fn acquire_listener(self: &Arc<Self>, addr: ListenAddr) -> Result<ListenAddr> {
        let mut ls = self.listeners.lock().unwrap();
        if addr.0.port() != 0 {
            if let Some(n) = ls.get_mut(&addr) {
                *n += 1;
                return Ok(addr);
            }
        }
        let me = self.clone();
        let bound = self.rt.call(self.rt.main_core(), move || {
            let l = listener::start(&me, addr)?;
            let bound = l.addr;
            LISTENERS.with(|m| m.borrow_mut().insert(bound, l));
            Ok::<ListenAddr, Error>(bound)
        })??;
        ls.insert(bound, 1);
        Ok(bound)
    }

    fn release_listener(&self, addr: ListenAddr) {
        let mut ls = self.listeners.lock().unwrap();
        let Some(n) = ls.get_mut(&addr) else { return };
        *n -= 1;
        if *n > 0 {
            return;
        }
        ls.remove(&addr);
        let _ = self.rt.call(self.rt.main_core(), move || {
            if let Some(l) = LISTENERS.with(|m| m.borrow_mut().remove(&addr)) {
                l.stop();
            }
        });
    }

    /// Hands an accepted connection to the next reactor (round robin).
    pub(crate) fn dispatch_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        listen: ListenAddr,
    ) {
        let cores = self.rt.cores();
        let core = cores[self.rr.fetch_add(1, Ordering::Relaxed) % cores.len()];
        let me = self.clone();
        if let Err(e) = self
            .rt
            .send_retry(core, move || tcp::start_qpair(me, stream, peer, listen))
        {
            tracing::warn!(%peer, "connection dropped: {e}");
        }
    }

    /// Stops all listeners and disconnects every controller (daemon shutdown).
    pub fn shutdown(&self) {
        for addr in self.listen_addrs() {
            let mut ls = self.listeners.lock().unwrap();
            ls.insert(addr, 1);
            drop(ls);
            self.release_listener(addr);
        }
        for s in self.subsystems() {
            for c in s.controllers() {
                c.disconnect("target shutting down");
            }
        }
        for c in self.discovery.controllers() {
            c.disconnect("target shutting down");
        }
    }
}
