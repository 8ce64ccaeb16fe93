//! Controllers: the state a host builds with Connect and shares across its queue pairs
//! (CC/CSTS, features, keep-alive, asynchronous events, the I/O queues it owns).
//!
//! The admin queue pair executes admin commands against this state (see `admin.rs`); other
//! threads (RPC, subsystem changes) reach the queue pairs through reactor messages.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_reactor::RuntimeHandle;

use super::config::ListenAddr;
use super::subsystem::Subsystem;

/// Where a queue pair lives: its reactor and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpairRef {
    /// Reactor core.
    pub core: usize,
    /// Queue pair id (unique in the process).
    pub id: u64,
    /// NVMe queue id (0 = admin).
    pub qid: u16,
}

/// Mutable controller state (control path).
#[derive(Debug)]
pub struct CtrlState {
    /// Controller Configuration register.
    pub cc: u32,
    /// Controller Status register.
    pub csts: u32,
    /// I/O queues granted by Set Features (Number of Queues); 0 until set.
    pub num_io_queues: u16,
    /// Asynchronous Event Configuration (feature 0x0B).
    pub aen_config: u32,
    /// Volatile write cache enabled (feature 0x06).
    pub vwc_enabled: bool,
    /// Temperature threshold (feature 0x04).
    pub temp_threshold: u16,
    /// Number of the host's I/O queue pairs, by qid.
    pub io_qpairs: BTreeMap<u16, QpairRef>,
    /// Async events waiting for an AER command (completion dword 0).
    pub pending_aens: VecDeque<u32>,
    /// Changed Namespace List (log page 0x04), cleared when read.
    pub changed_ns: Vec<u32>,
    /// Namespace-attribute notices are masked from the moment one is reported until the host
    /// reads the Changed Namespace List (spec: the event is "retained" until then).
    pub ns_notice_masked: bool,
    /// Error log entries (newest last), with a running error count.
    pub error_count: u64,
}

/// A controller of a subsystem.
pub struct Controller {
    /// Controller ID.
    pub cntlid: u16,
    /// The subsystem.
    pub subsys: Arc<Subsystem>,
    /// Host NQN from Connect.
    pub hostnqn: String,
    /// Host identifier from Connect.
    pub hostid: [u8; 16],
    /// Listener the admin queue connected through.
    pub listener: ListenAddr,
    /// Address of the host's admin connection.
    pub peer: std::net::SocketAddr,
    /// Keep-alive timeout (0 = disabled).
    pub kato: Duration,
    /// The admin queue pair.
    pub admin: QpairRef,
    rt: RuntimeHandle,
    created: Instant,
    /// Nanoseconds since `created` of the last keep-alive (or other admin command).
    last_keepalive: AtomicU64,
    disconnecting: AtomicBool,
    /// Mutable state.
    pub state: Mutex<CtrlState>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("cntlid", &self.cntlid)
            .field("subnqn", &self.subsys.nqn)
            .field("hostnqn", &self.hostnqn)
            .finish()
    }
}

/// AEN dword 0: event type Notice (2), info Namespace Attribute Changed (0), log page 0x04.
pub const AEN_NS_ATTR_CHANGED: u32 = 0x2 | (0x04 << 16); // type notice, info 0x00 (ns attr changed), log 04h
/// Asynchronous Event Configuration bit enabling namespace attribute notices.
pub const AEC_NS_ATTR: u32 = 1 << 8;

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cntlid: u16,
        subsys: Arc<Subsystem>,
        hostnqn: String,
        hostid: [u8; 16],
        listener: ListenAddr,
        peer: std::net::SocketAddr,
        kato: Duration,
        admin: QpairRef,
        rt: RuntimeHandle,
    ) -> Arc<Self> {
        Arc::new(Self {
            cntlid,
            subsys,
            hostnqn,
            hostid,
            listener,
            peer,
            kato,
            admin,
            rt,
            created: Instant::now(),
            last_keepalive: AtomicU64::new(0),
            disconnecting: AtomicBool::new(false),
            state: Mutex::new(CtrlState {
                cc: 0,
                csts: 0,
                num_io_queues: 0,
                aen_config: AEC_NS_ATTR,
                vwc_enabled: true,
                temp_threshold: 0x0157, // 343 K
                io_qpairs: BTreeMap::new(),
                pending_aens: VecDeque::new(),
                changed_ns: Vec::new(),
                ns_notice_masked: false,
                error_count: 0,
            }),
        })
    }

    /// Records keep-alive activity.
    pub fn touch(&self) {
        self.last_keepalive
            .store(self.created.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// True if KATO is enabled and has expired.
    pub fn keepalive_expired(&self) -> bool {
        if self.kato.is_zero() {
            return false;
        }
        let last = Duration::from_nanos(self.last_keepalive.load(Ordering::Relaxed));
        self.created.elapsed().saturating_sub(last) > self.kato
    }

    /// True once a disconnect was requested.
    pub fn is_disconnecting(&self) -> bool {
        self.disconnecting.load(Ordering::Acquire)
    }

    /// Records a namespace change and raises the AEN if the host enabled it.
    pub fn namespace_changed(&self, nsid: u32) {
        let notify = {
            let mut st = self.state.lock().unwrap();
            if st.changed_ns.len() < 1024 && !st.changed_ns.contains(&nsid) {
                st.changed_ns.push(nsid);
            } else if st.changed_ns.len() >= 1024 {
                // Overflow: the list holds 0xFFFFFFFF in its first entry.
                st.changed_ns = vec![u32::MAX];
            }
            if st.aen_config & AEC_NS_ATTR != 0 && !st.ns_notice_masked {
                st.ns_notice_masked = true;
                st.pending_aens.push_back(AEN_NS_ATTR_CHANGED);
                true
            } else {
                false
            }
        };
        if notify {
            let admin = self.admin;
            let _ = self
                .rt
                .send_retry(admin.core, move || super::tcp::deliver_aens(admin.id));
        }
    }

    /// Disconnects the controller: every one of its queue pairs is closed (on its reactor).
    /// Closing the admin queue pair frees the controller.
    pub fn disconnect(&self, reason: &'static str) {
        if self.disconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(cntlid = self.cntlid, subnqn = %self.subsys.nqn, hostnqn = %self.hostnqn,
            reason, "disconnecting controller");
        let qpairs: Vec<QpairRef> = {
            let st = self.state.lock().unwrap();
            st.io_qpairs.values().copied().collect()
        };
        for q in qpairs.into_iter().chain(std::iter::once(self.admin)) {
            let _ = self
                .rt
                .send_retry(q.core, move || super::tcp::close_qpair(q.id, reason));
        }
    }

    /// Queue pairs of this controller (admin first).
    pub fn qpairs(&self) -> Vec<QpairRef> {
        let st = self.state.lock().unwrap();
        std::iter::once(self.admin)
            .chain(st.io_qpairs.values().copied())
            .collect()
    }
}
