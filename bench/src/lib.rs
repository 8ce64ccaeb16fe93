//! Shared pieces of the ballast benchmarks (`benches/ring.rs`, `benches/bdev.rs` and the
//! `ballast-idle-cpu` binary): runtime set-up, cross-reactor message workloads, a
//! poller/`IoSink` bdev workload with pooled buffers, and an allocation counter.
//!
//! Everything that runs on a reactor keeps its state in thread-locals of that reactor, so the
//! messages themselves can be zero-sized closures (no allocation per message) unless a bench
//! asks for a capturing one on purpose.
//!
//! ```text
//!  ring:  reactor A (core 1) ── send ──► reactor B (core 0) ── send ──► A   (round trip)
//!  bdev:  poller on one reactor ─ submit QD I/Os ─► IoChannel ─► IoSink ─► resubmit
//!  floors (baseline.rs): the same exchanges between plain pinned threads, no reactor
//!  binaries: ballast-perf (NVMe/TCP or bdev load), ballast-loopback-limit, ballast-idle-cpu,
//!            ballast-bdev-iops, ballast-lz4-accel, ballast-lvol-meta (lvol metadata latency);
//!            bench/run.sh assembles the NVMe/TCP table
//!  ballast-perf's pieces: perf_opts (option checks), perf_meter (per-core accounting),
//!            status_words (NVMe / bdev statuses in words)
//! ```

use std::time::{Duration, Instant};

use ballast_reactor::{Runtime, RuntimeConfig};

pub mod alloc;
pub mod baseline;
pub mod bdev;
pub mod data;
pub mod perf_meter;
pub mod perf_opts;
pub mod ring;
pub mod status_words;

/// The reactor that sends pings / floods messages (core 1).
pub const CORE_A: usize = 1;
/// The reactor that answers pings / receives the flood (core 0).
pub const CORE_B: usize = 0;

/// Cores online on this machine (`0..nproc`). Not `core_affinity::get_core_ids`, which lists
/// the calling thread's affinity mask and so shrinks once a bench has pinned that thread.
pub fn online_cores() -> Vec<usize> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (0..n.max(1) as usize).collect()
}

/// True if every core in `cores` is available for pinning on this machine.
pub fn can_pin(cores: &[usize]) -> bool {
    let avail = online_cores();
    cores.iter().all(|c| avail.contains(c))
}

/// Starts reactors on `cores` (pinned when the machine has them) with `idle_threshold`.
pub fn start_runtime(cores: &[usize], idle_threshold: Duration) -> Runtime {
    Runtime::start(RuntimeConfig {
        cores: cores.to_vec(),
        pin: can_pin(cores),
        idle_threshold,
        ..Default::default()
    })
    .expect("start reactors")
}

/// The highest-numbered available core (for one-reactor benches: away from core 0, which
/// usually takes more interrupts).
pub fn bench_core() -> usize {
    online_cores().into_iter().max().unwrap_or(0)
}

/// Keeps a reactor spinning (as a loaded reactor would) by registering a poller that always
/// reports [`ballast_reactor::PollStatus::Busy`]. Undo with [`unspin`].
pub fn spin(rt: &Runtime, core: usize) -> ballast_reactor::PollerHandle {
    rt.call(core, || {
        ballast_reactor::register_poller("bench_spin", || ballast_reactor::PollStatus::Busy)
            .expect("register spin poller")
    })
    .expect("call reactor")
}

/// Removes a poller registered by [`spin`].
pub fn unspin(rt: &Runtime, core: usize, h: ballast_reactor::PollerHandle) {
    rt.call(core, move || ballast_reactor::unregister_poller(h))
        .expect("call reactor");
}

/// Median, p99, min and max of a set of samples (sorted in place).
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest sample.
    pub min: Duration,
    /// 50th percentile.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

/// Summarises `samples` (nearest-rank percentiles). Panics on an empty set.
pub fn summarize(samples: &mut [Duration]) -> Summary {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    let n = samples.len();
    let rank = |p: f64| samples[(((p * n as f64).ceil() as usize).max(1) - 1).min(n - 1)];
    Summary {
        n,
        min: samples[0],
        p50: rank(0.50),
        p99: rank(0.99),
        max: samples[n - 1],
    }
}

/// Nanoseconds since a process-wide epoch (lets one thread stamp a start time another reads).
pub fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let sum = summarize(&mut s);
        assert_eq!(sum.n, 100);
        assert_eq!(sum.min, Duration::from_micros(1));
        assert_eq!(sum.p50, Duration::from_micros(50));
        assert_eq!(sum.p99, Duration::from_micros(99));
        assert_eq!(sum.max, Duration::from_micros(100));
    }

    #[test]
    fn online_cores_include_core_zero() {
        assert!(can_pin(&[0]));
        assert!(bench_core() < online_cores().len());
    }
}
