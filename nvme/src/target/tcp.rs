//! NVMe/TCP queue pairs: one TCP connection each, owned by one reactor for its whole life.
//!
//! ```text
//!  reactor's SockGroup: busy I/O queues (≤ 2) read directly every loop; the rest
//!                       via one epoll_wait ─► readable queue pairs only
//!  socket ──recv (drain)──► rx buffer ──► RecvState machine
//!     AwaitCh ─► AwaitPsh ─► Payload ─► (PDU complete) ─► dispatch
//!        ▲                                  │ ICReq → ICResp
//!        └──────────────────────────────────┘ CapsuleCmd → Request (slot = R2T ttag)
//!                                             H2CData → Request buffer
//!  Request: Free → NeedBuffer → AwaitH2C → Executing → Responding → Free
//!  respond ──► staging buffer (256 KiB on I/O queues): C2HData + data ≤ 16 KiB + CapsuleResp
//!      written in place, slot freed at once ──┐
//!  tx items (R2T, big reads, ICResp, or while  ├──► flush: staged bytes first, then items
//!      items wait): bounded by the queue depth ┘    (small parts joined) ──► one sendmsg
//! ```
//!
//! No locks and no allocation per command on this path: request slots are preallocated per
//! queue pair, data buffers come from the reactor's pool, completions arrive through the
//! queue pair's [`IoSink`], and every PDU header is built in place (in the staging buffer or
//! a tx item). Reads of a namespace that lends its memory (malloc, null) take no buffer at
//! all: the C2HData payload is read from the bdev's memory ([`ballast_engine::BdevIo::lend`])
//! — copied once, into the staging buffer (small reads) or by the kernel straight into the
//! socket (large ones).
//!
//! Why stage: on loopback the kernel copies one long contiguous run far faster than many
//! short iovecs (a 24-byte header, 4 KiB of data, the next header, ...); the user-space copy
//! into the staging buffer costs less than the difference (A/B in BENCHMARKS.md).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_engine::{BdevIo, IoBuf, IoCallback, IoChannel, IoSink, IoStatus, IoType, SgList};
use ballast_reactor::{PollStatus, PollerHandle};

use super::admin::{self, AdminOutcome};
use super::config::ListenAddr;
use super::ctrlr::{Controller, QpairRef};
use super::subsystem::{NsTable, SubsystemKind};
use super::Target;
use crate::pdu::{self, Fes};
use crate::spec::{self, Status};

const RX_BUF_LEN: usize = 128 * 1024;
const MAX_IOV: usize = 128;
/// In-capsule data accepted on the admin queue (fixed by the NVMe/TCP spec).
const ADMIN_ICDSZ: u32 = 8192;

thread_local! {
    static QPAIRS: RefCell<HashMap<u64, Rc<Qpair>>> = RefCell::default();
    /// This reactor's queue pair sockets, polled together for input (see [`SockGroup`]).
    static GROUP: RefCell<Option<SockGroup>> = const { RefCell::new(None) };
}

/// The sockets of this reactor's queue pairs in one [`ballast_reactor::ReadySet`]: one
/// poller asks which have input (one `epoll_wait`) and only those are read, instead of a
/// `recv` per queue pair per loop that mostly finds nothing (over half of them did at 4K
/// QD32, each taking the socket lock the peer's core needs to deliver data).
///
/// Except for a few busy sockets: while at most [`DIRECT_RECV_MAX`] I/O queues are here, they
/// are read directly every loop (a command is read one system call sooner: the QD1 round trip
/// is ~5 % shorter, BENCHMARKS.md), and the epoll set, for admin and connecting queues, is
/// asked only every [`SLOW_POLL_EVERY`] loops.
struct SockGroup {
    set: ballast_reactor::ReadySet,
    poller: PollerHandle,
    /// Queue pair ids of the members, and whether each is a connected I/O queue.
    members: Vec<(u64, bool)>,
    /// Ids of the I/O queues when they are read directly, else empty.
    direct: Vec<u64>,
    loops: u32,
}

/// Most I/O queues a reactor reads directly each loop instead of asking epoll first.
const DIRECT_RECV_MAX: usize = 2;
/// With I/O queues read directly, the epoll set (admin queues, new connections) is asked once
/// per this many loops: a few µs at most for commands that are not latency-bound.
const SLOW_POLL_EVERY: u32 = 16;

impl SockGroup {
    fn poll(&mut self, ready: &mut Vec<u64>) {
        if self.direct.is_empty() {
            self.set.poll(ready);
            return;
        }
        ready.extend_from_slice(&self.direct);
        self.loops = self.loops.wrapping_add(1);
        if self.loops.is_multiple_of(SLOW_POLL_EVERY) {
            let n = ready.len();
            self.set.poll(ready);
            // Direct members are read already.
            let direct = &self.direct;
            let mut i = n;
            while i < ready.len() {
                if direct.contains(&ready[i]) {
                    ready.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }
    }

    fn update_direct(&mut self) {
        self.direct.clear();
        let io = self.members.iter().filter(|m| m.1).map(|m| m.0);
        if io.clone().count() <= DIRECT_RECV_MAX {
            self.direct.extend(io);
        }
    }
}

/// Adds `fd` (queue pair `id`) to this reactor's group, starting the group on first use.
fn group_add(fd: RawFd, id: u64) -> std::io::Result<()> {
    GROUP.with(|g| {
        let mut g = g.borrow_mut();
        if g.is_none() {
            let set = ballast_reactor::ReadySet::new(64)?;
            let mut ready = Vec::with_capacity(64);
            let poller = ballast_reactor::register_poller("nvmf_tcp_sock_group", move || {
                ready.clear();
                GROUP.with(|g| {
                    if let Some(g) = g.borrow_mut().as_mut() {
                        g.poll(&mut ready);
                    }
                });
                // Dispatch with the group unborrowed: a queue pair may close (leave it).
                let mut any = false;
                for &id in ready.iter() {
                    with_qpair(id, |q| any |= q.on_readable());
                }
                PollStatus::from(any)
            })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            *g = Some(SockGroup {
                set,
                poller,
                members: Vec::new(),
                direct: Vec::new(),
                loops: 0,
            });
        }
        let grp = g.as_mut().expect("group exists");
        grp.set.add(fd, id)?;
        grp.members.push((id, false));
        Ok(())
    })
}

/// Marks queue pair `id` as a connected I/O queue (a candidate for direct reads).
fn group_mark_io(id: u64) {
    GROUP.with(|g| {
        if let Some(grp) = g.borrow_mut().as_mut() {
            if let Some(m) = grp.members.iter_mut().find(|m| m.0 == id) {
                m.1 = true;
            }
            grp.update_direct();
        }
    });
}

/// Removes `fd` (queue pair `id`) from this reactor's group; the last member stops the
/// group's poller.
fn group_remove(fd: RawFd, id: u64) {
    GROUP.with(|g| {
        let mut g = g.borrow_mut();
        let Some(grp) = g.as_mut() else { return };
        grp.set.remove(fd);
        grp.members.retain(|m| m.0 != id);
        grp.update_direct();
        if grp.members.is_empty() {
            let grp = g.take().expect("group exists");
            ballast_reactor::unregister_poller(grp.poller);
        }
    });
}
static NEXT_QPAIR_ID: AtomicU64 = AtomicU64::new(1);

fn with_qpair(id: u64, f: impl FnOnce(&Rc<Qpair>)) {
    let q = QPAIRS.with(|m| m.borrow().get(&id).cloned());
    if let Some(q) = q {
        f(&q);
    }
}

/// Number of queue pairs on this reactor.
pub fn local_qpair_count() -> usize {
    QPAIRS.with(|m| m.borrow().len())
}

/// Keep-alive timeout of a discovery controller whose host asked for none.
const DISCOVERY_DEFAULT_KATO_MS: u32 = 120_000;

/// TCP keep-alive as a safety net for hosts that vanish without KATO (KATO 0): the kernel
/// notices a dead peer after ~2 minutes and the queue pair closes.
fn set_tcp_keepalive(fd: RawFd) {
    let opts: [(libc::c_int, libc::c_int, libc::c_int); 4] = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6),
    ];
    for (level, name, val) in opts {
        // SAFETY: `fd` is an open socket owned by the caller; the option value is a c_int
        // that lives for the duration of the call, and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(name, "setsockopt: {}", std::io::Error::last_os_error());
        }
    }
}

