//! Generic bdev methods and the base bdevs: malloc, null, uring.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NameOpt {
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Milliseconds to wait for bdev `name` to appear (SPDK's bdev_get_bdevs).
    #[serde(default)]
    pub(crate) timeout: Option<u64>,
}

/// Longest wait `timeout` may ask for: the RPC thread serves one request at a time.
const MAX_WAIT_MS: u64 = 60_000;

/// Waits up to `timeout_ms` for bdev `name` to be registered.
fn wait_for_bdev(name: &str, timeout_ms: u64) {
    let until = Instant::now() + std::time::Duration::from_millis(timeout_ms.min(MAX_WAIT_MS));
    while ballast_engine::bdev::lookup(name).is_none() && Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub(crate) fn bdevs_named(
    name: Option<String>,
) -> Result<Vec<Arc<ballast_engine::Bdev>>, RpcError> {
    match name {
        Some(n) => ballast_engine::bdev::lookup(&n)
            .map(|b| vec![b])
            .ok_or_else(|| RpcError::new(-19, format!("bdev {n} not found"))),
        None => {
            let mut v = ballast_engine::bdev::list();
            v.sort_by(|a, b| a.name().cmp(b.name()));
            Ok(v)
        }
    }
}

/// SPDK's `supported_io_types` keys, in its order, and the ballast operation behind each
/// (`None`: an operation ballast bdevs never support).
const SPDK_IO_TYPES: [(&str, Option<IoType>); 22] = [
    ("read", Some(IoType::Read)),
    ("write", Some(IoType::Write)),
    ("unmap", Some(IoType::Unmap)),
    ("flush", Some(IoType::Flush)),
    ("reset", None),
    ("nvme_admin", None),
    ("nvme_io", None),
    ("nvme_io_md", None),
    ("write_zeroes", Some(IoType::WriteZeroes)),
    ("zcopy", None),
    ("get_zone_info", None),
    ("zone_management", None),
    ("zone_append", None),
    ("compare", None),
    ("compare_and_write", None),
    ("abort", None),
    ("seek_hole", None),
    ("seek_data", None),
    ("copy", None),
    ("nvme_iov_md", None),
    ("nvme_nssr", None),
    ("write_uncorrectable", None),
];

pub(crate) fn bdev_get_bdevs(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: NameOpt = parse(params)?;
    if let (Some(n), Some(t)) = (&p.name, p.timeout) {
        wait_for_bdev(n, t);
    }
    let out: Vec<Value> = bdevs_named(p.name)?
        .into_iter()
        .map(|b| {
            let i = b.info();
            let io = |t| b.supports(t);
            // Stage details under driver_specific.<kind>, as SPDK nests them.
            let details: Map<String, Value> = b
                .describe()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let mut details = details;
            if details.contains_key("base_bdev_name") {
                details.insert("name".into(), json!(i.name));
            }
            let mut specific = Map::new();
            if !details.is_empty() {
                specific.insert(
                    driver_key(b.product_name()).to_string(),
                    Value::Object(details),
                );
            }
            // An lvol's details are SPDK's lvol object, made from the store's own record.
            if b.product_name() == LVOL.0 {
                if let Some(l) = ballast_engine::backend::lvol::lvol_info(b.name()) {
                    specific.insert("lvol".into(), super::lvol::lvol_driver_json(&l));
                }
            }
            let mut types = Map::new();
            for (key, op) in SPDK_IO_TYPES {
                types.insert(key.to_string(), json!(op.is_some_and(io)));
            }
            let mut v = json!({
                "name": i.name,
                // Now: an lvol's `lvs/lvol` alias follows renames of the lvol and its store.
                "aliases": b.aliases(),
                "product_name": b.product_name(),
                "block_size": i.block_size,
                // The live size: an lvol's changes with bdev_lvol_resize.
                "num_blocks": b.num_blocks(),
                "uuid": i.uuid.to_string(),
                "assigned_rate_limits": {
                    "rw_ios_per_sec": 0,
                    "rw_mbytes_per_sec": 0,
                    "r_mbytes_per_sec": 0,
                    "w_mbytes_per_sec": 0,
                },
                "claimed": b.claimed_by().is_some(),
                "zoned": false,
                "supported_io_types": types,
                "driver_specific": specific,
                "write_cache": i.write_cache,
                "optimal_io_boundary": i.optimal_io_boundary,
            });
            if let Some(by) = b.claimed_by() {
                v["claim_type"] = json!("exclusive_write");
                v["claimed_by"] = json!(by);
            }
            v
        })
        .collect();
    Ok(Value::Array(out))
}

pub(crate) fn bdev_get_iostat(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let p: OptName = parse(params)?;
    let bdevs: Vec<Value> = bdevs_named(p.name)?
        .into_iter()
        .map(|b| {
            let s = b.iostat();
            json!({
                "name": b.name(),
                "bytes_read": s.bytes_read,
                "num_read_ops": s.num_read_ops,
                "bytes_written": s.bytes_written,
                "num_write_ops": s.num_write_ops,
                "num_unmap_ops": s.num_unmap_ops,
                "num_write_zeroes_ops": s.num_write_zeroes_ops,
                "num_flush_ops": s.num_flush_ops,
                "num_io_errors": s.num_errors,
            })
        })
        .collect();
    Ok(json!({
        "tick_rate": TICK_RATE,
        "ticks": ctx.started.elapsed().as_nanos() as u64,
        "bdevs": bdevs,
    }))
}

pub(crate) fn parse_uuid(s: Option<String>, param: &str) -> Result<Option<uuid::Uuid>, RpcError> {
    s.map(|u| {
        uuid::Uuid::parse_str(&u)
            .map_err(|e| RpcError::params(format!("Invalid parameters: {param} {u:?}: {e}")))
    })
    .transpose()
}

pub(crate) fn check_block_size(bs: u32) -> Result<(), RpcError> {
    if bs != 512 && bs != 4096 {
        return Err(RpcError::params(format!(
            "Invalid parameters: block_size {bs} (must be 512 or 4096)"
        )));
    }
    Ok(())
}

pub(crate) fn check_num_blocks(n: u64, bs: u32) -> Result<(), RpcError> {
    if n == 0 {
        return Err(RpcError::params(
            "Invalid parameters: num_blocks must be > 0",
        ));
    }
    if n.checked_mul(bs as u64).is_none() {
        return Err(RpcError::params("Invalid parameters: num_blocks too large"));
    }
    Ok(())
}

/// Next free default name with `prefix` (Malloc0, Malloc1, ...).
pub(crate) fn next_name(prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| ballast_engine::bdev::lookup(n).is_none())
        .unwrap_or_else(|| prefix.to_string())
}

