//! The replication stage: a mirror (RAID 1) over 2–5 children, each any bdev — local, or a
//! remote replica attached over NVMe/TCP — that keeps every acknowledged write on every
//! in-sync child, records a child's fault durably before acknowledging a write without it, and
//! brings a returning child back by copying only what it missed.
//!
//! ```text
//!  write / write-zeroes / unmap / flush ─┬─► child 0 ─┐   all done ─► metadata durable? ─► ack
//!   (its regions' bits on disk first:    ├─► child 1 ─┤   (a child's error faults it: want_gen+1,
//!    see bitmap)                         └─► child 2 ─┘    the superblock goes to every survivor)
//!  read ─► the in-sync child with the fewest outstanding I/Os ─ error? ─► fault it, next child
//!
//!  child:  [ superblock slots | write-intent bitmap | data ................................ ]
//!           0                                        META_BYTES
//!
//!  faulted ─► (re-added: by hand, or by itself when its transport reconnects — heal)
//!          ─► rebuilding: partial (the bitmap's regions) or full (a new or blank child)
//!          ─► in sync; every member in sync ─► idle regions swept from the bitmap
//!  assembly after an unclean stop ─► in-sync members made equal over the marked regions
//! ```
//!
//! Membership lives in [`superblock`]: the mirror's and each member's identity, the members'
//! states and a generation bumped by every change. A fault sets the member's state at once
//! (new I/O skips it) and asks for the next generation (`want_gen`); a channel's poller writes
//! that superblock to every remaining member, and writes that completed meanwhile wait on
//! their channel until it is on all of them (`durable_gen`). Nothing is acknowledged that the
//! superblocks would contradict after a crash. At assembly the highest generation among the
//! children decides who is in sync: a child that was faulted is never read from again.
//! The write-intent bitmap (`bitmap`) names the regions that may differ between members
//! (written while one was out, in flight, or not yet flushed); [`rebuild`] copies them (or
//! everything) under a window lock; [`heal`] re-adds a remote child whose controller is back
//! and sweeps the bitmaps.

mod bitmap;
mod channel;
mod create;
pub mod heal;
pub mod quiesce;
pub mod rebuild;
pub mod superblock;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ballast_reactor::RuntimeHandle;

use crate::backend::control::{self, CtlFail, CtlResults};
pub(crate) use crate::backend::control::{CtlIo, SharedDesc};
use crate::bdev::{BackendChannel, BdevBackend, IoStatus, IoType};
use crate::error::{Error, Result};
pub use bitmap::{MAX_REGION, MIN_REGION};
pub use create::{add_member, create, remove_member, wipe_superblock};
pub use quiesce::{quiesce, unquiesce};
pub use superblock::{Member, MemberState, Superblock, MAX_MEMBERS, META_BYTES, SLOT_BYTES};

/// Options of [`create`].
#[derive(Debug, Clone)]
pub struct MirrorOpts {
    /// The mirror bdev's name.
    pub name: String,
    /// Its children (bdev names), 2 to [`MAX_MEMBERS`].
    pub children: Vec<String>,
    /// Its UUID (random if `None`; a reassembled mirror keeps its own).
    pub uuid: Option<uuid::Uuid>,
    /// Bytes of data one write-intent bit stands for (a power of two, [`MIN_REGION`] to
    /// [`MAX_REGION`]; grown if the bitmap would not fit); [`REGION_BYTES`] if `None`. A
    /// reassembled mirror keeps its own.
    pub region_bytes: Option<u32>,
}

/// The default bytes of data one write-intent bit stands for.
pub const REGION_BYTES: u32 = 64 << 10;

/// How long a control-path I/O (superblock read or write at create) may take.
const CONTROL_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A status that says the child is broken (as opposed to busy, or a bad request): it takes
/// the child out of the mirror.
pub(crate) fn faults_child(s: IoStatus) -> bool {
    matches!(
        s,
        IoStatus::Failed(_) | IoStatus::Removed | IoStatus::Aborted
    )
}

