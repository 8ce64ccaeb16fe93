//! Rebuild of a mirror member: copy from an in-sync child — only the regions the write-intent
//! bitmap names (partial: a member coming back) or everything (full: a new or blank one) —
//! window by window, while foreground I/O goes on.
//!
//! ```text
//!  member: Faulted ─► Rebuilding (persisted: takes writes, serves no reads)
//!  barrier: every channel acknowledges: each write submitted before it set its bits
//!  for each window [a, b) of the ranges to copy (bitmap regions, or all):
//!     lock:   publish [a, b), bump the epoch, wake every reactor; each channel acknowledges
//!             from its poll, counting its writes in flight inside the window; new writes
//!             touching it wait on their channel
//!     drain:  wait until those writes are done
//!     copy:   read [a, b) from an in-sync child, write it to the member
//!     unlock: blocked writes go on (to every member, the rebuilding one included)
//!     pace:   sleep to keep under process_max_bandwidth_mb_sec
//!  flush the member; the whole bitmap to it; Rebuilding ─► InSync (persisted)
//!  every member in sync ─► the bitmap is swept (idle regions cleared, on every member)
//! ```
//!
//! A write behind the window reached the member itself; one ahead of it is copied over with
//! the same data later; one inside it waits: the copy never overwrites newer data. An error
//! on the member faults it and ends the rebuild; a read error on the source faults the source
//! and the copy goes on from another in-sync child. Bits are only cleared while every member
//! is in sync, so a partial rebuild cut short (an error, a restart) copies them all again.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_reactor::RuntimeHandle;

use super::{control_io, faults_child, lookup, CtlIo, MemberState, Shared, MIRRORS};
use crate::bdev::{IoStatus, IoType};
use crate::error::{Error, Result};

/// How long a window may wait for the writes in flight inside it (or the channels' acks).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a rebuild copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only the regions the write-intent bitmap names (a member coming back).
    Partial,
    /// Everything (a new, blank or unknown member).
    Full,
}

impl Kind {
    /// "partial" or "full".
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Partial => "partial",
            Kind::Full => "full",
        }
    }
}

/// Rebuild settings (SPDK's `bdev_raid_set_options`, and ballast's self-healing switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Bytes copied per window (`process_window_size_kb`).
    pub window_bytes: u64,
    /// Copy rate cap in MiB/s; 0 is none (`process_max_bandwidth_mb_sec`).
    pub max_bandwidth_mib: u64,
    /// Re-add a faulted child by itself when its transport reconnects.
    pub self_heal: bool,
}

/// SPDK's defaults: 1 MiB windows, no cap; self-healing on.
pub const DEFAULT_OPTIONS: Options = Options {
    window_bytes: 1 << 20,
    max_bandwidth_mib: 0,
    self_heal: true,
};

static OPTIONS: Mutex<Options> = Mutex::new(DEFAULT_OPTIONS);

/// The rebuild settings now.
pub fn options() -> Options {
    *OPTIONS.lock().unwrap()
}

/// Sets the rebuild settings (they apply from the next window of a running rebuild).
pub fn set_options(o: Options) -> Result<()> {
    if o.window_bytes < 4096 || o.window_bytes > 1 << 30 {
        return Err(Error::InvalidParam {
            param: "process_window_size_kb",
            why: format!("{} KiB is not from 4 KiB to 1 GiB", o.window_bytes >> 10),
        });
    }
    *OPTIONS.lock().unwrap() = o;
    Ok(())
}

/// A rebuild in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The member being rebuilt.
    pub target: String,
    /// Partial or full.
    pub kind: Kind,
    /// Blocks copied so far.
    pub blocks_done: u64,
    /// Blocks to copy.
    pub blocks_total: u64,
    /// When it started.
    pub started: Instant,
}

/// How a rebuild ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The member rebuilt.
    pub target: String,
    /// Partial or full.
    pub kind: Kind,
    /// Bytes it had to copy.
    pub bytes_to_copy: u64,
    /// Bytes it copied.
    pub bytes_copied: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// None: the member is in sync; otherwise why it stopped.
    pub error: Option<String>,
}

/// The rebuild of mirror `name`, if one is running.
pub fn progress(name: &str) -> Option<Progress> {
    let s = MIRRORS.lock().unwrap().get(name).cloned()?;
    let p = s.progress.lock().unwrap().clone();
    p
}

