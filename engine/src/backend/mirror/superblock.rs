//! The mirror's superblock: who belongs to the mirror and who is in sync, kept on every child.
//!
//! ```text
//!  child:  [ slot 0 (4 KiB) | slot 1 (4 KiB) | write-intent bitmap ... | data (from 1 MiB) ]
//!  slot:   magic · version · mirror uuid · this child's uuid · generation · block size ·
//!          data blocks · region bytes · n · members [uuid, state | full] × n · crc32c
//! ```
//!
//! Each write goes to the slot that does not hold the child's newest valid superblock, so a
//! write torn by a crash leaves the newest one intact (whatever the generations in between).
//! A child's superblock is the valid slot with the higher generation. At assembly the
//! highest generation among the children is authoritative: a
//! child faulted at generation `g` got no superblock from `g` on, so its own (older) copy may
//! still call itself in sync, but the authoritative one does not (no split brain).

/// Bytes reserved at the start of every child (superblock slots and bitmap); data follows.
pub const META_BYTES: u64 = 1 << 20;
/// Size of one superblock slot.
pub const SLOT_BYTES: usize = 4096;
/// Generations at or above this are refused as corrupt.
pub const MAX_GENERATION: u64 = 1 << 62;
/// Most children of one mirror.
pub const MAX_MEMBERS: usize = 5;

const MAGIC: &[u8; 8] = b"BLSTMIR1";
const VERSION: u32 = 1;
/// Bytes covered by the checksum (everything before it).
const BODY: usize = MEMBERS_AT + MAX_MEMBERS * 17;
/// Where the member table starts.
const MEMBERS_AT: usize = 72;

/// A member's state as the superblock records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Holds every acknowledged write: may serve reads.
    InSync,
    /// Out of the mirror (an I/O error or a lost transport); holds stale data.
    Faulted,
    /// Being rebuilt: receives writes, serves no reads.
    Rebuilding,
}

impl MemberState {
    fn code(self) -> u8 {
        match self {
            MemberState::InSync => 1,
            MemberState::Faulted => 2,
            MemberState::Rebuilding => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => MemberState::InSync,
            2 => MemberState::Faulted,
            3 => MemberState::Rebuilding,
            _ => return None,
        })
    }
}

/// One member of the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The member's identity (written into its own superblock as `child`); nil for an empty
    /// slot (a member removed and not replaced yet).
    pub uuid: uuid::Uuid,
    /// Its state.
    pub state: MemberState,
    /// The write-intent bitmap does not cover what it lacks (a new, blank or removed member):
    /// only a full copy brings it back.
    pub full: bool,
}

/// The state byte's flag for [`Member::full`].
const FULL_FLAG: u8 = 0x80;

/// A decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The mirror's identity.
    pub mirror: uuid::Uuid,
    /// Which member this copy was written to.
    pub child: uuid::Uuid,
    /// Bumped by every membership change.
    pub generation: u64,
    /// Block size of the mirror (and of every child).
    pub block_size: u32,
    /// Data blocks of the mirror.
    pub num_blocks: u64,
    /// Bytes of data one write-intent bit stands for.
    pub region_bytes: u32,
    /// Members, in the mirror's order.
    pub members: Vec<Member>,
}