/// Starts serving an accepted connection on this reactor.
pub(crate) fn start_qpair(
    target: Arc<Target>,
    stream: TcpStream,
    peer: SocketAddr,
    listen: ListenAddr,
) {
    if let Err(e) = stream
        .set_nonblocking(true)
        .and_then(|_| stream.set_nodelay(true))
    {
        tracing::warn!(%peer, "socket setup: {e}");
        return;
    }
    let fd = stream.as_raw_fd();
    set_tcp_keepalive(fd);
    if let Err(e) = ballast_reactor::add_wake_fd(fd) {
        tracing::warn!(%peer, "cannot poll connection: {e}");
        return;
    }
    let id = NEXT_QPAIR_ID.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = group_add(fd, id) {
        tracing::warn!(%peer, "cannot poll connection: {e}");
        ballast_reactor::remove_wake_fd(fd);
        return;
    }
    let depth = target.opts().max_queue_depth as usize;
    let core = ballast_reactor::current_core().unwrap_or(0);
    let q = Rc::new_cyclic(|me| Qpair {
        id,
        core,
        me: me.clone(),
        target,
        listen,
        peer,
        sock: stream,
        fd,
        state: Cell::new(QpState::AwaitIcReq),
        rx: RefCell::new(Rx {
            buf: vec![0u8; RX_BUF_LEN].into_boxed_slice(),
            start: 0,
            end: 0,
            state: RecvState::AwaitCh,
        }),
        tx: RefCell::new(Tx {
            items: VecDeque::with_capacity(depth * 2 + 4),
            sent: 0,
            stage: vec![0u8; STAGE_LEN].into_boxed_slice(),
            head: 0,
            tail: 0,
        }),
        reqs: RefCell::new((0..depth).map(|_| Request::default()).collect()),
        free: RefCell::new((0..depth as u16).rev().collect()),
        waiting_buf: RefCell::new(VecDeque::with_capacity(depth)),
        conn: Cell::new(Conn::default()),
        ctrl: RefCell::new(None),
        ns: RefCell::new(NsCache::default()),
        aers: RefCell::new(Vec::new()),
        poller: Cell::new(None),
        kato_poller: Cell::new(None),
        executing: Cell::new(0),
        in_poll: Cell::new(false),
        room: Cell::new(ballast_reactor::SendRoom::new(fd)),
    });
    let q2 = q.clone();
    match ballast_reactor::register_poller(format!("nvmf_tcp_qpair:{peer}"), move || q2.poll()) {
        Ok(h) => q.poller.set(Some(h)),
        Err(e) => {
            tracing::warn!(%peer, "cannot register qpair poller: {e}");
            group_remove(fd, id);
            ballast_reactor::remove_wake_fd(fd);
            return;
        }
    }
    QPAIRS.with(|m| m.borrow_mut().insert(id, q));
    tracing::debug!(%peer, %listen, id, "connection accepted");
}

/// Completes outstanding AERs of the admin queue pair `id` with pending events.
pub(crate) fn deliver_aens(id: u64) {
    with_qpair(id, |q| q.complete_aers());
}

/// Closes queue pair `id` (on its reactor).
pub(crate) fn close_qpair(id: u64, reason: &'static str) {
    with_qpair(id, |q| q.begin_close(reason));
}

/// Closes every queue pair of this reactor (daemon shutdown).
pub fn close_all_local(reason: &'static str) {
    let qs: Vec<_> = QPAIRS.with(|m| m.borrow().values().cloned().collect());
    for q in qs {
        q.begin_close(reason);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QpState {
    /// Connection accepted; only an ICReq is acceptable.
    AwaitIcReq,
    /// Initialized; capsules flow.
    Running,
    /// Closing: no more input; waiting for in-flight bdev I/O, then the socket closes.
    Closing,
    /// Gone.
    Closed,
}

/// Parameters negotiated by ICReq and Connect.
#[derive(Debug, Clone, Copy, Default)]
struct Conn {
    hdgst: bool,
    ddgst: bool,
    /// Host PDU data alignment (bytes) for C2H PDUs we send.
    hpda_bytes: u32,
    maxr2t: u32,
    connected: bool,
    qid: u16,
    /// Queue size (entries) from Connect.
    sqsize: u16,
    sqhd: u16,
    /// The host disabled SQ flow control: C2HData may carry SUCCESS.
    sqflow_disabled: bool,
    /// In-capsule data bound of this queue.
    icdsz: u32,
}

#[derive(Default)]
struct NsCache {
    gen: u64,
    table: Arc<NsTable>,
    /// Open channels of this reactor, by namespace.
    chans: Vec<NsChan>,
}

/// A namespace's channel on this reactor, with what the I/O path asks of it every command.
#[derive(Clone)]
struct NsChan {
    nsid: u32,
    ch: IoChannel,
    block_size: u32,
    num_blocks: u64,
    /// The bdev lends its memory for reads: C2HData is sent straight from it (no buffer).
    lends: bool,
}

/// What the payload bytes of the PDU being received are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PayloadDest {
    /// In-capsule data of request `slot`.
    Capsule(u16),
    /// H2CData for request `slot`, at `datao`.
    H2C(u16),
    /// Read and drop (command already failed).
    Discard(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Payload {
    dest: PayloadDest,
    /// Padding bytes still to skip before the data.
    pad: usize,
    /// Offset in the request buffer where the next data byte goes.
    off: usize,
    /// Data bytes still to come.
    left: usize,
    /// Running CRC32C of the data (if data digest is on).
    crc: u32,
    /// Digest bytes received so far.
    dgst_got: usize,
    dgst: [u8; 4],
    last_pdu: bool,
}

impl Payload {
    fn new(dest: PayloadDest, pad: usize, off: usize, left: usize, last_pdu: bool) -> Self {
        Payload {
            dest,
            pad,
            off,
            left,
            crc: 0,
            dgst_got: 0,
            dgst: [0; 4],
            last_pdu,
        }
    }
}

/// The receive state machine (SPDK's recv states, reduced to the ones that hold data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    /// Waiting for the 8-byte common header.
    AwaitCh,
    /// Common header known; waiting for the rest of the header (and header digest).
    AwaitPsh(pdu::CommonHeader),
    /// Receiving the data part of a PDU.
    Payload(Payload),
    /// A fatal error was reported or the queue is closing: input is ignored.
    Quiescing,
}

struct Rx {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    state: RecvState,
}

/// Lifecycle of a request slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ReqState {
    #[default]
    Free,
    /// Receiving in-capsule data.
    RecvCapsuleData,
    /// Waiting for a data buffer from the pool.
    NeedBuffer,
    /// R2T sent; waiting for H2CData.
    AwaitH2C,
    /// Submitted to a bdev (or parked as an AER).
    Executing,
    /// Response PDUs queued as tx items; freed when they have left the socket (a response
    /// written into the staging buffer frees its slot at once).
    Responding,
}

#[derive(Default)]
struct Request {
    state: ReqState,
    sqe: spec::Sqe,
    buf: Option<IoBuf>,
    /// Bytes of data the command transfers (from its SGL).
    xfer: u32,
    /// Host-to-controller bytes received so far.
    received: u32,
    /// Bdev I/Os outstanding for this command (DSM may issue several).
    sub_pending: u16,
    status: Status,
    dw0: u32,
    dw1: u32,
    /// Set by a data digest error: the command completes with a transport error.
    digest_error: bool,
}

/// Header bytes a tx item holds inline: every PDU of the I/O path (CapsuleResp, C2HData, R2T
/// with header digest: 28 bytes). Longer ones (ICResp, C2HTermReq) are boxed: they are sent
/// once per connection at most.
const TX_HDR_INLINE: usize = 32;
/// Zero padding between a C2HData header and its data (the host's PDU data alignment).
static PAD_ZEROS: [u8; 128] = [0; 128];

/// One PDU (or a bare data chunk) waiting to be sent. Kept small: one is built and queued
/// for every response.
struct TxItem {
    hdr: [u8; TX_HDR_INLINE],
    hdr_len: u8,
    /// Zero bytes (from [`PAD_ZEROS`]) between the header and the data.
    pad: u8,
    /// A header longer than [`TX_HDR_INLINE`] (then `hdr_len` is 0).
    big: Option<Box<[u8]>>,
    /// Data from request `slot`'s buffer: (slot, offset, len).
    data: Option<(u16, u32, u32)>,
    ddgst: Option<[u8; 4]>,
    /// Free request `slot` once this item has been sent.
    release: Option<u16>,
    /// Close the connection once this item has been sent (fatal error report).
    close_after: bool,
}

impl TxItem {
    fn header(&self) -> &[u8] {
        match &self.big {
            Some(b) => b,
            None => &self.hdr[..self.hdr_len as usize],
        }
    }
}

struct Tx {
    /// PDUs waiting to be sent, after the staged bytes `stage[head..tail]`.
    items: VecDeque<TxItem>,
    /// Bytes of the front item already sent.
    sent: usize,
    /// Responses written straight into `stage` by [`Qpair::respond`] (the common case) wait
    /// in `stage[head..tail]`; while that is empty, `flush` uses `stage` to join the headers
    /// and small payloads of queued items into one contiguous run per send.
    stage: Box<[u8]>,
    head: usize,
    tail: usize,
}

impl Tx {
    /// True while anything waits to be sent.
    fn pending(&self) -> bool {
        self.head < self.tail || !self.items.is_empty()
    }

    /// Drops everything waiting (the connection is going away).
    fn clear(&mut self) {
        self.items.clear();
        self.sent = 0;
        self.head = 0;
        self.tail = 0;
    }
}

/// Bytes of a queue pair's send staging buffer while it is an admin queue or connecting.
const STAGE_LEN: usize = 64 * 1024;
/// Bytes of an I/O queue's staging buffer: a whole batch of QD32 4 KiB read replies (~129 KiB)
/// goes out in one `sendmsg`. With 64 KiB a batch took two, and 4K QD32 reads ran ~1.10×
/// slower on the RAM namespace (BENCHMARKS.md, sixth session).
const STAGE_LEN_IO: usize = 256 * 1024;
/// Parts up to this size are copied into the staging buffer; larger payloads are sent from
/// where they are (their own iovec).
const STAGE_PART_MAX: usize = 16 * 1024;

/// A piece of one send: a run of the staging buffer, or a payload sent in place.
enum Seg<'a> {
    Stage(usize, usize),
    Ext(&'a [u8]),
}

/// One NVMe/TCP connection.
pub(crate) struct Qpair {
    id: u64,
    core: usize,
    me: Weak<Qpair>,
    target: Arc<Target>,
    listen: ListenAddr,
    peer: SocketAddr,
    sock: TcpStream,
    fd: RawFd,
    state: Cell<QpState>,
    rx: RefCell<Rx>,
    tx: RefCell<Tx>,
    reqs: RefCell<Vec<Request>>,
    free: RefCell<Vec<u16>>,
    waiting_buf: RefCell<VecDeque<u16>>,
    conn: Cell<Conn>,
    ctrl: RefCell<Option<Arc<Controller>>>,
    ns: RefCell<NsCache>,
    /// Outstanding Asynchronous Event Request slots (admin queue).
    aers: RefCell<Vec<u16>>,
    poller: Cell<Option<PollerHandle>>,
    kato_poller: Cell<Option<PollerHandle>>,
    /// Requests submitted to bdevs and not yet completed.
    executing: Cell<usize>,
    /// Inside `poll` (which flushes at its end): completions do not flush themselves.
    in_poll: Cell<bool>,
    /// Responses waiting for room in a full socket wake the reactor (see
    /// [`ballast_reactor::SendRoom`]).
    room: Cell<ballast_reactor::SendRoom>,
}

/// What [`Qpair::start_io`] did with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Submitted {
    /// Submitted to the bdev, or finished with an error status.
    Done,
    /// A read of a namespace that does not lend its memory: it needs a data buffer first.
    NeedsBuffer,
}

