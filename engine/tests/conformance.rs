//! Every bdev backend passes the same conformance body (tests/common).

mod common;

use ballast_engine::backend::{malloc, null, uring};
use common::{conformance, malloc_named, Harness, Model};

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

fn uring_file(block_size: u32, blocks: u64, tag: &str) -> (tempfile_path::TempPath, String) {
    let p = tempfile_path::TempPath::new(tag);
    let f = std::fs::File::create(&p.0).unwrap();
    f.set_len(block_size as u64 * blocks).unwrap();
    let s = p.0.to_string_lossy().into_owned();
    (p, s)
}

#[test]
fn uring_file_4096() {
    let h = Harness::new(2);
    let (_tmp, path) = uring_file(4096, 1024, "u4k");
    uring::create(uring::UringOpts {
        name: "conf_uring4k".into(),
        filename: path,
        block_size: 4096,
        uuid: None,
    })
    .unwrap();
    conformance(&h, "conf_uring4k", Model::Persistent, 4);
}

#[test]
fn uring_file_512() {
    let h = Harness::new(2);
    let (_tmp, path) = uring_file(512, 8192, "u512");
    uring::create(uring::UringOpts {
        name: "conf_uring512".into(),
        filename: path,
        block_size: 512,
        uuid: None,
    })
    .unwrap();
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