/// Byte offset of slot `slot` (0 or 1) on a child.
pub fn slot_offset(slot: u8) -> u64 {
    slot as u64 * SLOT_BYTES as u64
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Superblock {
    /// Encodes into one slot's bytes.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.members.len() <= MAX_MEMBERS, "too many members");
        let mut b = vec![0u8; SLOT_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..28].copy_from_slice(self.mirror.as_bytes());
        b[28..44].copy_from_slice(self.child.as_bytes());
        b[44..52].copy_from_slice(&self.generation.to_le_bytes());
        b[52..56].copy_from_slice(&self.block_size.to_le_bytes());
        b[56..64].copy_from_slice(&self.num_blocks.to_le_bytes());
        b[64..68].copy_from_slice(&self.region_bytes.to_le_bytes());
        b[68] = self.members.len() as u8;
        for (i, m) in self.members.iter().enumerate() {
            let at = MEMBERS_AT + i * 17;
            b[at..at + 16].copy_from_slice(m.uuid.as_bytes());
            b[at + 16] = m.state.code() | if m.full { FULL_FLAG } else { 0 };
        }
        let crc = crc32c::crc32c(&b[..BODY]);
        b[BODY..BODY + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one slot; `None` if it holds no valid superblock (blank, torn or foreign).
    pub fn decode(b: &[u8]) -> Option<Superblock> {
        if b.len() < BODY + 4 || &b[0..8] != MAGIC || le32(b, 8) != VERSION {
            return None;
        }
        if crc32c::crc32c(&b[..BODY]) != le32(b, BODY) {
            return None;
        }
        // A generation this large was not written by a mirror (it would overflow in use).
        if le64(b, 44) >= MAX_GENERATION {
            return None;
        }
        let n = b[68] as usize;
        if n == 0 || n > MAX_MEMBERS {
            return None;
        }
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let at = MEMBERS_AT + i * 17;
            members.push(Member {
                uuid: uuid::Uuid::from_slice(&b[at..at + 16]).ok()?,
                state: MemberState::from_code(b[at + 16] & !FULL_FLAG)?,
                full: b[at + 16] & FULL_FLAG != 0,
            });
        }
        Some(Superblock {
            mirror: uuid::Uuid::from_slice(&b[12..28]).ok()?,
            child: uuid::Uuid::from_slice(&b[28..44]).ok()?,
            generation: le64(b, 44),
            block_size: le32(b, 52),
            num_blocks: le64(b, 56),
            region_bytes: le32(b, 64),
            members,
        })
    }

    /// A child's superblock from its two slots: the valid one with the higher generation.
    pub fn newest(slot0: &[u8], slot1: &[u8]) -> Option<Superblock> {
        Self::newest_slot(slot0, slot1).map(|(s, _)| s)
    }

    /// [`Superblock::newest`] and the slot it is in (the next write goes to the other one).
    pub fn newest_slot(slot0: &[u8], slot1: &[u8]) -> Option<(Superblock, u8)> {
        match (Self::decode(slot0), Self::decode(slot1)) {
            (Some(a), Some(b)) if b.generation > a.generation => Some((b, 1)),
            (Some(a), _) => Some((a, 0)),
            (None, b) => b.map(|b| (b, 1)),
        }
    }

    /// The authoritative superblock among the children's own (the highest generation of
    /// mirror `mirror`); `None` if no child holds one.
    pub fn authoritative<'a>(
        copies: impl IntoIterator<Item = &'a Superblock>,
        mirror: uuid::Uuid,
    ) -> Option<&'a Superblock> {
        copies
            .into_iter()
            .filter(|s| s.mirror == mirror)
            .max_by_key(|s| s.generation)
    }

    /// The member whose uuid is `child`, with its index (never an empty slot).
    pub fn member(&self, child: uuid::Uuid) -> Option<(usize, &Member)> {
        self.members
            .iter()
            .enumerate()
            .find(|(_, m)| m.uuid == child && !child.is_nil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(gen: u64, states: &[MemberState]) -> Superblock {
        Superblock {
            mirror: uuid::Uuid::from_u128(7),
            child: uuid::Uuid::from_u128(100),
            generation: gen,
            block_size: 512,
            num_blocks: (1 << 33) + 5,
            region_bytes: 64 << 10,
            members: states
                .iter()
                .enumerate()
                .map(|(i, &state)| Member {
                    uuid: uuid::Uuid::from_u128(100 + i as u128),
                    state,
                    full: i == 2,
                })
                .collect(),
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        use MemberState::*;
        let s = sb(9, &[InSync, Faulted, Rebuilding]);
        let b = s.encode();
        assert_eq!(Superblock::decode(&b), Some(s.clone()));
        // Any flipped byte of the body, or a blank slot, is no superblock.
        for at in [0, 13, 45, 60, 68, MEMBERS_AT + 16, BODY - 1, BODY] {
            let mut d = b.clone();
            d[at] ^= 0x40;
            assert_eq!(Superblock::decode(&d), None, "byte {at}");
        }
        assert_eq!(Superblock::decode(&vec![0u8; SLOT_BYTES]), None);
        // A generation no mirror reaches (it would overflow in use) is no superblock either.
        let mut huge = s.clone();
        huge.generation = u64::MAX;
        assert_eq!(Superblock::decode(&huge.encode()), None);
    }

    #[test]
    fn newest_slot_survives_a_torn_write() {
        use MemberState::*;
        let old = sb(4, &[InSync, InSync]);
        let new = sb(5, &[InSync, Faulted]);
        let (s0, s1) = (old.encode(), new.encode());
        assert_eq!(Superblock::newest(&s0, &s1), Some(new.clone()));
        assert_eq!(Superblock::newest_slot(&s1, &s0).map(|x| x.1), Some(0));
        assert_eq!(
            Superblock::newest_slot(&[0u8; SLOT_BYTES], &s0).map(|x| x.1),
            Some(1)
        );
        // Generation 5's slot torn: generation 4 stands.
        let mut torn = s1.clone();
        torn[100] ^= 1;
        assert_eq!(Superblock::newest(&s0, &torn), Some(old));
        assert_eq!(Superblock::newest(&torn, &[0u8; SLOT_BYTES]), None);
    }

    #[test]
    fn the_highest_generation_decides_who_is_in_sync() {
        use MemberState::*;
        // The faulted child's own copy (generation 3) still calls everyone in sync; the
        // survivors' copies (generation 4) do not.
        let stale = sb(3, &[InSync, InSync]);
        let current = sb(4, &[InSync, Faulted]);
        let mut foreign = sb(99, &[InSync]);
        foreign.mirror = uuid::Uuid::from_u128(8);
        let copies = [stale, current.clone(), foreign];
        let a = Superblock::authoritative(&copies, uuid::Uuid::from_u128(7)).unwrap();
        assert_eq!(a, &current);
        assert_eq!(
            a.member(uuid::Uuid::from_u128(101)).unwrap().1.state,
            Faulted
        );
    }
}
