//! Power loss under logical volumes (issue 20's crash test): a storm of stamped writes and
//! flushes to thin and thick lvols, clones and snapshotted origins, while a control thread
//! creates, snapshots, clones, resizes, renames and deletes lvols. The power is cut at random
//! moments (three per round), with I/O and nearly always a control operation in flight, on the
//! lossy base of `common/lossy.rs`; the store re-opened from what reached the media must hold
//! every operation that returned and every flushed write, and pass its own checker.
//!
//! ```text
//!  storm (1-2 reactors, 32 I/O in flight)       control thread (one operation at a time)
//!  writes of 1..=40 blocks, whole clusters,      create thin | thick, snapshot, clone,
//!  write-zeroes, unmap, Flush (per lvol)         resize, rename, delete (a snapshot with one
//!        │                                       clone: merged into it)
//!        ▼                                             │
//!  lvol store, 16 | 64 KiB clusters ◄──────────────────┘
//!        │  data, and Map / Reserve / ... records: log blocks, checkpoints, superblocks
//!        ▼
//!  lossy base: volatile cache, completions out of order, a Flush covers what completed
//!  before it was submitted (FlushScope::Submitted, as NVMe promises)
//!  power cut ─► image ─► new lossy base ─► lvol::examine ─► lvol::check, every lvol read
//!                                                         back, the free clusters read back
//! ```
//!
//! After the cut:
//! - every control operation that returned Ok before the cut is there: each lvol with its
//!   name, size, thin and snapshot flags and parent, deleted ones gone, no other lvol. The
//!   operation in flight at the cut is there wholly or not at all (which one is read from the
//!   re-opened store and the model follows it);
//! - [`lvol::check`] finds nothing wrong (no cluster owned twice, free count consistent);
//! - every block of every lvol reads, byte-exact, what the model allows;
//! - every free cluster reads zeros (a thick lvol made of all of them is read back): a thin
//!   lvol's first write does not clear its new cluster, so data left in a free cluster (a
//!   first write before its Map was durable, a freed cluster whose clearing was lost) would
//!   show through another lvol later.
//!
//! The model keeps the writes in layers, as the store keeps its clusters: an lvol's layer
//! holds the writes its own clusters hold. A snapshot takes its origin's layer and the origin
//! starts an empty one over it; a clone starts empty over its snapshot; deleting a snapshot
//! merges its layer into its one clone (the clone's own writes win: they are later); a shrink
//! drops what lies beyond. A write is *committed* when it was acknowledged before a Flush of
//! its lvol that was submitted after that and completed before the cut. A block then reads a
//! write of the lvol's layer that no committed write of the layer replaced (write `r` is
//! replaced by committed `w` if `r` was acknowledged before `w` was submitted, as in
//! `power_loss.rs`); if no committed write of the layer covers the block, it may also read
//! what the parent may read there, and zeros beyond the parent's size or without one. An lvol
//! whose delete or shrink was in flight may read zeros where that cleared its clusters.
//!
//! The storm leaves an lvol alone while a control operation on it runs (it submits under the
//! round's lock, and the control thread marks the lvol under that lock before it starts), so
//! a write is in one layer for sure: the control path's freeze drains it, never races it.
//! Only lvols without a parent are shrunk: one with a parent, shrunk and grown again, shows
//! its parent's data again there (as SPDK's blobs do), a case the model does not need.
//!
//! Where ordering bugs hide: every flush makes whatever completed before it durable, so a
//! missing flush of the store shows only if the cut falls before some later flush covers it.
//! Half the rounds flush rarely (0.4% of storm operations instead of 4%) and a third of the
//! writes go to clusters not written yet (each allocates, or copies its parent's cluster).
//! Acknowledging a first write before its Map is durable fails about a third of the rounds;
//! dropping the flush after each log append, about a third; dropping the copy-on-write's
//! pre-flush (data before the Map that points at it) went unseen in 32 rounds: its window,
//! from the Map's log write to the flush right after it, with the copy still cached, is a
//! few polls long, and only an unordered cache can keep the Map without the copy.
//!
//! A last test cuts the power inside one multi-block log write, on purpose (the storm's commits
//! fit one block): an operation's records must not come back in part.
//!
//! `LVOL_POWER_LOSS_SEED=n` replays a run's random choices (the storm's and the control
//! thread's; their interleaving still varies); `LVOL_POWER_LOSS_ROUNDS=n` runs more rounds.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use ballast_engine::backend::lvol::{self, ClearMethod, LvolInfo, LvsOpts};
use ballast_engine::{
    bdev, BdevIo, Error, IoBuf, IoCallback, IoChannel, IoSink, IoStatus, IoType, SgList,
};
use ballast_reactor::{PollStatus, PollerHandle};
use common::lossy::{
    decode, delete, lossy_create, lossy_create_with, run_rounds, stamp_blocks, Cut, FlushScope,
    Got, Loss, Media, BS,
};
use common::Harness;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// The base: ~1.3 MiB of metadata, the rest clusters (~58 of 64 KiB, ~236 of 16 KiB), so
/// clusters freed by deletes and shrinks are soon taken again.
const BASE_BYTES: usize = 5 << 20;
/// I/O in flight, over all storm reactors.
const QD: usize = 32;
const MAX_NLB: u64 = 40;
/// Blocks per read of the final check.
const READ_NLB: u64 = 256;
/// Power cuts per round (snapshots of the same storm).
const CUTS: usize = 3;
/// Each power cut comes after this many storm operations (uniformly), while a control
/// operation runs (one nearly always does: they take ~30-900 storm operations)...
const CUT_AFTER: std::ops::RangeInclusive<u64> = 500..=6000;
/// ...or this many operations later.
const CUT_WAIT: u64 = 1000;
const LIMIT: Duration = Duration::from_secs(30);
/// Problems reported per failed round.
const REPORT: usize = 8;
/// Lvols (snapshots included) the control thread lets the store hold.
const MAX_LVOLS: usize = 12;
/// Lvol sizes in bytes (rounded to clusters), at creation and as resizes leave them.
const LVOL_BYTES: std::ops::RangeInclusive<u64> = (128 << 10)..=(1 << 20);

// ----------------------------------------------------------------------- the model ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Data,
    Zeros,
}

