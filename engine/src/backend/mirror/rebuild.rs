//! Full rebuild of a mirror member: copy every block from an in-sync child, window by window,
//! while foreground I/O goes on.
//!
//! ```text
//!  member: Faulted ─► Rebuilding (persisted: takes writes, serves no reads)
//!  for each window [a, b):
//!     lock:   publish [a, b), bump the epoch, wake every reactor; each channel acknowledges
//!             from its poll, counting its writes in flight inside the window; new writes
//!             touching it wait on their channel
//!     drain:  wait until those writes are done
//!     copy:   read [a, b) from an in-sync child, write it to the member
//!     unlock: blocked writes go on (to every member, the rebuilding one included)
//!  member: Rebuilding ─► InSync (persisted)
//! ```
//!
//! A write behind the window reached the member itself; one ahead of it is copied over with
//! the same data later; one inside it waits: the copy never overwrites newer data. An error
//! on the member faults it and ends the rebuild; a read error on the source faults the source
//! and the copy goes on from another in-sync child.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_reactor::RuntimeHandle;

use super::{control_io, faults_child, CtlIo, MemberState, Shared, MIRRORS};
use crate::bdev::{IoStatus, IoType};
use crate::error::{Error, Result};

/// Bytes copied per window.
pub const WINDOW_BYTES: u64 = 1 << 20;
/// How long a window may wait for the writes in flight inside it (or the channels' acks).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A rebuild in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The member being rebuilt.
    pub target: String,
    /// Blocks copied so far.
    pub blocks_done: u64,
    /// Blocks to copy.
    pub blocks_total: u64,
    /// When it started.
    pub started: Instant,
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