/// A member slot as the mirror holds it.
pub(crate) struct Child {
    /// The bdev in the slot ("" for an empty slot).
    name: Mutex<String>,
    /// The member's identity (nil for an empty slot).
    uuid: Mutex<uuid::Uuid>,
    /// None once the mirror is gone, or the slot is empty.
    pub(crate) desc: SharedDesc,
    /// A [`MemberState`] code (see `state`).
    state: AtomicU8,
    /// Only a full copy brings it back (see [`Member::full`]).
    full: AtomicBool,
    /// Bumped when the slot gets another bdev: channels reopen theirs.
    pub(crate) epoch: AtomicU64,
    /// The bdev's transport reconnections when it was faulted ([`heal`] waits for more).
    pub(crate) fault_reconnects: AtomicU64,
    /// The bdev in the slot (kept beside `desc` so asking it something never waits for a
    /// channel being opened under the desc lock).
    bdev: Mutex<Option<Arc<crate::bdev::Bdev>>>,
    /// The superblock slot holding this member's newest superblock: the next goes to the other.
    pub(crate) sb_slot: AtomicU8,
    /// Faulted before this assembly and reachable over a transport: the healer tries it once
    /// without waiting for a reconnect (after a restart there is none to wait for).
    pub(crate) heal_once: AtomicBool,
}

impl Child {
    /// A slot holding `desc` (whose newest superblock is in slot `sb_slot`) as member `m`.
    fn new(name: &str, desc: SharedDesc, m: &Member, sb_slot: u8) -> Child {
        let bdev = desc.lock().unwrap().as_ref().map(|d| d.bdev().clone());
        let c = Child {
            name: Mutex::new(name.to_string()),
            uuid: Mutex::new(m.uuid),
            desc,
            state: AtomicU8::new(0),
            full: AtomicBool::new(m.full),
            epoch: AtomicU64::new(0),
            fault_reconnects: AtomicU64::new(0),
            bdev: Mutex::new(bdev),
            sb_slot: AtomicU8::new(sb_slot),
            heal_once: AtomicBool::new(false),
        };
        c.set(m.state);
        c
    }

    /// Puts `desc` (or nothing) into the slot, bdev cache included.
    pub(crate) fn set_desc(&self, desc: Option<crate::bdev::BdevDesc>) {
        *self.bdev.lock().unwrap() = desc.as_ref().map(|d| d.bdev().clone());
        *self.desc.lock().unwrap() = desc;
    }

    /// The slot the next superblock goes to.
    pub(crate) fn next_slot(&self) -> u8 {
        1 - self.sb_slot.load(Ordering::Acquire).min(1)
    }

    pub(crate) fn name(&self) -> String {
        self.name.lock().unwrap().clone()
    }

    pub(crate) fn uuid(&self) -> uuid::Uuid {
        *self.uuid.lock().unwrap()
    }

    pub(crate) fn full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    pub(crate) fn state(&self) -> MemberState {
        match self.state.load(Ordering::Acquire) {
            1 => MemberState::InSync,
            3 => MemberState::Rebuilding,
            _ => MemberState::Faulted,
        }
    }

    pub(crate) fn set(&self, s: MemberState) {
        let code = match s {
            MemberState::InSync => 1,
            MemberState::Faulted => 2,
            MemberState::Rebuilding => 3,
        };
        self.state.store(code, Ordering::Release);
    }

    /// The bdev's transport reconnections so far (0 without a bdev or a transport).
    pub(crate) fn reconnects(&self) -> u64 {
        self.bdev
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |b| b.reconnects())
    }

    /// Whether the slot's bdev has a transport and it is lost for good (`None`: no transport
    /// or no bdev).
    pub(crate) fn transport_lost(&self) -> Option<bool> {
        self.bdev.lock().unwrap().as_ref()?.transport_lost()
    }

    /// A channel to the slot's bdev on this reactor (None: no bdev, or it would not open).
    pub(crate) fn open_channel(&self) -> Option<crate::bdev::IoChannel> {
        let b = self.bdev.lock().unwrap().clone()?;
        crate::bdev::channel_for(&b).ok()
    }
}