/// Params of the RAM-sized bdev constructors (malloc, null).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SizedBdev {
    #[serde(default)]
    pub(crate) name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    #[serde(default)]
    uuid: Option<String>,
    /// SPDK's; ballast's physical block is the logical block (0 means the same).
    #[serde(default)]
    physical_block_size: Option<u32>,
    /// ballast's: create a malloc bdev larger than the machine can back (see
    /// `malloc::backing_limit`).
    #[serde(default)]
    overcommit: bool,
}

impl SizedBdev {
    fn parse(params: Option<Value>) -> Result<(Self, Option<uuid::Uuid>), RpcError> {
        let mut p: SizedBdev = parse(params)?;
        check_block_size(p.block_size)?;
        check_num_blocks(p.num_blocks, p.block_size)?;
        if let Some(pbs) = p
            .physical_block_size
            .filter(|&b| b != 0 && b != p.block_size)
        {
            return Err(RpcError::params(format!(
                "Invalid parameters: physical_block_size {pbs} is not supported by ballast \
                 (the physical block is the logical block, {})",
                p.block_size
            )));
        }
        let uuid = parse_uuid(p.uuid.take(), "uuid")?;
        Ok((p, uuid))
    }
}

pub(crate) fn bdev_malloc_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let (p, uuid) = SizedBdev::parse(params)?;
    let b = malloc::create_with(
        malloc::MallocOpts {
            name: p.name.unwrap_or_else(|| next_name("Malloc")),
            num_blocks: p.num_blocks,
            block_size: p.block_size,
            uuid,
        },
        p.overcommit,
    )?;
    Ok(json!(b.name()))
}

pub(crate) fn bdev_null_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let (p, uuid) = SizedBdev::parse(params)?;
    if p.overcommit {
        return Err(RpcError::params(
            "Invalid parameters: overcommit applies to malloc bdevs (a null bdev holds no memory)",
        ));
    }
    let name = p
        .name
        .ok_or_else(|| RpcError::params("Invalid parameters: missing field `name`"))?;
    let b = null::create(&name, p.num_blocks, p.block_size, uuid)?;
    Ok(json!(b.name()))
}

