//! Message ring between two reactors (A = core 1 sends, B = core 0 receives/answers), pinned
//! when the machine has both cores.
//!
//! * `ring/oneway_throughput/{zst,capture8}`: A floods B with back-to-back messages (a batch
//!   of 4096 per iteration, retrying on a full ring); time from A's first send to B running
//!   the last message. `zst` closures capture nothing (no allocation), `capture8` carry a u64
//!   (one malloc on A and one free on B per message).
//! * `ring/round_trip/{zst,capture8}`: ping-pong A → B → A, back to back, per round trip.
//! * `ring/round_trip/floor_{arrayqueue,atomic}`: the machine's floors without a reactor — two
//!   pinned threads ping-ponging boxed closures through two `ArrayQueue`s (the ring's type), and
//!   bouncing one atomic. Compare `round_trip/zst` to them, not across runs or machines.
//! * All with a one-hour idle threshold: the reactors spin throughout.
//! * After criterion: the wake-up round trip when B is asleep (idle threshold 100 µs, A kept
//!   spinning by a busy poller and waiting 2 ms on a reactor timer between pings), printed as
//!   min / median / p99. Criterion cannot time this one: its iteration estimate ignores the
//!   gaps, so it would run for minutes.

use std::time::Duration;

use ballast_bench::baseline;
use ballast_bench::ring::{flood, ping_pong};
use ballast_bench::{spin, start_runtime, summarize, unspin, CORE_A, CORE_B};
use criterion::{criterion_group, Criterion, Throughput};

const BATCH: u64 = 4096;
const SPIN_FOREVER: Duration = Duration::from_secs(3600);

fn variant(capture: bool) -> &'static str {
    if capture {
        "capture8"
    } else {
        "zst"
    }
}

fn ring(c: &mut Criterion) {
    let rt = start_runtime(&[CORE_B, CORE_A], SPIN_FOREVER);
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(BATCH));
    for capture in [false, true] {
        let mut retries = 0;
        g.bench_function(format!("oneway_throughput/{}", variant(capture)), |b| {
            b.iter_custom(|iters| {
                let r = flood(&rt, iters * BATCH, capture);
                retries += r.ring_full_retries;
                r.elapsed
            })
        });
        if retries > 0 {
            eprintln!("  (sender found the ring full {retries} times)");
        }
    }
    g.throughput(Throughput::Elements(1));
    for capture in [false, true] {
        g.bench_function(format!("round_trip/{}", variant(capture)), |b| {
            b.iter_custom(|iters| ping_pong(&rt, iters, capture, false, None).total)
        });
    }
    rt.shutdown();
    // The machine's floors (no reactor), measured in the same process run: on a VM the
    // absolute figures move with the vCPUs' placement on the host, the ratios much less.
    let cap = ballast_reactor::RuntimeConfig::default().ring_capacity;
    g.bench_function("round_trip/floor_arrayqueue", |b| {
        b.iter_custom(|iters| baseline::queue_rtt(iters, cap) * iters as u32)
    });
    g.bench_function("round_trip/floor_atomic", |b| {
        b.iter_custom(|iters| baseline::spin_rtt(iters) * iters as u32)
    });
    g.finish();
}

/// Short runs: the figures of record come from several runs and their median (BENCHMARKS.md);
/// command-line flags (`--measurement-time`, ...) still override these.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = ring
}

/// Flags of criterion's CLI that take a value (so the value is not taken for a filter).
const VALUE_FLAGS: &[&str] = &[
    "--warm-up-time",
    "--measurement-time",
    "--sample-size",
    "--save-baseline",
    "--baseline",
    "--baseline-lenient",
    "--load-baseline",
    "--profile-time",
    "--output-format",
    "--color",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--nresamples",
    "--plotting-backend",
    "--format",
];

/// Whether the wake-up measurement should run under this command line (`--list` and filters
/// that do not match `ring_wakeup/asleep` skip it); the second value is test mode.
fn wakeup_wanted() -> (bool, bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut test = false;
    let mut skip_next = false;
    for a in &args {
        if skip_next {
            skip_next = false;
            continue;
        }
        if a == "--list" {
            return (false, false);
        }
        if a == "--test" {
            test = true;
        }
        if VALUE_FLAGS.contains(&a.as_str()) {
            skip_next = true;
            continue;
        }
        if !a.starts_with('-') && !"ring_wakeup/asleep".contains(a.as_str()) {
            return (false, test);
        }
    }
    (true, test)
}

fn wakeup(test: bool) {
    let n = if test { 10 } else { 1000 };
    let threshold = Duration::from_micros(100);
    let gap = Duration::from_millis(2);
    let rt = start_runtime(&[CORE_B, CORE_A], threshold);
    let h = spin(&rt, CORE_A);
    let before = rt.stats();
    let mut res = ping_pong(&rt, n, false, true, Some(gap));
    let after = rt.stats();
    unspin(&rt, CORE_A, h);
    let b = after
        .iter()
        .position(|s| s.core == CORE_B)
        .expect("reactor B");
    let wakeups = after[b].wakeups - before[b].wakeups;
    let s = summarize(&mut res.samples);
    println!(
        "ring_wakeup/asleep      round trip A→B→A, B asleep (idle threshold {threshold:?}, gap {gap:?}, n={})\n\
         {:>24}min {:.2} µs  median {:.2} µs  p99 {:.2} µs  max {:.2} µs  (B woke {wakeups} times)",
        s.n,
        "",
        s.min.as_secs_f64() * 1e6,
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.max.as_secs_f64() * 1e6,
    );
    rt.shutdown();
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let (wanted, test) = wakeup_wanted();
    if wanted {
        wakeup(test);
    }
}
