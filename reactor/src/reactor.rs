//! The reactor loop and its thread-local context: pollers, timers, the message ring and the
//! adaptive idle (spin under load, block on epoll when idle).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use crate::error::{Error, Result};
use crate::sys::{Epoll, EventFd, TimerFd};

/// A message: a closure run once on the target reactor.
pub type Msg = Box<dyn FnOnce() + Send + 'static>;

/// What a poller reports after one run: whether it found work. A reactor whose pollers all
/// report [`PollStatus::Idle`] for [`RuntimeConfig::idle_threshold`] goes to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// Nothing to do this time.
    Idle,
    /// Did some work (keeps the reactor spinning).
    Busy,
}

impl From<bool> for PollStatus {
    fn from(busy: bool) -> Self {
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

/// Configuration of a set of reactors.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Cores to run reactors on; the first is the main reactor.
    pub cores: Vec<usize>,
    /// Pin each reactor thread to its core (off for tests that run more reactors than cores).
    pub pin: bool,
    /// How long a reactor spins without work before it blocks.
    pub idle_threshold: Duration,
    /// Capacity of each reactor's message ring (bounded).
    pub ring_capacity: usize,
    /// How long shutdown waits for pollers to drain before giving up.
    pub drain_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cores: vec![0],
            pin: true,
            idle_threshold: Duration::from_millis(1),
            ring_capacity: 16 * 1024,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// A snapshot of one reactor's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReactorStats {
    /// Core (lcore) the reactor serves.
    pub core: usize,
    /// Kernel thread id of the reactor thread.
    pub tid: i32,
    /// Time spent in loop iterations that did work.
    pub busy: Duration,
    /// Time spent in iterations without work, including time asleep.
    pub idle: Duration,
    /// Loop iterations.
    pub polls: u64,
    /// Messages executed.
    pub messages: u64,
    /// Times the reactor blocked in epoll (went to sleep).
    pub sleeps: u64,
    /// Times the reactor was woken from sleep.
    pub wakeups: u64,
    /// Pollers currently registered.
    pub pollers: u64,
}

#[derive(Default)]
struct StatCells {
    tid: AtomicU64,
    busy_ns: AtomicU64,
    idle_ns: AtomicU64,
    polls: AtomicU64,
    messages: AtomicU64,
    sleeps: AtomicU64,
    wakeups: AtomicU64,
    pollers: AtomicU64,
}

/// Single writer (the reactor thread): a plain load+store, no locked RMW on the hot path.
#[inline]
fn bump(c: &AtomicU64, by: u64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// The part of a reactor other threads see: its ring and its wake-up eventfd.
struct Remote {
    core: usize,
    ring: ArrayQueue<Msg>,
    /// Set by the reactor just before it blocks; a sender that swaps it to false owns the wake-up.
    sleeping: CachePadded<AtomicBool>,
    eventfd: EventFd,
    stats: CachePadded<StatCells>,
}

const RUNNING: u8 = 0;
const SHUTTING_DOWN: u8 = 1;
const STOPPED: u8 = 2;

struct Shared {
    remotes: Vec<Arc<Remote>>,
    cfg: RuntimeConfig,
    state: AtomicU8,
    exited: AtomicU64,
}

impl Shared {
    fn remote(&self, core: usize) -> Result<&Arc<Remote>> {
        self.remotes
            .iter()
            .find(|r| r.core == core)
            .ok_or(Error::NoSuchReactor(core))
    }

    fn send(&self, core: usize, msg: Msg) -> Result<()> {
        if self.state.load(Ordering::Acquire) == STOPPED {
            return Err(Error::ShutDown);
        }
        let r = self.remote(core)?;
        r.ring.push(msg).map_err(|_| Error::RingFull(core))?;
        // Dekker pairing with the reactor's `sleeping` store + fence + ring check.
        fence(Ordering::SeqCst);
        if r.sleeping.load(Ordering::Relaxed) && r.sleeping.swap(false, Ordering::AcqRel) {
            r.eventfd.notify();
        }
        Ok(())
    }
}

/// A cheap, cloneable, thread-safe handle to a running set of reactors.
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("cores", &self.cores())
            .finish()
    }
}