pub(crate) fn bdev_uring_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        filename: String,
        #[serde(default)]
        block_size: Option<u32>,
        #[serde(default)]
        uuid: Option<String>,
    }
    let p: P = parse(params)?;
    let bs = p.block_size.unwrap_or(512);
    check_block_size(bs)?;
    let uuid = parse_uuid(p.uuid, "uuid")?;
    let b = uring::create(uring::UringOpts {
        name: p.name,
        filename: p.filename,
        block_size: bs,
        uuid,
    })?;
    Ok(json!(b.name()))
}

/// The product names of the bdev kinds, as `bdev_get_bdevs` reports them, and what the
/// delete methods call each kind in their errors.
pub(crate) const MALLOC: (&str, &str) = ("Malloc disk", "malloc");
pub(crate) const NULL: (&str, &str) = ("Null disk", "null");
pub(crate) const URING: (&str, &str) = ("URING bdev", "uring");
pub(crate) const CRYPTO: (&str, &str) = ("crypto", "crypto");
pub(crate) const COMPRESS: (&str, &str) = ("compress", "compress");
pub(crate) const ERROR: (&str, &str) = ("error", "error");
pub(crate) const RAID: (&str, &str) = ("raid", "raid");
pub(crate) const LVOL: (&str, &str) = (ballast_engine::backend::lvol::PRODUCT, "lvol");

/// Deletes bdev `params.name` if it is of `kind` (a product name and its short name). A
/// delete aimed at a bdev of another kind is refused as SPDK refuses it (-19, "No such
/// device"), naming the kind found, and leaves that bdev alone.
fn delete_kind(params: Option<Value>, kind: (&str, &str)) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    let p: P = parse(params)?;
    delete_named(&p.name, kind)
}

/// Deletes bdev `name` if it is of `kind` (SPDK's -19 otherwise, naming what it is).
pub(crate) fn delete_named(name: &str, kind: (&str, &str)) -> Result<Value, RpcError> {
    let b = of_kind(name, kind, " (use its own delete method)")?;
    ballast_engine::bdev::delete(b.name())?;
    Ok(json!(true))
}

/// Bdev `name` (a name, alias or UUID), or SPDK's -19 "No such device".
pub(crate) fn existing(name: &str) -> Result<Arc<ballast_engine::Bdev>, RpcError> {
    ballast_engine::bdev::lookup(name).ok_or_else(|| {
        RpcError::new(
            -19,
            format!(
                "No such device: bdev {} not found",
                crate::error::cap(name, 255)
            ),
        )
    })
}

/// Bdev `name` if it is of `kind`; SPDK's -19 otherwise, naming the kind it is (and ending
/// with `hint`).
pub(crate) fn of_kind(
    name: &str,
    kind: (&str, &str),
    hint: &str,
) -> Result<Arc<ballast_engine::Bdev>, RpcError> {
    let b = existing(name)?;
    if b.product_name() != kind.0 {
        return Err(RpcError::new(
            -19,
            format!(
                "No such device: bdev {} is a {} bdev, not a {} bdev{hint}",
                b.name(),
                kind_of(b.product_name()),
                kind.1
            ),
        ));
    }
    Ok(b)
}

/// The `driver_specific` key SPDK nests a bdev's details under, by product name.
fn driver_key(product: &str) -> &str {
    match product {
        "NVMe disk" => "nvme",
        p => kind_of(p),
    }
}

/// The short kind name of a product name ("Malloc disk" -> "malloc").
fn kind_of(product: &str) -> &str {
    [
        MALLOC,
        NULL,
        URING,
        CRYPTO,
        COMPRESS,
        LVOL,
        ("NVMe disk", "NVMe (bdev_nvme)"),
    ]
    .iter()
    .find(|k| k.0 == product)
    .map_or(product, |k| k.1)
}

pub(crate) fn bdev_malloc_delete(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    delete_kind(params, MALLOC)
}

pub(crate) fn bdev_null_delete(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    delete_kind(params, NULL)
}

pub(crate) fn bdev_uring_delete(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    delete_kind(params, URING)
}

pub(crate) fn bdev_crypto_delete(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    delete_kind(params, CRYPTO)
}

pub(crate) fn bdev_error_delete(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    delete_kind(params, ERROR)
}

pub(crate) fn bdev_compress_delete(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    delete_kind(params, COMPRESS)
}