#[derive(Clone)]
struct WriteRec {
    /// The lvol it was submitted to.
    lvol: usize,
    off: u64,
    n: u64,
    fill: Fill,
    submitted: u64,
    acked: Option<u64>,
    /// Acknowledged before a flush of its lvol that was submitted after that and completed.
    committed: bool,
}

/// An lvol as the model sees it.
#[derive(Clone)]
struct MLvol {
    name: String,
    uuid: Uuid,
    /// Size in blocks.
    blocks: u64,
    thin: bool,
    snapshot: bool,
    parent: Option<usize>,
    /// The writes its own clusters hold: (write id, first block, end block).
    layer: Vec<(u32, u64, u64)>,
    /// Per cluster: written since the lvol began its layer (the storm favours the others:
    /// their first write allocates, or copies its parent's cluster).
    touched: Vec<bool>,
    alive: bool,
    /// From this block on it may read zeros (a delete or shrink in flight cleared clusters).
    zeros_from: Option<u64>,
    /// A control operation on it runs: the storm leaves it alone.
    busy: bool,
    /// Writes to it acknowledged, not yet covered by a completed flush (in that order).
    acked: VecDeque<u32>,
}

/// A control operation (lvols by index into [`Model::lvols`]).
#[derive(Debug, Clone)]
enum Ctl {
    Create {
        name: String,
        blocks: u64,
        thin: bool,
    },
    Snapshot {
        origin: usize,
        name: String,
    },
    Clone {
        snap: usize,
        name: String,
    },
    Resize {
        lvol: usize,
        blocks: u64,
    },
    Delete {
        lvol: usize,
    },
    Rename {
        lvol: usize,
        name: String,
    },
}

/// What a control operation returned: the UUID of the lvol it made, if it makes one.
type Returned = Result<Option<Uuid>, String>;

impl Ctl {
    /// The existing lvol it works on.
    fn target(&self) -> Option<usize> {
        match *self {
            Ctl::Create { .. } => None,
            Ctl::Snapshot { origin: l, .. }
            | Ctl::Clone { snap: l, .. }
            | Ctl::Resize { lvol: l, .. }
            | Ctl::Delete { lvol: l }
            | Ctl::Rename { lvol: l, .. } => Some(l),
        }
    }
}

/// Writes, flushes and control operations on one clock (ticks taken under the round's lock,
/// before a submission and after a completion, so the model never claims more than happened).
#[derive(Clone)]
struct Model {
    clock: u64,
    /// Write `id` is `writes[id - 1]`.
    writes: Vec<WriteRec>,
    lvols: Vec<MLvol>,
    /// Flushes in flight: submission time → lvol.
    flushes: HashMap<u64, usize>,
    /// Blocks per cluster.
    bpc: u64,
    /// Names handed out (each new lvol gets a new one).
    names: u32,
    /// Control operations returned; writes failed with ENOSPC and control operations
    /// refused for space (a full store).
    ctl_done: usize,
    enospc: u64,
    nospace: u64,
}

/// Per lvol and block, the ids of the writes its layer holds there.
type Index = Vec<Vec<Vec<u32>>>;

impl Model {
    fn new(bpc: u64) -> Model {
        Model {
            clock: 0,
            writes: Vec::new(),
            lvols: Vec::new(),
            flushes: HashMap::new(),
            bpc,
            names: 0,
            ctl_done: 0,
            enospc: 0,
            nospace: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn name(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("{prefix}{}", self.names)
    }

    fn write_submitted(&mut self, lvol: usize, off: u64, n: u64, fill: Fill) -> u32 {
        let submitted = self.tick();
        self.writes.push(WriteRec {
            lvol,
            off,
            n,
            fill,
            submitted,
            acked: None,
            committed: false,
        });
        let id = self.writes.len() as u32;
        let l = &mut self.lvols[lvol];
        l.layer.push((id, off, off + n));
        for c in off / self.bpc..(off + n).div_ceil(self.bpc) {
            l.touched[c as usize] = true;
        }
        id
    }

    fn write_acked(&mut self, id: u32) {
        let t = self.tick();
        let w = &mut self.writes[id as usize - 1];
        w.acked = Some(t);
        let l = w.lvol;
        self.lvols[l].acked.push_back(id);
    }

    fn flush_submitted(&mut self, lvol: usize) -> u64 {
        let t = self.tick();
        self.flushes.insert(t, lvol);
        t
    }

    /// The flush submitted at `submitted` completed: the writes to its lvol acknowledged
    /// before it are committed.
    fn flush_done(&mut self, submitted: u64) {
        self.tick();
        let Some(l) = self.flushes.remove(&submitted) else {
            return;
        };
        while let Some(&id) = self.lvols[l].acked.front() {
            let w = &mut self.writes[id as usize - 1];
            if w.acked.is_some_and(|a| a > submitted) {
                break;
            }
            w.committed = true;
            self.lvols[l].acked.pop_front();
        }
    }

    fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.lvols.len()).filter(|&i| self.lvols[i].alive)
    }

    fn clones_of(&self, l: usize) -> Vec<usize> {
        self.alive()
            .filter(|&i| self.lvols[i].parent == Some(l))
            .collect()
    }

    /// The lvols `op` freezes (the storm leaves them alone while it runs).
    fn involved(&self, op: &Ctl) -> Vec<usize> {
        match *op {
            Ctl::Snapshot { origin, .. } => vec![origin],
            Ctl::Resize { lvol, blocks } if blocks < self.lvols[lvol].blocks => vec![lvol],
            Ctl::Delete { lvol } => {
                let mut v = vec![lvol];
                v.extend(self.clones_of(lvol));
                v
            }
            _ => Vec::new(),
        }
    }

    fn push(&mut self, name: &str, uuid: Uuid, blocks: u64, thin: bool, parent: Option<usize>) {
        self.lvols.push(MLvol {
            name: name.to_string(),
            uuid,
            blocks,
            thin,
            snapshot: false,
            parent,
            layer: Vec::new(),
            touched: vec![false; (blocks / self.bpc) as usize],
            alive: true,
            zeros_from: None,
            busy: false,
            acked: VecDeque::new(),
        });
    }

