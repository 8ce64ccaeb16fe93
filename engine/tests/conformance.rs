//! Every bdev backend passes the same conformance body (tests/common).

mod common;

use ballast_engine::backend::{malloc, null, uring};
use ballast_engine::{IoStatus, IoType};
use common::{conformance, lend_read, malloc_named, submit_one, Harness, Model};

#[test]
fn malloc_512() {
    let h = Harness::new(2);
    malloc::create(malloc::MallocOpts {
        name: "conf_malloc512".into(),
        num_blocks: 8192,
        block_size: 512,
        uuid: None,
    })
    .unwrap();
    conformance(&h, "conf_malloc512", Model::Persistent, 1);
}

#[test]
fn malloc_4096() {
    let h = Harness::new(2);
    malloc::create(malloc::MallocOpts {
        name: "conf_malloc4k".into(),
        num_blocks: 1024,
        block_size: 4096,
        uuid: None,
    })
    .unwrap();
    conformance(&h, "conf_malloc4k", Model::Persistent, 2);
}

#[test]
fn null_512() {
    let h = Harness::new(2);
    null::create("conf_null", 1 << 20, 512, None).unwrap();
    conformance(&h, "conf_null", Model::Discard, 3);
}

/// A uring bdev `name` over a new sparse file (removed when the returned path drops).
fn uring_named(name: &str, block_size: u32, blocks: u64) -> tempfile_path::TempPath {
    let p = tempfile_path::TempPath::new(name);
    let f = std::fs::File::create(&p.0).unwrap();
    f.set_len(block_size as u64 * blocks).unwrap();
    uring::create(uring::UringOpts {
        name: name.into(),
        filename: p.0.to_string_lossy().into_owned(),
        block_size,
        uuid: None,
    })
    .unwrap();
    p
}

#[test]
fn uring_file_4096() {
    let h = Harness::new(2);
    let _tmp = uring_named("conf_uring4k", 4096, 1024);
    conformance(&h, "conf_uring4k", Model::Persistent, 4);
}

#[test]
fn uring_file_512() {
    let h = Harness::new(2);
    let _tmp = uring_named("conf_uring512", 512, 8192);
    conformance(&h, "conf_uring512", Model::Persistent, 5);
}

/// A file path under the target dir's tmp that is removed on drop.
mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn new(tag: &str) -> Self {
            let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            TempPath(dir.join(format!("ballast-{tag}-{}.img", std::process::id())))
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn crypto_over_malloc(tag: &str, bs: u32, blocks: u64, key_len: usize) -> (String, String, String) {
    let base = format!("conf_cbase_{tag}");
    malloc_named(&base, bs, blocks);
    let key = format!("conf_key_{tag}");
    let k1: Vec<u8> = (0..key_len as u8).collect();
    let k2: Vec<u8> = (0..key_len as u8).map(|x| x ^ 0xA5).collect();
    ballast_engine::backend::crypto::key_create(&key, "AES_XTS", &k1, &k2).unwrap();
    let name = format!("conf_crypto_{tag}");
    ballast_engine::backend::crypto::create(&name, &base, &key).unwrap();
    (name, base, key)
}

#[test]
fn crypto_256_over_malloc_512() {
    let h = Harness::new(2);
    let (name, _, _) = crypto_over_malloc("a", 512, 4096, 32);
    conformance(&h, &name, Model::Persistent, 5);
}

#[test]
fn crypto_128_over_malloc_4096() {
    let h = Harness::new(2);
    let (name, _, _) = crypto_over_malloc("b", 4096, 512, 16);
    conformance(&h, &name, Model::Persistent, 6);
}

#[test]
fn crypto_256_over_uring_4096() {
    // A base that does not fuse copies: the stage encrypts into a bounce buffer and decrypts
    // in place itself (over malloc, the base does both while copying).
    let h = Harness::new(2);
    let _tmp = uring_named("conf_cbase_u", 4096, 512);
    let k1: Vec<u8> = (0..32u8).collect();
    let k2: Vec<u8> = (0..32u8).map(|x| x ^ 0x3C).collect();
    ballast_engine::backend::crypto::key_create("conf_key_u", "AES_XTS", &k1, &k2).unwrap();
    ballast_engine::backend::crypto::create("conf_crypto_u", "conf_cbase_u", "conf_key_u").unwrap();
    conformance(&h, "conf_crypto_u", Model::Persistent, 7);
}

/// A transform that XORs with 0xFF, to see whether a base applied it.
struct Invert;
impl ballast_engine::bdev::CopyTransform for Invert {
    fn apply(&self, _op: IoType, src: &[u8], dst: &mut [u8], _dev_offset: u64) -> bool {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = !*s;
        }
        true
    }
}

