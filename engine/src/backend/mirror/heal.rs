//! Self-healing: a faulted child whose transport came back (a remote replica's controller
//! reconnected: its node restarted, a link returned) is re-added and rebuilt by the mirror
//! itself — partially when it still holds what it held when it left.
//!
//! ```text
//!  every 500 ms: each mirror, no rebuild running, self_heal on
//!     ├─ a member whose controller is lost for good ─► faulted (even with no I/O)
//!     └─ a faulted member whose bdev's reconnect count moved since its fault (or, once, one
//!        out since before the mirror's assembly whose controller is up)
//!          └─► rebuild::start_slot (partial or full, decided by its own superblock)
//!              failed to start? tried again after 10 s, or at the next reconnect
//! ```
//!
//! A child faulted by a media error (no transport, no reconnect) is left out: bringing it
//! back is an operator's call (`bdev_raid_add_base_bdev`). The same thread sweeps each
//! mirror's write-intent bitmap every [`SWEEP_EVERY`] while all its members are in sync.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use super::{rebuild, MemberState, Shared, MIRRORS};

/// How often the healer looks.
const PERIOD: Duration = Duration::from_millis(500);
/// How long a member whose rebuild could not start waits before the next try.
const RETRY: Duration = Duration::from_secs(10);
/// How often a mirror's bitmap is swept (a region idle this long is cleared).
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

static STARTED: Once = Once::new();

/// Starts the healer thread (once per process).
pub(crate) fn start(_rt: &ballast_reactor::RuntimeHandle) {
    STARTED.call_once(|| {
        let r = std::thread::Builder::new()
            .name("mirror-heal".into())
            .spawn(|| {
                let mut retry: HashMap<(uuid::Uuid, usize), Instant> = HashMap::new();
                let mut swept: HashMap<uuid::Uuid, Instant> = HashMap::new();
                loop {
                    std::thread::sleep(PERIOD);
                    pass(&mut retry);
                    sweep_all(&mut swept);
                }
            });
        if let Err(e) = r {
            tracing::error!("cannot start the mirror healer thread: {e}");
        }
    });
}

/// Sweeps each mirror's bitmap once per [`SWEEP_EVERY`].
fn sweep_all(swept: &mut HashMap<uuid::Uuid, Instant>) {
    let mirrors: Vec<Arc<Shared>> = MIRRORS.lock().unwrap().values().cloned().collect();
    swept.retain(|u, _| mirrors.iter().any(|s| s.uuid == *u));
    for s in mirrors {
        let last = swept.entry(s.uuid).or_insert_with(Instant::now);
        if last.elapsed() < SWEEP_EVERY
            || s.deleted.load(Ordering::Acquire)
            || s.progress.lock().unwrap().is_some()
        {
            continue;
        }
        *last = Instant::now();
        if let Err(e) = rebuild::sweep(&s.rt, &s) {
            tracing::debug!(mirror = %s.name, "bitmap sweep: {e}");
        }
    }
}

/// Sweeps mirror `name`'s write-intent bitmap now (as the healer does every
/// [`SWEEP_EVERY`]); returns the regions cleared. Call it off the reactors.
pub fn sweep(name: &str) -> crate::error::Result<u64> {
    let s = super::lookup(name)?;
    rebuild::sweep(&s.rt, &s)
}

/// One look at every mirror.
fn pass(retry: &mut HashMap<(uuid::Uuid, usize), Instant>) {
    if !rebuild::options().self_heal {
        return;
    }
    let mirrors: Vec<Arc<Shared>> = MIRRORS.lock().unwrap().values().cloned().collect();
    retry.retain(|_, at| at.elapsed() < RETRY);
    for s in mirrors {
        if s.deleted.load(Ordering::Acquire) || s.progress.lock().unwrap().is_some() {
            continue;
        }
        // A member whose transport is lost for good is out, with or without I/O to find it.
        let mut lost = false;
        for (i, c) in s.children.iter().enumerate() {
            if c.state() != MemberState::Faulted && c.transport_lost() == Some(true) {
                s.fault(i, "its controller is lost (ctrlr_loss_timeout)");
                lost = true;
            }
        }
        if lost {
            if let Err(e) = rebuild::persist(&s.rt, &s) {
                tracing::warn!(mirror = %s.name, "recording a lost child: {e}");
            }
        }
        let Some(t) = (0..s.children.len()).find(|&i| {
            let c = &s.children[i];
            c.state() == MemberState::Faulted
                && !retry.contains_key(&(s.uuid, i))
                && c.transport_lost() == Some(false)
                && (c.reconnects() > c.fault_reconnects.load(Ordering::Acquire)
                    || c.heal_once.load(Ordering::Acquire))
        }) else {
            continue;
        };
        s.children[t].heal_once.store(false, Ordering::Release);
        let c = &s.children[t];
        let name = c.name();
        match rebuild::start_slot(&s.rt, s.clone(), t) {
            Ok(kind) => {
                tracing::info!(mirror = %s.name, child = %name, kind = kind.as_str(),
                    "mirror child is reachable again: re-added, rebuilding");
            }
            Err(e) => {
                tracing::warn!(mirror = %s.name, child = %name,
                    "mirror child is reachable again but its rebuild did not start: {e}");
                retry.insert((s.uuid, t), Instant::now());
            }
        }
    }
}