    /// What `op` did (`uuid`: the lvol it made, if it makes one).
    fn apply(&mut self, op: &Ctl, uuid: Option<Uuid>) {
        let uuid = uuid.unwrap_or_default();
        match op {
            Ctl::Create { name, blocks, thin } => self.push(name, uuid, *blocks, *thin, None),
            Ctl::Snapshot { origin, name } => {
                let s = self.lvols.len();
                let o = &mut self.lvols[*origin];
                let (blocks, thin, parent) = (o.blocks, o.thin, o.parent);
                let layer = std::mem::take(&mut o.layer);
                o.touched.fill(false);
                o.thin = true;
                o.parent = Some(s);
                self.push(name, uuid, blocks, thin, parent);
                let s = self.lvols.last_mut().expect("just pushed");
                s.snapshot = true;
                s.layer = layer;
            }
            Ctl::Clone { snap, name } => {
                let blocks = self.lvols[*snap].blocks;
                self.push(name, uuid, blocks, true, Some(*snap));
            }
            Ctl::Resize { lvol, blocks } => {
                let l = &mut self.lvols[*lvol];
                l.blocks = *blocks;
                l.touched.resize((*blocks / self.bpc) as usize, false);
                l.layer.retain_mut(|e| {
                    e.2 = e.2.min(*blocks);
                    e.1 < e.2
                });
            }
            Ctl::Delete { lvol } => {
                let clones = self.clones_of(*lvol);
                let l = &mut self.lvols[*lvol];
                l.alive = false;
                let (layer, parent) = (std::mem::take(&mut l.layer), l.parent);
                if let Some(&c) = clones.first() {
                    // Merged: the clone takes what it does not hold itself, within its size.
                    let c = &mut self.lvols[c];
                    for (id, a, b) in layer {
                        let b = b.min(c.blocks);
                        if a < b {
                            c.layer.push((id, a, b));
                        }
                    }
                    c.parent = parent;
                }
            }
            Ctl::Rename { lvol, name } => self.lvols[*lvol].name = name.clone(),
        }
    }

    /// `op` for reports.
    fn show(&self, op: &Ctl) -> String {
        let n = |l: usize| self.lvols[l].name.as_str();
        match op {
            Ctl::Create { name, blocks, thin } => format!(
                "create {} {name} ({} clusters)",
                if *thin { "thin" } else { "thick" },
                blocks / self.bpc
            ),
            Ctl::Snapshot { origin, name } => format!("snapshot {} as {name}", n(*origin)),
            Ctl::Clone { snap, name } => format!("clone {} as {name}", n(*snap)),
            Ctl::Resize { lvol, blocks } => format!(
                "resize {} from {} to {} clusters",
                n(*lvol),
                self.lvols[*lvol].blocks / self.bpc,
                blocks / self.bpc
            ),
            Ctl::Delete { lvol } => format!(
                "delete {}{}",
                n(*lvol),
                match self.clones_of(*lvol).first() {
                    Some(&c) => format!(" (merged into {})", n(c)),
                    None => String::new(),
                }
            ),
            Ctl::Rename { lvol, name } => format!("rename {} to {name}", n(*lvol)),
        }
    }