/// Submits one I/O carrying [`Invert`] on `name` (on the harness's first reactor).
fn io_with_xform(h: &Harness, name: &str, op: IoType, data: Vec<u8>) -> (IoStatus, Vec<u8>) {
    use ballast_engine::bdev::{BdevIo, SgList};
    use ballast_engine::buf::IoBuf;
    submit_one(
        h,
        name,
        move |bs, cb| {
            let mut bufs = SgList::new();
            bufs.push(IoBuf::from_slice(&data));
            let mut io = BdevIo::new(op, 0, data.len() as u64 / bs as u64, bufs, 0, cb);
            io.xform = Some(std::rc::Rc::new(Invert));
            io
        },
        |io| (io.status, io.bufs[0].to_vec()),
    )
}

#[test]
fn copy_transforms_are_fused_by_malloc_and_refused_elsewhere() {
    let h = Harness::new(1);
    malloc_named("conf_xf_m", 512, 64);
    null::create("conf_xf_n", 64, 512, None).unwrap();
    let data: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
    let inv: Vec<u8> = data.iter().map(|b| !b).collect();
    // malloc stores the transform of the caller's data and hands the data back unchanged...
    let (st, back) = io_with_xform(&h, "conf_xf_m", IoType::Write, data.clone());
    assert_eq!(st, IoStatus::Success);
    assert_eq!(back, data);
    let core = h.rt.cores()[0];
    let (_, raw) = h.io(core, "conf_xf_m", IoType::Read, 0, 2, None, 1024, None);
    assert_eq!(raw, inv, "the region holds the transformed bytes");
    // ...and a transformed read undoes it.
    let (st, got) = io_with_xform(&h, "conf_xf_m", IoType::Read, vec![0; 1024]);
    assert_eq!(st, IoStatus::Success);
    assert_eq!(got, data);
    // A base that cannot fuse refuses rather than ignoring the transform.
    let (st, _) = io_with_xform(&h, "conf_xf_n", IoType::Write, data.clone());
    assert_eq!(st, IoStatus::NotSupported);
    let (st, _) = io_with_xform(&h, "conf_xf_n", IoType::Read, vec![0; 1024]);
    assert_eq!(st, IoStatus::NotSupported);
}

#[test]
fn lent_reads_are_windows_on_malloc_memory_or_zeros_and_refused_elsewhere() {
    let h = Harness::new(1);
    malloc_named("conf_lend_m", 512, 64);
    null::create("conf_lend_n", 8192, 512, None).unwrap();
    let _tmp = uring_named("conf_lend_u", 512, 64);
    let core = h.rt.cores()[0];
    let data: Vec<u8> = (0..2048u32).map(|i| (i % 253) as u8).collect();
    let (st, _) = h.io(
        core,
        "conf_lend_m",
        IoType::Write,
        4,
        4,
        Some(data.clone()),
        0,
        None,
    );
    assert_eq!(st, IoStatus::Success);
    // malloc lends its memory: one buffer, marked lent, holding what was written.
    let (st, n, lent, addr, got) = lend_read(&h, "conf_lend_m", IoType::Read, 4, 4, false);
    assert_eq!((st, n, lent), (IoStatus::Success, 1, true));
    assert_eq!(got, data);
    // It is a window, not a copy: the same blocks lend the same address; the next block is
    // 512 bytes on.
    let (_, _, _, addr2, _) = lend_read(&h, "conf_lend_m", IoType::Read, 4, 1, false);
    let (_, _, _, addr3, tail) = lend_read(&h, "conf_lend_m", IoType::Read, 5, 3, false);
    assert_eq!(addr2, addr);
    assert_eq!(addr3, addr + 512);
    assert_eq!(tail, data[512..]);
    // Misuse is refused with the channel's usual statuses.
    for (op, off, nb, with_buf, want) in [
        (IoType::Read, 62, 4, false, IoStatus::OutOfRange),
        (IoType::Read, 0, 0, false, IoStatus::InvalidLength),
        (IoType::Read, 0, 1, true, IoStatus::InvalidLength),
        (IoType::Write, 0, 1, true, IoStatus::NotSupported),
    ] {
        let got = lend_read(&h, "conf_lend_m", op, off, nb, with_buf).0;
        assert_eq!(
            got, want,
            "{op:?} at {off} of {nb} blocks, buffer given: {with_buf}"
        );
    }
    // null lends read-only zeros; a read longer than its 1 MiB window gets several buffers.
    let (st0, n, lent, _, z) = lend_read(&h, "conf_lend_n", IoType::Read, 7, 9, false);
    assert_eq!((st0, n, lent), (IoStatus::Success, 1, true));
    assert_eq!(z, vec![0u8; 9 * 512]);
    let (st0, n, ..) = lend_read(&h, "conf_lend_n", IoType::Read, 0, 4096, false);
    assert_eq!((st0, n), (IoStatus::Success, 2));
    // A bdev that does not lend refuses rather than completing without data.
    assert_eq!(
        lend_read(&h, "conf_lend_u", IoType::Read, 0, 1, false).0,
        IoStatus::NotSupported
    );
}