/// Why a PDU stream cannot continue: reported to the host in a C2HTermReq.
#[derive(Debug, Clone, Copy)]
struct Fatal {
    fes: Fes,
    fei: u32,
}

fn fatal(fes: Fes, fei: u32) -> Fatal {
    Fatal { fes, fei }
}

impl Qpair {
    fn poll(&self) -> PollStatus {
        self.in_poll.set(true);
        let r = self.poll_inner();
        self.in_poll.set(false);
        r
    }

    fn poll_inner(&self) -> PollStatus {
        let mut busy = false;
        if self.state.get() == QpState::Closed {
            return PollStatus::Idle;
        }
        if !self.waiting_buf.borrow().is_empty() {
            busy |= self.retry_buffers();
        }
        busy |= self.flush();
        busy |= self.must_keep_polling();
        if self.state.get() == QpState::Closing {
            self.try_finish_close();
        }
        busy.into()
    }

    // ---------------------------------------------------------------- receive path ----

    /// The socket has input (reported by this reactor's [`SockGroup`]), or may have (read
    /// directly). Returns whether anything was received.
    fn on_readable(&self) -> bool {
        matches!(self.state.get(), QpState::AwaitIcReq | QpState::Running) && self.recv()
    }

    /// Drains the socket (bounded per poll) and runs the PDU state machine over the bytes.
    fn recv(&self) -> bool {
        let mut did = false;
        for _ in 0..4 {
            let n = {
                let mut rx = self.rx.borrow_mut();
                if rx.start == rx.end {
                    rx.start = 0;
                    rx.end = 0;
                } else if rx.start > RX_BUF_LEN / 2 {
                    let (s, e) = (rx.start, rx.end);
                    rx.buf.copy_within(s..e, 0);
                    rx.start = 0;
                    rx.end = e - s;
                }
                let end = rx.end;
                if end == RX_BUF_LEN {
                    break;
                }
                match (&self.sock).read(&mut rx.buf[end..]) {
                    Ok(0) => {
                        drop(rx);
                        self.begin_close("host closed the connection");
                        return true;
                    }
                    Ok(n) => {
                        rx.end += n;
                        n
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        drop(rx);
                        tracing::debug!(peer = %self.peer, "recv: {e}");
                        self.begin_close("connection error");
                        return true;
                    }
                }
            };
            if n == 0 {
                break;
            }
            did = true;
            if let Err(f) = self.process_rx() {
                self.report_fatal(f);
                return true;
            }
            if n < RX_BUF_LEN / 4 {
                break; // drained the socket
            }
        }
        did
    }

