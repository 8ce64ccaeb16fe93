//! Pausing a mirror's writes for a consistent point across its members (ballast's
//! `bdev_raid_quiesce` / `bdev_raid_unquiesce`): what a snapshot of every member needs.
//!
//! ```text
//!  quiesce(timeout) ─► writes, write-zeroes and unmaps wait on their channel (never failed;
//!                      reads and flushes go on)
//!                   ─► every channel acknowledges, counting its writes in flight
//!                   ─► those writes are done at every member (drain)
//!                   ─► every member in the mirror flushed
//!                   ─► paused: every write acknowledged before is on every in-sync member,
//!                      none submitted since is on any
//!  unquiesce, or the deadline (now + timeout) ─► the waiting writes go, in order
//! ```
//!
//! It rides on the rebuild's window lock ([`super::rebuild`]): a paused mirror's window is
//! the whole device for every write, with the same epoch, acknowledgement and drain, so a
//! rebuild going on meanwhile and the pause never miss each other's writes. The writes held
//! are the callers' own (bounded by their queue depths); nothing is failed or dropped.
//!
//! The deadline is the safety net of a caller that dies mid-snapshot: a watchdog thread ends
//! the pause by itself, and [`unquiesce`] then reports that no pause was in force, so a caller
//! that was too slow learns that its snapshots may not be consistent. Another quiesce while
//! paused renews the deadline.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_reactor::RuntimeHandle;

use super::rebuild::{announce, flush_ios, persist};
use super::{control_io, faults_child, lookup, MemberState, Shared};
use crate::bdev::IoStatus;
use crate::error::{Error, Result};

/// The deadline of a pause when the caller names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause a caller may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// A mirror's pause: until when (None: not paused), and whether its watchdog runs.
#[derive(Default)]
pub(crate) struct Pause {
    until: Option<Instant>,
    watchdog: bool,
}

/// Pauses the writes to mirror `name` (see the module doc) until [`unquiesce`] or `timeout`
/// from now, whichever comes first; returns once the writes in flight are done and every
/// member is flushed. Paused already: the deadline is renewed. If the writes in flight do not
/// finish before the deadline, or a flush fails for another reason than a broken member (a
/// broken one is faulted: it no longer counts), the pause is ended and the error returned.
pub fn quiesce(rt: &RuntimeHandle, name: &str, timeout: Duration) -> Result<()> {
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(Error::InvalidParam {
            param: "timeout_ms",
            why: format!(
                "{} ms is not from 1 to {} ms",
                timeout.as_millis(),
                MAX_TIMEOUT.as_millis()
            ),
        });
    }
    let s = lookup(name)?;
    let until = Instant::now() + timeout;
    {
        let mut p = s.pause.lock().unwrap();
        if s.deleted.load(Ordering::Acquire) {
            return Err(Error::NotFound(name.to_string()));
        }
        p.until = Some(until);
        s.quiesced.store(true, Ordering::SeqCst);
        if p.watchdog {
            s.pause_cv.notify_all();
        } else {
            let s2 = s.clone();
            std::thread::Builder::new()
                .name("mirror-quiesce".into())
                .spawn(move || watchdog(s2))
                .map_err(|e| {
                    p.until = None;
                    s.quiesced.store(false, Ordering::SeqCst);
                    Error::Os {
                        op: "spawning the quiesce watchdog",
                        path: String::new(),
                        source: e,
                    }
                })?;
            p.watchdog = true;
        }
    }
    let settled = announce(rt, &s, true, until)
        .map_err(|_| {
            Error::Busy(format!(
                "mirror {name}: the writes in flight did not finish within {} ms; \
                 the mirror was resumed",
                timeout.as_millis()
            ))
        })
        .and_then(|()| flush(rt, &s));
    if let Err(e) = settled {
        resume(&s);
        return Err(e);
    }
    if !paused(&s) {
        return Err(Error::Busy(format!(
            "mirror {name}: the pause's deadline ({} ms) passed before the members were \
             flushed; the mirror was resumed",
            timeout.as_millis()
        )));
    }
    tracing::info!(mirror = %name, timeout_ms = timeout.as_millis() as u64, "mirror quiesced");
    Ok(())
}