#[test]
fn crypto_stores_ciphertext_and_guards_its_key_and_base() {
    use ballast_engine::backend::crypto;
    use ballast_engine::{IoStatus, IoType};
    let h = Harness::new(1);
    let (name, base, key) = crypto_over_malloc("c", 512, 256, 32);
    let core = h.rt.cores()[0];
    let pt: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let (st, _) = h.io(core, &name, IoType::Write, 8, 8, Some(pt.clone()), 0, None);
    assert_eq!(st, IoStatus::Success);
    // The base holds ciphertext, which decrypts (tweak = LBA) to the plaintext.
    let (st, raw) = h.io(core, &base, IoType::Read, 8, 8, None, 4096, None);
    assert_eq!(st, IoStatus::Success);
    assert_ne!(raw, pt, "the base must not hold plaintext");
    let (k1, k2) = crypto::key_material(&key).unwrap();
    let mut x = ballast_engine::crypto::Xts::new(&k1, &k2).unwrap();
    let mut dec = raw.clone();
    assert!(x.decrypt(&mut dec, 512, 8));
    assert_eq!(dec, pt);
    // Reads through the stage return plaintext; unwritten blocks read as zeros.
    let (_, got) = h.io(core, &name, IoType::Read, 8, 8, None, 4096, None);
    assert_eq!(got, pt);
    let (_, z) = h.io(core, &name, IoType::Read, 100, 2, None, 1024, None);
    assert!(z.iter().all(|&b| b == 0));
    // The base is claimed; the key is in use.
    assert!(ballast_engine::bdev::delete(&base).is_err());
    assert!(crypto::key_destroy(&key).is_err());
    assert!(crypto::keys()
        .iter()
        .any(|k| k.name == key && k.bits == 256 && k.users == 1));
    assert!(
        crypto::create("conf_crypto_c2", &base, &key).is_err(),
        "base already claimed"
    );
    assert!(crypto::create("conf_crypto_c3", &base, "no-such-key").is_err());
    assert!(crypto::key_create("k_bad", "AES_CBC", &k1, &k2).is_err());
    assert!(crypto::key_create("k_same", "AES_XTS", &k1, &k1).is_err());
    // Deleting the stage frees the base and the key.
    drop(h);
    ballast_engine::bdev::delete(&name).unwrap();
    for _ in 0..100 {
        if crypto::key_destroy(&key).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        crypto::keys().iter().all(|k| k.name != key),
        "key destroyed after the stage"
    );
    ballast_engine::bdev::delete(&base).unwrap();
}

fn compress_over(base: &str, name: &str, algorithm: &str, chunk: u32, h: &Harness) {
    use ballast_engine::backend::compress;
    compress::create(
        &h.rt.handle(),
        compress::CompressOpts {
            name: Some(name.into()),
            base: base.into(),
            algorithm: Some(algorithm.into()),
            chunk_size: Some(chunk),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn compress_lz4_over_malloc_512() {
    let h = Harness::new(2);
    malloc_named("conf_zbase_a", 512, 16384);
    compress_over("conf_zbase_a", "conf_comp_a", "lz4", 16384, &h);
    conformance(&h, "conf_comp_a", Model::Persistent, 11);
}

#[test]
fn compress_zstd_over_malloc_4096() {
    let h = Harness::new(2);
    malloc_named("conf_zbase_b", 4096, 4096);
    compress_over("conf_zbase_b", "conf_comp_b", "zstd", 32768, &h);
    conformance(&h, "conf_comp_b", Model::Persistent, 12);
}

#[test]
fn compress_over_crypto_over_malloc() {
    // The stack: namespace ← compress ← crypto ← malloc (compress, then encrypt).
    let h = Harness::new(2);
    let (crypto, _, _) = crypto_over_malloc("z", 512, 16384, 32);
    compress_over(&crypto, "conf_comp_z", "lz4", 8192, &h);
    conformance(&h, "conf_comp_z", Model::Persistent, 13);
}

#[test]
fn crypto_over_compress_over_malloc() {
    let h = Harness::new(2);
    malloc_named("conf_zbase_y", 4096, 4096);
    compress_over("conf_zbase_y", "conf_comp_y", "lz4", 16384, &h);
    let key = "conf_key_y";
    let k1: Vec<u8> = (0..16u8).collect();
    let k2: Vec<u8> = (0..16u8).map(|x| x ^ 0x5A).collect();
    ballast_engine::backend::crypto::key_create(key, "AES_XTS", &k1, &k2).unwrap();
    ballast_engine::backend::crypto::create("conf_crypto_y", "conf_comp_y", key).unwrap();
    conformance(&h, "conf_crypto_y", Model::Persistent, 14);
}
