//! The compression stage.

use super::*;

/// Smallest and largest chunk (the unit compressed as a whole) the engine accepts.
pub(crate) const CHUNK_SIZES: std::ops::RangeInclusive<u32> = 4096..=128 * 1024;
/// Zstd levels the engine accepts.
pub(crate) const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

/// `bdev_compress_create`. SPDK's spellings `comp_algo` and `comp_level` are accepted; its
/// `pm_path` and `lb_size` are accepted and ignored: ballast keeps the volume's metadata on the
/// base bdev (no persistent-memory file) and the logical block size is the base's.
pub(crate) fn bdev_compress_create(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        base_bdev_name: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default, alias = "comp_algo")]
        algorithm: Option<String>,
        #[serde(default, alias = "comp_level")]
        level: Option<i32>,
        #[serde(default)]
        chunk_size: Option<u32>,
        #[serde(default)]
        pm_path: Option<String>,
        #[serde(default)]
        lb_size: Option<u32>,
        /// Format a base holding data but no compressed volume (ballast's; not saved).
        #[serde(default)]
        force: bool,
    }
    let p: P = parse(params)?;
    // Checked here as well as in the engine, so a bad request never reaches the base bdev.
    let algorithm = p.algorithm.map(|a| a.to_ascii_lowercase());
    if let Some(a) = algorithm.as_deref() {
        if a != "lz4" && a != "zstd" {
            return Err(RpcError::params(format!(
                "Invalid parameters: algorithm {a:?} is not supported (lz4 or zstd)"
            )));
        }
    }
    if let Some(l) = p.level {
        if algorithm.as_deref() == Some("lz4") {
            return Err(RpcError::params(
                "Invalid parameters: level applies to zstd only, not to lz4",
            ));
        }
        if !ZSTD_LEVELS.contains(&l) {
            return Err(RpcError::params(format!(
                "Invalid parameters: level {l} is out of range (zstd: {}..={})",
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            )));
        }
    }
    if let Some(c) = p.chunk_size {
        if !c.is_power_of_two() || !CHUNK_SIZES.contains(&c) {
            return Err(RpcError::params(format!(
                "Invalid parameters: chunk_size {c} must be a power of two from {} to {} bytes",
                CHUNK_SIZES.start(),
                CHUNK_SIZES.end()
            )));
        }
    }
    let b = compress::create(
        &ctx.rt,
        compress::CompressOpts {
            name: p.name,
            base: p.base_bdev_name,
            algorithm,
            level: p.level,
            chunk_size: p.chunk_size,
            force: p.force,
        },
    )?;
    Ok(json!(b.name()))
}

/// The `bdev_compress_create` params that recreate compressed bdev `s`, as save_config writes
/// them.
pub(crate) fn compress_json(s: &CompressStats) -> Value {
    let mut v = json!({
        "base_bdev_name": s.base,
        "name": s.name,
        "algorithm": s.algorithm.name(),
        "chunk_size": s.chunk_size,
    });
    if let Algorithm::Zstd { level } = s.algorithm {
        v["level"] = json!(level);
    }
    v
}

/// `bdev_compress_get_stats` (a ballast extension): the create params plus the space figures.
pub(crate) fn bdev_compress_get_stats(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let p: OptName = parse(params)?;
    let mut all = match p.name {
        Some(n) => vec![compress::stats(&n)?],
        None => compress::stages(),
    };
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Value::Array(
        all.iter()
            .map(|s| {
                let mut v = compress_json(s);
                v["logical_bytes"] = json!(s.logical_bytes);
                v["mapped_bytes"] = json!(s.mapped_bytes);
                v["allocated_bytes"] = json!(s.allocated_bytes);
                v["compression_ratio"] = json!(s.ratio);
                v
            })
            .collect(),
    ))
}