/// Ends the pause of mirror `name`: the writes held go. True if a pause was in force; false
/// if there was none (never paused, resumed already, or its deadline passed).
pub fn unquiesce(name: &str) -> Result<bool> {
    let s = lookup(name)?;
    let was = resume(&s);
    if was {
        tracing::info!(mirror = %name, "mirror unquiesced");
    }
    Ok(was)
}

/// How long mirror `s` stays paused unless resumed (None: not paused).
pub(crate) fn remaining(s: &Shared) -> Option<Duration> {
    let p = s.pause.lock().unwrap();
    p.until.map(|t| t.saturating_duration_since(Instant::now()))
}

fn paused(s: &Shared) -> bool {
    s.pause.lock().unwrap().until.is_some()
}

/// Ends the pause of a mirror being destroyed (its channels are gone: nobody to wake) and
/// lets its watchdog go.
pub(crate) fn end(s: &Shared) {
    lift(s, &mut s.pause.lock().unwrap());
}

/// Lifts the pause (if any) and lets every channel's held writes go.
fn resume(s: &Shared) -> bool {
    let was = lift(s, &mut s.pause.lock().unwrap());
    release(s);
    was
}

/// Ends the pause under its lock (so a quiesce coming in meanwhile is never lifted by
/// mistake): true if one was in force.
fn lift(s: &Shared, p: &mut Pause) -> bool {
    let was = p.until.take().is_some();
    s.quiesced.store(false, Ordering::SeqCst);
    s.pause_cv.notify_all();
    was
}

/// Wakes every reactor (a channel holding writes may be asleep) and waits until each channel
/// has seen the pause end; a channel that does not answer sends its writes at its next poll.
fn release(s: &Shared) {
    if let Err(e) = announce(&s.rt, s, false, Instant::now() + Duration::from_secs(5)) {
        tracing::warn!(mirror = %s.name, "resume: {e}");
    }
}

/// Ends the pause at its deadline, unless it was ended or renewed before.
fn watchdog(s: Arc<Shared>) {
    let mut p = s.pause.lock().unwrap();
    loop {
        let Some(t) = p.until else {
            p.watchdog = false;
            return;
        };
        let now = Instant::now();
        if now < t {
            p = s.pause_cv.wait_timeout(p, t - now).unwrap().0;
            continue;
        }
        lift(&s, &mut p);
        p.watchdog = false;
        drop(p);
        tracing::warn!(mirror = %s.name,
            "quiesce deadline passed without an unquiesce: the mirror resumes by itself");
        release(&s);
        return;
    }
}

/// Flushes every member still in the mirror (the writes done so far are on their media, or
/// in the remote replicas' lvols); a member whose flush fails as broken is faulted.
fn flush(rt: &RuntimeHandle, s: &Shared) -> Result<()> {
    let members: Vec<usize> = (0..s.children.len())
        .filter(|&i| s.children[i].state() != MemberState::Faulted)
        .collect();
    let ios = flush_ios(s, members.iter().copied());
    let mut faulted = false;
    for (k, r) in control_io(rt, &s.descs(), ios)?.into_iter().enumerate() {
        match r {
            Ok(_) | Err(IoStatus::NotSupported) => {}
            Err(st) if faults_child(st) => {
                s.fault(members[k], "flush failed while quiescing");
                faulted = true;
            }
            Err(st) => {
                return Err(Error::Busy(format!(
                    "mirror {}: flushing {} failed ({st:?})",
                    s.name,
                    s.children[members[k]].name()
                )))
            }
        }
    }
    if faulted {
        persist(rt, s)?;
    }
    Ok(())
}
