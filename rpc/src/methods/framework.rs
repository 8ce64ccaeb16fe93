//! Framework methods: versions, reactors, threads, shutdown, config save/load.

use super::*;

pub(crate) fn rpc_get_methods(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        #[serde(default)]
        current: bool,
        #[serde(default)]
        include_aliases: bool,
    }
    parse::<P>(params)?;
    Ok(json!(METHODS
        .iter()
        .map(|(n, _, _)| *n)
        .collect::<Vec<_>>()))
}

/// The git commit the daemon was built from (rpc/build.rs; "unknown" outside a checkout).
const COMMIT: &str = env!("BALLAST_GIT_COMMIT");

pub(crate) fn spdk_get_version(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    let v = env!("CARGO_PKG_VERSION");
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    Ok(json!({
        "version": format!("ballast v{v} git sha1 {COMMIT}"),
        "fields": {
            "major": parts.next().unwrap_or(0),
            "minor": parts.next().unwrap_or(0),
            "patch": parts.next().unwrap_or(0),
            "suffix": "",
            "commit": COMMIT,
        }
    }))
}

pub(crate) fn framework_wait_init(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    // The daemon finishes initialisation before it serves RPC.
    Ok(json!(true))
}

/// Reactor busy/idle are reported in nanoseconds; tick_rate says so (SPDK's shape).
pub(crate) const TICK_RATE: u64 = 1_000_000_000;

/// One CPU's line of /proc/stat: user, system and interrupt time in USER_HZ ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    cpu: usize,
    usr: u64,
    sys: u64,
    irq: u64,
}

/// Every CPU's times from /proc/stat (empty if it cannot be read, as SPDK reports zeros).
pub(crate) fn cpu_times() -> Vec<CpuTimes> {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    s.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let cpu = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            let n: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq ...
            Some(CpuTimes {
                cpu,
                usr: *n.first()? + n.get(1).copied().unwrap_or(0),
                sys: *n.get(2)?,
                irq: n.get(5).copied().unwrap_or(0) + n.get(6).copied().unwrap_or(0),
            })
        })
        .collect()
}

pub(crate) fn framework_get_reactors(
    ctx: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    no_params(params)?;
    let now = cpu_times();
    let since_start = |core: usize| -> CpuTimes {
        let find = |v: &[CpuTimes]| v.iter().find(|t| t.cpu == core).copied();
        match (find(&now), find(&ctx.cpu_base)) {
            (Some(n), Some(b)) => CpuTimes {
                cpu: core,
                usr: n.usr.saturating_sub(b.usr),
                sys: n.sys.saturating_sub(b.sys),
                irq: n.irq.saturating_sub(b.irq),
            },
            _ => CpuTimes::default(),
        }
    };
    let reactors: Vec<Value> = ctx
        .rt
        .stats()
        .into_iter()
        .map(|s| {
            let t = since_start(s.core);
            json!({
                "lcore": s.core,
                "tid": s.tid,
                "usr": t.usr,
                "sys": t.sys,
                "irq": t.irq,
                "busy": s.busy.as_nanos() as u64,
                "idle": s.idle.as_nanos() as u64,
                "in_interrupt": false,
                "polls": s.polls,
                "messages": s.messages,
                "sleeps": s.sleeps,
                "wakeups": s.wakeups,
                "pollers": s.pollers,
                "lw_threads": [{
                    "name": thread_name(ctx, s.core),
                    "id": s.core + 1,
                    "cpumask": format!("{:x}", 1u128 << s.core.min(127)),
                    "elapsed": (s.busy + s.idle).as_nanos() as u64,
                }],
            })
        })
        .collect();
    Ok(json!({"tick_rate": TICK_RATE, "pid": std::process::id(), "reactors": reactors}))
}

pub(crate) fn thread_get_stats(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    let threads: Vec<Value> = ctx
        .rt
        .stats()
        .into_iter()
        .map(|s| {
            json!({
                "name": thread_name(ctx, s.core),
                "id": s.core + 1,
                "cpumask": format!("{:x}", 1u128 << s.core.min(127)),
                "busy": s.busy.as_nanos() as u64,
                "idle": s.idle.as_nanos() as u64,
                "active_pollers_count": s.pollers,
                "timed_pollers_count": 0,
                "paused_pollers_count": 0,
            })
        })
        .collect();
    Ok(json!({"tick_rate": TICK_RATE, "threads": threads}))
}

pub(crate) fn spdk_kill_instance(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        sig_name: String,
    }
    let p: P = parse(params)?;
    let sig = match p.sig_name.strip_prefix("SIG").unwrap_or(&p.sig_name) {
        "INT" | "2" => libc::SIGINT,
        "TERM" | "15" => libc::SIGTERM,
        "KILL" | "9" => libc::SIGKILL,
        _ => {
            return Err(RpcError::params(format!(
                "Invalid parameters: sig_name {:?} is not one of SIGINT, SIGTERM, SIGKILL",
                crate::error::cap(&p.sig_name, 64)
            )))
        }
    };
    if sig == libc::SIGKILL {
        // Answer first, then die the hard way.
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::process::abort();
        });
    } else {
        tracing::info!(sig_name = %p.sig_name, "shutdown requested over RPC");
        ctx.stop.store(true, Ordering::Release);
        // Deliver the signal to ourselves once the answer is on its way: the daemon's main
        // thread waits for exactly that.
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
            unsafe {
                libc::kill(libc::getpid(), sig);
            }
        });
    }
    Ok(json!(true))
}

pub(crate) fn save_config(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    no_params(params)?;
    Ok(crate::config::save(ctx))
}

pub(crate) fn load_config(ctx: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    let v = params.unwrap_or(Value::Null);
    crate::config::load(ctx, &v)?;
    Ok(json!(true))
}
