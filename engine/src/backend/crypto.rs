//! The encryption stage: a bdev that stores AES-XTS ciphertext on a base bdev (SPDK's crypto
//! vbdev), with a key registry shaped like SPDK's `accel_crypto_key_*`.
//!
//! ```text
//!  base that fuses copies (malloc): the cipher rides on the base I/O (CopyTransform)
//!    write: plaintext ─ encrypt (tweak = LBA) straight into the base's memory
//!    read:  base's memory ─ decrypt straight into the caller's buffers
//!  any other base:
//!    write: plaintext ─ encrypt ─► bounce buffer (pool) ─► base write
//!    read:  base read into the caller's buffers ─► decrypt in place
//!  flush / write-zeroes / unmap ─► base, unchanged (all-zero ciphertext reads as zeros)
//! ```
//!
//! The base bdev is claimed while the stage exists; a key cannot be destroyed while a stage
//! uses it. Keys never appear in logs or Debug output.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use super::{Collect, Slab, StageBase};
use crate::bdev::{
    self, BackendChannel, Bdev, BdevBackend, BdevIo, Completions, CopyTransform, IoCallback,
    IoChannel, IoSink, IoStatus, IoType, SgList,
};
use crate::buf::{self, IoBuf};
use crate::crypto::Xts;
use crate::error::{Error, Result};

/// A named key.
struct Key {
    cipher: String,
    key: Vec<u8>,
    key2: Vec<u8>,
    users: usize,
}

static KEYS: Mutex<BTreeMap<String, Key>> = Mutex::new(BTreeMap::new());

/// What may be shown of a key (never its material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Name.
    pub name: String,
    /// Cipher ("AES_XTS").
    pub cipher: String,
    /// Key bits (128 or 256).
    pub bits: u32,
    /// Stages using it.
    pub users: usize,
}

/// Registers key `name` (cipher "AES_XTS"; `key`/`key2` 16 or 32 bytes each).
pub fn key_create(name: &str, cipher: &str, key: &[u8], key2: &[u8]) -> Result<()> {
    if !cipher.eq_ignore_ascii_case("AES_XTS") {
        return Err(Error::InvalidParam {
            param: "cipher",
            why: format!("{cipher:?} is not supported (only AES_XTS)"),
        });
    }
    crate::bdev::validate_name(name)?;
    Xts::new(key, key2)?; // validates lengths and K1 != K2
    let mut k = KEYS.lock().unwrap();
    if k.contains_key(name) {
        return Err(Error::KeyExists(name.to_string()));
    }
    k.insert(
        name.to_string(),
        Key {
            cipher: "AES_XTS".into(),
            key: key.to_vec(),
            key2: key2.to_vec(),
            users: 0,
        },
    );
    Ok(())
}

/// Removes key `name`; refused while a stage uses it.
pub fn key_destroy(name: &str) -> Result<()> {
    let mut k = KEYS.lock().unwrap();
    match k.get(name) {
        None => Err(Error::KeyNotFound(name.to_string())),
        Some(e) if e.users > 0 => Err(Error::KeyInUse {
            key: name.to_string(),
            users: e.users,
        }),
        Some(_) => {
            k.remove(name);
            Ok(())
        }
    }
}

/// Every key, without material.
pub fn keys() -> Vec<KeyInfo> {
    KEYS.lock()
        .unwrap()
        .iter()
        .map(|(n, k)| KeyInfo {
            name: n.clone(),
            cipher: k.cipher.clone(),
            bits: k.key.len() as u32 * 8,
            users: k.users,
        })
        .collect()
}

/// Key material for save_config (which, like SPDK's, carries it: protect that file).
pub fn key_material(name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    KEYS.lock()
        .unwrap()
        .get(name)
        .map(|k| (k.key.clone(), k.key2.clone()))
}

/// Base and key of each crypto bdev (for save_config).
static STAGES: Mutex<BTreeMap<String, (String, String)>> = Mutex::new(BTreeMap::new());

/// Every crypto bdev: (name, base bdev, key name).
pub fn stages() -> Vec<(String, String, String)> {
    STAGES
        .lock()
        .unwrap()
        .iter()
        .map(|(n, (b, k))| (n.clone(), b.clone(), k.clone()))
        .collect()
}