    /// A control operation the store should accept now, if one fits.
    fn pick(&mut self, rng: &mut SmallRng) -> Option<Ctl> {
        let live: Vec<usize> = self.alive().collect();
        let writable: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&l| !self.lvols[l].snapshot)
            .collect();
        let snaps: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&l| self.lvols[l].snapshot)
            .collect();
        let room = live.len() < MAX_LVOLS;
        let cl = self.bpc * BS as u64;
        let (lo, hi) = (LVOL_BYTES.start() / cl, LVOL_BYTES.end() / cl);
        let any = |rng: &mut SmallRng, v: &[usize]| v[rng.gen_range(0..v.len())];
        for _ in 0..8 {
            let op = match rng.gen_range(0..16) {
                0..=2 if room => Ctl::Create {
                    name: self.name("v"),
                    blocks: rng.gen_range(lo..=hi) * self.bpc,
                    thin: rng.gen_bool(0.6),
                },
                3..=5 if room && !writable.is_empty() => Ctl::Snapshot {
                    origin: any(rng, &writable),
                    name: self.name("s"),
                },
                6..=7 if room && !snaps.is_empty() => Ctl::Clone {
                    snap: any(rng, &snaps),
                    name: self.name("c"),
                },
                8..=10 if !writable.is_empty() => {
                    let l = any(rng, &writable);
                    let cur = self.lvols[l].blocks / self.bpc;
                    let clusters = if self.lvols[l].parent.is_none() && rng.gen_bool(0.5) {
                        rng.gen_range(1..=cur)
                    } else {
                        (cur + rng.gen_range(1..=4)).min(hi)
                    };
                    if clusters == cur {
                        continue;
                    }
                    Ctl::Resize {
                        lvol: l,
                        blocks: clusters * self.bpc,
                    }
                }
                11..=13 if live.len() > 2 => {
                    let ok: Vec<usize> = live
                        .iter()
                        .copied()
                        .filter(|&l| self.clones_of(l).len() <= 1)
                        .collect();
                    if ok.is_empty() {
                        continue;
                    }
                    Ctl::Delete {
                        lvol: any(rng, &ok),
                    }
                }
                14..=15 if !live.is_empty() => Ctl::Rename {
                    lvol: any(rng, &live),
                    name: self.name("r"),
                },
                _ => continue,
            };
            return Some(op);
        }
        None
    }

    /// Runs `op` on store `lvs` (`target`: the UUID of the lvol it works on); returns the
    /// UUID of the lvol it made, if it makes one.
    fn run(op: &Ctl, target: &str, lvs: &str) -> ballast_engine::Result<Option<Uuid>> {
        let bytes = |blocks: u64| blocks * BS as u64;
        match op {
            Ctl::Create { name, blocks, thin } => lvol::create_lvol(
                None,
                Some(lvs),
                name,
                bytes(*blocks),
                *thin,
                ClearMethod::Unmap,
            )
            .map(|i| Some(i.uuid)),
            Ctl::Snapshot { name, .. } => lvol::snapshot(target, name).map(|i| Some(i.uuid)),
            Ctl::Clone { name, .. } => lvol::clone(target, name).map(|i| Some(i.uuid)),
            Ctl::Resize { blocks, .. } => lvol::resize(target, bytes(*blocks)).map(|_| None),
            Ctl::Delete { .. } => lvol::delete_lvol(target).map(|_| None),
            Ctl::Rename { name, .. } => lvol::rename(target, name).map(|_| None),
        }
    }

    /// The in-flight operation `op` (which returned `res`, after the cut): what the
    /// re-opened store (`infos`) shows of it, applied to the model. Returns the outcome for
    /// the report, or what is wrong.
    fn settle(
        &mut self,
        op: &Ctl,
        res: &Returned,
        infos: &[LvolInfo],
    ) -> Result<&'static str, String> {
        let made = |name: &str| {
            infos.iter().find(|i| {
                res.as_ref().is_ok_and(|u| *u == Some(i.uuid))
                    || (i.name == name && !self.lvols.iter().any(|l| l.uuid == i.uuid))
            })
        };
        let info = |l: usize| infos.iter().find(|i| i.uuid == self.lvols[l].uuid);
        let done = match op {
            Ctl::Create { name, .. } | Ctl::Snapshot { name, .. } | Ctl::Clone { name, .. } => {
                match made(name) {
                    Some(i) => {
                        let uuid = i.uuid;
                        if let Err(e) = res {
                            return Err(format!("it failed ({e}) yet {name} is there"));
                        }
                        self.apply(op, Some(uuid));
                        true
                    }
                    None => false,
                }
            }
            Ctl::Resize { lvol, blocks } => {
                let old = self.lvols[*lvol].blocks;
                match info(*lvol).map(|i| i.size_bytes / BS as u64) {
                    Some(s) if s == *blocks => {
                        self.apply(op, None);
                        true
                    }
                    _ => {
                        if *blocks < old {
                            self.lvols[*lvol].zeros_from = Some(*blocks);
                        }
                        false
                    }
                }
            }
            Ctl::Delete { lvol } => match info(*lvol) {
                None => {
                    self.apply(op, None);
                    true
                }
                Some(_) => {
                    self.lvols[*lvol].zeros_from = Some(0);
                    false
                }
            },
            Ctl::Rename { lvol, name } => match info(*lvol) {
                Some(i) if i.name == *name => {
                    self.apply(op, None);
                    true
                }
                _ => false,
            },
        };
        Ok(if done { "done" } else { "not done" })
    }

    /// What the re-opened store (`infos`) lacks or has too much, against the model.
    fn compare(&self, infos: &[LvolInfo]) -> Vec<String> {
        let mut problems = Vec::new();
        for l in self.alive() {
            let m = &self.lvols[l];
            let Some(i) = infos.iter().find(|i| i.uuid == m.uuid) else {
                problems.push(format!("lvol {} ({}) is gone", m.name, m.uuid));
                continue;
            };
            let parent = m.parent.map(|p| self.lvols[p].name.clone());
            let want = (
                m.name.as_str(),
                m.blocks * BS as u64,
                m.thin,
                m.snapshot,
                parent.as_deref(),
            );
            let got = (
                i.name.as_str(),
                i.size_bytes,
                i.thin,
                i.is_snapshot,
                i.base_snapshot.as_deref(),
            );
            if want != got {
                problems.push(format!(
                    "lvol {} ({}): (name, size, thin, snapshot, parent) is {got:?}, want \
                     {want:?}",
                    m.name, m.uuid
                ));
            }
        }
        for i in infos {
            match self.lvols.iter().find(|l| l.uuid == i.uuid) {
                Some(l) if l.alive => {}
                Some(l) => problems.push(format!(
                    "lvol {} ({}) is back: it was deleted before the cut",
                    l.name, i.uuid
                )),
                None => problems.push(format!(
                    "lvol {} ({}) is there: it was never created",
                    i.name, i.uuid
                )),
            }
        }
        problems
    }

    fn index(&self) -> Index {
        self.lvols
            .iter()
            .map(|l| {
                let mut v = vec![Vec::new(); if l.alive { l.blocks as usize } else { 0 }];
                if l.alive {
                    for &(id, a, b) in &l.layer {
                        for blk in &mut v[a as usize..b as usize] {
                            blk.push(id);
                        }
                    }
                }
                v
            })
            .collect()
    }

    /// The submission time of the committed write among `ids` submitted last (0: none).
    fn since(&self, ids: &[u32]) -> u64 {
        ids.iter()
            .map(|&id| &self.writes[id as usize - 1])
            .filter(|w| w.committed)
            .map(|w| w.submitted)
            .max()
            .unwrap_or(0)
    }

    /// Whether lvol `l`'s block `b` may read `got` (see the module doc).
    fn allows(&self, ix: &Index, l: usize, b: u64, got: Got) -> bool {
        let mut cur = Some(l);
        while let Some(c) = cur {
            let lv = &self.lvols[c];
            if b >= lv.blocks {
                break;
            }
            if got == Got::Zeros && lv.zeros_from.is_some_and(|z| b >= z) {
                return true;
            }
            let ids = &ix[c][b as usize];
            let since = self.since(ids);
            let fits = |id: u32| {
                let w = &self.writes[id as usize - 1];
                let replaced = w.acked.is_some_and(|a| a < since);
                !replaced
                    && match got {
                        Got::Write(x) => x == id && w.fill == Fill::Data,
                        Got::Zeros => w.fill == Fill::Zeros,
                        Got::Garbage => false,
                    }
            };
            if ids.iter().any(|&id| fits(id)) {
                return true;
            }
            if since > 0 {
                return false;
            }
            cur = lv.parent;
        }
        got == Got::Zeros
    }

    fn describe(&self, id: u32) -> String {
        let w = &self.writes[id as usize - 1];
        format!(
            "#{id} ({:?} to {} blocks {}..{}, submitted t{}, acked {}{})",
            w.fill,
            self.lvols[w.lvol].name,
            w.off,
            w.off + w.n,
            w.submitted,
            w.acked.map_or("never".into(), |t| format!("t{t}")),
            if w.committed { ", committed" } else { "" }
        )
    }

    /// Why lvol `l`'s block `b` may not read `got`: what each layer down its chain holds.
    fn explain(&self, ix: &Index, l: usize, b: u64, got: Got) -> String {
        let read = match got {
            Got::Write(id) if id as usize <= self.writes.len() => self.describe(id),
            other => format!("{other:?}"),
        };
        let mut layers = Vec::new();
        let mut cur = Some(l);
        while let Some(c) = cur {
            let lv = &self.lvols[c];
            if b >= lv.blocks {
                layers.push(format!("{}: beyond its size", lv.name));
                break;
            }
            let ids = &ix[c][b as usize];
            let shown: Vec<String> = ids
                .iter()
                .rev()
                .take(4)
                .map(|&i| self.describe(i))
                .collect();
            layers.push(format!(
                "{}: {}{}",
                lv.name,
                if ids.is_empty() {
                    "nothing".to_string()
                } else {
                    shown.join(", ")
                },
                if ids.len() > 4 { ", ..." } else { "" }
            ));
            if self.since(ids) > 0 {
                break;
            }
            cur = lv.parent;
        }
        format!(
            "lvol {} block {b} (cluster {}): read {read}; layers (newest write first): {}",
            self.lvols[l].name,
            b / self.bpc,
            layers.join(" | over | ")
        )
    }
}

