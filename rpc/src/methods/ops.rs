//! Methods operators' scripts call around the configuration: examine, statistics, log levels,
//! socket options, and the per-subsystem config that SPDK's `rpc.py save_config` assembles.

use super::*;

/// How long `bdev_wait_for_examine` (and config replay, before each method) waits for
/// lvol stores being brought back from newly registered bdevs.
pub(crate) const EXAMINE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `bdev_wait_for_examine`: returns when the lvol stores on newly registered bdevs (and their
/// lvols) are back; a bdev registered on a reactor (an NVMe namespace) is examined in the
/// background. Every other bdev is ready when its create method returns.
pub(crate) fn bdev_wait_for_examine(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    wait_for_examine()?;
    Ok(json!(true))
}

/// Waits for running examines, at most [`EXAMINE_WAIT`] (then SPDK's -110, ETIMEDOUT).
pub(crate) fn wait_for_examine() -> Result<(), RpcError> {
    if ballast_engine::backend::lvol::wait_for_examine(EXAMINE_WAIT) {
        Ok(())
    } else {
        Err(RpcError::new(
            -110,
            format!(
                "bdev examine still running after {} s",
                EXAMINE_WAIT.as_secs()
            ),
        ))
    }
}

/// `framework_get_subsystems`: ballast's configurable subsystems, each after those it depends
/// on (SPDK's shape; `rpc.py save_config` asks each for its config in this order).
pub(crate) fn framework_get_subsystems(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    no_params(params)?;
    Ok(Value::Array(
        crate::config::SUBSYSTEMS
            .iter()
            .map(|(name, deps)| json!({"subsystem": name, "depends_on": deps}))
            .collect(),
    ))
}

/// `framework_get_config`: one subsystem's part of `save_config`.
pub(crate) fn framework_get_config(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    let p: P = parse(params)?;
    crate::config::subsystem_config(ctx, &p.name)
        .map(Value::Array)
        .ok_or_else(|| {
            RpcError::params(format!(
                "Invalid parameters: subsystem {} not found (ballast has {})",
                crate::error::cap(&p.name, 128),
                crate::config::SUBSYSTEMS
                    .iter()
                    .map(|s| s.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// `nvmf_get_stats`: per reactor (SPDK's poll group), the queue pairs it serves now.
pub(crate) fn nvmf_get_stats(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    let cores = ctx.rt.cores();
    let mut admin = vec![0u64; cores.len()];
    let mut io = vec![0u64; cores.len()];
    let all = std::iter::once(ctx.target.discovery().clone()).chain(ctx.target.subsystems());
    for s in all {
        for c in s.controllers() {
            for q in c.qpairs() {
                if let Some(i) = cores.iter().position(|&k| k == q.core) {
                    if q.qid == 0 {
                        admin[i] += 1;
                    } else {
                        io[i] += 1;
                    }
                }
            }
        }
    }
    let groups: Vec<Value> = cores
        .iter()
        .enumerate()
        .map(|(i, core)| {
            json!({
                "name": format!("nvmf_tgt_poll_group_{i:03}"),
                "thread": thread_name(ctx, *core),
                "current_admin_qpairs": admin[i],
                "current_io_qpairs": io[i],
                "transports": ctx.target.transport().map(|_| json!([{"trtype": "TCP"}])).unwrap_or(json!([])),
            })
        })
        .collect();
    Ok(json!({"tick_rate": TICK_RATE, "poll_groups": groups}))
}

/// The name `thread_get_stats` and the qpair listings give reactor `core`.
pub(crate) fn thread_name(ctx: &Context, core: usize) -> String {
    if core == ctx.rt.main_core() {
        "app_thread".to_string()
    } else {
        format!("reactor_{core}")
    }
}

/// `iobuf_get_stats`: each reactor's I/O buffer pool, per size class (ballast's pools keep
/// per-thread free lists, not SPDK's cache/main/retry counters).
pub(crate) fn iobuf_get_stats(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    let mut out = Vec::new();
    for core in ctx.rt.cores() {
        let classes = ctx.rt.call(core, ballast_engine::buf::pool_stats)?;
        out.push(json!({
            "module": thread_name(ctx, core),
            "classes": classes
                .iter()
                .map(|c| json!({"size": c.size, "allocated": c.allocated, "free": c.free}))
                .collect::<Vec<_>>(),
        }));
    }
    Ok(Value::Array(out))
}

/// `log_get_print_level`.
pub(crate) fn log_get_print_level(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    Ok(json!(crate::log::print_level()))
}

/// `log_set_print_level`: SPDK's levels, mapped onto the daemon's log filter.
pub(crate) fn log_set_print_level(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        level: String,
    }
    let p: P = parse(params)?;
    crate::log::set_print_level(&p.level).map_err(RpcError::params)?;
    Ok(json!(true))
}

/// System-wide TCP buffer defaults (the middle of `tcp_rmem`/`tcp_wmem`), which ballast's
/// sockets keep: it sets no buffer sizes and lets the kernel tune them.
fn tcp_default(file: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{file}"))
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `sock_impl_get_options`: what ballast's (plain POSIX) sockets do, in SPDK's shape.
pub(crate) fn sock_impl_get_options(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        impl_name: String,
    }
    let p: P = parse(params)?;
    if p.impl_name != "posix" {
        return Err(RpcError::params(format!(
            "Invalid parameters: impl_name {} is not supported (ballast's sockets are posix)",
            crate::error::cap(&p.impl_name, 64)
        )));
    }
    Ok(json!({
        "recv_buf_size": tcp_default("tcp_rmem"),
        "send_buf_size": tcp_default("tcp_wmem"),
        "enable_recv_pipe": false,
        "enable_quickack": false,
        "enable_placement_id": 0,
        "enable_zerocopy_send_server": false,
        "enable_zerocopy_send_client": false,
        "zerocopy_threshold": 0,
        "tls_version": 0,
        "enable_ktls": false,
    }))
}