/// Creates crypto bdev `name` over `base` with key `key_name`.
pub fn create(name: &str, base: &str, key_name: &str) -> Result<Arc<Bdev>> {
    let (key, key2) = {
        let mut k = KEYS.lock().unwrap();
        let e = k
            .get_mut(key_name)
            .ok_or_else(|| Error::KeyNotFound(key_name.to_string()))?;
        e.users += 1;
        (e.key.clone(), e.key2.clone())
    };
    let bits = key.len() as u32 * 8;
    let release_key = || {
        if let Some(e) = KEYS.lock().unwrap().get_mut(key_name) {
            e.users -= 1;
        }
    };
    let stage_base = match StageBase::claim(base, &format!("crypto bdev {name}")) {
        Ok(b) => b,
        Err(e) => {
            release_key();
            return Err(e);
        }
    };
    let info = stage_base.info(name);
    let block_size = info.block_size as usize;
    let backend = CryptoBackend {
        stage_base,
        key,
        key2,
        bits,
        key_name: key_name.to_string(),
        base: base.to_string(),
        name: name.to_string(),
        block_size,
    };
    match bdev::register(info, Box::new(backend)) {
        Ok(c) => {
            STAGES
                .lock()
                .unwrap()
                .insert(name.to_string(), (base.to_string(), key_name.to_string()));
            tracing::info!(bdev = name, base, key = key_name, "crypto bdev created");
            Ok(c)
        }
        // The backend (and with it the claim and the key reference) was dropped.
        Err(e) => Err(e),
    }
}

struct CryptoBackend {
    stage_base: StageBase,
    /// Key material; each channel builds its own cipher context from it.
    key: Vec<u8>,
    key2: Vec<u8>,
    bits: u32,
    key_name: String,
    base: String,
    name: String,
    block_size: usize,
}

impl Drop for CryptoBackend {
    fn drop(&mut self) {
        self.key.fill(0);
        self.key2.fill(0);
        self.stage_base.release();
        if let Some(e) = KEYS.lock().unwrap().get_mut(&self.key_name) {
            e.users = e.users.saturating_sub(1);
        }
    }
}

impl BdevBackend for CryptoBackend {
    fn product_name(&self) -> &'static str {
        "crypto"
    }
    fn supports(&self, op: IoType) -> bool {
        self.stage_base.supports(op)
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        let base = self.stage_base.channel()?;
        Ok(Box::new(CryptoChannel {
            fused: base.fuses_copy(),
            base,
            cipher: Rc::new(Cipher {
                xts: RefCell::new(Xts::new(&self.key, &self.key2)?),
                bs: self.block_size,
            }),
            bs: self.block_size,
            sink: Rc::default(),
            slots: Slab::default(),
            batch: Vec::new(),
        }))
    }
    fn destroy(&self) {
        self.stage_base.release();
        STAGES.lock().unwrap().remove(&self.name);
    }
    fn describe(&self) -> Vec<(String, String)> {
        vec![
            ("base_bdev_name".into(), self.base.clone()),
            ("key_name".into(), self.key_name.clone()),
            ("cipher".into(), format!("AES_XTS-{}", self.bits)),
        ]
    }
}

struct Pending {
    io: BdevIo,
    /// The base applied the cipher while copying (the caller's buffers went to the base).
    fused: bool,
}

/// A channel's cipher: used by the stage itself, or handed to a base that fuses it into its
/// copy.
struct Cipher {
    xts: RefCell<Xts>,
    bs: usize,
}

impl CopyTransform for Cipher {
    fn apply(&self, op: IoType, src: &[u8], dst: &mut [u8], dev_offset: u64) -> bool {
        let bs = self.bs as u64;
        let Ok(mut x) = self.xts.try_borrow_mut() else {
            return false;
        };
        if !dev_offset.is_multiple_of(bs) {
            return false;
        }
        let lba = dev_offset / bs;
        match op {
            IoType::Read => x.decrypt_into(src, dst, self.bs, lba),
            IoType::Write => x.encrypt_into(src, dst, self.bs, lba),
            _ => false,
        }
    }
}

struct CryptoChannel {
    base: IoChannel,
    /// The base channel fuses copies (see [`CopyTransform`]).
    fused: bool,
    cipher: Rc<Cipher>,
    bs: usize,
    sink: Rc<Collect>,
    slots: Slab<Pending>,
    batch: Vec<BdevIo>,
}