// ----------------------------------------------------------------------- the round ----

/// One round, shared by its storm reactors and its control thread.
struct Round {
    state: Mutex<RoundState>,
    media: Arc<Mutex<Media>>,
    loss: Loss,
    /// Power cuts come after these many storm operations (ascending); the storm stops at
    /// the last one. The media keep running after the earlier ones: each cut is a snapshot
    /// of what a power loss at that moment would have left.
    cuts: Vec<u64>,
    bpc: u64,
    /// Share of storm operations that are flushes.
    flushes: f64,
}

struct RoundState {
    model: Model,
    issued: u64,
    stopped: bool,
    /// The control operation running.
    running: Option<Ctl>,
    cuts: Vec<PowerCut>,
    errors: Vec<String>,
}

/// What a power cut left: the media, the model then, and the control operation in flight
/// then with what it returned (later).
struct PowerCut {
    cut: Cut,
    model: Model,
    in_flight: Option<(Ctl, Option<Returned>)>,
}

/// Tag bit of a flush (the low bits hold its submission time).
const FLUSH_TAG: u64 = 1 << 63;

/// A reactor's share of the storm: keeps its I/O in flight until the power cut, then drains.
struct Storm {
    round: Arc<Round>,
    /// Its channels, by lvol (opened on first use; those of deleted lvols stay to the end).
    chans: RefCell<HashMap<usize, (bdev::BdevDesc, IoChannel)>>,
    qd: usize,
    rng: RefCell<SmallRng>,
    in_flight: Cell<usize>,
    stopped: Cell<bool>,
    me: Cell<Option<PollerHandle>>,
    done: mpsc::Sender<()>,
}

enum Issued {
    One,
    /// No lvol to write to now.
    Idle,
    /// The power was cut.
    Stopped,
}

impl IoSink for Storm {
    fn io_done(&self, io: BdevIo) {
        self.in_flight.set(self.in_flight.get() - 1);
        let mut st = self.round.state.lock().unwrap();
        if st.stopped {
            // After the power cut: nothing of it counts.
            return;
        }
        if io.status == IoStatus::Failed(libc::ENOSPC) && io.op != IoType::Flush {
            // A full store fails the write (never acknowledged, so never committed).
            st.model.enospc += 1;
        } else if !io.status.is_ok() {
            st.errors.push(format!(
                "{:?} of {} blocks at {} failed: {:?}",
                io.op, io.num_blocks, io.offset_blocks, io.status
            ));
        } else if io.tag & FLUSH_TAG != 0 {
            st.model.flush_done(io.tag & !FLUSH_TAG);
        } else {
            st.model.write_acked(io.tag as u32);
        }
    }
}

impl Storm {
    fn tick(self: &Rc<Self>) -> PollStatus {
        while !self.stopped.get() && self.in_flight.get() < self.qd {
            match self.issue() {
                Issued::One => {}
                Issued::Idle => break,
                Issued::Stopped => self.stopped.set(true),
            }
        }
        if self.stopped.get() && self.in_flight.get() == 0 {
            if let Some(h) = self.me.take() {
                ballast_reactor::unregister_poller(h);
                let _ = self.done.send(());
            }
        }
        PollStatus::Busy
    }

    fn channel(&self, l: usize, uuid: Uuid) -> ballast_engine::Result<IoChannel> {
        let mut chans = self.chans.borrow_mut();
        if let Some((_, ch)) = chans.get(&l) {
            return Ok(ch.clone());
        }
        let desc = bdev::open(&uuid.to_string(), None)?;
        let ch = desc.channel()?;
        chans.insert(l, (desc, ch.clone()));
        Ok(ch)
    }

