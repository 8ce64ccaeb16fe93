//! The null bdev: writes are discarded, reads return zeros. The benchmark floor.

use std::sync::Arc;

use crate::bdev::{
    self, BackendChannel, Bdev, BdevBackend, BdevInfo, BdevIo, Completions, IoStatus, IoType,
};
use crate::error::Result;

struct NullBackend;

impl BdevBackend for NullBackend {
    fn product_name(&self) -> &'static str {
        "Null disk"
    }
    fn supports(&self, _op: IoType) -> bool {
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>> {
        Ok(Box::new(NullChannel))
    }
}

struct NullChannel;

impl BackendChannel for NullChannel {
    #[inline]
    fn submit(&mut self, mut io: BdevIo, done: &mut Completions) {
        if io.op == IoType::Read {
            super::for_each_segment(&mut io, |_, seg| seg.fill(0));
        }
        done.complete(io, IoStatus::Success);
    }
}

/// Creates and registers a null bdev of `num_blocks` blocks.
pub fn create(
    name: &str,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<uuid::Uuid>,
) -> Result<Arc<Bdev>> {
    let mut info = BdevInfo::new(name, block_size, num_blocks);
    if let Some(u) = uuid {
        info.uuid = u;
    }
    bdev::register(info, Box::new(NullBackend))
}