/// The mirror's state shared by its channels on every reactor.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) uuid: uuid::Uuid,
    pub(crate) block_size: u32,
    pub(crate) num_blocks: u64,
    /// Where data starts on every child, in blocks.
    pub(crate) data_offset: u64,
    /// Bytes one bitmap bit stands for.
    pub(crate) region_bytes: u32,
    pub(crate) children: Vec<Child>,
    /// The generation the membership needs on disk (bumped by every fault).
    pub(crate) want_gen: AtomicU64,
    /// The generation written to every member still in the mirror.
    pub(crate) durable_gen: AtomicU64,
    /// The write-intent bitmap.
    pub(crate) bitmap: bitmap::Bitmap,
    /// One metadata round (superblock and bitmap chunks) at a time: held by its writer.
    pub(crate) writer: AtomicBool,
    /// Serialises membership changes with the snapshot a superblock round takes (control
    /// path only: taken on a fault and once per round, never per I/O).
    pub(crate) membership: Mutex<()>,
    /// The rebuild's window lock (see [`rebuild`]): foreground writes touching
    /// [lock_start, lock_end) wait on their channel; lock_end 0 is no lock.
    pub(crate) lock_start: AtomicU64,
    pub(crate) lock_end: AtomicU64,
    /// Bumped each time the window moves; every channel acknowledges it from its poll.
    pub(crate) lock_epoch: AtomicU64,
    /// Foreground writes that were in flight inside the window when it was taken.
    pub(crate) window_inflight: AtomicU64,
    /// Each live channel's acknowledged epoch.
    pub(crate) channel_acks: Mutex<Vec<std::sync::Weak<AtomicU64>>>,
    /// The rebuild in progress, if any.
    pub(crate) progress: Mutex<Option<rebuild::Progress>>,
    /// How the last rebuild ended.
    pub(crate) last: Mutex<Option<rebuild::Outcome>>,
    /// The mirror bdev is gone (its children are released).
    pub(crate) deleted: AtomicBool,
    /// The running rebuild is to stop (its target is being removed).
    pub(crate) cancel: AtomicBool,
    /// Writes are paused ([`quiesce`]): every write waits as if inside the rebuild window.
    pub(crate) quiesced: AtomicBool,
    /// The pause's deadline, and its watchdog's wake-up.
    pub(crate) pause: Mutex<quiesce::Pause>,
    pub(crate) pause_cv: Condvar,
    /// The reactors (for the control path: rebuilds, healing).
    pub(crate) rt: RuntimeHandle,
}

/// What a metadata round writes, taken under the membership lock.
pub(crate) struct RoundPlan {
    /// The superblock generation, if it is not durable yet.
    pub(crate) gen: Option<u64>,
    /// Each target member's superblock and the slot it goes to (empty without `gen`).
    pub(crate) superblocks: Vec<(usize, u8, Vec<u8>)>,
    /// Bitmap chunks that changed.
    pub(crate) chunks: Vec<bitmap::ChunkSnap>,
    /// Members still in the mirror that the writer reaches.
    pub(crate) targets: Vec<usize>,
}

impl Shared {
    /// Takes child `i` out of the mirror (state first, so new I/O skips it; the superblock
    /// saying so is written by the next channel poll). Idempotent.
    pub(crate) fn fault(&self, i: usize, why: &str) {
        let c = &self.children[i];
        // State and generation change together: whoever sees the child faulted also sees a
        // generation that is not durable yet, so nothing is acknowledged without it on disk.
        let _m = self.membership.lock().unwrap();
        if c.state() == MemberState::Faulted {
            return;
        }
        let Some(gen) = self.want_gen.load(Ordering::Acquire).checked_add(1) else {
            return;
        };
        c.set(MemberState::Faulted);
        c.fault_reconnects.store(c.reconnects(), Ordering::Release);
        self.want_gen.store(gen, Ordering::Release);
        let left = self.in_sync();
        tracing::warn!(mirror = %self.name, child = %c.name(), why, gen, in_sync = left,
            "mirror child faulted");
        if left == 0 {
            tracing::error!(mirror = %self.name, "mirror lost its last in-sync child: I/O fails");
        }
    }

    /// Members holding every acknowledged write.
    pub(crate) fn in_sync(&self) -> usize {
        self.children
            .iter()
            .filter(|c| c.state() == MemberState::InSync)
            .count()
    }