    /// Issues one operation to a random writable lvol that no control operation holds.
    fn issue(self: &Rc<Self>) -> Issued {
        let mut rng = self.rng.borrow_mut();
        let mut st = self.round.state.lock().unwrap();
        if st.stopped {
            return Issued::Stopped;
        }
        let r = &self.round;
        let at = r.cuts[st.cuts.len()];
        if st.issued >= at && (st.running.is_some() || st.issued >= at + CUT_WAIT) {
            // Under the round's lock: every completion the model has seen happened before.
            let cut =
                r.media
                    .lock()
                    .unwrap()
                    .power_cut(r.loss, &mut rng, st.issued, st.model.clock);
            let pc = PowerCut {
                cut,
                model: st.model.clone(),
                in_flight: st.running.clone().map(|op| (op, None)),
            };
            st.cuts.push(pc);
            if st.cuts.len() == r.cuts.len() {
                st.stopped = true;
                return Issued::Stopped;
            }
        }
        st.issued += 1;
        let targets: Vec<usize> = st
            .model
            .alive()
            .filter(|&l| !st.model.lvols[l].snapshot && !st.model.lvols[l].busy)
            .collect();
        if targets.is_empty() {
            return Issued::Idle;
        }
        let l = targets[rng.gen_range(0..targets.len())];
        let (uuid, blocks) = (st.model.lvols[l].uuid, st.model.lvols[l].blocks);
        let ch = match self.channel(l, uuid) {
            Ok(ch) => ch,
            Err(e) => {
                let name = st.model.lvols[l].name.clone();
                st.errors.push(format!("lvol {name}: no channel: {e}"));
                return Issued::Idle;
            }
        };
        let sink: Rc<dyn IoSink> = self.clone();
        let io = if rng.gen_bool(r.flushes) {
            let t = st.model.flush_submitted(l);
            BdevIo::new(
                IoType::Flush,
                0,
                0,
                SgList::new(),
                FLUSH_TAG | t,
                IoCallback::Sink(sink),
            )
        } else {
            let bpc = r.bpc;
            let fresh: Vec<u64> = (0..blocks / bpc)
                .filter(|&c| !st.model.lvols[l].touched[c as usize])
                .collect();
            let x: f64 = rng.gen();
            let (off, n) = if x < 0.12 {
                // A whole cluster (a copy-on-write without a read of the parent's).
                (rng.gen_range(0..blocks / bpc) * bpc, bpc)
            } else if !fresh.is_empty() && rng.gen_bool(0.3) {
                // Into a cluster not written yet: it is allocated, or copied, now.
                let c = fresh[rng.gen_range(0..fresh.len())];
                let n = rng.gen_range(1..=MAX_NLB.min(bpc));
                (c * bpc + rng.gen_range(0..=bpc - n), n)
            } else {
                let n = rng.gen_range(1..=MAX_NLB.min(blocks));
                (rng.gen_range(0..=blocks - n), n)
            };
            let (op, fill) = match x {
                x if x < 0.02 => (IoType::WriteZeroes, Fill::Zeros),
                x if x < 0.04 => (IoType::Unmap, Fill::Zeros),
                _ => (IoType::Write, Fill::Data),
            };
            let id = st.model.write_submitted(l, off, n, fill);
            let mut bufs = SgList::new();
            if op == IoType::Write {
                let mut b = IoBuf::heap(n as usize * BS);
                stamp_blocks(&mut b, off, id, false);
                bufs.push(b);
            }
            BdevIo::new(op, off, n, bufs, id as u64, IoCallback::Sink(sink))
        };
        // Still under the round's lock: a control operation that starts after this finds
        // the I/O in flight (and drains it), never a write the model has not seen.
        ch.submit(io);
        self.in_flight.set(self.in_flight.get() + 1);
        Issued::One
    }
}

/// Starts a storm share on `core`; it reports on `done` once drained after the cut.
fn start_storm(
    h: &Harness,
    core: usize,
    round: Arc<Round>,
    qd: usize,
    seed: u64,
    done: mpsc::Sender<()>,
) {
    h.rt.send(core, move || {
        let s = Rc::new(Storm {
            round,
            chans: RefCell::default(),
            qd,
            rng: RefCell::new(SmallRng::seed_from_u64(seed)),
            in_flight: Cell::new(0),
            stopped: Cell::new(false),
            me: Cell::new(None),
            done,
        });
        let s2 = s.clone();
        let h =
            ballast_reactor::register_poller("lvol_power_loss_storm", move || s2.tick()).unwrap();
        s.me.set(Some(h));
    })
    .unwrap();
}

/// The control thread: one operation after another until the last power cut (the one
/// running at a cut finishes, and what it returned is kept for the check).
fn control(round: Arc<Round>, lvs: String, seed: u64, done: mpsc::Sender<()>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    loop {
        let (op, target, held) = {
            let mut st = round.state.lock().unwrap();
            if st.stopped {
                break;
            }
            let Some(op) = st.model.pick(&mut rng) else {
                drop(st);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let held = st.model.involved(&op);
            for &l in &held {
                st.model.lvols[l].busy = true;
            }
            let target = op
                .target()
                .map(|l| st.model.lvols[l].uuid.to_string())
                .unwrap_or_default();
            st.model.tick();
            st.running = Some(op.clone());
            (op, target, held)
        };
        let res = Model::run(&op, &target, &lvs);
        let mut st = round.state.lock().unwrap();
        for &l in &held {
            st.model.lvols[l].busy = false;
        }
        st.running = None;
        let returned = res.as_ref().map(|u| *u).map_err(|e| e.to_string());
        for pc in &mut st.cuts {
            if let Some((_, r @ None)) = &mut pc.in_flight {
                *r = Some(returned.clone());
            }
        }
        if st.stopped {
            break;
        }
        st.model.tick();
        st.model.ctl_done += 1;
        match res {
            Ok(uuid) => st.model.apply(&op, uuid),
            Err(Error::NoSpace(_)) => st.model.nospace += 1,
            Err(e) => {
                let what = st.model.show(&op);
                st.errors.push(format!("{what}: {e}"));
            }
        }
    }
    let _ = done.send(());
}

struct Params {
    loss: Loss,
    seed: u64,
    /// Cluster size in bytes.
    cluster: u64,
    storm_reactors: usize,
    /// Share of storm operations that are flushes.
    flushes: f64,
    /// Unique prefix of the round's bdev and store names.
    tag: String,
}

/// Re-opens the store from the image power cut `pc` left and checks it against the model;
/// returns the problems.
fn verify(h: &Harness, p: &Params, lvs: &str, pc: PowerCut) -> Vec<String> {
    let PowerCut {
        cut,
        mut model,
        in_flight,
    } = pc;
    let base = format!("{}_img", p.tag);
    lossy_create(&base, cut.image, p.seed);
    let rt = h.rt.handle();
    let mut problems = Vec::new();
    let opened = lvol::examine(&rt, &base);
    let report = lvol::check(&rt, &base);
    match &report {
        Ok(rep) => problems.extend(rep.errors.iter().map(|e| format!("check: {e}"))),
        Err(e) => problems.push(format!("check: {e}")),
    }
    let mut outcome = "nothing in flight".to_string();
    match opened {
        Ok(true) => {
            let m = &mut model;
            let infos = lvol::get_lvols(None, Some(lvs)).unwrap_or_default();
            if let Some((op, res)) = &in_flight {
                let what = m.show(op);
                let res = res.clone().unwrap_or(Err("did not return".into()));
                match m.settle(op, &res, &infos) {
                    Ok(o) => outcome = format!("{what} in flight: {o}"),
                    Err(e) => {
                        outcome = format!("{what} in flight");
                        problems.push(format!("{what} (in flight): {e}"));
                    }
                }
            }
            problems.extend(m.compare(&infos));
            problems.extend(read_back(h, m));
            problems.extend(free_reads_zeros(h, m, lvs));
            h.close_channels();
            if let Err(e) = lvol::unload_lvstore(None, Some(lvs)) {
                problems.push(format!("unload after the check: {e}"));
            }
        }
        Ok(false) => problems.push("examine found no store".into()),
        Err(e) => problems.push(format!("examine: {e}")),
    }
    delete(&base);
    let m = &model;
    let committed = m.writes.iter().filter(|w| w.committed).count();
    let summary = format!(
        "power cut at storm op {} ({} of {} cached writes kept; {} writes, {committed} \
         committed, {} failed for space; {} control operations returned, {} refused for \
         space; {outcome})",
        cut.issued,
        cut.kept,
        cut.cached,
        m.writes.len(),
        m.enospc,
        m.ctl_done,
        m.nospace,
    );
    eprintln!("  {summary}");
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(REPORT);
        problems.insert(0, format!("{n} problems after a {summary}"));
    }
    problems
}