/// Writes the membership as it is now to every member still in the mirror (the control-path
/// twin of a channel's superblock round), until the generation the states need is durable.
pub(crate) fn persist(rt: &RuntimeHandle, s: &Shared) -> Result<()> {
    let until = Instant::now() + DRAIN_TIMEOUT;
    while s.durable_gen.load(Ordering::Acquire) < s.want_gen.load(Ordering::Acquire) {
        if s.deleted.load(Ordering::Acquire) {
            return Err(bad(format!("mirror {} was deleted", s.name)));
        }
        if s.writer
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            if Instant::now() > until {
                return Err(bad("the mirror's superblock writer never came free".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let (gen, blocks) = s.snapshot(|_| true);
        let ios = Shared::superblock_ios(gen, blocks);
        let targets: Vec<usize> = ios.iter().map(|io| io.child).collect();
        let descs: Vec<_> = s.children.iter().map(|c| c.desc.clone()).collect();
        let res = control_io(rt, &descs, ios);
        let mut complete = true;
        match res {
            Ok(rs) => {
                for (k, r) in rs.into_iter().enumerate() {
                    if let Err(st) = r {
                        complete = false;
                        if matches!(
                            st,
                            IoStatus::Failed(_) | IoStatus::Removed | IoStatus::Aborted
                        ) {
                            s.fault(targets[k], "superblock write failed");
                        }
                    }
                }
            }
            Err(e) => {
                s.writer.store(false, Ordering::Release);
                return Err(e);
            }
        }
        if complete {
            s.durable_gen.fetch_max(gen, Ordering::AcqRel);
        }
        s.writer.store(false, Ordering::Release);
        if !complete {
            if Instant::now() > until {
                return Err(bad("the membership could not be written".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
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
    {
        let _m = s.membership.lock().unwrap();
        if s.children[i].state() != from {
            return Err(bad(format!(
                "{} became {:?} during its rebuild",
                s.children[i].name,
                s.children[i].state()
            )));
        }
        s.children[i].set(to);
        s.want_gen.fetch_add(1, Ordering::AcqRel);
    }
    persist(rt, s)?;
    if s.children[i].state() != to {
        return Err(bad(format!(
            "{} failed during its rebuild",
            s.children[i].name
        )));
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
/// it (and, with `drain`, the writes they counted inside the window are done).
fn announce(rt: &RuntimeHandle, s: &Shared, drain: bool) -> Result<()> {
    let epoch = s.lock_epoch.fetch_add(1, Ordering::AcqRel) + 1;
    // An idle reactor runs its pollers (and so the acknowledgement) only when woken.
    for core in rt.cores() {
        let _ = rt.send_retry(core, || {});
    }
    let until = Instant::now() + DRAIN_TIMEOUT;
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
            return Err(bad(format!(
                "the mirror's channels did not answer in {DRAIN_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Takes window [start, end): new writes touching it wait; returns once the writes in
/// flight inside it are done.
fn lock_window(rt: &RuntimeHandle, s: &Shared, start: u64, end: u64) -> Result<()> {
    s.lock_start.store(start, Ordering::Release);
    s.lock_end.store(end, Ordering::Release);
    announce(rt, s, true)
}

/// Releases the window and waits until every channel let its blocked writes go.
fn unlock_window(rt: &RuntimeHandle, s: &Shared) -> Result<()> {
    s.lock_end.store(0, Ordering::Release);
    announce(rt, s, false)
}

/// Ends a rebuild on every path (a panic included): the window is released and the progress
/// cleared, so writes never stay blocked and a new rebuild can start.
struct RebuildGuard<'a>(&'a Shared);

impl Drop for RebuildGuard<'_> {
    fn drop(&mut self) {
        self.0.lock_end.store(0, Ordering::Release);
        self.0.lock_epoch.fetch_add(1, Ordering::AcqRel);
        *self.0.progress.lock().unwrap() = None;
    }
}

/// Rebuilds member `child` (a bdev name) of mirror `name` from its in-sync members: the
/// member must be faulted (out of the mirror); it returns when the member is in sync again,
/// or with the error that stopped the copy (the member is then faulted again). Call it off
/// the reactors; I/O to the mirror goes on meanwhile.
pub fn rebuild(rt: &RuntimeHandle, name: &str, child: &str) -> Result<()> {
    let (s, t) = reserve(name, child)?;
    run(rt, &s, t)
}

/// [`rebuild`] in a background thread: the checks and the reservation happen now (their
/// errors are returned), the copy afterwards (its outcome is logged).
pub fn start(rt: &RuntimeHandle, name: &str, child: &str) -> Result<()> {
    let (s, t) = reserve(name, child)?;
    let rt = rt.clone();
    std::thread::Builder::new()
        .name("mirror-rebuild".into())
        .spawn(move || {
            let _ = run(&rt, &s, t);
        })
        .map(|_| ())
        .map_err(|e| Error::Os {
            op: "spawning the rebuild thread",
            path: String::new(),
            source: e,
        })
}

/// Checks that `child` can be rebuilt and marks the rebuild as running.
fn reserve(name: &str, child: &str) -> Result<(Arc<Shared>, usize)> {
    if ballast_reactor::current_core().is_some() {
        return Err(Error::NotOnReactor(
            "mirror::rebuild (call it off the reactors)",
        ));
    }
    let s: Arc<Shared> = MIRRORS
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .ok_or_else(|| Error::NotFound(name.to_string()))?;
    let t = s
        .children
        .iter()
        .position(|c| c.name == child)
        .ok_or_else(|| bad(format!("{child} is not a member of mirror {name}")))?;
    let mut p = s.progress.lock().unwrap();
    if let Some(p) = p.as_ref() {
        return Err(bad(format!(
            "mirror {name} is already rebuilding {}",
            p.target
        )));
    }
    if s.children[t].state() != MemberState::Faulted {
        return Err(bad(format!(
            "{child} is {:?}: only a faulted member is rebuilt",
            s.children[t].state()
        )));
    }
    if s.children[t].desc.lock().unwrap().is_none() {
        return Err(bad(format!("{child} is gone")));
    }
    *p = Some(Progress {
        target: child.to_string(),
        blocks_done: 0,
        blocks_total: s.num_blocks,
        started: Instant::now(),
    });
    drop(p);
    Ok((s, t))
}

fn run(rt: &RuntimeHandle, s: &Shared, t: usize) -> Result<()> {
    let guard = RebuildGuard(s);
    let r = copy_all(rt, s, t);
    let child = &s.children[t].name;
    let r = match r {
        Ok(()) => {
            tracing::info!(mirror = %s.name, child = %child, "rebuild complete: member in sync");
            Ok(())
        }
        Err(e) => {
            if !s.deleted.load(Ordering::Acquire) {
                s.fault(t, "rebuild failed");
                let _ = persist(rt, s);
            }
            tracing::warn!(mirror = %s.name, child = %child, "rebuild stopped: {e}");
            Err(e)
        }
    };
    drop(guard);
    r
}

fn copy_all(rt: &RuntimeHandle, s: &Shared, t: usize) -> Result<()> {
    // Writes reach the member from here on; reads still do not.
    transition(rt, s, t, MemberState::Faulted, MemberState::Rebuilding)?;
    let bs = s.block_size as u64;
    let step = (WINDOW_BYTES / bs).max(1);
    let descs: Vec<_> = s.children.iter().map(|c| c.desc.clone()).collect();
    let mut at = 0;
    let mut logged = Instant::now();
    while at < s.num_blocks {
        let n = step.min(s.num_blocks - at);
        if s.deleted.load(Ordering::Acquire) {
            return Err(bad(format!("mirror {} was deleted", s.name)));
        }
        if s.children[t].state() != MemberState::Rebuilding {
            return Err(bad("the member failed a write during its rebuild".into()));
        }
        lock_window(rt, s, at, at + n)?;
        let offset = (s.data_offset + at) * bs;
        // From an in-sync child; a read error faults it (never the last in-sync one) and the
        // next one is tried.
        let data = loop {
            let Some(src) = (0..s.children.len())
                .find(|&i| i != t && s.children[i].state() == MemberState::InSync)
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
            match copy_io(rt, &descs, read)? {
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
        if let Err(st) = copy_io(rt, &descs, write)? {
            return Err(bad(format!("writing the member: {st:?}")));
        }
        unlock_window(rt, s)?;
        at += n;
        if let Some(p) = s.progress.lock().unwrap().as_mut() {
            p.blocks_done = at;
        }
        if logged.elapsed() > Duration::from_secs(5) {
            logged = Instant::now();
            tracing::info!(mirror = %s.name, done = at, total = s.num_blocks, "rebuilding");
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
    transition(rt, s, t, MemberState::Rebuilding, MemberState::InSync)
}