impl CryptoChannel {
    /// Encrypts or decrypts a scatter list in place, data unit by data unit from `lba`;
    /// segments that do not hold whole blocks go through a bounce buffer.
    fn each_unit(&mut self, bufs: &mut SgList, lba: u64, encrypt: bool) -> bool {
        let bs = self.bs;
        let mut xts = self.cipher.xts.borrow_mut();
        if bufs.iter().all(|b| b.len().is_multiple_of(bs)) {
            let mut l = lba;
            let mut ok = true;
            for b in bufs.iter_mut() {
                ok &= if encrypt {
                    xts.encrypt(b, bs, l)
                } else {
                    xts.decrypt(b, bs, l)
                };
                l += (b.len() / bs) as u64;
            }
            return ok;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut tmp = buf::alloc(total).unwrap_or_else(|| IoBuf::heap(total));
        let mut off = 0;
        for b in bufs.iter() {
            tmp[off..off + b.len()].copy_from_slice(b);
            off += b.len();
        }
        let ok = if encrypt {
            xts.encrypt(&mut tmp, bs, lba)
        } else {
            xts.decrypt(&mut tmp, bs, lba)
        };
        let mut off = 0;
        for b in bufs.iter_mut() {
            let n = b.len();
            b.copy_from_slice(&tmp[off..off + n]);
            off += n;
        }
        ok
    }
}

impl BackendChannel for CryptoChannel {
    fn submit(&mut self, mut io: BdevIo, done: &mut Completions) {
        let (op, off, n) = (io.op, io.offset_blocks, io.num_blocks);
        let bs = self.bs;
        let whole_units = io.bufs.iter().all(|b| b.len().is_multiple_of(bs));
        let fused = self.fused && whole_units && matches!(op, IoType::Read | IoType::Write);
        let bufs = match op {
            // The base encrypts or decrypts while it copies; the caller's buffers go down.
            IoType::Read | IoType::Write if fused => std::mem::take(&mut io.bufs),
            IoType::Write => {
                // Never encrypt the caller's plaintext in place: it gets its buffers back.
                let total: usize = io.bufs.iter().map(|b| b.len()).sum();
                let mut ct = buf::alloc(total).unwrap_or_else(|| IoBuf::heap(total));
                let mut xts = self.cipher.xts.borrow_mut();
                let ok = if whole_units {
                    // Encrypt straight from the caller's buffers (no plaintext copy).
                    let (mut o, mut lba, mut ok) = (0, off, true);
                    for b in io.bufs.iter() {
                        ok &= xts.encrypt_into(b, &mut ct[o..o + b.len()], bs, lba);
                        o += b.len();
                        lba += (b.len() / bs) as u64;
                    }
                    ok
                } else {
                    let mut o = 0;
                    for b in io.bufs.iter() {
                        ct[o..o + b.len()].copy_from_slice(b);
                        o += b.len();
                    }
                    xts.encrypt(&mut ct, bs, off)
                };
                drop(xts);
                if !ok {
                    done.complete(io, IoStatus::Failed(libc::EIO));
                    return;
                }
                let mut sg = SgList::new();
                sg.push(ct);
                sg
            }
            IoType::Read => std::mem::take(&mut io.bufs),
            _ => SgList::new(),
        };
        let slot = self.slots.insert(Pending { io, fused });
        let sink: Rc<dyn IoSink> = self.sink.clone();
        let mut sub = BdevIo::new(op, off, n, bufs, slot as u64, IoCallback::Sink(sink));
        if fused {
            let x: Rc<dyn CopyTransform> = self.cipher.clone();
            sub.xform = Some(x);
        }
        self.base.submit(sub);
    }

    fn poll(&mut self, done: &mut Completions) -> bool {
        std::mem::swap(&mut *self.sink.0.borrow_mut(), &mut self.batch);
        if self.batch.is_empty() {
            return false;
        }
        let mut batch = std::mem::take(&mut self.batch);
        for mut sub in batch.drain(..) {
            let slot = sub.tag as usize;
            let Some(Pending { mut io, fused }) = self.slots.remove(slot) else {
                continue;
            };
            let mut status = sub.status;
            if fused {
                io.bufs = std::mem::take(&mut sub.bufs);
            } else if io.op == IoType::Read {
                io.bufs = std::mem::take(&mut sub.bufs);
                if status == IoStatus::Success {
                    let lba = io.offset_blocks;
                    if !self.each_unit(&mut io.bufs, lba, false) {
                        status = IoStatus::Failed(libc::EIO);
                    }
                }
            }
            done.complete(io, status);
        }
        self.batch = batch;
        true
    }
}