/// Reads every lvol the model holds and checks each block.
fn read_back(h: &Harness, m: &Model) -> Vec<String> {
    let ix = m.index();
    let core = h.rt.cores()[0];
    let mut problems = Vec::new();
    for l in m.alive() {
        let lv = &m.lvols[l];
        let name = lv.uuid.to_string();
        if bdev::lookup(&name).is_none_or(|b| b.num_blocks() != lv.blocks) {
            // Missing or of another size: reported with the metadata.
            continue;
        }
        for off in (0..lv.blocks).step_by(READ_NLB as usize) {
            let n = READ_NLB.min(lv.blocks - off);
            let (st, got) = h.io(
                core,
                &name,
                IoType::Read,
                off,
                n,
                None,
                n as usize * BS,
                None,
            );
            if st != IoStatus::Success {
                problems.push(format!("lvol {}: read of {n} at {off}: {st:?}", lv.name));
                continue;
            }
            for (i, blk) in got.chunks(BS).enumerate() {
                let b = off + i as u64;
                let g = decode(blk, b);
                if !m.allows(&ix, l, b, g) {
                    problems.push(m.explain(&ix, l, b, g));
                }
            }
        }
    }
    problems
}

/// Takes every free cluster into a new thick lvol and reads it: free clusters must hold
/// zeros (a thin lvol's first write does not clear its new cluster).
fn free_reads_zeros(h: &Harness, m: &Model, lvs: &str) -> Vec<String> {
    let free = match lvol::get_lvstores(None, Some(lvs)) {
        Ok(v) => v[0].free_clusters,
        Err(e) => return vec![format!("get_lvstores: {e}")],
    };
    if free == 0 {
        return Vec::new();
    }
    let cl = m.bpc * BS as u64;
    let name = match lvol::create_lvol(
        None,
        Some(lvs),
        "free",
        free * cl,
        false,
        ClearMethod::Unmap,
    ) {
        Ok(i) => i.uuid.to_string(),
        Err(e) => return vec![format!("a thick lvol of the {free} free clusters: {e}")],
    };
    let core = h.rt.cores()[0];
    let mut problems = Vec::new();
    for off in (0..free * m.bpc).step_by(m.bpc as usize) {
        let (st, got) = h.io(
            core,
            &name,
            IoType::Read,
            off,
            m.bpc,
            None,
            cl as usize,
            None,
        );
        if st != IoStatus::Success {
            problems.push(format!("free cluster {}: read: {st:?}", off / m.bpc));
            continue;
        }
        if let Some(i) = got.chunks(BS).position(|b| b.iter().any(|&x| x != 0)) {
            // Stamped blocks name their block and write (see common/lossy.rs).
            let b = &got[i * BS..(i + 1) * BS];
            let id = u32::from_le_bytes(b[8..12].try_into().unwrap());
            let blk = u64::from_le_bytes(b[..8].try_into().unwrap());
            let what = if (1..=m.writes.len()).contains(&(id as usize)) && b[12..15] == *b"PL1" {
                format!("block {blk} of {}", m.describe(id))
            } else {
                "not a stamped block (metadata?)".to_string()
            };
            problems.push(format!(
                "a free cluster is not zeros: block {i} of the {}th free one holds {what}",
                off / m.bpc
            ));
        }
    }
    problems
}

/// One round: a store on a lossy base, four lvols, the storm and the control thread until
/// the power cut, then the store re-opened from the image and checked. Returns the problems.
fn round(h: &Harness, p: &Params) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(p.seed);
    let (base, lvs) = (format!("{}_base", p.tag), format!("{}_lvs", p.tag));
    let media = lossy_create_with(&base, vec![0; BASE_BYTES], rng.gen(), FlushScope::Submitted);
    lvol::create_lvstore(
        &h.rt.handle(),
        &LvsOpts {
            bdev_name: base.clone(),
            lvs_name: lvs.clone(),
            cluster_sz: Some(p.cluster),
            clear_method: ClearMethod::Unmap,
        },
    )
    .unwrap_or_else(|e| panic!("lvol store on {base}: {e}"));
    let bpc = p.cluster / BS as u64;
    let mut model = Model::new(bpc);
    // Two thin and two thick lvols to begin with.
    for thin in [true, false, true, false] {
        let op = Ctl::Create {
            name: model.name("v"),
            blocks: (LVOL_BYTES.start() / p.cluster * 2) * bpc,
            thin,
        };
        let uuid = Model::run(&op, "", &lvs).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        model.apply(&op, uuid);
    }
    let mut cuts: Vec<u64> = (0..CUTS).map(|_| rng.gen_range(CUT_AFTER)).collect();
    cuts.sort_unstable();
    let round = Arc::new(Round {
        state: Mutex::new(RoundState {
            model,
            issued: 0,
            stopped: false,
            running: None,
            cuts: Vec::new(),
            errors: Vec::new(),
        }),
        media,
        loss: p.loss,
        cuts,
        bpc,
        flushes: p.flushes,
    });

    let (tx, rx) = mpsc::channel();
    for &core in h.rt.cores().iter().take(p.storm_reactors) {
        let qd = QD / p.storm_reactors;
        start_storm(h, core, round.clone(), qd, rng.gen(), tx.clone());
    }
    let (r2, l2, seed, tx2) = (round.clone(), lvs.clone(), rng.gen(), tx.clone());
    std::thread::Builder::new()
        .name("lvol-control".into())
        .spawn(move || control(r2, l2, seed, tx2))
        .unwrap();
    drop(tx);
    for _ in 0..p.storm_reactors + 1 {
        rx.recv_timeout(LIMIT)
            .expect("the storm or the control thread did not finish after the power cut");
    }
    // The store as it was goes (its base keeps running without power: nothing counts).
    h.close_channels();
    let mut problems = Vec::new();
    if let Err(e) = lvol::unload_lvstore(None, Some(&lvs)) {
        problems.push(format!("unload after the storm: {e}"));
    }
    delete(&base);

    let mut st = round.state.lock().unwrap();
    problems.extend(st.errors.iter().take(REPORT).cloned());
    for pc in std::mem::take(&mut st.cuts) {
        problems.extend(verify(h, p, &lvs, pc));
    }
    problems
}

