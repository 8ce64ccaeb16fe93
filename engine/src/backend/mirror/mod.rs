//! The replication stage: a mirror (RAID 1) over 2–5 children, each any bdev — local, or a
//! remote replica attached over NVMe/TCP — that keeps every acknowledged write on every
//! in-sync child and records a child's fault durably before acknowledging a write without it.
//!
//! ```text
//!  write / write-zeroes / unmap / flush ─┬─► child 0 ─┐   all done ─► durable_gen ≥ want_gen? ─► ack
//!                                        ├─► child 1 ─┤   (a child's error faults it: want_gen+1,
//!                                        └─► child 2 ─┘    the superblock goes to every survivor)
//!  read ─► the in-sync child with the fewest outstanding I/Os ─ error? ─► fault it, next child
//!
//!  child:  [ superblock slots | write-intent bitmap (reserved) | data ........................ ]
//!           0                                          META_BYTES
//! ```
//!
//! Membership lives in [`superblock`]: the mirror's and each member's identity, the members'
//! states and a generation bumped by every change. A fault sets the member's state at once
//! (new I/O skips it) and asks for the next generation (`want_gen`); a channel's poller writes
//! that superblock to every remaining member, and writes that completed meanwhile wait on
//! their channel until it is on all of them (`durable_gen`). Nothing is acknowledged that the
//! superblocks would contradict after a crash. At assembly the highest generation among the
//! children decides who is in sync: a child that was faulted is never read from again.
//!
//! Not built yet (issue 19): rebuild (full, and partial from the write-intent bitmap whose
//! space is reserved here), re-adding a returning child, add/remove of members, and the
//! self-healing reconnect. Until then a faulted child stays out and the mirror runs degraded.

mod channel;
pub mod rebuild;
pub mod superblock;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_reactor::RuntimeHandle;

use crate::backend::control::{self, CtlFail, CtlResults};
pub(crate) use crate::backend::control::{CtlIo, SharedDesc};
use crate::bdev::{self, BackendChannel, Bdev, BdevBackend, BdevInfo, IoStatus, IoType};
use crate::error::{Error, Result};
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
}

/// Bytes of data one write-intent bit will stand for.
pub const REGION_BYTES: u32 = 256 << 10;

/// Blocks one zeroing I/O covers at creation.
const ZERO_PIECE_BLOCKS: u64 = 32768;

/// Zeroing I/Os in flight at once at creation.
const ZERO_WINDOW: usize = 64;

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

/// A member as the mirror holds it.
pub(crate) struct Child {
    pub(crate) name: String,
    pub(crate) uuid: uuid::Uuid,
    /// None once the mirror is gone.
    pub(crate) desc: SharedDesc,
    /// A [`MemberState`] code (see `state`).
    state: AtomicU8,
}

impl Child {
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
}

/// The mirror's state shared by its channels on every reactor.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) uuid: uuid::Uuid,
    pub(crate) block_size: u32,
    pub(crate) num_blocks: u64,
    /// Where data starts on every child, in blocks.
    pub(crate) data_offset: u64,
    pub(crate) children: Vec<Child>,
    /// The generation the membership needs on disk (bumped by every fault).
    pub(crate) want_gen: AtomicU64,
    /// The generation written to every member still in the mirror.
    pub(crate) durable_gen: AtomicU64,
    /// One superblock write at a time: held by the channel writing it.
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
    /// The mirror bdev is gone (its children are released).
    pub(crate) deleted: AtomicBool,
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
        self.want_gen.store(gen, Ordering::Release);
        let left = self.in_sync();
        tracing::warn!(mirror = %self.name, child = %c.name, why, gen, in_sync = left,
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

    /// The generation the membership needs and its superblock for every member still in the
    /// mirror that `reachable` admits, taken together under the membership lock (a fault
    /// changes state and generation in one step: see [`Shared::fault`]).
    pub(crate) fn snapshot(
        &self,
        reachable: impl Fn(usize) -> bool,
    ) -> (u64, Vec<(usize, Vec<u8>)>) {
        let _m = self.membership.lock().unwrap();
        let gen = self.want_gen.load(Ordering::Acquire);
        let blocks = self
            .children
            .iter()
            .enumerate()
            .filter(|&(i, c)| c.state() != MemberState::Faulted && reachable(i))
            .map(|(i, c)| (i, self.superblock(gen, c.uuid).encode()))
            .collect();
        (gen, blocks)
    }

    /// Control-path writes of a [`Shared::snapshot`].
    pub(crate) fn superblock_ios(gen: u64, blocks: Vec<(usize, Vec<u8>)>) -> Vec<CtlIo> {
        blocks
            .into_iter()
            .map(|(child, data)| CtlIo {
                child,
                op: IoType::Write,
                offset: superblock::slot_offset(gen),
                len: SLOT_BYTES as u64,
                data,
            })
            .collect()
    }

    /// The superblock of generation `gen` for member `child` as the states are now.
    pub(crate) fn superblock(&self, gen: u64, child: uuid::Uuid) -> Superblock {
        Superblock {
            mirror: self.uuid,
            child,
            generation: gen,
            block_size: self.block_size,
            num_blocks: self.num_blocks,
            region_bytes: REGION_BYTES,
            members: self
                .children
                .iter()
                .map(|c| Member {
                    uuid: c.uuid,
                    state: c.state(),
                })
                .collect(),
        }
    }
}

