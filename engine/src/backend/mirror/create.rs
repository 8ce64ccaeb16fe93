//! Making a mirror: a new one over blank children, reassembly from the children's
//! superblocks and bitmaps, and member changes (remove a member; add a new bdev into the
//! empty slot that leaves).
//!
//! ```text
//!  children ─► read each one's superblock ─┬─ none anywhere: new (zero data, generation 1,
//!                                          │                  an empty bitmap)
//!                                          └─ one mirror's: the highest generation decides
//!                                             who is in sync; the bitmap is the union of the
//!                                             in-sync members' (a damaged chunk: all ones)
//!  ─► superblock (next generation) + bitmap to every member still in ─► register the bdev
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ballast_reactor::RuntimeHandle;

use super::bitmap::{self, Bitmap};
use super::{
    control_io, heal, lookup, read_own, rebuild, Child, CtlIo, Member, MemberState, MirrorBackend,
    MirrorOpts, RoundPlan, Shared, SharedDesc, Superblock, MAX_MEMBERS, META_BYTES, MIRRORS,
    REGION_BYTES, SLOT_BYTES,
};
use crate::bdev::{self, Bdev, BdevInfo, IoType};
use crate::error::{Error, Result};

/// Blocks one zeroing I/O covers at creation.
const ZERO_PIECE_BLOCKS: u64 = 32768;

/// Zeroing I/Os in flight at once at creation.
const ZERO_WINDOW: usize = 64;

