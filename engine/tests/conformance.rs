//! Every bdev backend passes the same conformance body (tests/common).

mod common;

use ballast_engine::backend::{malloc, null, uring};
use common::{conformance, Harness, Model};

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