    /// The next metadata round for every member still in the mirror that `reachable` admits:
    /// the superblock if its generation is not durable (state and generation taken together
    /// under the membership lock: see [`Shared::fault`]) and the bitmap chunks that changed.
    pub(crate) fn plan(&self, reachable: impl Fn(usize) -> bool) -> RoundPlan {
        let _m = self.membership.lock().unwrap();
        let want = self.want_gen.load(Ordering::Acquire);
        let targets: Vec<usize> = (0..self.children.len())
            .filter(|&i| self.children[i].state() != MemberState::Faulted && reachable(i))
            .collect();
        let gen = (want > self.durable_gen.load(Ordering::Acquire)).then_some(want);
        let superblocks = match gen {
            Some(g) => targets
                .iter()
                .map(|&i| {
                    let c = &self.children[i];
                    (i, c.next_slot(), self.superblock(g, c.uuid()).encode())
                })
                .collect(),
            None => Vec::new(),
        };
        RoundPlan {
            gen,
            superblocks,
            chunks: self.bitmap.take(false),
            targets,
        }
    }

    /// A round's outcome: what it carried is durable, or is to be written again.
    pub(crate) fn round_done(&self, plan: &RoundPlan, complete: bool) {
        if complete {
            if let Some(g) = plan.gen {
                self.durable_gen.fetch_max(g, Ordering::AcqRel);
                tracing::info!(mirror = %self.name, gen = g, in_sync = self.in_sync(),
                    "mirror membership persisted");
            }
            self.bitmap.landed(&plan.chunks);
        } else {
            self.bitmap.untake(&plan.chunks);
        }
    }

    /// Control-path writes of a round: superblocks, then bitmap chunks to every target.
    pub(crate) fn round_ios(&self, plan: &RoundPlan) -> Vec<CtlIo> {
        let mut ios: Vec<CtlIo> = plan
            .superblocks
            .iter()
            .map(|(child, slot, data)| CtlIo {
                child: *child,
                op: IoType::Write,
                offset: superblock::slot_offset(*slot),
                len: SLOT_BYTES as u64,
                data: data.clone(),
            })
            .collect();
        for c in &plan.chunks {
            let data = self.bitmap.encode(c);
            for &t in &plan.targets {
                ios.push(CtlIo {
                    child: t,
                    op: IoType::Write,
                    offset: c.offset(),
                    len: bitmap::CHUNK_BYTES as u64,
                    data: data.clone(),
                });
            }
        }
        ios
    }

    /// The superblock of generation `gen` for member `child` as the states are now.
    pub(crate) fn superblock(&self, gen: u64, child: uuid::Uuid) -> Superblock {
        Superblock {
            mirror: self.uuid,
            child,
            generation: gen,
            block_size: self.block_size,
            num_blocks: self.num_blocks,
            region_bytes: self.region_bytes,
            members: self
                .children
                .iter()
                .map(|c| Member {
                    uuid: c.uuid(),
                    state: c.state(),
                    full: c.full(),
                })
                .collect(),
        }
    }

    /// A superblock write of a round landed on member `child`, in `slot`: the next one goes
    /// to the other slot (`io_offset` tells a superblock write from a bitmap chunk's).
    pub(crate) fn landed_on(&self, child: usize, io_offset: u64) {
        if io_offset < 2 * SLOT_BYTES as u64 {
            self.children[child]
                .sb_slot
                .store((io_offset / SLOT_BYTES as u64) as u8, Ordering::Release);
        }
    }

    /// Every member's descriptor, by slot (for control-path I/O).
    pub(crate) fn descs(&self) -> Vec<SharedDesc> {
        self.children.iter().map(|c| c.desc.clone()).collect()
    }
}

/// Live mirrors by name (for save_config and the RPC listings).
pub(crate) static MIRRORS: Mutex<BTreeMap<String, Arc<Shared>>> = Mutex::new(BTreeMap::new());

/// Mirror `name`'s shared state.
pub(crate) fn lookup(name: &str) -> Result<Arc<Shared>> {
    MIRRORS
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .ok_or_else(|| Error::NotFound(name.to_string()))
}

/// A member as reported to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The child bdev's name.
    pub name: String,
    /// Its member UUID.
    pub uuid: uuid::Uuid,
    /// Its state.
    pub state: MemberState,
    /// Only a full copy brings it back.
    pub full: bool,
}

/// A mirror as reported to users.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorInfo {
    /// The mirror bdev's name.
    pub name: String,
    /// Its UUID.
    pub uuid: uuid::Uuid,
    /// Its members in order.
    pub members: Vec<MemberInfo>,
    /// The membership generation on disk.
    pub generation: u64,
    /// Bytes one write-intent bit stands for.
    pub region_bytes: u32,
    /// Regions marked in the write-intent bitmap (written while a member was out).
    pub dirty_regions: u64,
    /// How the last rebuild ended.
    pub last_rebuild: Option<rebuild::Outcome>,
    /// Writes are paused ([`quiesce`]) for this long yet, unless resumed before.
    pub quiesced_for: Option<Duration>,
}