    fn process_rx(&self) -> Result<(), Fatal> {
        loop {
            let state = self.rx.borrow().state;
            let progressed = match state {
                RecvState::Quiescing => return Ok(()),
                RecvState::AwaitCh => {
                    let ch = {
                        let rx = self.rx.borrow();
                        if rx.end - rx.start < pdu::CH_LEN {
                            return Ok(());
                        }
                        let raw: &[u8; pdu::CH_LEN] = rx.buf[rx.start..rx.start + pdu::CH_LEN]
                            .try_into()
                            .expect("CH_LEN bytes");
                        pdu::CommonHeader::parse(raw)
                    };
                    let c = self.conn.get();
                    ch.validate(c.hdgst, c.ddgst, self.max_plen())
                        .map_err(|(fes, fei)| fatal(fes, fei))?;
                    // Usually the whole header is here already: handle it without a trip
                    // through the AwaitPsh state.
                    self.take_header(ch)?
                }
                RecvState::AwaitPsh(ch) => self.take_header(ch)?,
                RecvState::Payload(p) => self.recv_payload(p)?,
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Consumes and handles the header of the PDU `ch` starts if all of it (with digest) has
    /// arrived, else waits for it in AwaitPsh. Returns whether it progressed.
    fn take_header(&self, ch: pdu::CommonHeader) -> Result<bool, Fatal> {
        let need = ch.header_len_with_digest(self.conn.get().hdgst);
        let hdr = {
            let mut rx = self.rx.borrow_mut();
            let s = rx.start;
            if rx.end - s < need {
                rx.state = RecvState::AwaitPsh(ch);
                return Ok(false);
            }
            let mut h = [0u8; pdu::MAX_RX_HDR];
            match rx.buf.get(s..s + pdu::MAX_RX_HDR) {
                // A fixed-size copy (inline moves; bytes past `need` are not used) instead
                // of a memcpy call of `need` bytes.
                Some(all) => h.copy_from_slice(all),
                None => h[..need].copy_from_slice(&rx.buf[s..s + need]),
            }
            rx.start += need;
            h
        };
        let next = self.handle_header(ch, &hdr[..need])?;
        self.rx.borrow_mut().state = next;
        Ok(true)
    }

    /// Largest PDU this queue accepts.
    fn max_plen(&self) -> u32 {
        let o = self.target.opts();
        let data = o.max_h2c_data.max(o.in_capsule_data_size).max(ADMIN_ICDSZ);
        pdu::MAX_RX_HDR as u32 + 128 + data + 4
    }

    /// Copies payload bytes from the rx buffer into their destination. Returns true if it
    /// consumed anything.
    fn recv_payload(&self, mut p: Payload) -> Result<bool, Fatal> {
        let mut rx = self.rx.borrow_mut();
        let avail = rx.end - rx.start;
        if avail == 0 {
            return Ok(false);
        }
        let mut used = 0;
        if p.pad > 0 {
            let n = p.pad.min(avail);
            p.pad -= n;
            used += n;
        }
        if p.pad == 0 && p.left > 0 && used < avail {
            let n = p.left.min(avail - used);
            let src_start = rx.start + used;
            let src = &rx.buf[src_start..src_start + n];
            if self.conn.get().ddgst {
                p.crc = crc32c::crc32c_append(p.crc, src);
            }
            match p.dest {
                PayloadDest::Capsule(slot) | PayloadDest::H2C(slot) => {
                    let mut reqs = self.reqs.borrow_mut();
                    if let Some(b) = reqs[slot as usize].buf.as_mut() {
                        b[p.off..p.off + n].copy_from_slice(src);
                    }
                }
                PayloadDest::Discard(_) => {}
            }
            p.off += n;
            p.left -= n;
            used += n;
        }
        let c = self.conn.get();
        if p.pad == 0 && p.left == 0 && c.ddgst && p.dgst_got < 4 && used < avail {
            let n = (4 - p.dgst_got).min(avail - used);
            let s = rx.start + used;
            p.dgst[p.dgst_got..p.dgst_got + n].copy_from_slice(&rx.buf[s..s + n]);
            p.dgst_got += n;
            used += n;
        }
        rx.start += used;
        let done = p.pad == 0 && p.left == 0 && (!c.ddgst || p.dgst_got == 4);
        if !done {
            rx.state = RecvState::Payload(p);
            return Ok(used > 0);
        }
        rx.state = RecvState::AwaitCh;
        drop(rx);
        let digest_ok = !c.ddgst || u32::from_le_bytes(p.dgst) == p.crc;
        self.payload_done(p, digest_ok);
        Ok(true)
    }

    fn payload_done(&self, p: Payload, digest_ok: bool) {
        match p.dest {
            PayloadDest::Capsule(slot) => {
                {
                    let mut reqs = self.reqs.borrow_mut();
                    let r = &mut reqs[slot as usize];
                    r.digest_error = !digest_ok;
                    r.received = r.xfer;
                }
                self.ready(slot);
            }
            PayloadDest::H2C(slot) => {
                let complete = {
                    let mut reqs = self.reqs.borrow_mut();
                    let r = &mut reqs[slot as usize];
                    r.digest_error |= !digest_ok;
                    r.received = p.off as u32;
                    r.received >= r.xfer
                };
                if complete {
                    self.ready(slot);
                }
            }
            PayloadDest::Discard(slot) => {
                self.respond(slot);
            }
        }
    }

    /// Handles a complete PDU header; returns the next receive state.
    fn handle_header(&self, ch: pdu::CommonHeader, hdr: &[u8]) -> Result<RecvState, Fatal> {
        let c = self.conn.get();
        if c.hdgst && ch.has_header_digest() {
            let hlen = ch.hlen as usize;
            if !pdu::verify_header_digest(&hdr[..hlen], &hdr[hlen..hlen + 4]) {
                return Err(fatal(Fes::HeaderDigestError, 0));
            }
        }
        match (self.state.get(), ch.pdu_type) {
            (QpState::AwaitIcReq, pdu::PduType::IcReq) => self.handle_icreq(hdr),
            (QpState::AwaitIcReq, _) | (_, pdu::PduType::IcReq) => {
                Err(fatal(Fes::PduSequenceError, 0))
            }
            (_, pdu::PduType::CapsuleCmd) => self.handle_capsule(ch, hdr),
            (_, pdu::PduType::H2CData) => self.handle_h2c(ch, hdr),
            (_, pdu::PduType::H2CTermReq) => {
                let t = pdu::TermReq::parse(hdr);
                tracing::warn!(peer = %self.peer, fes = t.fes, fei = t.fei,
                    "host terminated the connection (H2CTermReq)");
                self.begin_close("host sent H2CTermReq");
                Ok(RecvState::Quiescing)
            }
            // Controller-to-host PDU types are never valid from a host.
            _ => Err(fatal(Fes::InvalidHeaderField, 0)),
        }
    }

    fn handle_icreq(&self, hdr: &[u8]) -> Result<RecvState, Fatal> {
        let ic = pdu::IcReq::parse(hdr).map_err(|(fes, fei)| fatal(fes, fei))?;
        let opts = self.target.opts();
        let mut c = self.conn.get();
        c.hdgst = ic.hdgst;
        c.ddgst = ic.ddgst;
        c.hpda_bytes = (ic.hpda as u32 + 1) * 4;
        c.maxr2t = ic.maxr2t.saturating_add(1);
        self.conn.set(c);
        let mut hdr = [0u8; pdu::MAX_TX_HDR];
        let n = pdu::IcResp {
            pfv: 0,
            cpda: 0,
            hdgst: ic.hdgst,
            ddgst: ic.ddgst,
            maxh2cdata: opts.max_h2c_data,
        }
        .encode(&mut hdr);
        let mut item = self.tx_item();
        item.big = Some(hdr[..n].into());
        self.push_tx(item);
        self.state.set(QpState::Running);
        tracing::debug!(peer = %self.peer, hdgst = ic.hdgst, ddgst = ic.ddgst, "ICReq accepted");
        Ok(RecvState::AwaitCh)
    }

    /// Bytes of data a PDU carries (from plen and pdo).
    fn pdu_data_len(&self, ch: &pdu::CommonHeader) -> Result<(usize, usize), Fatal> {
        let c = self.conn.get();
        let hdr_total = ch.hlen as usize + if ch.has_header_digest() { 4 } else { 0 };
        if ch.plen as usize == hdr_total {
            return Ok((0, 0));
        }
        let pdo = ch.pdo as usize;
        if pdo < hdr_total {
            return Err(fatal(Fes::InvalidHeaderField, 3));
        }
        let dgst = if ch.has_data_digest() { 4 } else { 0 };
        let _ = c;
        let data = (ch.plen as usize)
            .checked_sub(pdo + dgst)
            .ok_or(fatal(Fes::InvalidHeaderField, 4))?;
        Ok((pdo - hdr_total, data))
    }

    fn handle_capsule(&self, ch: pdu::CommonHeader, hdr: &[u8]) -> Result<RecvState, Fatal> {
        let sqe = spec::Sqe::from_bytes(&hdr[8..72]);
        let (pad, data_len) = self.pdu_data_len(&ch)?;
        let Some(slot) = self.free.borrow_mut().pop() else {
            // The host exceeded the queue size it asked for.
            return Err(fatal(Fes::PduSequenceError, 0));
        };
        let mut c = self.conn.get();
        if c.connected {
            c.sqhd = (c.sqhd + 1) % c.sqsize.max(1);
            self.conn.set(c);
        }
        let icdsz = if c.connected { c.icdsz } else { ADMIN_ICDSZ };
        let sgl = sqe.sgl();
        let mut status = Status::SUCCESS;
        let mut xfer = 0u32;
        if data_len > 0 {
            // In-capsule data: the SGL must describe exactly it.
            if !sgl.is_offset_data_block() {
                status = Status::SGL_DESCRIPTOR_TYPE_INVALID;
            } else if sgl.length as usize != data_len || sgl.address != 0 || data_len as u32 > icdsz
            {
                status = Status::DATA_SGL_LENGTH_INVALID;
            }
            xfer = data_len as u32;
        } else if sgl.length > 0 {
            if sgl.is_transport_data_block() {
                if sgl.length > self.target.opts().max_io_size {
                    status = Status::DATA_SGL_LENGTH_INVALID;
                }
                xfer = sgl.length;
            } else if sgl.is_offset_data_block() {
                // Claims in-capsule data the capsule does not carry.
                status = Status::DATA_SGL_LENGTH_INVALID;
            } else {
                status = Status::SGL_DESCRIPTOR_TYPE_INVALID;
            }
        }
        {
            let mut reqs = self.reqs.borrow_mut();
            let r = &mut reqs[slot as usize];
            *r = Request {
                state: ReqState::RecvCapsuleData,
                sqe,
                xfer,
                status,
                ..Request::default()
            };
        }
        if data_len > 0 {
            let last_pdu = true;
            if status != Status::SUCCESS {
                return Ok(RecvState::Payload(Payload::new(
                    PayloadDest::Discard(slot),
                    pad,
                    0,
                    data_len,
                    last_pdu,
                )));
            }
            let buf = ballast_engine::buf::alloc(data_len).unwrap_or_else(|| IoBuf::heap(data_len));
            self.reqs.borrow_mut()[slot as usize].buf = Some(buf);
            return Ok(RecvState::Payload(Payload::new(
                PayloadDest::Capsule(slot),
                pad,
                0,
                data_len,
                last_pdu,
            )));
        }
        if status != Status::SUCCESS {
            self.respond(slot);
            return Ok(RecvState::AwaitCh);
        }
        // No in-capsule data: commands that move data need a buffer first (then an R2T for
        // host-to-controller data), except NVM Reads: `exec_io` looks their namespace up
        // anyway and asks for a buffer only if the bdev does not lend its memory.
        if xfer > 0 && !self.is_io_read(&sqe) {
            self.wait_for_buffer(slot);
        } else {
            self.ready(slot);
        }
        Ok(RecvState::AwaitCh)
    }

    /// Queues request `slot` for a data buffer of its transfer length (taken in order as the
    /// reactor's pool has them; see [`Qpair::retry_buffers`]).
    fn wait_for_buffer(&self, slot: u16) {
        self.reqs.borrow_mut()[slot as usize].state = ReqState::NeedBuffer;
        self.waiting_buf.borrow_mut().push_back(slot);
        self.retry_buffers();
    }

    fn handle_h2c(&self, ch: pdu::CommonHeader, hdr: &[u8]) -> Result<RecvState, Fatal> {
        let d = pdu::DataHeader::parse(hdr);
        let (pad, data_len) = self.pdu_data_len(&ch)?;
        let slot = d.ttag;
        let (xfer, received) = {
            let reqs = self.reqs.borrow();
            let Some(r) = reqs.get(slot as usize) else {
                return Err(fatal(Fes::InvalidHeaderField, pdu::H2C_TTAG_OFFSET));
            };
            if r.state != ReqState::AwaitH2C || r.sqe.cid() != d.cccid {
                return Err(fatal(Fes::InvalidHeaderField, pdu::H2C_TTAG_OFFSET));
            }
            (r.xfer, r.received)
        };
        if d.datal as usize != data_len {
            return Err(fatal(Fes::InvalidHeaderField, pdu::DATA_DATAL_OFFSET));
        }
        if d.datao != received {
            return Err(fatal(Fes::DataTransferOutOfRange, pdu::DATA_DATAO_OFFSET));
        }
        if d.datal > self.target.opts().max_h2c_data {
            return Err(fatal(
                Fes::DataTransferLimitExceeded,
                pdu::DATA_DATAL_OFFSET,
            ));
        }
        if d.datao as u64 + d.datal as u64 > xfer as u64 || d.datal == 0 {
            return Err(fatal(Fes::DataTransferOutOfRange, pdu::DATA_DATAL_OFFSET));
        }
        Ok(RecvState::Payload(Payload::new(
            PayloadDest::H2C(slot),
            pad,
            d.datao as usize,
            data_len,
            d.last_pdu,
        )))
    }

    /// Gives queued requests their data buffers (the pool may have been exhausted).
    fn retry_buffers(&self) -> bool {
        let mut did = false;
        loop {
            let Some(&slot) = self.waiting_buf.borrow().front() else {
                break;
            };
            let xfer = self.reqs.borrow()[slot as usize].xfer as usize;
            let Some(buf) = ballast_engine::buf::alloc(xfer) else {
                break;
            };
            self.waiting_buf.borrow_mut().pop_front();
            did = true;
            let host_to_ctrl = {
                let mut reqs = self.reqs.borrow_mut();
                let r = &mut reqs[slot as usize];
                r.buf = Some(buf);
                r.sqe.data_direction() == spec::DataDirection::HostToController
            };
            if host_to_ctrl {
                self.send_r2t(slot);
            } else {
                self.ready(slot);
            }
        }
        did
    }

    fn send_r2t(&self, slot: u16) {
        let (cid, len) = {
            let mut reqs = self.reqs.borrow_mut();
            let r = &mut reqs[slot as usize];
            r.state = ReqState::AwaitH2C;
            (r.sqe.cid(), r.xfer)
        };
        let mut item = self.tx_item();
        let c = self.conn.get();
        item.hdr_len = pdu::R2t {
            cccid: cid,
            ttag: slot,
            r2to: 0,
            r2tl: len,
        }
        .encode(&mut item.hdr, c.hdgst) as u8;
        self.push_tx(item);
    }

    // ---------------------------------------------------------------- execution ----

    /// The command and all its host data are here: execute it.
    fn ready(&self, slot: u16) {
        let (sqe, digest_error) = {
            let mut reqs = self.reqs.borrow_mut();
            let r = &mut reqs[slot as usize];
            r.state = ReqState::Executing;
            (r.sqe, r.digest_error)
        };
        if digest_error {
            self.finish(slot, Status::TRANSIENT_TRANSPORT_ERROR, 0);
            return;
        }
        if sqe.opcode() == spec::FABRICS_OPCODE {
            self.exec_fabrics(slot, &sqe);
            return;
        }
        let c = self.conn.get();
        if !c.connected {
            self.finish(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        if c.qid == 0 {
            self.exec_admin(slot, &sqe);
        } else {
            self.exec_io(slot, &sqe);
        }
    }

    fn exec_admin(&self, slot: u16, sqe: &spec::Sqe) {
        let ctrl = self
            .ctrl
            .borrow()
            .clone()
            .expect("connected admin queue has a controller");
        ctrl.touch();
        let data = self.reqs.borrow_mut()[slot as usize].buf.take();
        match admin::execute(&self.target, &ctrl, sqe, data) {
            AdminOutcome::Done { status, dw0, data } => {
                {
                    let mut reqs = self.reqs.borrow_mut();
                    let r = &mut reqs[slot as usize];
                    if let Some(d) = data {
                        // Controller-to-host data: at most what the host's SGL asked for.
                        let n = d.len().min(r.xfer as usize);
                        let mut b =
                            ballast_engine::buf::alloc(n.max(1)).unwrap_or_else(|| IoBuf::heap(n));
                        b.set_len(n);
                        b.copy_from_slice(&d[..n]);
                        r.buf = Some(b);
                        r.received = n as u32;
                    }
                }
                self.finish(slot, status, dw0);
            }
            AdminOutcome::AsyncEvent => {
                let limit = self.target.opts().aer_limit as usize;
                if self.aers.borrow().len() >= limit {
                    self.finish(slot, Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED, 0);
                } else {
                    self.aers.borrow_mut().push(slot);
                    self.complete_aers();
                }
            }
        }
    }

    fn complete_aers(&self) {
        let Some(ctrl) = self.ctrl.borrow().clone() else {
            return;
        };
        loop {
            if self.aers.borrow().is_empty() {
                return;
            }
            let Some(ev) = ctrl.state.lock().unwrap().pending_aens.pop_front() else {
                return;
            };
            let slot = self.aers.borrow_mut().remove(0);
            tracing::debug!(cntlid = ctrl.cntlid, ev, "asynchronous event delivered");
            self.finish(slot, Status::SUCCESS, ev);
        }
    }

    /// Picks up namespace changes (one atomic load when there are none).
    fn refresh_ns(&self) {
        let gen = match &*self.ctrl.borrow() {
            Some(ctrl) => ctrl.subsys.ns_generation(),
            None => return,
        };
        if self.ns.borrow().gen == gen {
            return;
        }
        let Some(ctrl) = self.ctrl.borrow().clone() else {
            return;
        };
        let mut ns = self.ns.borrow_mut();
        ns.table = ctrl.subsys.ns_table();
        ns.gen = gen;
        let table = ns.table.clone();
        // Keep channels of namespaces that still exist (with their current size: an lvol
        // may have been resized); open the new ones lazily.
        ns.chans.retain_mut(|c| {
            let keep = table
                .get(c.nsid)
                .is_some_and(|e| Arc::ptr_eq(&e.bdev, c.ch.bdev()));
            c.num_blocks = c.ch.bdev().num_blocks();
            keep
        });
    }

    /// This reactor's channel to namespace `nsid` (opened on first use), borrowed: the I/O
    /// path looks it up without cloning anything.
    fn channel_for(&self, nsid: u32) -> Option<std::cell::Ref<'_, NsChan>> {
        self.refresh_ns();
        let found = self.ns.borrow().chans.iter().position(|c| c.nsid == nsid);
        let idx = match found {
            Some(i) => i,
            None => {
                let mut ns = self.ns.borrow_mut();
                let e = ns.table.get(nsid)?.clone();
                let ch = e.desc.channel().ok()?;
                ns.chans.push(NsChan {
                    nsid,
                    lends: ch.lends_reads(),
                    ch,
                    block_size: e.bdev.block_size(),
                    num_blocks: e.bdev.num_blocks(),
                });
                ns.chans.len() - 1
            }
        };
        Some(std::cell::Ref::map(self.ns.borrow(), |ns| &ns.chans[idx]))
    }

    /// True if `sqe` is an NVM Read on a connected I/O queue: [`Qpair::exec_io`] decides
    /// whether it needs a buffer (not if its namespace lends its memory).
    fn is_io_read(&self, sqe: &spec::Sqe) -> bool {
        let c = self.conn.get();
        c.connected && c.qid != 0 && sqe.opcode() == spec::IoOpcode::Read as u8
    }

    fn sink(&self) -> IoCallback {
        let me: Rc<dyn IoSink> = self.me.upgrade().expect("qpair alive while executing");
        IoCallback::Sink(me)
    }

    fn exec_io(&self, slot: u16, sqe: &spec::Sqe) {
        if self.start_io(slot, sqe) == Submitted::NeedsBuffer {
            // A read of a namespace that does not lend its memory: execute it again once it
            // has a buffer (the namespace is no longer borrowed here).
            self.wait_for_buffer(slot);
        }
    }

    /// Validates and submits I/O command `slot` (one namespace lookup per command).
    fn start_io(&self, slot: u16, sqe: &spec::Sqe) -> Submitted {
        let Some(op) = spec::IoOpcode::from_u8(sqe.opcode()) else {
            self.finish(slot, Status::INVALID_OPCODE, 0);
            return Submitted::Done;
        };
        let nsid = sqe.nsid();
        // Borrowed for the whole command: nothing below looks namespaces up again, and
        // completions are never delivered inside `submit`.
        let Some(chan) = self.channel_for(nsid) else {
            self.finish(slot, Status::INVALID_NAMESPACE_OR_FORMAT, 0);
            return Submitted::Done;
        };
        let (bs, nb, lends) = (chan.block_size, chan.num_blocks, chan.lends);
        let slba = sqe.cdw10() as u64 | (sqe.cdw11() as u64) << 32;
        let nlb = (sqe.cdw12() & 0xFFFF) as u64 + 1;
        let submit_io = |io: BdevIo| {
            self.executing.set(self.executing.get() + 1);
            chan.ch.submit(io);
        };
        let submit = |io_op: IoType, off: u64, n: u64, bufs: SgList| {
            submit_io(BdevIo::new(io_op, off, n, bufs, slot as u64, self.sink()));
        };
        match op {
            spec::IoOpcode::Read | spec::IoOpcode::Write => {
                let xfer = self.reqs.borrow()[slot as usize].xfer as u64;
                if nlb * bs as u64 != xfer {
                    self.finish(slot, Status::DATA_SGL_LENGTH_INVALID, 0);
                    return Submitted::Done;
                }
                if slba.checked_add(nlb).is_none_or(|end| end > nb) {
                    self.finish(slot, Status::LBA_OUT_OF_RANGE, 0);
                    return Submitted::Done;
                }
                let io_op = if op == spec::IoOpcode::Read {
                    IoType::Read
                } else {
                    IoType::Write
                };
                // A read arrives without a buffer (see `is_io_read`): a lending namespace
                // completes it with a window on its memory; any other gets one first.
                let buf = self.reqs.borrow_mut()[slot as usize].buf.take();
                let lend = buf.is_none() && lends && io_op == IoType::Read;
                let mut bufs = SgList::new();
                match buf {
                    Some(b) => bufs.push(b),
                    None if lend => {}
                    None if io_op == IoType::Read => return Submitted::NeedsBuffer,
                    None => {
                        self.finish(slot, Status::INTERNAL_ERROR, 0);
                        return Submitted::Done;
                    }
                }
                self.reqs.borrow_mut()[slot as usize].sub_pending = 1;
                let mut io = BdevIo::new(io_op, slba, nlb, bufs, slot as u64, self.sink());
                io.lend = lend;
                submit_io(io);
            }
            spec::IoOpcode::Flush => {
                self.reqs.borrow_mut()[slot as usize].sub_pending = 1;
                submit(IoType::Flush, 0, nb, SgList::new());
            }
            spec::IoOpcode::WriteZeroes => {
                if slba.checked_add(nlb).is_none_or(|end| end > nb) {
                    self.finish(slot, Status::LBA_OUT_OF_RANGE, 0);
                    return Submitted::Done;
                }
                self.reqs.borrow_mut()[slot as usize].sub_pending = 1;
                submit(IoType::WriteZeroes, slba, nlb, SgList::new());
            }
            spec::IoOpcode::DatasetManagement => {
                let nr = (sqe.cdw10() & 0xFF) as usize + 1;
                let deallocate = sqe.cdw11() & (1 << 2) != 0;
                let ranges: Vec<(u64, u64)> = {
                    let reqs = self.reqs.borrow();
                    let r = &reqs[slot as usize];
                    let Some(b) = r.buf.as_ref().filter(|b| b.len() >= nr * 16) else {
                        drop(reqs);
                        self.finish(slot, Status::DATA_SGL_LENGTH_INVALID, 0);
                        return Submitted::Done;
                    };
                    spec::DsmRange::parse_list(&b[..nr * 16])
                        .into_iter()
                        .filter(|r| r.length > 0)
                        .map(|r| (r.slba, r.length as u64))
                        .collect()
                };
                if !deallocate || ranges.is_empty() {
                    self.finish(slot, Status::SUCCESS, 0);
                    return Submitted::Done;
                }
                if ranges
                    .iter()
                    .any(|(s, n)| s.checked_add(*n).is_none_or(|end| end > nb))
                {
                    self.finish(slot, Status::LBA_OUT_OF_RANGE, 0);
                    return Submitted::Done;
                }
                self.reqs.borrow_mut()[slot as usize].sub_pending = ranges.len() as u16;
                for (s, n) in ranges {
                    submit(IoType::Unmap, s, n, SgList::new());
                }
            }
            _ => self.finish(slot, Status::INVALID_OPCODE, 0),
        }
        Submitted::Done
    }

    fn exec_fabrics(&self, slot: u16, sqe: &spec::Sqe) {
        match spec::FabricsType::from_u8(sqe.fctype()) {
            Some(spec::FabricsType::Connect) => self.exec_connect(slot, sqe),
            Some(spec::FabricsType::PropertyGet) | Some(spec::FabricsType::PropertySet) => {
                let c = self.conn.get();
                let ctrl = self.ctrl.borrow().clone();
                match (c.connected, c.qid, ctrl) {
                    (true, 0, Some(ctrl)) => {
                        ctrl.touch();
                        let (status, value) = admin::property(&self.target, &ctrl, sqe);
                        {
                            let mut reqs = self.reqs.borrow_mut();
                            reqs[slot as usize].dw1 = (value >> 32) as u32;
                        }
                        self.finish(slot, status, value as u32);
                    }
                    _ => self.finish(slot, Status::COMMAND_SEQUENCE_ERROR, 0),
                }
            }
            _ => self.finish(slot, Status::INVALID_OPCODE, 0),
        }
    }

    fn exec_connect(&self, slot: u16, sqe: &spec::Sqe) {
        let c = self.conn.get();
        if c.connected {
            self.finish(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        let data = self.reqs.borrow_mut()[slot as usize].buf.take();
        let cmd = spec::ConnectCmd::from_sqe(sqe);
        let Some(data) = data.filter(|d| d.len() >= spec::CONNECT_DATA_LEN) else {
            self.finish(slot, Status::DATA_SGL_LENGTH_INVALID, 0);
            return;
        };
        let cd = spec::ConnectData::parse(&data[..spec::CONNECT_DATA_LEN]);
        let opts = self.target.opts();
        let invalid = |q: &Self, ipo: u32, in_data: bool| {
            let dw0 = ipo | if in_data { 1 << 16 } else { 0 };
            q.finish(slot, Status::CONNECT_INVALID_PARAMETERS, dw0);
        };
        if cmd.recfmt != 0 {
            self.finish(slot, Status::CONNECT_INCOMPATIBLE_FORMAT, 0);
            return;
        }
        let Some(subsys) = self
            .target
            .subsystem(&cd.subnqn)
            .filter(|s| s.listens_on(self.listen))
        else {
            tracing::info!(peer = %self.peer, subnqn = %cd.subnqn, "connect to unknown subsystem");
            invalid(self, spec::CONNECT_DATA_SUBNQN_OFFSET, true);
            return;
        };
        if !subsys.host_allowed(&cd.hostnqn) {
            tracing::warn!(peer = %self.peer, subnqn = %cd.subnqn, hostnqn = %cd.hostnqn,
                "connect refused: host not allowed");
            self.finish(slot, Status::CONNECT_INVALID_HOST, 0);
            return;
        }
        // SQSIZE is 0's based; it must be at least 1 (two entries) and within MQES.
        if cmd.sqsize == 0 || cmd.sqsize >= opts.max_queue_depth {
            invalid(self, spec::CONNECT_SQE_SQSIZE_OFFSET, false);
            return;
        }
        let mut c = self.conn.get();
        c.sqsize = cmd.sqsize + 1;
        c.sqflow_disabled = cmd.cattr & spec::CONNECT_CATTR_DISABLE_SQFLOW != 0;
        if cmd.qid == 0 {
            if subsys.kind == SubsystemKind::Discovery && cmd.sqsize + 1 > 32 {
                // Discovery controllers have a fixed small admin queue; accept it anyway.
            }
            let admin = QpairRef {
                core: self.core,
                id: self.id,
                qid: 0,
            };
            let rt = self.target.runtime().clone();
            let peer = self.peer;
            let listen = self.listen;
            // A discovery host may disable keep-alive (Linux does); a host that vanishes
            // must not pin the controller forever, so discovery gets a long default.
            let kato_ms = if cmd.kato == 0 && subsys.kind == SubsystemKind::Discovery {
                DISCOVERY_DEFAULT_KATO_MS
            } else {
                cmd.kato
            };
            let kato = Duration::from_millis(kato_ms as u64);
            let ctrl = subsys.add_controller(|cntlid| {
                Controller::new(
                    cntlid,
                    subsys.clone(),
                    cd.hostnqn.clone(),
                    cd.hostid,
                    listen,
                    peer,
                    kato,
                    admin,
                    rt,
                )
            });
            let Some(ctrl) = ctrl else {
                self.finish(slot, Status::CONNECT_CONTROLLER_BUSY, 0);
                return;
            };
            ctrl.touch();
            c.connected = true;
            c.qid = 0;
            c.icdsz = ADMIN_ICDSZ;
            self.conn.set(c);
            *self.ctrl.borrow_mut() = Some(ctrl.clone());
            self.start_kato(&ctrl);
            tracing::info!(peer = %self.peer, subnqn = %subsys.nqn, hostnqn = %cd.hostnqn,
                cntlid = ctrl.cntlid, kato_ms, "controller created");
            self.finish(slot, Status::SUCCESS, ctrl.cntlid as u32);
            return;
        }
        // I/O queue: joins an existing controller of the same host.
        let ctrl = subsys
            .controller(cd.cntlid)
            .filter(|c| c.hostnqn == cd.hostnqn && !c.is_disconnecting());
        let Some(ctrl) = ctrl else {
            invalid(self, spec::CONNECT_DATA_CNTLID_OFFSET, true);
            return;
        };
        if subsys.kind == SubsystemKind::Discovery {
            invalid(self, spec::CONNECT_SQE_QID_OFFSET, false);
            return;
        }
        {
            let mut st = ctrl.state.lock().unwrap();
            if st.csts & 1 == 0 {
                drop(st);
                self.finish(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
                return;
            }
            let granted = st.num_io_queues.max(1).min(opts.max_io_qpairs_per_ctrlr);
            if cmd.qid > granted || st.io_qpairs.contains_key(&cmd.qid) {
                drop(st);
                invalid(self, spec::CONNECT_SQE_QID_OFFSET, false);
                return;
            }
            st.io_qpairs.insert(
                cmd.qid,
                QpairRef {
                    core: self.core,
                    id: self.id,
                    qid: cmd.qid,
                },
            );
        }
        c.connected = true;
        c.qid = cmd.qid;
        c.icdsz = opts.in_capsule_data_size;
        self.conn.set(c);
        group_mark_io(self.id);
        {
            let mut tx = self.tx.borrow_mut();
            let mut stage = vec![0u8; STAGE_LEN_IO].into_boxed_slice();
            let (h, t) = (tx.head, tx.tail);
            stage[..t - h].copy_from_slice(&tx.stage[h..t]);
            tx.stage = stage;
            tx.head = 0;
            tx.tail = t - h;
        }
        *self.ctrl.borrow_mut() = Some(ctrl.clone());
        tracing::debug!(peer = %self.peer, cntlid = ctrl.cntlid, qid = cmd.qid, sqsize = c.sqsize,
            "I/O queue connected");
        self.finish(slot, Status::SUCCESS, ctrl.cntlid as u32);
    }

    fn start_kato(&self, ctrl: &Arc<Controller>) {
        if ctrl.kato.is_zero() {
            return;
        }
        let period = (ctrl.kato / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let me = self.me.clone();
        let c = ctrl.clone();
        if let Ok(h) = ballast_reactor::register_periodic_poller("nvmf_kato", period, move || {
            if c.keepalive_expired() {
                tracing::warn!(cntlid = c.cntlid, hostnqn = %c.hostnqn, kato = ?c.kato,
                        "keep-alive timeout: freeing controller");
                if let Some(q) = me.upgrade() {
                    q.begin_close("keep-alive timeout");
                }
            }
            PollStatus::Idle
        }) {
            self.kato_poller.set(Some(h));
        }
    }

    // ---------------------------------------------------------------- completion ----

    /// Completes request `slot` with `status` (queues its response PDUs).
    fn finish(&self, slot: u16, status: Status, dw0: u32) {
        {
            let mut reqs = self.reqs.borrow_mut();
            let r = &mut reqs[slot as usize];
            r.status = status;
            r.dw0 = dw0;
        }
        self.respond(slot);
    }

    /// Queues the response PDUs of `slot`: C2HData for controller-to-host data, then the
    /// CapsuleResp unless the C2HData's SUCCESS flag replaces it.
    fn respond(&self, slot: u16) {
        if self.state.get() == QpState::Closing || self.state.get() == QpState::Closed {
            self.release(slot);
            return;
        }
        let c = self.conn.get();
        let (cid, status, dw0, dw1, data_len, c2h) = {
            let mut reqs = self.reqs.borrow_mut();
            let r = &mut reqs[slot as usize];
            r.state = ReqState::Responding;
            let c2h = r.status == Status::SUCCESS
                && r.sqe.data_direction() == spec::DataDirection::ControllerToHost
                && r.buf.is_some();
            let len = if c2h {
                r.buf.as_ref().map_or(0, |b| b.len() as u32).min(r.xfer)
            } else {
                0
            };
            (r.sqe.cid(), r.status, r.dw0, r.dw1, len, c2h && len > 0)
        };
        let success_flag =
            c2h && self.target.opts().c2h_success && c.sqflow_disabled && status == Status::SUCCESS;
        let cqe = spec::Cqe {
            dw0,
            dw1,
            sqhd: c.sqhd,
            sqid: c.qid,
            cid,
            status,
        };
        if self.stage_response(slot, &c, &cqe, c2h.then_some(data_len), success_flag) {
            self.release(slot);
            return;
        }
        if c2h {
            let ddgst = if c.ddgst {
                let reqs = self.reqs.borrow();
                let b = reqs[slot as usize].buf.as_ref().expect("c2h buffer");
                Some(crc32c::crc32c(&b[..data_len as usize]).to_le_bytes())
            } else {
                None
            };
            let mut item = self.tx_item();
            let (n, pdo) = pdu::C2HData {
                cccid: cid,
                datao: 0,
                datal: data_len,
                last_pdu: true,
                success: success_flag,
            }
            .encode(&mut item.hdr, c.hdgst, c.ddgst, c.hpda_bytes);
            item.hdr_len = n as u8;
            item.pad = (pdo - n) as u8;
            item.data = Some((slot, 0, data_len));
            item.ddgst = ddgst;
            if success_flag {
                item.release = Some(slot);
                self.push_tx(item);
                return;
            }
            self.push_tx(item);
        }
        let mut item = self.tx_item();
        item.hdr_len = pdu::encode_capsule_resp(&mut item.hdr, &cqe, c.hdgst) as u8;
        item.release = Some(slot);
        self.push_tx(item);
    }

    /// The common case of [`Qpair::respond`]: writes the response's PDUs — a C2HData of
    /// `data` bytes (≤ [`STAGE_PART_MAX`]) with its padding and digest, then the CapsuleResp
    /// unless `success` lets the C2HData stand for it — straight into the staging buffer, so
    /// the slot can be freed at once. Declines (false) while items are queued (the bytes must
    /// follow them) or when the buffer lacks room; `respond` then queues items.
    fn stage_response(
        &self,
        slot: u16,
        c: &Conn,
        cqe: &spec::Cqe,
        data: Option<u32>,
        success: bool,
    ) -> bool {
        let mut tx = self.tx.borrow_mut();
        if !tx.items.is_empty() || data.is_some_and(|n| n as usize > STAGE_PART_MAX) {
            return false;
        }
        if tx.head == tx.tail {
            tx.head = 0;
            tx.tail = 0;
        }
        // At most: C2HData header + digest, padding to the host's alignment, data, data
        // digest, CapsuleResp + digest.
        let room = data.map_or(0, |n| {
            pdu::MAX_TX_HDR + c.hpda_bytes as usize + n as usize + 4
        }) + pdu::MAX_TX_HDR;
        if tx.tail + room > tx.stage.len() {
            return false;
        }
        let Tx { stage, tail, .. } = &mut *tx;
        let mut at = *tail;
        if let Some(len) = data {
            let reqs = self.reqs.borrow();
            let Some(buf) = reqs[slot as usize].buf.as_ref() else {
                return false;
            };
            let payload = &buf[..len as usize];
            let (n, pdo) = pdu::C2HData {
                cccid: cqe.cid,
                datao: 0,
                datal: len,
                last_pdu: true,
                success,
            }
            .encode(&mut stage[at..], c.hdgst, c.ddgst, c.hpda_bytes);
            stage[at + n..at + pdo].fill(0);
            at += pdo;
            stage[at..at + payload.len()].copy_from_slice(payload);
            at += payload.len();
            if c.ddgst {
                stage[at..at + 4].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
                at += 4;
            }
        }
        if !(data.is_some() && success) {
            at += pdu::encode_capsule_resp(&mut stage[at..], cqe, c.hdgst);
        }
        *tail = at;
        true
    }

    fn release(&self, slot: u16) {
        let mut reqs = self.reqs.borrow_mut();
        let r = &mut reqs[slot as usize];
        if r.state == ReqState::Free {
            return;
        }
        r.state = ReqState::Free;
        r.buf = None;
        drop(reqs);
        self.free.borrow_mut().push(slot);
    }

    // ---------------------------------------------------------------- transmit path ----

    fn tx_item(&self) -> TxItem {
        TxItem {
            hdr: [0u8; TX_HDR_INLINE],
            hdr_len: 0,
            pad: 0,
            big: None,
            data: None,
            ddgst: None,
            release: None,
            close_after: false,
        }
    }

    fn push_tx(&self, item: TxItem) {
        self.tx.borrow_mut().items.push_back(item);
    }

    /// Sends as much of the tx queue as the socket takes, in one sendmsg per batch of PDUs.
    fn flush(&self) -> bool {
        let mut did = false;
        loop {
            // Staged responses go first: every queued item came after them.
            let staged = {
                let tx = self.tx.borrow();
                tx.head < tx.tail
            };
            let sent = if staged {
                let tx = self.tx.borrow();
                let mut iov = ballast_reactor::IoVecs::<1>::new(0);
                iov.push(&tx.stage[tx.head..tx.tail]);
                iov.send(self.fd)
            } else {
                let mut tx = self.tx.borrow_mut();
                if tx.items.is_empty() {
                    self.after_send(false, false);
                    return did;
                }
                let reqs = self.reqs.borrow();
                let Tx {
                    items, sent, stage, ..
                } = &mut *tx;
                // Join headers and small payloads into one contiguous run (the kernel copies
                // one long run much faster than many short iovecs); big payloads go in place.
                let mut segs: smallvec::SmallVec<[Seg; MAX_IOV]> = smallvec::SmallVec::new();
                let (mut used, mut run) = (0usize, 0usize);
                let mut skip = *sent;
                'items: for item in items.iter() {
                    let data: &[u8] = match item.data {
                        Some((slot, off, len)) => match reqs[slot as usize].buf.as_ref() {
                            Some(b) => &b[off as usize..(off + len) as usize],
                            None => &[],
                        },
                        None => &[],
                    };
                    let parts: [&[u8]; 4] = [
                        item.header(),
                        &PAD_ZEROS[..item.pad as usize],
                        data,
                        item.ddgst.as_ref().map_or(&[][..], |d| &d[..]),
                    ];
                    for p in parts {
                        if skip >= p.len() {
                            skip -= p.len();
                            continue;
                        }
                        let p = &p[skip..];
                        skip = 0;
                        if p.len() <= STAGE_PART_MAX {
                            if used + p.len() > stage.len() {
                                break 'items;
                            }
                            stage[used..used + p.len()].copy_from_slice(p);
                            used += p.len();
                        } else {
                            if segs.len() + 2 >= MAX_IOV {
                                break 'items;
                            }
                            if used > run {
                                segs.push(Seg::Stage(run, used));
                                run = used;
                            }
                            segs.push(Seg::Ext(p));
                        }
                    }
                }
                if used > run {
                    segs.push(Seg::Stage(run, used));
                }
                let mut iov = ballast_reactor::IoVecs::<MAX_IOV>::new(0);
                for seg in &segs {
                    iov.push(match *seg {
                        Seg::Stage(a, b) => &stage[a..b],
                        Seg::Ext(p) => p,
                    });
                }
                iov.send(self.fd)
            };
            let n = match sent {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.after_send(true, did);
                    return did;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(peer = %self.peer, "send: {e}");
                    self.tx.borrow_mut().clear();
                    self.begin_close("connection error on send");
                    return true;
                }
            };
            did = true;
            let all_taken = if staged {
                self.advance_staged(n)
            } else {
                self.advance_tx(n)
            };
            if !all_taken {
                // The socket took less than offered: it is full.
                self.after_send(true, true);
                return did;
            }
        }
    }

    /// Records a flush's outcome in the queue pair's [`ballast_reactor::SendRoom`].
    fn after_send(&self, waiting: bool, progress: bool) {
        let mut room = self.room.get();
        room.after_send(waiting, progress);
        self.room.set(room);
    }

    /// True while responses wait for room and the reactor would not wake for it: the queue
    /// pair's poller reports work so the reactor does not sleep yet.
    fn must_keep_polling(&self) -> bool {
        !self.room.get().armed() && self.tx.borrow().pending()
    }

    /// Consumes `n` sent bytes of the staged responses; returns false if the socket took less
    /// than was offered (so it is full).
    fn advance_staged(&self, n: usize) -> bool {
        let mut tx = self.tx.borrow_mut();
        tx.head += n;
        if tx.head < tx.tail {
            return false;
        }
        tx.head = 0;
        tx.tail = 0;
        true
    }

    /// Consumes `n` sent bytes from the tx queue; returns false if the socket took less than
    /// was offered (so it is full).
    fn advance_tx(&self, mut n: usize) -> bool {
        let mut complete_items: smallvec::SmallVec<[u16; 64]> = smallvec::SmallVec::new();
        let mut close = false;
        {
            let mut tx = self.tx.borrow_mut();
            let reqs = self.reqs.borrow();
            n += tx.sent;
            tx.sent = 0;
            while let Some(item) = tx.items.front() {
                let len = item.header().len()
                    + item.pad as usize
                    + item.data.map_or(0, |(slot, _, l)| {
                        if reqs[slot as usize].buf.is_some() {
                            l as usize
                        } else {
                            0
                        }
                    })
                    + item.ddgst.map_or(0, |_| 4);
                if n < len {
                    tx.sent = n;
                    break;
                }
                n -= len;
                let item = tx.items.pop_front().expect("front exists");
                if let Some(slot) = item.release {
                    complete_items.push(slot);
                }
                close |= item.close_after;
            }
        }
        for slot in complete_items {
            self.release(slot);
        }
        if close {
            self.begin_close("fatal transport error reported");
            return false;
        }
        self.tx.borrow().sent == 0
    }

    // ---------------------------------------------------------------- errors, close ----

    fn report_fatal(&self, f: Fatal) {
        tracing::warn!(peer = %self.peer, fes = ?f.fes, fei = f.fei,
            "fatal transport error: sending C2HTermReq and closing");
        let offending: Vec<u8> = {
            let rx = self.rx.borrow();
            let s = rx.start;
            let n = (rx.end - s).min(pdu::TERM_REQ_MAX_DATA);
            rx.buf[s..s + n].to_vec()
        };
        self.rx.borrow_mut().state = RecvState::Quiescing;
        let mut hdr = [0u8; pdu::MAX_TX_HDR];
        let n = pdu::TermReq {
            c2h: true,
            fes: f.fes as u16,
            fei: f.fei,
        }
        .encode(&mut hdr, &offending);
        let mut item = self.tx_item();
        item.big = Some(hdr[..n].into());
        item.close_after = true;
        self.push_tx(item);
        self.state.set(QpState::Running);
        self.flush();
        if self.state.get() != QpState::Closing {
            // Socket full or slow peer: close anyway once in-flight work is done.
            self.begin_close("fatal transport error");
        }
    }

    /// Stops the queue pair: no more input; frees everything once bdev I/O has drained.
    pub(crate) fn begin_close(&self, reason: &'static str) {
        match self.state.get() {
            QpState::Closing | QpState::Closed => return,
            _ => {}
        }
        tracing::debug!(peer = %self.peer, id = self.id, reason, "closing queue pair");
        self.state.set(QpState::Closing);
        self.rx.borrow_mut().state = RecvState::Quiescing;
        // No more input is wanted (and unread input would be reported on every loop). This
        // runs once per queue pair: the state check above returns on any later call.
        group_remove(self.fd, self.id);
        let _ = self.sock.shutdown(Shutdown::Both);
        // Parked AERs and queued requests have nothing in flight: free them now.
        let aers: Vec<u16> = std::mem::take(&mut *self.aers.borrow_mut());
        for slot in aers {
            self.release(slot);
        }
        let waiting: Vec<u16> = self.waiting_buf.borrow_mut().drain(..).collect();
        for slot in waiting {
            self.release(slot);
        }
        self.tx.borrow_mut().clear();
        self.try_finish_close();
    }

    fn try_finish_close(&self) {
        if self.executing.get() > 0 || self.state.get() == QpState::Closed {
            return;
        }
        self.state.set(QpState::Closed);
        if let Some(h) = self.poller.take() {
            ballast_reactor::unregister_poller(h);
        }
        if let Some(h) = self.kato_poller.take() {
            ballast_reactor::unregister_poller(h);
        }
        ballast_reactor::remove_wake_fd(self.fd);
        self.ns.borrow_mut().chans.clear();
        let ctrl = self.ctrl.borrow_mut().take();
        if let Some(ctrl) = ctrl {
            let qid = self.conn.get().qid;
            if qid == 0 {
                // The admin queue owns the controller: tear down its I/O queues and free it.
                ctrl.disconnect("admin queue closed");
                ctrl.subsys.remove_controller(ctrl.cntlid);
                tracing::info!(cntlid = ctrl.cntlid, subnqn = %ctrl.subsys.nqn,
                    hostnqn = %ctrl.hostnqn, "controller freed");
            } else {
                let mut st = ctrl.state.lock().unwrap();
                if st.io_qpairs.get(&qid).is_some_and(|q| q.id == self.id) {
                    st.io_qpairs.remove(&qid);
                }
            }
        }
        let id = self.id;
        QPAIRS.with(|m| m.borrow_mut().remove(&id));
        tracing::debug!(peer = %self.peer, id, "queue pair closed");
    }
}

impl IoSink for Qpair {
    fn io_done(&self, mut io: BdevIo) {
        self.executing.set(self.executing.get() - 1);
        let slot = io.tag as u16;
        let mut status = map_io_status(io.status, io.op);
        if io.lend && status == Status::SUCCESS && io.bufs.len() != 1 {
            // The C2HData goes out of one buffer; a bdev lending several for one read (only
            // for reads longer than any this target issues) is not served this way.
            status = Status::INTERNAL_ERROR;
        }
        let last = {
            let mut reqs = self.reqs.borrow_mut();
            let r = &mut reqs[slot as usize];
            if !io.bufs.is_empty() {
                r.buf = Some(io.bufs.swap_remove(0));
            }
            if status != Status::SUCCESS && r.status == Status::SUCCESS {
                r.status = status;
            }
            r.sub_pending = r.sub_pending.saturating_sub(1);
            r.sub_pending == 0
        };
        if !last {
            return;
        }
        if matches!(self.state.get(), QpState::Closing | QpState::Closed) {
            self.release(slot);
            self.try_finish_close();
            return;
        }
        let st = self.reqs.borrow()[slot as usize].status;
        self.finish(slot, st, 0);
        // The last completion of a batch sends the batch's responses now rather than on the
        // next reactor loop (one sendmsg per batch either way): a loop iteration less latency.
        if self.executing.get() == 0 && !self.in_poll.get() {
            self.flush();
        }
    }
}

/// Maps a bdev completion status to the NVMe status the host sees.
fn map_io_status(s: IoStatus, op: IoType) -> Status {
    match s {
        IoStatus::Success => Status::SUCCESS,
        IoStatus::OutOfRange => Status::LBA_OUT_OF_RANGE,
        IoStatus::InvalidLength => Status::DATA_SGL_LENGTH_INVALID,
        IoStatus::Removed => Status::NAMESPACE_NOT_READY,
        IoStatus::NotSupported => Status::INVALID_OPCODE,
        IoStatus::NoMemory | IoStatus::Pending => Status::NAMESPACE_NOT_READY_RETRY,
        IoStatus::Aborted => Status::ABORTED_SQ_DELETION,
        IoStatus::Failed(libc::ENOSPC) if op != IoType::Read => Status::CAPACITY_EXCEEDED,
        IoStatus::Failed(libc::EROFS) if op != IoType::Read => Status::NAMESPACE_WRITE_PROTECTED,
        IoStatus::Failed(_) => match op {
            IoType::Read => Status::UNRECOVERED_READ_ERROR,
            IoType::Write | IoType::WriteZeroes => Status::WRITE_FAULT,
            _ => Status::INTERNAL_ERROR,
        },
    }
}