/// Live mirrors by name (for save_config and the RPC listings).
pub(crate) static MIRRORS: Mutex<BTreeMap<String, Arc<Shared>>> = Mutex::new(BTreeMap::new());

/// A member as reported to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The child bdev's name.
    pub name: String,
    /// Its member UUID.
    pub uuid: uuid::Uuid,
    /// Its state.
    pub state: MemberState,
}

/// A mirror as reported to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorInfo {
    /// The mirror bdev's name.
    pub name: String,
    /// Its UUID.
    pub uuid: uuid::Uuid,
    /// Its members in order.
    pub members: Vec<MemberInfo>,
    /// The membership generation on disk.
    pub generation: u64,
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
                name: c.name.clone(),
                uuid: c.uuid,
                state: c.state(),
            })
            .collect(),
        generation: s.durable_gen.load(Ordering::Acquire),
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

/// Creates mirror `opts.name` over `opts.children`, or reassembles it.
///
/// Children that all hold no superblock make a new mirror: their data areas are zeroed (so
/// every child reads the same from the start) and generation 1 is written to each. Children
/// that hold superblocks of one mirror reassemble it: the highest generation says which are
/// in sync; a faulted or unknown child stays out. A child of another mirror, or a mix of blank
/// children and members, is refused. Call it off the reactors (it waits for I/O).
pub fn create(rt: &RuntimeHandle, opts: MirrorOpts) -> Result<Arc<Bdev>> {
    if ballast_reactor::current_core().is_some() {
        return Err(Error::NotOnReactor(
            "mirror::create (call it off the reactors)",
        ));
    }
    let bad = |why: String| Error::InvalidParam {
        param: "base_bdevs",
        why,
    };
    bdev::validate_name(&opts.name)?;
    if !(2..=MAX_MEMBERS).contains(&opts.children.len()) {
        return Err(bad(format!(
            "a mirror has 2 to {MAX_MEMBERS} children, not {}",
            opts.children.len()
        )));
    }
    for (i, c) in opts.children.iter().enumerate() {
        if opts.children[..i].contains(c) {
            return Err(bad(format!("{c} is named twice")));
        }
    }
    if bdev::lookup(&opts.name).is_some() {
        return Err(Error::Exists(opts.name));
    }
    // Open and claim every child (dropping the descriptors releases them on any error).
    let mut descs: Vec<SharedDesc> = Vec::new();
    for c in &opts.children {
        let mut d = bdev::open(c, None)?;
        d.claim(&format!("mirror {}", opts.name))?;
        descs.push(Arc::new(Mutex::new(Some(d))));
    }
    let bdevs: Vec<Arc<Bdev>> = descs
        .iter()
        .map(|d| d.lock().unwrap().as_ref().expect("open").bdev().clone())
        .collect();
    let bs = bdevs[0].block_size();
    if let Some(b) = bdevs.iter().find(|b| b.block_size() != bs) {
        return Err(bad(format!(
            "{} has {}-byte blocks, {} has {bs}: children need one block size",
            b.name(),
            b.block_size(),
            bdevs[0].name()
        )));
    }
    let data_offset = META_BYTES / bs as u64;
    let smallest = bdevs.iter().map(|b| b.num_blocks()).min().unwrap_or(0);
    if smallest <= data_offset {
        return Err(bad(format!(
            "every child needs more than {} MiB (the mirror's metadata)",
            META_BYTES >> 20
        )));
    }
    // Each child's own superblock.
    let reads = (0..descs.len())
        .map(|child| CtlIo {
            child,
            op: IoType::Read,
            offset: 0,
            len: 2 * SLOT_BYTES as u64,
            data: Vec::new(),
        })
        .collect();
    let mut own = Vec::new();
    for (i, r) in control_io(rt, &descs, reads)?.into_iter().enumerate() {
        let b = r.map_err(|s| bad(format!("reading {}'s superblock: {s:?}", opts.children[i])))?;
        own.push(Superblock::newest(&b[..SLOT_BYTES], &b[SLOT_BYTES..]));
    }
    let is_new = own.iter().all(Option::is_none);
    let (uuid, members, gen, num_blocks) = if is_new {
        // A new mirror.
        let members: Vec<Member> = (0..descs.len())
            .map(|_| Member {
                uuid: uuid::Uuid::new_v4(),
                state: MemberState::InSync,
            })
            .collect();
        let uuid = opts.uuid.unwrap_or_else(uuid::Uuid::new_v4);
        (uuid, members, 1, smallest - data_offset)
    } else {
        let (uuid, members, g, n) = assemble(&opts, &own, bs, smallest - data_offset)?;
        // Reassembled: the next generation goes to the other slot, so the current one stays
        // intact on every child until the new one is complete.
        (uuid, members, g + 1, n)
    };
    if bdev::lookup(&uuid.to_string()).is_some() {
        return Err(Error::Exists(uuid.to_string()));
    }
    if is_new {
        if let Some(b) = bdevs.iter().find(|b| !b.supports(IoType::WriteZeroes)) {
            return Err(bad(format!(
                "{} does not support write-zeroes, which a new mirror uses to make its \
                 children equal",
                b.name()
            )));
        }
        // New: zero the data areas (every child then reads the same), then write generation 1.
        // In pieces a remote child takes in one command (NVMe Write Zeroes: ≤ 65536 blocks).
        let piece = ZERO_PIECE_BLOCKS * bs as u64;
        let total = num_blocks * bs as u64;
        let mut zero = Vec::new();
        for child in 0..descs.len() {
            let mut at = 0;
            while at < total {
                let len = piece.min(total - at);
                zero.push(CtlIo {
                    child,
                    op: IoType::WriteZeroes,
                    offset: META_BYTES + at,
                    len,
                    data: Vec::new(),
                });
                at += len;
            }
        }
        // A bounded window in flight (a remote child queues a few thousand at most).
        let mut zero = zero.into_iter().peekable();
        while zero.peek().is_some() {
            let window: Vec<CtlIo> = zero.by_ref().take(ZERO_WINDOW).collect();
            let children_of: Vec<usize> = window.iter().map(|z| z.child).collect();
            for (k, r) in control_io(rt, &descs, window)?.into_iter().enumerate() {
                r.map_err(|s| bad(format!("zeroing {}: {s:?}", opts.children[children_of[k]])))?;
            }
        }
    }
    let children: Vec<Child> = opts
        .children
        .iter()
        .zip(&descs)
        .zip(&members)
        .map(|((n, d), m)| Child {
            name: n.clone(),
            uuid: m.uuid,
            desc: d.clone(),
            state: AtomicU8::new(0),
        })
        .collect();
    for (c, m) in children.iter().zip(&members) {
        c.set(m.state);
    }
    let shared = Arc::new(Shared {
        name: opts.name.clone(),
        uuid,
        block_size: bs,
        num_blocks,
        data_offset,
        children,
        want_gen: AtomicU64::new(gen),
        durable_gen: AtomicU64::new(gen),
        writer: AtomicBool::new(false),
        membership: Mutex::new(()),
        lock_start: AtomicU64::new(0),
        lock_end: AtomicU64::new(0),
        lock_epoch: AtomicU64::new(0),
        window_inflight: AtomicU64::new(0),
        channel_acks: Mutex::new(Vec::new()),
        progress: Mutex::new(None),
        deleted: AtomicBool::new(false),
    });
    // This generation on every member still in the mirror (a reassembled mirror rewrites
    // its current one: every such member then holds it).
    let (snap_gen, blocks) = shared.snapshot(|_| true);
    debug_assert_eq!(snap_gen, gen);
    let writes = Shared::superblock_ios(gen, blocks);
    for (k, r) in control_io(rt, &descs, writes)?.into_iter().enumerate() {
        r.map_err(|s| bad(format!("writing a superblock (I/O {k}): {s:?}")))?;
    }
    let ops_ok = |op: IoType| bdevs.iter().all(|b| b.supports(op));
    let supported: Vec<IoType> = IoType::ALL.into_iter().filter(|&op| ops_ok(op)).collect();
    let mut info = BdevInfo::new(opts.name.clone(), bs, num_blocks);
    info.uuid = uuid;
    info.write_cache = bdevs.iter().any(|b| b.info().write_cache);
    let backend = MirrorBackend {
        shared: shared.clone(),
        supported,
    };
    let b = bdev::register(info, Box::new(backend))?;
    MIRRORS
        .lock()
        .unwrap()
        .insert(opts.name.clone(), shared.clone());
    tracing::info!(mirror = %opts.name, children = ?opts.children, gen,
        in_sync = shared.in_sync(), "mirror ready");
    Ok(b)
}