fn bad(why: String) -> Error {
    Error::InvalidParam {
        param: "base_bdevs",
        why,
    }
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
    bdev::validate_name(&opts.name)?;
    // One child is enough to reassemble a mirror whose other members are out.
    if !(1..=MAX_MEMBERS).contains(&opts.children.len()) {
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
    // One channel per child on the main reactor for all of creation's control I/O.
    let _hold = crate::backend::control::hold(rt, &descs);
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
    if !bitmap::CHUNK_BYTES.is_multiple_of(bs as usize) {
        return Err(bad(format!(
            "{}-byte blocks are not supported by the mirror (512 to 4096)",
            bs
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
    // Each child's own superblock, and the slot holding it (a blank child's first write
    // goes to slot 0).
    let mut own = Vec::new();
    let mut newest_slot = Vec::new();
    let all: Vec<usize> = (0..descs.len()).collect();
    for (i, r) in read_own(rt, &descs, &all)?.into_iter().enumerate() {
        let n = r.map_err(|s| bad(format!("reading {}'s superblock: {s:?}", opts.children[i])))?;
        newest_slot.push(n.as_ref().map_or(1, |(_, slot)| *slot));
        own.push(n.map(|(sb, _)| sb));
    }
    let is_new = own.iter().all(Option::is_none);
    if is_new && opts.children.len() < 2 {
        return Err(bad(format!(
            "a mirror has 2 to {MAX_MEMBERS} children, not {} (a blank child makes a new \
             mirror)",
            opts.children.len()
        )));
    }
    let (uuid, members, gen, num_blocks, region) = if is_new {
        // A new mirror.
        let members: Vec<(Option<usize>, Member)> = (0..descs.len())
            .map(|i| {
                let m = Member {
                    uuid: uuid::Uuid::new_v4(),
                    state: MemberState::InSync,
                    full: false,
                };
                (Some(i), m)
            })
            .collect();
        let uuid = opts.uuid.unwrap_or_else(uuid::Uuid::new_v4);
        let n = smallest - data_offset;
        let asked = opts.region_bytes.unwrap_or(REGION_BYTES);
        if !asked.is_power_of_two() || !(bitmap::MIN_REGION..=bitmap::MAX_REGION).contains(&asked) {
            return Err(Error::InvalidParam {
                param: "region_size_kb",
                why: format!(
                    "{} KiB is not a power of two from {} KiB to {} MiB",
                    asked >> 10,
                    bitmap::MIN_REGION >> 10,
                    bitmap::MAX_REGION >> 20
                ),
            });
        }
        let region = bitmap::region_bytes_for(asked, n * bs as u64);
        (uuid, members, 1, n, region)
    } else {
        let (auth, members) = assemble(&opts, &own, bs, smallest - data_offset)?;
        // Reassembled: the next generation goes to the other slot, so the current one stays
        // intact on every child until the new one is complete.
        (
            auth.mirror,
            members,
            auth.generation + 1,
            auth.num_blocks,
            auth.region_bytes,
        )
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
    // Slots in the mirror's order; a missing member's slot has no bdev.
    let children: Vec<Child> = members
        .iter()
        .map(|(given, m)| match given {
            Some(i) => Child::new(&opts.children[*i], descs[*i].clone(), m, newest_slot[*i]),
            None => Child::new("", Arc::new(Mutex::new(None)), m, 1),
        })
        .collect();
    let members: Vec<Member> = members.into_iter().map(|(_, m)| m).collect();
    let slot_descs: Vec<SharedDesc> = children.iter().map(|c| c.desc.clone()).collect();
    let shared = Arc::new(Shared {
        name: opts.name.clone(),
        uuid,
        block_size: bs,
        num_blocks,
        data_offset,
        region_bytes: region,
        children,
        want_gen: AtomicU64::new(gen),
        durable_gen: AtomicU64::new(gen),
        bitmap: Bitmap::new(uuid, region, bs, num_blocks),
        writer: AtomicBool::new(false),
        membership: Mutex::new(()),
        lock_start: AtomicU64::new(0),
        lock_end: AtomicU64::new(0),
        lock_epoch: AtomicU64::new(0),
        window_inflight: AtomicU64::new(0),
        channel_acks: Mutex::new(Vec::new()),
        progress: Mutex::new(None),
        last: Mutex::new(None),
        deleted: AtomicBool::new(false),
        cancel: AtomicBool::new(false),
        quiesced: AtomicBool::new(false),
        pause: Mutex::default(),
        pause_cv: std::sync::Condvar::new(),
        rt: rt.clone(),
    });
    if !is_new {
        // A remote member out since before this assembly: the healer tries it once.
        for c in &shared.children {
            if c.state() == MemberState::Faulted && c.transport_lost() == Some(false) {
                c.heal_once.store(true, Ordering::Release);
            }
        }
        load_bitmap(rt, &shared)?;
        let blocks = resync(rt, &shared)?;
        if blocks > 0 {
            tracing::warn!(mirror = %opts.name, mib = (blocks * bs as u64) >> 20,
                "in-sync members made equal over the regions marked in the write-intent \
                 bitmap (writes in flight when the mirror last stopped)");
        }
    }
    // This generation and the whole bitmap on every member still in the mirror (a
    // reassembled mirror rewrites its current state: every such member then holds it).
    let targets: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].state != MemberState::Faulted)
        .collect();
    let plan = RoundPlan {
        gen: Some(gen),
        superblocks: targets
            .iter()
            .map(|&i| {
                let slot = shared.children[i].next_slot();
                (i, slot, shared.superblock(gen, members[i].uuid).encode())
            })
            .collect(),
        chunks: shared.bitmap.take(true),
        targets,
    };
    let ios = shared.round_ios(&plan);
    let at: Vec<(usize, u64)> = ios.iter().map(|io| (io.child, io.offset)).collect();
    for (k, r) in control_io(rt, &slot_descs, ios)?.into_iter().enumerate() {
        r.map_err(|st| bad(format!("writing the mirror's metadata (I/O {k}): {st:?}")))?;
        shared.landed_on(at[k].0, at[k].1);
    }
    shared.bitmap.all_landed();
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
    heal::start(rt);
    tracing::info!(mirror = %opts.name, children = ?opts.children, gen,
        in_sync = shared.in_sync(), region_kib = region >> 10,
        dirty_regions = shared.bitmap.count(), "mirror ready");
    Ok(b)
}

/// Membership from the children's superblocks (all of one mirror), checked against the
/// children themselves: block size `bs`, room for `room` data blocks. Returns the
/// authoritative superblock and each slot's member with the child given for it (by index),
/// if any. A member may be missing only if the authoritative copy already has it out (a
/// missing in-sync member might hold a newer generation: refused).
#[allow(clippy::type_complexity)]
fn assemble(
    opts: &MirrorOpts,
    own: &[Option<Superblock>],
    bs: u32,
    room: u64,
) -> Result<(Superblock, Vec<(Option<usize>, Member)>)> {
    if let Some(i) = own.iter().position(Option::is_none) {
        return Err(bad(format!(
            "{} holds no mirror superblock but the others do: create the mirror from its \
             members, then add it with bdev_raid_add_base_bdev",
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
    if auth.block_size != bs || auth.num_blocks > room {
        return Err(bad(format!(
            "mirror {mirror} has {} blocks of {} bytes; the children have {bs}-byte blocks \
             and room for {room}",
            auth.num_blocks, auth.block_size
        )));
    }
    let mut given: Vec<Option<usize>> = vec![None; auth.members.len()];
    for (i, s) in own.iter().enumerate() {
        let (slot, _) = auth.member(s.child).ok_or_else(|| {
            bad(format!(
                "{} is not a member of mirror {mirror} any more",
                opts.children[i]
            ))
        })?;
        if given[slot].is_some() {
            return Err(bad(format!(
                "two children are the same member of mirror {mirror} (a copied child?)"
            )));
        }
        given[slot] = Some(i);
    }
    let mut slots = Vec::new();
    for (slot, m) in auth.members.iter().enumerate() {
        let m = match (given[slot], m.state) {
            (None, MemberState::Faulted) => *m,
            (None, _) if m.uuid.is_nil() => Member {
                state: MemberState::Faulted,
                full: true,
                ..*m
            },
            (None, st) => {
                return Err(bad(format!(
                    "member {} of mirror {mirror} is missing and was {st:?}: give every \
                     member not known to be out (it may hold newer data)",
                    m.uuid
                )))
            }
            // A copy interrupted by a restart starts again: the member is out.
            (Some(_), MemberState::Rebuilding) => Member {
                state: MemberState::Faulted,
                ..*m
            },
            (Some(_), _) => *m,
        };
        slots.push((given[slot], m));
    }
    if !slots
        .iter()
        .any(|(g, m)| g.is_some() && m.state == MemberState::InSync)
    {
        return Err(bad(format!(
            "no in-sync member of mirror {mirror} among the children given"
        )));
    }
    let data = auth.num_blocks * bs as u64;
    if bitmap::region_bytes_for(auth.region_bytes, data) != auth.region_bytes {
        return Err(bad(format!(
            "mirror {mirror}'s superblock names {}-byte regions, which do not fit its size",
            auth.region_bytes
        )));
    }
    Ok((auth.clone(), slots))
}

/// Loads the write-intent bitmap of a reassembled mirror: the union of its in-sync members'.
fn load_bitmap(rt: &RuntimeHandle, s: &Shared) -> Result<()> {
    let len = (s.bitmap.chunks() * bitmap::CHUNK_BYTES) as u64;
    let from: Vec<usize> = (0..s.children.len())
        .filter(|&i| s.children[i].state() == MemberState::InSync)
        .collect();
    let reads = from
        .iter()
        .map(|&child| CtlIo {
            child,
            op: IoType::Read,
            offset: bitmap::OFFSET,
            len,
            data: Vec::new(),
        })
        .collect();
    for (k, r) in control_io(rt, &s.descs(), reads)?.into_iter().enumerate() {
        let child = s.children[from[k]].name();
        let area = r.map_err(|st| bad(format!("reading {child}'s bitmap: {st:?}")))?;
        let damaged = s.bitmap.merge(&area);
        if damaged > 0 {
            tracing::warn!(mirror = %s.name, child = %child, damaged,
                "mirror bitmap chunks fail their checksum: their regions count as written");
        }
    }
    Ok(())
}

/// After an unclean stop the in-sync members may differ where writes were in flight (never
/// acknowledged): makes them equal over the bitmap's regions, copied from the first in-sync
/// member, before the mirror takes any I/O. Returns the blocks copied.
fn resync(rt: &RuntimeHandle, s: &Shared) -> Result<u64> {
    let in_sync: Vec<usize> = (0..s.children.len())
        .filter(|&i| s.children[i].state() == MemberState::InSync)
        .collect();
    let Some((&src, others)) = in_sync.split_first() else {
        return Ok(0);
    };
    if others.is_empty() {
        return Ok(0);
    }
    let bs = s.block_size as u64;
    let step = (rebuild::options().window_bytes / bs).max(1);
    let descs = s.descs();
    let _hold = crate::backend::control::hold(rt, &descs);
    let mut copied = 0;
    for (start, end) in s.bitmap.ranges(s.num_blocks) {
        let mut at = start;
        while at < end {
            let n = step.min(end - at);
            let offset = (s.data_offset + at) * bs;
            let read = vec![CtlIo {
                child: src,
                op: IoType::Read,
                offset,
                len: n * bs,
                data: Vec::new(),
            }];
            let data = control_io(rt, &descs, read)?
                .pop()
                .expect("one I/O, one answer")
                .map_err(|st| {
                    bad(format!(
                        "resync: reading {}: {st:?}",
                        s.children[src].name()
                    ))
                })?;
            let writes = others
                .iter()
                .map(|&child| CtlIo {
                    child,
                    op: IoType::Write,
                    offset,
                    len: n * bs,
                    data: data.clone(),
                })
                .collect();
            for (k, r) in control_io(rt, &descs, writes)?.into_iter().enumerate() {
                r.map_err(|st| {
                    bad(format!(
                        "resync: writing {}: {st:?}",
                        s.children[others[k]].name()
                    ))
                })?;
            }
            at += n;
            copied += n;
        }
    }
    Ok(copied)
}

/// Adds bdev `child` to mirror `name` in the slot a removed member left (or in its own slot,
/// if it is a missing member coming back): the member is out until [`rebuild::start`] brings
/// it in. A returning member keeps its identity (a partial rebuild may serve); any other bdev
/// gets a new one and needs a full copy. Returns the slot. Call it off the reactors.
pub fn add_member(rt: &RuntimeHandle, name: &str, child: &str) -> Result<usize> {
    let s = lookup(name)?;
    let bad = |why: String| Error::InvalidParam {
        param: "base_bdev",
        why,
    };
    if s.children.iter().any(|c| c.name() == child) {
        return Err(bad(format!("{child} is already a member of mirror {name}")));
    }
    let mut d = bdev::open(child, None)?;
    let b = d.bdev().clone();
    if b.block_size() != s.block_size {
        return Err(bad(format!(
            "{child} has {}-byte blocks; mirror {name} has {}",
            b.block_size(),
            s.block_size
        )));
    }
    if b.num_blocks() < s.data_offset + s.num_blocks {
        return Err(bad(format!(
            "{child} has {} blocks; mirror {name} needs {} (its data and {} MiB of metadata)",
            b.num_blocks(),
            s.data_offset + s.num_blocks,
            META_BYTES >> 20
        )));
    }
    let mirror = bdev::lookup(name).ok_or_else(|| Error::NotFound(name.to_string()))?;
    if let Some(op) = IoType::ALL
        .into_iter()
        .find(|&op| mirror.supports(op) && !b.supports(op))
    {
        return Err(bad(format!(
            "{child} does not support {op:?}, which mirror {name} offers"
        )));
    }
    d.claim(&format!("mirror {name}"))?;
    // Its own superblock: a member of this mirror coming back keeps its slot.
    let desc: SharedDesc = Arc::new(Mutex::new(Some(d)));
    let own = match read_own(rt, std::slice::from_ref(&desc), &[0])?.pop() {
        Some(Ok(own)) => own,
        _ => None,
    };
    let own_slot = own.as_ref().map_or(1, |(_, slot)| *slot);
    let own = own.map(|(sb, _)| sb);
    let _m = s.membership.lock().unwrap();
    let returning = own.as_ref().filter(|o| o.mirror == s.uuid).and_then(|o| {
        s.children
            .iter()
            .position(|c| c.uuid() == o.child && c.desc.lock().unwrap().is_none())
    });
    let (slot, uuid, full) = match returning {
        Some(slot) => (slot, s.children[slot].uuid(), s.children[slot].full()),
        None => {
            let slot = s
                .children
                .iter()
                .position(|c| c.uuid().is_nil())
                .ok_or_else(|| {
                    bad(format!(
                        "mirror {name} has no empty slot: remove a member first \
                         (bdev_raid_remove_base_bdev)"
                    ))
                })?;
            (slot, uuid::Uuid::new_v4(), true)
        }
    };
    let c = &s.children[slot];
    c.set_desc(desc.lock().unwrap().take());
    c.sb_slot.store(own_slot, Ordering::Release);
    *c.name.lock().unwrap() = child.to_string();
    *c.uuid.lock().unwrap() = uuid;
    c.set(MemberState::Faulted);
    c.full.store(full, Ordering::Release);
    c.fault_reconnects.store(c.reconnects(), Ordering::Release);
    c.epoch.fetch_add(1, Ordering::AcqRel);
    s.want_gen.fetch_add(1, Ordering::AcqRel);
    drop(_m);
    rebuild::persist(rt, &s)?;
    tracing::info!(mirror = %name, child, slot, returning = returning.is_some(),
        "mirror member added (out until rebuilt)");
    Ok(slot)
}

/// Removes bdev `child` from mirror `name`: its slot is left empty (the mirror runs without
/// it; [`add_member`] fills the slot). A rebuild onto it is stopped first. Refused for the
/// last in-sync member. Call it off the reactors.
pub fn remove_member(rt: &RuntimeHandle, name: &str, child: &str) -> Result<()> {
    let s = lookup(name)?;
    let bad = |why: String| Error::InvalidParam {
        param: "base_bdev",
        why,
    };
    let slot = s
        .children
        .iter()
        .position(|c| c.name() == child && !child.is_empty())
        .ok_or_else(|| bad(format!("{child} is not a member of mirror {name}")))?;
    rebuild::cancel(&s, child)?;
    {
        // All in one step: an add_member meanwhile finds the slot either taken or empty.
        let _m = s.membership.lock().unwrap();
        let c = &s.children[slot];
        if c.name() != child {
            return Err(bad(format!("{child} left mirror {name} meanwhile")));
        }
        if c.state() == MemberState::InSync && s.in_sync() == 1 {
            return Err(Error::Busy(format!(
                "{child} is the last in-sync member of mirror {name}: removing it would \
                 lose the data"
            )));
        }
        c.set(MemberState::Faulted);
        c.full.store(true, Ordering::Release);
        *c.uuid.lock().unwrap() = uuid::Uuid::nil();
        c.set_desc(None);
        c.name.lock().unwrap().clear();
        c.epoch.fetch_add(1, Ordering::AcqRel);
        s.want_gen.fetch_add(1, Ordering::AcqRel);
    }
    rebuild::persist(rt, &s)?;
    tracing::info!(mirror = %name, child, slot, "mirror member removed (its slot is empty)");
    Ok(())
}

/// Wipes the superblock slots of `child` (no longer a member: `bdev_raid_delete clear_sb`), so
/// it never reassembles a mirror again; its data stays. Waits (≤ 5 s) for the deleted mirror
/// to let the child go. Call it off the reactors.
pub fn wipe_superblock(rt: &RuntimeHandle, child: &str) -> Result<()> {
    let t = std::time::Instant::now();
    let d = loop {
        let d = bdev::open(child, None)?;
        match d.bdev().claimed_by() {
            Some(by) if by.starts_with("mirror ") => {
                if t.elapsed() > std::time::Duration::from_secs(5) {
                    return Err(Error::Claimed {
                        bdev: child.to_string(),
                        by,
                    });
                }
                drop(d);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            _ => break d,
        }
    };
    let desc: SharedDesc = Arc::new(Mutex::new(Some(d)));
    let wipe = vec![CtlIo {
        child: 0,
        op: IoType::Write,
        offset: 0,
        len: 2 * SLOT_BYTES as u64,
        data: vec![0; 2 * SLOT_BYTES],
    }];
    for r in control_io(rt, std::slice::from_ref(&desc), wipe)? {
        r.map_err(|st| bad(format!("wiping {child}'s superblock: {st:?}")))?;
    }
    tracing::info!(child, "mirror superblock wiped");
    Ok(())
}