fn bad(why: String) -> Error {
    Error::InvalidParam {
        param: "base_bdev",
        why,
    }
}

/// The mirror's metadata writer token (one superblock/bitmap round at a time), held by a
/// control thread until dropped.
struct Token<'a>(&'a Shared);

impl<'a> Token<'a> {
    fn take(s: &'a Shared) -> Result<Token<'a>> {
        let until = Instant::now() + DRAIN_TIMEOUT;
        loop {
            if s.deleted.load(Ordering::Acquire) {
                return Err(bad(format!("mirror {} was deleted", s.name)));
            }
            if s.writer
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(Token(s));
            }
            if Instant::now() > until {
                return Err(bad("the mirror's metadata writer never came free".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Token<'_> {
    fn drop(&mut self) {
        self.0.writer.store(false, Ordering::Release);
    }
}

/// Writes the metadata as it is now (superblock, changed bitmap chunks) to every member still
/// in the mirror — the control-path twin of a channel's round — until the generation asked
/// for now is durable and one complete round has carried the chunks that changed before the
/// call (writes marking new regions meanwhile do not keep it going).
pub(crate) fn persist(rt: &RuntimeHandle, s: &Shared) -> Result<()> {
    let until = Instant::now() + DRAIN_TIMEOUT;
    let want = s.want_gen.load(Ordering::Acquire);
    let mut carried = !s.bitmap.has_dirty();
    while s.durable_gen.load(Ordering::Acquire) < want || !carried {
        let token = Token::take(s)?;
        let plan = s.plan(|_| true);
        let ios = s.round_ios(&plan);
        let at: Vec<(usize, u64)> = ios.iter().map(|io| (io.child, io.offset)).collect();
        let mut complete = true;
        match control_io(rt, &s.descs(), ios) {
            Ok(rs) => {
                for (k, r) in rs.into_iter().enumerate() {
                    match r {
                        Ok(_) => s.landed_on(at[k].0, at[k].1),
                        Err(st) => {
                            complete = false;
                            if faults_child(st) {
                                s.fault(at[k].0, "metadata write failed");
                            }
                        }
                    }
                }
            }
            Err(e) => {
                s.round_done(&plan, false);
                return Err(e);
            }
        }
        if plan.targets.is_empty() {
            // No member left to hold it: nothing is acknowledged anyway.
            if let Some(g) = plan.gen {
                s.durable_gen.fetch_max(g, Ordering::AcqRel);
            }
        }
        s.round_done(&plan, complete);
        drop(token);
        carried |= complete;
        if !complete {
            if Instant::now() > until {
                return Err(bad("the mirror's metadata could not be written".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// Writes the whole bitmap to member `t` (about to join: rounds so far skipped it, or it
/// holds another time's bits), under the writer token so no round overtakes it.
fn bitmap_to(rt: &RuntimeHandle, s: &Shared, t: usize) -> Result<()> {
    let _token = Token::take(s)?;
    let ios = s
        .bitmap
        .snapshot_all()
        .iter()
        .map(|c| CtlIo {
            child: t,
            op: IoType::Write,
            offset: c.offset(),
            len: super::bitmap::CHUNK_BYTES as u64,
            data: s.bitmap.encode(c),
        })
        .collect();
    for r in control_io(rt, &s.descs(), ios)? {
        r.map_err(|st| bad(format!("writing the bitmap to the member: {st:?}")))?;
    }
    Ok(())
}

/// Sweeps the write-intent bitmap while every member is in sync (see [`super::bitmap`]):
/// takes the candidates, flushes every member (so every write done before them is durable
/// everywhere), clears the candidates no write has begun in since (under the writer token),
/// and writes the chunks. Returns the regions cleared; 0 when a member is out (its regions
/// stay marked) or a flush failed (the member is faulted).
pub(crate) fn sweep(rt: &RuntimeHandle, s: &Shared) -> Result<u64> {
    let whole = || s.children.iter().all(|c| c.state() == MemberState::InSync);
    if !whole() {
        return Ok(0);
    }
    let cands = s.bitmap.candidates();
    if cands.iter().all(|&c| c == 0) {
        return Ok(0);
    }
    let flushes = flush_ios(s, 0..s.children.len());
    for (i, r) in control_io(rt, &s.descs(), flushes)?.into_iter().enumerate() {
        match r {
            Ok(_) | Err(IoStatus::NotSupported) => {}
            Err(st) => {
                if faults_child(st) {
                    s.fault(i, "flush failed");
                    persist(rt, s)?;
                }
                return Ok(0);
            }
        }
    }
    let cleared = {
        let _token = Token::take(s)?;
        let _m = s.membership.lock().unwrap();
        if !whole() {
            return Ok(0);
        }
        s.bitmap.sweep(&cands)
    };
    if cleared > 0 {
        persist(rt, s)?;
    }
    Ok(cleared)
}

/// A flush of the data area of each of `children` (control-path I/O).
pub(crate) fn flush_ios(s: &Shared, children: impl Iterator<Item = usize>) -> Vec<CtlIo> {
    let bs = s.block_size as u64;
    children
        .map(|child| CtlIo {
            child,
            op: IoType::Flush,
            offset: s.data_offset * bs,
            len: s.num_blocks * bs,
            data: Vec::new(),
        })
        .collect()
}

/// Moves member `i` from state `from` to `to` (refused if it is no longer `from`: a fault
/// meanwhile wins) and persists it; fails if the member was faulted by the time it is on disk.
fn transition(
    rt: &RuntimeHandle,
    s: &Shared,
    i: usize,
    from: MemberState,
    to: MemberState,
) -> Result<()> {
    let c = &s.children[i];
    {
        let _m = s.membership.lock().unwrap();
        if c.state() != from {
            return Err(bad(format!(
                "{} became {:?} during its rebuild",
                c.name(),
                c.state()
            )));
        }
        c.set(to);
        if to == MemberState::InSync {
            c.full.store(false, Ordering::Release);
        }
        s.want_gen.fetch_add(1, Ordering::AcqRel);
    }
    persist(rt, s)?;
    if c.state() != to {
        return Err(bad(format!("{} failed during its rebuild", c.name())));
    }
    Ok(())
}

/// How often a copy I/O refused for lack of resources is tried again.
const NOMEM_RETRIES: u32 = 1000;

/// Runs one copy I/O, again while the child is out of resources.
fn copy_io(
    rt: &RuntimeHandle,
    descs: &[super::SharedDesc],
    io: impl Fn() -> CtlIo,
) -> Result<std::result::Result<Vec<u8>, IoStatus>> {
    for _ in 0..NOMEM_RETRIES {
        let r = control_io(rt, descs, vec![io()])?
            .pop()
            .expect("one I/O, one answer");
        if r != Err(IoStatus::NoMemory) {
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Err(IoStatus::NoMemory))
}

/// Bumps the window epoch, wakes every reactor and waits until every channel acknowledged
/// it (and, with `drain`, the writes they counted inside the window are done), until `until`.
pub(crate) fn announce(rt: &RuntimeHandle, s: &Shared, drain: bool, until: Instant) -> Result<()> {
    let epoch = s.lock_epoch.fetch_add(1, Ordering::AcqRel) + 1;
    // An idle reactor runs its pollers (and so the acknowledgement) only when woken.
    for core in rt.cores() {
        let _ = rt.send_retry(core, || {});
    }
    loop {
        let acked = s
            .channel_acks
            .lock()
            .unwrap()
            .iter()
            .filter_map(|w| w.upgrade())
            .all(|a| a.load(Ordering::Acquire) >= epoch);
        if acked && (!drain || s.window_inflight.load(Ordering::Acquire) == 0) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(bad("the mirror's channels did not answer in time".into()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Takes window [start, end): new writes touching it wait; returns once the writes in
/// flight inside it are done.
fn lock_window(rt: &RuntimeHandle, s: &Shared, start: u64, end: u64) -> Result<()> {
    s.lock_start.store(start, Ordering::Release);
    s.lock_end.store(end, Ordering::Release);
    announce(rt, s, true, Instant::now() + DRAIN_TIMEOUT)
}

/// Releases the window and waits until every channel let its blocked writes go.
fn unlock_window(rt: &RuntimeHandle, s: &Shared) -> Result<()> {
    s.lock_end.store(0, Ordering::Release);
    announce(rt, s, false, Instant::now() + DRAIN_TIMEOUT)
}

/// Ends a rebuild on every path (a panic included): the window is released and the progress
/// cleared, so writes never stay blocked and a new rebuild can start.
struct RebuildGuard<'a>(&'a Shared);

impl Drop for RebuildGuard<'_> {
    fn drop(&mut self) {
        self.0.lock_end.store(0, Ordering::Release);
        self.0.lock_epoch.fetch_add(1, Ordering::AcqRel);
        self.0.cancel.store(false, Ordering::Release);
        *self.0.progress.lock().unwrap() = None;
    }
}

fn slot_of(s: &Shared, child: &str) -> Result<usize> {
    s.children
        .iter()
        .position(|c| c.name() == child && !child.is_empty())
        .ok_or_else(|| bad(format!("{child} is not a member of mirror {}", s.name)))
}

/// Rebuilds member `child` (a bdev name) of mirror `name` from its in-sync members: the
/// member must be faulted (out of the mirror); it returns when the member is in sync again,
/// or with the error that stopped the copy (the member is then faulted again). Partial if
/// the member is the one that left (its own superblock says so) and the bitmap covers what it
/// missed; full otherwise. Call it off the reactors; I/O to the mirror goes on meanwhile.
pub fn rebuild(rt: &RuntimeHandle, name: &str, child: &str) -> Result<Kind> {
    let s = lookup(name)?;
    let t = slot_of(&s, child)?;
    let kind = reserve(rt, &s, t)?;
    run(rt, &s, t, kind).map(|()| kind)
}

/// [`rebuild`] in a background thread: the checks and the reservation happen now (their
/// errors are returned), the copy afterwards (its outcome is logged and kept for
/// `bdev_raid_get_bdevs`).
pub fn start(rt: &RuntimeHandle, name: &str, child: &str) -> Result<Kind> {
    let s = lookup(name)?;
    let t = slot_of(&s, child)?;
    start_slot(rt, s, t)
}

pub(crate) fn start_slot(rt: &RuntimeHandle, s: Arc<Shared>, t: usize) -> Result<Kind> {
    let kind = reserve(rt, &s, t)?;
    let rt = rt.clone();
    let s2 = s.clone();
    std::thread::Builder::new()
        .name("mirror-rebuild".into())
        .spawn(move || {
            let _ = run(&rt, &s2, t, kind);
        })
        .map(|_| kind)
        .map_err(|e| {
            *s.progress.lock().unwrap() = None;
            Error::Os {
                op: "spawning the rebuild thread",
                path: String::new(),
                source: e,
            }
        })
}

/// Stops the rebuild onto `child`, if one runs, and waits until it has.
pub(crate) fn cancel(s: &Shared, child: &str) -> Result<()> {
    let until = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let running = s
            .progress
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|p| p.target == child);
        if !running {
            return Ok(());
        }
        s.cancel.store(true, Ordering::Release);
        if Instant::now() > until {
            return Err(Error::Busy(format!(
                "the rebuild onto {child} did not stop in {DRAIN_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Checks that member `t` can be rebuilt, marks the rebuild as running and decides its kind.
fn reserve(rt: &RuntimeHandle, s: &Shared, t: usize) -> Result<Kind> {
    if ballast_reactor::current_core().is_some() {
        return Err(Error::NotOnReactor(
            "mirror::rebuild (call it off the reactors)",
        ));
    }
    let c = &s.children[t];
    let child = c.name();
    {
        let mut p = s.progress.lock().unwrap();
        if let Some(p) = p.as_ref() {
            return Err(Error::Busy(format!(
                "mirror {} is already rebuilding {}",
                s.name, p.target
            )));
        }
        if c.state() != MemberState::Faulted {
            return Err(Error::Busy(format!(
                "{child} is {:?}: only a faulted member is rebuilt",
                c.state()
            )));
        }
        if c.desc.lock().unwrap().is_none() {
            return Err(bad(format!("{child} is gone")));
        }
        if s.deleted.load(Ordering::Acquire) {
            return Err(bad(format!("mirror {} was deleted", s.name)));
        }
        // A cancel aimed at an earlier rebuild does not stop this one.
        s.cancel.store(false, Ordering::Release);
        *p = Some(Progress {
            target: child.clone(),
            kind: Kind::Full,
            blocks_done: 0,
            blocks_total: s.num_blocks,
            started: Instant::now(),
        });
    }
    // Partial only for the member that left, holding what it held then: its own superblock
    // names this mirror and this member.
    let kind = if c.full() {
        Kind::Full
    } else {
        let own = match super::read_own(rt, &s.descs(), &[t]).map(|mut r| r.pop()) {
            Ok(Some(Ok(own))) => own,
            Ok(Some(Err(st))) => {
                *s.progress.lock().unwrap() = None;
                return Err(bad(format!("reading {child}'s superblock: {st:?}")));
            }
            Ok(None) => None,
            Err(e) => {
                *s.progress.lock().unwrap() = None;
                return Err(e);
            }
        };
        if own.is_some_and(|(o, _)| o.mirror == s.uuid && o.child == c.uuid()) {
            Kind::Partial
        } else {
            tracing::warn!(mirror = %s.name, child = %child,
                "the member does not hold its own superblock any more: a full rebuild");
            c.full.store(true, Ordering::Release);
            Kind::Full
        }
    };
    if let Some(p) = s.progress.lock().unwrap().as_mut() {
        p.kind = kind;
    }
    Ok(kind)
}

fn run(rt: &RuntimeHandle, s: &Shared, t: usize, kind: Kind) -> Result<()> {
    let guard = RebuildGuard(s);
    let started = Instant::now();
    let child = s.children[t].name();
    tracing::info!(mirror = %s.name, child = %child, kind = kind.as_str(), "rebuild started");
    let r = copy_all(rt, s, t, kind);
    let (done, total) = s
        .progress
        .lock()
        .unwrap()
        .as_ref()
        .map_or((0, 0), |p| (p.blocks_done, p.blocks_total));
    let bs = s.block_size as u64;
    let r = match r {
        Ok(()) => {
            tracing::info!(mirror = %s.name, child = %child, kind = kind.as_str(),
                mib = (done * bs) >> 20, secs = started.elapsed().as_secs_f64(),
                "rebuild complete: member in sync");
            Ok(())
        }
        Err(e) => {
            if !s.deleted.load(Ordering::Acquire) && !s.cancel.load(Ordering::Acquire) {
                s.fault(t, "rebuild failed");
                let _ = persist(rt, s);
            }
            tracing::warn!(mirror = %s.name, child = %child, "rebuild stopped: {e}");
            Err(e)
        }
    };
    *s.last.lock().unwrap() = Some(Outcome {
        target: child,
        kind,
        bytes_to_copy: total * bs,
        bytes_copied: done * bs,
        seconds: started.elapsed().as_secs_f64(),
        error: r.as_ref().err().map(|e| e.to_string()),
    });
    drop(guard);
    r
}

fn copy_all(rt: &RuntimeHandle, s: &Shared, t: usize, kind: Kind) -> Result<()> {
    // Writes reach the member from here on; reads still do not.
    transition(rt, s, t, MemberState::Faulted, MemberState::Rebuilding)?;
    // Barrier: every write submitted before it was sent without the member and set its bits;
    // every one after goes to the member too.
    announce(rt, s, false, Instant::now() + DRAIN_TIMEOUT)?;
    let window = (options().window_bytes / s.block_size as u64).max(1);
    let ranges = match kind {
        Kind::Full => vec![(0, s.num_blocks)],
        Kind::Partial => by_window(&s.bitmap.ranges(s.num_blocks), window),
    };
    let total: u64 = ranges.iter().map(|(a, b)| b - a).sum();
    if let Some(p) = s.progress.lock().unwrap().as_mut() {
        p.blocks_total = total;
    }
    let bs = s.block_size as u64;
    let descs = s.descs();
    // One channel per member for the whole copy (not one per window).
    let _hold = crate::backend::control::hold(rt, &descs);
    let started = Instant::now();
    let mut copied = 0u64;
    let mut logged = Instant::now();
    for (start, end) in ranges {
        let mut at = start;
        while at < end {
            let o = options();
            let step = (o.window_bytes / bs).max(1);
            let n = step.min(end - at);
            if s.deleted.load(Ordering::Acquire) {
                return Err(bad(format!("mirror {} was deleted", s.name)));
            }
            if s.cancel.load(Ordering::Acquire) {
                return Err(bad("the member is being removed".into()));
            }
            if s.children[t].state() != MemberState::Rebuilding {
                return Err(bad("the member failed a write during its rebuild".into()));
            }
            lock_window(rt, s, at, at + n)?;
            copy_window(rt, s, &descs, t, at, n)?;
            unlock_window(rt, s)?;
            at += n;
            copied += n;
            if let Some(p) = s.progress.lock().unwrap().as_mut() {
                p.blocks_done = copied;
            }
            if logged.elapsed() > Duration::from_secs(5) {
                logged = Instant::now();
                tracing::info!(mirror = %s.name, done = copied, total, "rebuilding");
            }
            // Paced: never ahead of the cap (read from the options each window).
            if o.max_bandwidth_mib > 0 {
                let due = Duration::from_secs_f64(
                    (copied * bs) as f64 / (o.max_bandwidth_mib << 20) as f64,
                );
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait.min(Duration::from_secs(1)));
                }
            }
        }
    }
    // The copy is durable before the member is called in sync.
    let flush = || CtlIo {
        child: t,
        op: IoType::Flush,
        offset: s.data_offset * bs,
        len: s.num_blocks * bs,
        data: Vec::new(),
    };
    match copy_io(rt, &descs, flush)? {
        Ok(_) | Err(IoStatus::NotSupported) => {}
        Err(st) => return Err(bad(format!("flushing the member: {st:?}"))),
    }
    // It may become the last in-sync member: it must name every region the others lack.
    bitmap_to(rt, s, t)?;
    transition(rt, s, t, MemberState::Rebuilding, MemberState::InSync)?;
    // Every member in sync: the regions the copy covered can go.
    sweep(rt, s).map(|_| ())
}

/// Dirty ranges grouped by copy window: within each window-aligned stretch, ranges a quarter
/// window apart or less become one span (the clean blocks between are equal on both sides:
/// copying them is harmless, and cheaper than another window's lock and round trips).
/// Scattered regions then take about as many windows as a full copy, not one each.
fn by_window(ranges: &[(u64, u64)], window: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(mut a, b) in ranges {
        while a < b {
            let w_end = (a / window + 1) * window;
            let e = b.min(w_end);
            match out.last_mut() {
                Some(l) if l.0 / window == a / window && a - l.1 <= window / 4 => l.1 = e,
                _ => out.push((a, e)),
            }
            a = e;
        }
    }
    out
}

/// Copies blocks [at, at + n) (locked) from an in-sync child to member `t`. A read error
/// faults the source (never the last in-sync one) and the next one is tried.
fn copy_window(
    rt: &RuntimeHandle,
    s: &Shared,
    descs: &[super::SharedDesc],
    t: usize,
    at: u64,
    n: u64,
) -> Result<()> {
    let bs = s.block_size as u64;
    let offset = (s.data_offset + at) * bs;
    let data = loop {
        let Some(src) =
            (0..s.children.len()).find(|&i| i != t && s.children[i].state() == MemberState::InSync)
        else {
            return Err(bad("no in-sync member left to copy from".into()));
        };
        let read = || CtlIo {
            child: src,
            op: IoType::Read,
            offset,
            len: n * bs,
            data: Vec::new(),
        };
        match copy_io(rt, descs, read)? {
            Ok(d) => break d,
            Err(st) if s.deleted.load(Ordering::Acquire) => {
                return Err(bad(format!("mirror {} was deleted ({st:?})", s.name)));
            }
            Err(st) if faults_child(st) && s.in_sync() > 1 => {
                s.fault(src, "read failed during a rebuild");
                persist(rt, s)?;
            }
            Err(st) => return Err(bad(format!("reading the source: {st:?}"))),
        }
    };
    let write = || CtlIo {
        child: t,
        op: IoType::Write,
        offset,
        len: n * bs,
        data: data.clone(),
    };
    if let Err(st) = copy_io(rt, descs, write)? {
        return Err(bad(format!("writing the member: {st:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dirty_ranges_group_by_window() {
        let r = [(0, 2), (3, 6), (9, 14), (30, 31)];
        assert_eq!(super::by_window(&r, 8), vec![(0, 6), (9, 14), (30, 31)]);
        assert_eq!(super::by_window(&[(6, 10)], 8), vec![(6, 8), (8, 10)]);
    }
}
