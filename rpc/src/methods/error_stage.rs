//! The fault-injection stage (SPDK's error bdev): `bdev_error_create`,
//! `bdev_error_inject_error`; `bdev_error_delete` is with the other deletes.

use super::*;
use ballast_engine::backend::error::{self, ErrorKind, Injection};

pub(crate) fn bdev_error_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        base_name: String,
        #[serde(default)]
        uuid: Option<String>,
    }
    let p: P = parse(params)?;
    let uuid = parse_uuid(p.uuid, "uuid")?;
    let b = error::create(&p.base_name, uuid)?;
    Ok(json!(b.name()))
}

pub(crate) fn bdev_error_inject_error(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        io_type: String,
        error_type: String,
        #[serde(default)]
        num: Option<u64>,
        #[serde(default)]
        queue_depth: Option<u64>,
        #[serde(default)]
        corrupt_offset: Option<u64>,
        #[serde(default)]
        corrupt_value: Option<u8>,
        /// ballast's: take only I/Os touching blocks [start, start + count).
        #[serde(default)]
        block_start: Option<u64>,
        #[serde(default)]
        block_count: Option<u64>,
    }
    let p: P = parse(params)?;
    let op = match p.io_type.as_str() {
        "clear" => {
            error::clear(&p.name)?;
            return Ok(json!(true));
        }
        "all" => None,
        "read" => Some(IoType::Read),
        "write" => Some(IoType::Write),
        "flush" => Some(IoType::Flush),
        "unmap" => Some(IoType::Unmap),
        "write_zeroes" => Some(IoType::WriteZeroes),
        other => {
            return Err(RpcError::params(format!(
                "Invalid parameters: io_type {} is not one of clear, all, read, write, flush, \
                 unmap, write_zeroes",
                crate::error::cap(other, 64)
            )))
        }
    };
    let kind = ErrorKind::parse(&p.error_type).ok_or_else(|| {
        RpcError::params(format!(
            "Invalid parameters: error_type {} is not one of failure, pending, corrupt_data, nomem",
            crate::error::cap(&p.error_type, 64)
        ))
    })?;
    // corrupt_data without a non-zero corrupt_value is refused by the engine (-32602).
    error::inject(
        &p.name,
        op,
        Injection {
            kind,
            // SPDK's default: one I/O.
            count: p.num.unwrap_or(1),
            queue_depth: p.queue_depth.unwrap_or(0),
            corrupt_offset: p.corrupt_offset.unwrap_or(0),
            corrupt_value: p.corrupt_value.unwrap_or(0),
            blocks: match (p.block_start, p.block_count) {
                (None, None) => None,
                (s, c) => {
                    let s = s.unwrap_or(0);
                    Some(s..s.saturating_add(c.unwrap_or(u64::MAX)))
                }
            },
        },
    )?;
    Ok(json!(true))
}