/// Every mirror.
pub fn list() -> Vec<MirrorInfo> {
    MIRRORS.lock().unwrap().values().map(|s| info(s)).collect()
}

fn info(s: &Shared) -> MirrorInfo {
    MirrorInfo {
        name: s.name.clone(),
        uuid: s.uuid,
        members: s
            .children
            .iter()
            .map(|c| MemberInfo {
                name: c.name(),
                uuid: c.uuid(),
                state: c.state(),
                full: c.full(),
            })
            .collect(),
        generation: s.durable_gen.load(Ordering::Acquire),
        region_bytes: s.region_bytes,
        dirty_regions: s.bitmap.count(),
        last_rebuild: s.last.lock().unwrap().clone(),
        quiesced_for: quiesce::remaining(s),
    }
}

/// Mirror `name`'s state.
pub fn get(name: &str) -> Option<MirrorInfo> {
    MIRRORS.lock().unwrap().get(name).map(|s| info(s))
}

/// Runs `ios` on the main reactor at once and waits for all: each one's data read (empty for
/// other operations), or its failure.
pub(crate) fn control_io(
    rt: &RuntimeHandle,
    descs: &[SharedDesc],
    ios: Vec<CtlIo>,
) -> Result<CtlResults> {
    control::control_io(rt, descs, ios, CONTROL_IO_TIMEOUT).map_err(|f| Error::InvalidParam {
        param: "base_bdevs",
        why: match f {
            CtlFail::Reactor(e) => format!("reactor unavailable: {e}"),
            CtlFail::Timeout => "a superblock I/O timed out".into(),
        },
    })
}

/// Each of `children`'s (indexes into `descs`) own newest superblock and the slot it is in
/// (`None`: blank, torn or foreign), or the status its read failed with.
#[allow(clippy::type_complexity)]
pub(crate) fn read_own(
    rt: &RuntimeHandle,
    descs: &[SharedDesc],
    children: &[usize],
) -> Result<Vec<std::result::Result<Option<(Superblock, u8)>, IoStatus>>> {
    let reads = children
        .iter()
        .map(|&child| CtlIo {
            child,
            op: IoType::Read,
            offset: 0,
            len: 2 * SLOT_BYTES as u64,
            data: Vec::new(),
        })
        .collect();
    Ok(control_io(rt, descs, reads)?
        .into_iter()
        .map(|r| r.map(|b| Superblock::newest_slot(&b[..SLOT_BYTES], &b[SLOT_BYTES..])))
        .collect())
}

pub(crate) struct MirrorBackend {
    pub(crate) shared: Arc<Shared>,
    pub(crate) supported: Vec<IoType>,
}

impl BdevBackend for MirrorBackend {
    fn product_name(&self) -> &'static str {
        "raid"
    }
    fn supports(&self, op: IoType) -> bool {
        self.supported.contains(&op)
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        Ok(Box::new(channel::MirrorChannel::new(self.shared.clone())?))
    }
    fn destroy(&self) {
        // First: a rebuild still running stops without taking anyone out.
        self.shared.deleted.store(true, Ordering::Release);
        // A pause ends with the mirror (its watchdog too).
        quiesce::end(&self.shared);
        for c in &self.shared.children {
            c.desc.lock().unwrap().take();
        }
        let mut m = MIRRORS.lock().unwrap();
        if m.get(&self.shared.name)
            .is_some_and(|s| Arc::ptr_eq(s, &self.shared))
        {
            m.remove(&self.shared.name);
        }
    }
    fn describe(&self) -> Vec<(String, String)> {
        let s = &self.shared;
        let mut v = vec![
            ("raid_level".into(), "raid1".into()),
            ("uuid".into(), s.uuid.to_string()),
            (
                "generation".into(),
                s.durable_gen.load(Ordering::Acquire).to_string(),
            ),
        ];
        for c in &s.children {
            v.push((format!("member:{}", c.name()), format!("{:?}", c.state())));
        }
        v
    }
}