/// Membership from the children's superblocks (all of one mirror), checked against the
/// children themselves: block size `bs`, room for `room` data blocks.
fn assemble(
    opts: &MirrorOpts,
    own: &[Option<Superblock>],
    bs: u32,
    room: u64,
) -> Result<(uuid::Uuid, Vec<Member>, u64, u64)> {
    let bad = |why: String| Error::InvalidParam {
        param: "base_bdevs",
        why,
    };
    if let Some(i) = own.iter().position(Option::is_none) {
        return Err(bad(format!(
            "{} holds no mirror superblock but the others do: add it to the mirror as a new \
             member instead (not built yet)",
            opts.children[i]
        )));
    }
    let own: Vec<&Superblock> = own.iter().flatten().collect();
    let mirror = own[0].mirror;
    if let Some(i) = own.iter().position(|s| s.mirror != mirror) {
        return Err(bad(format!(
            "{} belongs to mirror {}, {} to mirror {mirror}",
            opts.children[i], own[i].mirror, opts.children[0]
        )));
    }
    if opts.uuid.is_some_and(|u| u != mirror) {
        return Err(bad(format!(
            "the children hold mirror {mirror}, not the uuid asked for"
        )));
    }
    let auth = Superblock::authoritative(own.iter().copied(), mirror).expect("one at least");
    let mut members = Vec::new();
    for (i, s) in own.iter().enumerate() {
        let m = auth.member(s.child).map(|(_, m)| *m).ok_or_else(|| {
            bad(format!(
                "{} is not a member of mirror {mirror} any more",
                opts.children[i]
            ))
        })?;
        // A copy interrupted by a restart starts again from the beginning: the member is out.
        let m = match m.state {
            MemberState::Rebuilding => Member {
                state: MemberState::Faulted,
                ..m
            },
            _ => m,
        };
        members.push(m);
    }
    let mut seen: Vec<uuid::Uuid> = members.iter().map(|m| m.uuid).collect();
    seen.sort();
    seen.dedup();
    if seen.len() != members.len() {
        return Err(bad(format!(
            "two children are the same member of mirror {mirror} (a copied child?)"
        )));
    }
    if auth.block_size != bs || auth.num_blocks > room {
        return Err(bad(format!(
            "mirror {mirror} has {} blocks of {} bytes; the children have {bs}-byte blocks \
             and room for {room}",
            auth.num_blocks, auth.block_size
        )));
    }
    if members.len() != auth.members.len() {
        return Err(bad(format!(
            "mirror {mirror} has {} members; give all of them (missing members are not \
             supported yet)",
            auth.members.len()
        )));
    }
    if !members.iter().any(|m| m.state == MemberState::InSync) {
        return Err(bad(format!(
            "no in-sync member of mirror {mirror} among the children given"
        )));
    }
    Ok((mirror, members, auth.generation, auth.num_blocks))
}

struct MirrorBackend {
    shared: Arc<Shared>,
    supported: Vec<IoType>,
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
            v.push((format!("member:{}", c.name), format!("{:?}", c.state())));
        }
        v
    }
}