impl RuntimeHandle {
    /// The cores with a reactor, main reactor first.
    pub fn cores(&self) -> Vec<usize> {
        self.shared.remotes.iter().map(|r| r.core).collect()
    }

    /// The main reactor's core.
    pub fn main_core(&self) -> usize {
        self.shared.remotes[0].core
    }

    /// Runs `f` on the reactor of `core`. Messages from one sender run in the order sent.
    /// The ring is bounded: a full ring returns [`Error::RingFull`] and drops nothing silently
    /// (the closure is dropped unrun, and the caller learns it).
    pub fn send(&self, core: usize, f: impl FnOnce() + Send + 'static) -> Result<()> {
        self.shared.send(core, Box::new(f))
    }

    /// Like [`send`](Self::send) but retries while the ring is full (control paths only).
    pub fn send_retry(&self, core: usize, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let mut msg: Msg = Box::new(f);
        loop {
            if self.shared.state.load(Ordering::Acquire) == STOPPED {
                return Err(Error::ShutDown);
            }
            let r = self.shared.remote(core)?;
            match r.ring.push(msg) {
                Ok(()) => {
                    fence(Ordering::SeqCst);
                    if r.sleeping.load(Ordering::Relaxed)
                        && r.sleeping.swap(false, Ordering::AcqRel)
                    {
                        r.eventfd.notify();
                    }
                    return Ok(());
                }
                Err(m) => {
                    msg = m;
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Runs `f` on the reactor of `core` and waits for its result. Meant for set-up and
    /// control paths: called on the target reactor itself it runs inline; called from another
    /// reactor it blocks that reactor until the answer comes.
    pub fn call<T: Send + 'static>(
        &self,
        core: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        if current_core() == Some(core) && self.is_current_runtime() {
            return Ok(f());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.send_retry(core, move || {
            let _ = tx.send(f());
        })?;
        rx.recv().map_err(|_| Error::ShutDown)
    }

    /// True if both handles reach the same runtime.
    pub fn same(&self, other: &RuntimeHandle) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn is_current_runtime(&self) -> bool {
        LOCAL.with(|l| {
            l.borrow()
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(&l.shared, &self.shared))
        })
    }

    /// Counters of every reactor, main first.
    pub fn stats(&self) -> Vec<ReactorStats> {
        self.shared
            .remotes
            .iter()
            .map(|r| {
                let s = &r.stats;
                ReactorStats {
                    core: r.core,
                    tid: s.tid.load(Ordering::Relaxed) as i32,
                    busy: Duration::from_nanos(s.busy_ns.load(Ordering::Relaxed)),
                    idle: Duration::from_nanos(s.idle_ns.load(Ordering::Relaxed)),
                    polls: s.polls.load(Ordering::Relaxed),
                    messages: s.messages.load(Ordering::Relaxed),
                    sleeps: s.sleeps.load(Ordering::Relaxed),
                    wakeups: s.wakeups.load(Ordering::Relaxed),
                    pollers: s.pollers.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Asks every reactor to stop: each runs its shutdown hooks (LIFO), then keeps polling
    /// until its pollers have unregistered (in-flight work drains) or the drain timeout passes.
    pub fn request_shutdown(&self) {
        if self
            .shared
            .state
            .compare_exchange(RUNNING, SHUTTING_DOWN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        for core in self.cores() {
            let _ = self.send_retry(core, || {
                with_local(|l| l.begin_drain());
            });
        }
    }

    /// True once shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) != RUNNING
    }
}

/// Owner of the reactor threads. Dropping it shuts the reactors down and joins them.
pub struct Runtime {
    handle: RuntimeHandle,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handle.fmt(f)
    }
}

impl std::ops::Deref for Runtime {
    type Target = RuntimeHandle;
    fn deref(&self) -> &RuntimeHandle {
        &self.handle
    }
}

impl Runtime {
    /// Starts one reactor thread per core in `cfg.cores` and waits until all are running.
    pub fn start(cfg: RuntimeConfig) -> Result<Runtime> {
        if cfg.cores.is_empty() {
            return Err(Error::CoreMask {
                mask: String::new(),
                why: "no cores".into(),
            });
        }
        if cfg.pin {
            let available: Vec<usize> = core_affinity::get_core_ids()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.id)
                .collect();
            if let Some(&core) = cfg.cores.iter().find(|c| !available.contains(c)) {
                return Err(Error::CoreUnavailable { core, available });
            }
        }
        let mut remotes = Vec::with_capacity(cfg.cores.len());
        for &core in &cfg.cores {
            remotes.push(Arc::new(Remote {
                core,
                ring: ArrayQueue::new(cfg.ring_capacity.max(2)),
                sleeping: CachePadded::new(AtomicBool::new(false)),
                eventfd: EventFd::new().map_err(|source| Error::Os {
                    op: "eventfd",
                    source,
                })?,
                stats: CachePadded::new(StatCells::default()),
            }));
        }
        let shared = Arc::new(Shared {
            remotes,
            cfg: cfg.clone(),
            state: AtomicU8::new(RUNNING),
            exited: AtomicU64::new(0),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), Error>>();
        let mut threads = Vec::new();
        for index in 0..cfg.cores.len() {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("reactor_{}", cfg.cores[index]))
                .spawn(move || reactor_main(shared, index, ready))
                .map_err(|source| Error::Os {
                    op: "spawn reactor thread",
                    source,
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut first_err = None;
        for _ in 0..cfg.cores.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::ShutDown);
                }
            }
        }
        let rt = Runtime {
            handle: RuntimeHandle { shared },
            threads: Mutex::new(threads),
        };
        if let Some(e) = first_err {
            rt.shutdown();
            return Err(e);
        }
        tracing::info!(cores = ?cfg.cores, "reactors started");
        Ok(rt)
    }

    /// A cloneable handle for other threads.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Requests shutdown and joins every reactor thread.
    pub fn shutdown(&self) {
        self.handle.request_shutdown();
        self.wait();
    }

    /// Joins the reactor threads (returns once they have all exited).
    pub fn wait(&self) {
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
        self.handle.shared.state.store(STOPPED, Ordering::Release);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ------------------------------------------------------------------ thread-local side ----

/// Identifies a registered poller (for [`unregister_poller`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollerHandle {
    slot: usize,
    id: u64,
}

/// Identifies a pending one-shot timer (for [`cancel_timer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerHandle(u64);

type PollFn = Box<dyn FnMut() -> PollStatus>;

struct PollerEntry {
    id: u64,
    name: String,
    /// `None` while the poller is running (taken out so it may touch the poller table).
    f: Option<PollFn>,
    period: Option<Duration>,
    next_run: Instant,
    removed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LoopState {
    Running,
    Draining { deadline: Instant },
}

struct Local {
    shared: Arc<Shared>,
    remote: Arc<Remote>,
    pollers: RefCell<Vec<Option<PollerEntry>>>,
    free_slots: RefCell<Vec<usize>>,
    active_pollers: Cell<usize>,
    next_id: Cell<u64>,
    timers: RefCell<BinaryHeap<Reverse<(Instant, u64)>>>,
    timer_fns: RefCell<HashMap<u64, Box<dyn FnOnce()>>>,
    epoll: Epoll,
    timerfd: TimerFd,
    state: Cell<LoopState>,
    shutdown_hooks: RefCell<Vec<Box<dyn FnOnce()>>>,
}

thread_local! {
    static LOCAL: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

fn local() -> Option<Rc<Local>> {
    LOCAL.with(|l| l.borrow().clone())
}

fn with_local<R>(f: impl FnOnce(&Rc<Local>) -> R) -> Option<R> {
    local().map(|l| f(&l))
}

fn need_local(what: &'static str) -> Result<Rc<Local>> {
    local().ok_or(Error::NotOnReactor(what))
}

/// The core of the reactor running on this thread, if any.
pub fn current_core() -> Option<usize> {
    with_local(|l| l.remote.core)
}

/// A handle to the runtime of the reactor running on this thread.
pub fn handle() -> Option<RuntimeHandle> {
    with_local(|l| RuntimeHandle {
        shared: l.shared.clone(),
    })
}

/// Sends `f` to the reactor on `core` (from a reactor thread). See [`RuntimeHandle::send`].
pub fn send(core: usize, f: impl FnOnce() + Send + 'static) -> Result<()> {
    need_local("send")?.shared.send(core, Box::new(f))
}

/// Registers a poller run on every loop iteration of this reactor. A poller that needs to be
/// run while the reactor sleeps must also register a wake fd ([`add_wake_fd`]) or a timer.
pub fn register_poller(
    name: impl Into<String>,
    f: impl FnMut() -> PollStatus + 'static,
) -> Result<PollerHandle> {
    Ok(need_local("register_poller")?.add_poller(name.into(), Box::new(f), None))
}

/// Registers a poller run every `period` (also while the reactor sleeps).
pub fn register_periodic_poller(
    name: impl Into<String>,
    period: Duration,
    f: impl FnMut() -> PollStatus + 'static,
) -> Result<PollerHandle> {
    Ok(need_local("register_periodic_poller")?.add_poller(name.into(), Box::new(f), Some(period)))
}

/// Unregisters a poller of this reactor (also from inside the poller itself).
pub fn unregister_poller(h: PollerHandle) {
    with_local(|l| l.remove_poller(h));
}

/// Runs `f` once on this reactor after `after`.
pub fn timer_after(after: Duration, f: impl FnOnce() + 'static) -> Result<TimerHandle> {
    let l = need_local("timer_after")?;
    let id = l.next_id.get();
    l.next_id.set(id + 1);
    l.timers
        .borrow_mut()
        .push(Reverse((Instant::now() + after, id)));
    l.timer_fns.borrow_mut().insert(id, Box::new(f));
    Ok(TimerHandle(id))
}

/// Cancels a pending timer of this reactor; returns false if it already ran or was cancelled.
pub fn cancel_timer(h: TimerHandle) -> bool {
    with_local(|l| l.timer_fns.borrow_mut().remove(&h.0).is_some()).unwrap_or(false)
}

/// Wakes this reactor from sleep whenever `fd` is readable (level-triggered: the owner must
/// consume the readiness, or the reactor will not go back to sleep).
pub fn add_wake_fd(fd: RawFd) -> Result<()> {
    need_local("add_wake_fd")?
        .epoll
        .add(fd, fd as u64)
        .map_err(|source| Error::Os {
            op: "epoll_ctl add",
            source,
        })
}

/// Also wakes this reactor from sleep while `fd` (added by [`add_wake_fd`]) is writable, or
/// no longer: for a socket whose sends wait for room (turn it off once they are done, or the
/// reactor will not go back to sleep).
pub fn wake_when_writable(fd: RawFd, on: bool) -> Result<()> {
    need_local("wake_when_writable")?
        .epoll
        .modify(fd, fd as u64, on)
        .map_err(|source| Error::Os {
            op: "epoll_ctl mod",
            source,
        })
}

/// Keeps bytes waiting for room in a socket from being stranded while the reactor sleeps (a
/// sleeping reactor wakes for input only, so a peer that reads slowly would leave them there
/// until its next message). While bytes wait, the owner's poller keeps reporting work; after
/// [`SendRoom::ARM_AFTER`] send attempts in a row without progress it asks the reactor to
/// wake when the socket is writable ([`wake_when_writable`]) and lets it sleep, and it turns
/// that off once nothing waits. A socket full for a moment under load costs no `epoll_ctl`.
#[derive(Debug, Clone, Copy)]
pub struct SendRoom {
    fd: RawFd,
    stalled: u32,
    armed: bool,
}

impl SendRoom {
    /// Attempts without progress before the reactor is asked to wake on room.
    pub const ARM_AFTER: u32 = 64;

    /// For socket `fd`, added with [`add_wake_fd`].
    pub fn new(fd: RawFd) -> Self {
        Self {
            fd,
            stalled: 0,
            armed: false,
        }
    }

    /// Records a send attempt: `waiting`, bytes are still queued; `progress`, this attempt
    /// sent some. Returns true while bytes wait and the reactor would not wake for room: the
    /// owner's poller should report work.
    pub fn after_send(&mut self, waiting: bool, progress: bool) -> bool {
        if !waiting {
            self.stalled = 0;
            if self.armed {
                self.arm(false);
            }
            return false;
        }
        self.stalled = if progress {
            0
        } else {
            self.stalled.saturating_add(1)
        };
        if !self.armed && self.stalled >= Self::ARM_AFTER {
            self.arm(true);
        }
        !self.armed
    }

    /// True once the reactor wakes when the socket has room.
    pub fn armed(&self) -> bool {
        self.armed
    }

    fn arm(&mut self, on: bool) {
        self.armed = on;
        if let Err(e) = wake_when_writable(self.fd, on) {
            tracing::debug!(fd = self.fd, "wake on room: {e}");
        }
    }
}

/// Stops waking on `fd` (call before closing it).
pub fn remove_wake_fd(fd: RawFd) {
    with_local(|l| {
        let _ = l.epoll.delete(fd);
    });
}

/// Registers a hook run on this reactor when shutdown begins (hooks run last-registered first).
pub fn on_shutdown(f: impl FnOnce() + 'static) -> Result<()> {
    need_local("on_shutdown")?
        .shutdown_hooks
        .borrow_mut()
        .push(Box::new(f));
    Ok(())
}

/// True while this reactor is draining for shutdown.
pub fn is_draining() -> bool {
    with_local(|l| matches!(l.state.get(), LoopState::Draining { .. })).unwrap_or(false)
}

impl Local {
    fn add_poller(&self, name: String, f: PollFn, period: Option<Duration>) -> PollerHandle {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let entry = PollerEntry {
            id,
            name,
            f: Some(f),
            period,
            next_run: Instant::now() + period.unwrap_or_default(),
            removed: false,
        };
        let mut pollers = self.pollers.borrow_mut();
        let slot = match self.free_slots.borrow_mut().pop() {
            Some(s) => {
                pollers[s] = Some(entry);
                s
            }
            None => {
                pollers.push(Some(entry));
                pollers.len() - 1
            }
        };
        self.active_pollers.set(self.active_pollers.get() + 1);
        bump(&self.remote.stats.pollers, 1);
        PollerHandle { slot, id }
    }

    fn remove_poller(&self, h: PollerHandle) {
        let mut pollers = self.pollers.borrow_mut();
        let Some(Some(e)) = pollers.get_mut(h.slot) else {
            return;
        };
        if e.id != h.id || e.removed {
            return;
        }
        if e.f.is_some() {
            pollers[h.slot] = None;
            self.free_slots.borrow_mut().push(h.slot);
        } else {
            e.removed = true; // running right now: freed when it returns
        }
        self.active_pollers.set(self.active_pollers.get() - 1);
        let c = &self.remote.stats.pollers;
        c.store(
            c.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }

    #[inline]
    fn drain_messages(&self) -> usize {
        let mut n = 0;
        while n < 256 {
            match self.remote.ring.pop() {
                Some(m) => {
                    m();
                    n += 1;
                }
                None => break,
            }
        }
        if n > 0 {
            bump(&self.remote.stats.messages, n as u64);
        }
        n
    }

    #[inline]
    fn run_pollers(&self, now: Instant) -> usize {
        let mut work = 0;
        let len = self.pollers.borrow().len();
        for slot in 0..len {
            let mut f = {
                let mut pollers = self.pollers.borrow_mut();
                let Some(e) = pollers[slot].as_mut() else {
                    continue;
                };
                if let Some(p) = e.period {
                    if now < e.next_run {
                        continue;
                    }
                    e.next_run = now + p;
                }
                match e.f.take() {
                    Some(f) => f,
                    None => continue,
                }
            };
            if f() == PollStatus::Busy {
                work += 1;
            }
            let mut pollers = self.pollers.borrow_mut();
            if let Some(e) = pollers[slot].as_mut() {
                if e.removed {
                    pollers[slot] = None;
                    self.free_slots.borrow_mut().push(slot);
                } else {
                    e.f = Some(f);
                }
            }
        }
        work
    }

    fn run_timers(&self, now: Instant) -> usize {
        let mut n = 0;
        loop {
            let id = {
                let mut heap = self.timers.borrow_mut();
                match heap.peek() {
                    Some(Reverse((when, id))) if *when <= now => {
                        let id = *id;
                        heap.pop();
                        id
                    }
                    _ => break,
                }
            };
            let f = self.timer_fns.borrow_mut().remove(&id);
            if let Some(f) = f {
                f();
                n += 1;
            }
        }
        n
    }

    /// The earliest deadline among timers and periodic pollers.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        {
            let mut heap = self.timers.borrow_mut();
            let fns = self.timer_fns.borrow();
            // Drop cancelled timers from the top so they do not cause spurious wake-ups.
            while let Some(Reverse((when, id))) = heap.peek() {
                if fns.contains_key(id) {
                    next = Some(*when);
                    break;
                }
                heap.pop();
            }
        }
        for e in self.pollers.borrow().iter().flatten() {
            if e.period.is_some() && !e.removed {
                next = Some(next.map_or(e.next_run, |n| n.min(e.next_run)));
            }
        }
        next
    }

    /// Blocks until a message, a wake fd or the next deadline. Returns true if it slept.
    fn sleep(&self, limit: Option<Instant>) -> bool {
        let r = &self.remote;
        r.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !r.ring.is_empty() {
            r.sleeping.store(false, Ordering::Relaxed);
            return false;
        }
        let now = Instant::now();
        let deadline = match (self.next_deadline(), limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(d) = deadline {
            if d <= now {
                r.sleeping.store(false, Ordering::Relaxed);
                return false;
            }
            self.timerfd.arm(d - now);
        }
        bump(&r.stats.sleeps, 1);
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
        let n = self.epoll.wait(&mut events);
        r.sleeping.store(false, Ordering::Relaxed);
        for ev in &events[..n] {
            if ev.u64 == r.eventfd.raw() as u64 {
                r.eventfd.drain();
            } else if ev.u64 == self.timerfd.raw() as u64 {
                self.timerfd.drain();
            }
        }
        if deadline.is_some() {
            self.timerfd.disarm();
        }
        bump(&r.stats.wakeups, 1);
        true
    }

    fn begin_drain(&self) {
        let deadline = Instant::now() + self.shared.cfg.drain_timeout;
        self.state.set(LoopState::Draining { deadline });
        loop {
            let hook = self.shutdown_hooks.borrow_mut().pop();
            match hook {
                Some(h) => h(),
                None => break,
            }
        }
    }

    fn run(&self) {
        let idle_threshold = self.shared.cfg.idle_threshold;
        let stats = &self.remote.stats;
        let mut iter_start = Instant::now();
        let mut last_work = iter_start;
        loop {
            let mut work = self.drain_messages();
            work += self.run_pollers(iter_start);
            work += self.run_timers(iter_start);
            let end = Instant::now();
            let dt = (end - iter_start).as_nanos() as u64;
            bump(&stats.polls, 1);
            if work > 0 {
                bump(&stats.busy_ns, dt);
                last_work = end;
            } else {
                bump(&stats.idle_ns, dt);
            }
            iter_start = end;
            match self.state.get() {
                LoopState::Running => {
                    if work == 0 && end - last_work >= idle_threshold && self.sleep(None) {
                        let woke = Instant::now();
                        bump(&stats.idle_ns, (woke - end).as_nanos() as u64);
                        iter_start = woke;
                        last_work = woke;
                    }
                }
                LoopState::Draining { deadline } => {
                    if self.active_pollers.get() == 0 && self.remote.ring.is_empty() {
                        break;
                    }
                    if end >= deadline {
                        let names: Vec<String> = self
                            .pollers
                            .borrow()
                            .iter()
                            .flatten()
                            .filter(|e| !e.removed)
                            .map(|e| e.name.clone())
                            .collect();
                        tracing::warn!(core = self.remote.core, pollers = ?names,
                            "drain timeout: pollers still registered at shutdown");
                        break;
                    }
                    if work == 0 && end - last_work >= idle_threshold && self.sleep(Some(deadline))
                    {
                        iter_start = Instant::now();
                        last_work = iter_start;
                    }
                }
            }
        }
    }
}

fn reactor_main(
    shared: Arc<Shared>,
    index: usize,
    ready: mpsc::Sender<std::result::Result<(), Error>>,
) {
    let remote = shared.remotes[index].clone();
    let core = remote.core;
    if shared.cfg.pin && !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        tracing::warn!(core, "could not pin reactor thread");
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    remote.stats.tid.store(tid as u64, Ordering::Relaxed);
    let setup = (|| -> Result<Rc<Local>> {
        let epoll = Epoll::new().map_err(|source| Error::Os {
            op: "epoll_create1",
            source,
        })?;
        let timerfd = TimerFd::new().map_err(|source| Error::Os {
            op: "timerfd_create",
            source,
        })?;
        let os = |source| Error::Os {
            op: "epoll_ctl add",
            source,
        };
        epoll
            .add(remote.eventfd.raw(), remote.eventfd.raw() as u64)
            .map_err(os)?;
        epoll.add(timerfd.raw(), timerfd.raw() as u64).map_err(os)?;
        Ok(Rc::new(Local {
            shared: shared.clone(),
            remote: remote.clone(),
            pollers: RefCell::new(Vec::new()),
            free_slots: RefCell::new(Vec::new()),
            active_pollers: Cell::new(0),
            next_id: Cell::new(1),
            timers: RefCell::new(BinaryHeap::new()),
            timer_fns: RefCell::new(HashMap::new()),
            epoll,
            timerfd,
            state: Cell::new(LoopState::Running),
            shutdown_hooks: RefCell::new(Vec::new()),
        }))
    })();
    let local = match setup {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    LOCAL.with(|l| *l.borrow_mut() = Some(local.clone()));
    let _ = ready.send(Ok(()));
    drop(ready);
    tracing::debug!(core, tid, "reactor running");
    local.run();
    // Leftover timers are dropped unrun; pollers' closures (and what they own) drop here.
    local.timer_fns.borrow_mut().clear();
    local.pollers.borrow_mut().clear();
    LOCAL.with(|l| *l.borrow_mut() = None);
    shared.exited.fetch_add(1, Ordering::AcqRel);
    tracing::debug!(core, "reactor exited");
}

/// CPU time the kernel has charged to thread `tid` of this process (from
/// `/proc/self/task/TID/schedstat`), e.g. to check that an idle reactor really sleeps.
pub fn thread_cpu_time_of(tid: i32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}