/// Runs the rounds (16 and 64 KiB clusters, one and two storm reactors); panics with every
/// failed round's problems.
fn power_loss(loss: Loss, tag: &str, rounds: u64) {
    let h = Harness::new(2);
    run_rounds("LVOL_POWER_LOSS", rounds, |i, seed| {
        let p = Params {
            loss,
            seed,
            cluster: if i % 2 == 0 { 16 << 10 } else { 64 << 10 },
            storm_reactors: 1 + (i as usize / 2) % 2,
            // Frequent flushes commit more writes; rare ones leave the store's own ordering
            // longer windows (every flush makes whatever completed before it durable).
            flushes: if (i / 4) % 2 == 0 { 0.04 } else { 0.004 },
            tag: format!("lpl_{tag}_{i}"),
        };
        let what = format!(
            "{:?} loss, {} KiB clusters, {} storm reactor(s), {}% flushes",
            p.loss,
            p.cluster >> 10,
            p.storm_reactors,
            p.flushes * 100.0
        );
        eprintln!("round {i}: {what}, seed {seed}");
        (what, round(&h, &p))
    });
}

/// A cache that persists a prefix of its writes in completion order.
#[test]
fn lvol_power_loss_with_ordered_cache_keeps_metadata_and_flushed_writes() {
    power_loss(Loss::Ordered, "ord", 8);
}

/// A cache that persists any subset of its writes (as NVMe allows): the store must order by
/// durability (flushes), not by completion.
#[test]
fn lvol_power_loss_with_unordered_cache_keeps_metadata_and_flushed_writes() {
    power_loss(Loss::Unordered, "unord", 8);
}

/// A thick create whose records fill more than one 4 KiB log block (a Create and 250 Map
/// records of single-cluster runs on a fragmented store), with the power cut after the first
/// block of that log write reached the media and before the second did (the write is one
/// 8 KiB I/O; neither an NVMe write of several blocks nor a volatile cache keeps it whole).
/// The create never returned, so the store may hold the lvol wholly or not at all. Found
/// replay applying a commit's log blocks one by one: the store came back with a "thick" lvol
/// owning 191 of its 250 clusters, and its checker said so; a commit is now applied only
/// whole.
#[test]
fn lvol_power_loss_inside_a_multi_block_log_write() {
    let h = Harness::new(2);
    let (base, lvs) = ("lpl_torn_base", "lpl_torn_lvs");
    let cl = 16u64 << 10;
    let bpc = cl / BS as u64;
    let media = lossy_create(base, vec![0; 16 << 20], 1);
    lvol::create_lvstore(
        &h.rt.handle(),
        &LvsOpts {
            bdev_name: base.into(),
            lvs_name: lvs.into(),
            cluster_sz: Some(cl),
            clear_method: ClearMethod::Unmap,
        },
    )
    .unwrap();
    // Two thin lvols take the clusters in turn; deleting one leaves every other one free.
    let mk = |name: &str, thin: bool, clusters: u64| {
        lvol::create_lvol(
            None,
            Some(lvs),
            name,
            clusters * cl,
            thin,
            ClearMethod::Unmap,
        )
        .unwrap()
        .uuid
        .to_string()
    };
    let (x, y) = (mk("x", true, 300), mk("y", true, 300));
    for c in 0..250 {
        for v in [&x, &y] {
            let (st, _) = h.io(0, v, IoType::Write, c * bpc, 1, Some(vec![1; BS]), 0, None);
            assert_eq!(st, IoStatus::Success);
        }
    }
    h.close_channels();
    lvol::delete_lvol(&y).unwrap();
    mk("thick", false, 250);
    lvol::unload_lvstore(None, Some(lvs)).unwrap();
    delete(base);
    // The image with the create's last log block lost: log blocks are 4 KiB, in the metadata
    // area (the first 2 MiB here), and open with the magic "BLLG" and their sequence number.
    let mut image = media.lock().unwrap().durable.clone();
    let log_block = |b: &[u8]| {
        (b[..4] == 0x474c_4c42u32.to_le_bytes())
            .then(|| u64::from_le_bytes(b[4..12].try_into().unwrap()))
    };
    let last = (0..(2 << 20) / 4096)
        .filter_map(|k| log_block(&image[k * 4096..(k + 1) * 4096]).map(|s| (s, k)))
        .max()
        .expect("log blocks");
    image[last.1 * 4096..(last.1 + 1) * 4096].fill(0);
    let base = "lpl_torn_img";
    lossy_create(base, image, 2);
    let opened = lvol::examine(&h.rt.handle(), base);
    let rep = lvol::check(&h.rt.handle(), base).unwrap();
    let thick = lvol::get_lvols(None, Some(lvs))
        .unwrap_or_default()
        .into_iter()
        .find(|i| i.name == "thick");
    let _ = lvol::unload_lvstore(None, Some(lvs));
    delete(base);
    assert!(opened.is_ok(), "examine: {opened:?}");
    let thick = thick.map(|i| (i.size_bytes / cl, i.num_allocated_clusters, i.thin));
    assert!(
        rep.errors.is_empty(),
        "check: {:?}; the lvol (clusters, allocated, thin): {thick:?}",
        rep.errors
    );
    assert!(
        thick.is_none_or(|t| t == (250, 250, false)),
        "half a thick lvol (clusters, allocated, thin): {thick:?}"
    );
}
