//! `ballast-idle-cpu`: what an idle reactor costs and how fast a sleeping one wakes up.
//!
//! 1. Starts 2 reactors (cores 0 and 1) with the default config (1 ms idle threshold, pinned
//!    when possible), waits past the threshold, then measures each reactor thread's CPU time
//!    (`thread_cpu_time_of`) over `--secs` seconds (default 10) → % of a core, with the
//!    sleep/wake-up counters.
//! 2. Round trip A (core 1) → B (core 0) → A, timed on A:
//!    * spinning: both reactors kept busy by a busy poller, back to back;
//!    * B asleep: only A spins; A waits `--gap-ms` (default 5) on a reactor timer before each
//!      ping, so B has gone to sleep in epoll_wait and the ping must wake it (eventfd);
//!    * control thread: a non-reactor thread sleeps `--gap-ms`, then `rt.call(B, ..)` (both B
//!      and the caller wake up: eventfd + the reply channel's futex).
//!
//!    `--samples` round trips each (default 1000; the spinning case does 100× more).
//! 3. The machine's floors for both round trips without ballast (`ballast_bench::baseline`):
//!    two pinned threads bouncing an atomic or boxed closures through two `ArrayQueue`s (run
//!    just before 2a), and a spinning thread waking one blocked in `epoll_wait` on an eventfd
//!    after the same gap (run after 2c). On a VM the second is mostly the
//!    hypervisor waking a halted vCPU; the reactor's wake-up is judged against it.
//!
//! `--json` prints one JSON object instead of the table.

use std::time::{Duration, Instant};

use ballast_bench::baseline;
use ballast_bench::ring::ping_pong;
use ballast_bench::{can_pin, spin, summarize, unspin, Summary, CORE_A, CORE_B};
use ballast_reactor::{thread_cpu_time_of, ReactorStats, Runtime, RuntimeConfig};

struct Args {
    secs: u64,
    samples: u64,
    gap: Duration,
    json: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        secs: 10,
        samples: 1000,
        gap: Duration::from_millis(5),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{name} needs a number")))
        };
        match arg.as_str() {
            "--secs" => a.secs = num("--secs"),
            "--samples" => a.samples = num("--samples").max(1),
            "--gap-ms" => a.gap = Duration::from_millis(num("--gap-ms")),
            "--json" => a.json = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a
}

fn usage(why: &str) -> ! {
    if !why.is_empty() {
        eprintln!("error: {why}");
    }
    eprintln!("usage: ballast-idle-cpu [--secs N] [--samples N] [--gap-ms N] [--json]");
    std::process::exit(if why.is_empty() { 0 } else { 2 })
}

struct IdleRow {
    core: usize,
    cpu: Duration,
    pct: f64,
    sleeps: u64,
    wakeups: u64,
    polls: u64,
}

fn by_core(stats: &[ReactorStats], core: usize) -> &ReactorStats {
    stats
        .iter()
        .find(|s| s.core == core)
        .expect("reactor stats")
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let args = parse_args();
    let cores = vec![CORE_B, CORE_A];
    let pin = can_pin(&cores);
    let rt = Runtime::start(RuntimeConfig {
        cores: cores.clone(),
        pin,
        ..Default::default()
    })
    .expect("start reactors");
    let threshold = RuntimeConfig::default().idle_threshold;
    eprintln!(
        "2 reactors on cores {cores:?} (pinned: {pin}), idle threshold {threshold:?}; \
         measuring idle CPU for {} s…",
        args.secs
    );

    // 1. Idle CPU.
    std::thread::sleep(threshold * 50 + Duration::from_millis(100));
    let s0 = rt.stats();
    let cpu0: Vec<Duration> = s0
        .iter()
        .map(|s| thread_cpu_time_of(s.tid).expect("schedstat"))
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.secs));
    let wall = t0.elapsed();
    let s1 = rt.stats();
    let idle: Vec<IdleRow> = s0
        .iter()
        .zip(&cpu0)
        .map(|(a, c0)| {
            let b = by_core(&s1, a.core);
            let cpu = thread_cpu_time_of(a.tid).expect("schedstat") - *c0;
            IdleRow {
                core: a.core,
                cpu,
                pct: cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
                sleeps: b.sleeps - a.sleeps,
                wakeups: b.wakeups - a.wakeups,
                polls: b.polls - a.polls,
            }
        })
        .collect();

    // 2a. Spinning round trip (both reactors busy), right after the floors for it (on a VM
    // both move with the vCPUs' placement on the host; back to back they share it).
    let chain_n = args.samples * 100;
    eprintln!("round trips: floors (both reactors asleep), then spinning…");
    let floor_spin = baseline::spin_rtt(chain_n);
    let floor_queue = baseline::queue_rtt(chain_n, RuntimeConfig::default().ring_capacity);
    let ha = spin(&rt, CORE_A);
    let hb = spin(&rt, CORE_B);
    let chain = ping_pong(&rt, chain_n, false, false, None);
    let mut spinning = ping_pong(&rt, chain_n, false, true, None).samples;
    unspin(&rt, CORE_B, hb);
    let spinning = summarize(&mut spinning);
    let chain_mean = chain.total / chain_n as u32;

    // 2b. B asleep, A spinning.
    eprintln!(
        "round trips: target asleep ({} × {:?} gap)…",
        args.samples, args.gap
    );
    std::thread::sleep(threshold * 10);
    let before = rt.stats();
    let mut asleep = ping_pong(&rt, args.samples, false, true, Some(args.gap)).samples;
    let after = rt.stats();
    unspin(&rt, CORE_A, ha);
    let b_wakeups = by_core(&after, CORE_B).wakeups - by_core(&before, CORE_B).wakeups;
    let asleep = summarize(&mut asleep);

    // 2c. Control thread → sleeping reactor (rt.call).
    eprintln!("round trips: control thread rt.call to a sleeping reactor…");
    let before = rt.stats();
    let mut call = Vec::with_capacity(args.samples as usize);
    for _ in 0..args.samples {
        std::thread::sleep(args.gap);
        let t = Instant::now();
        rt.call(CORE_B, || ()).expect("call");
        call.push(t.elapsed());
    }
    let after = rt.stats();
    let call_wakeups = by_core(&after, CORE_B).wakeups - by_core(&before, CORE_B).wakeups;
    let call = summarize(&mut call);
    rt.shutdown();

    // 3. The machine's floors for the same two round trips, without ballast.
    eprintln!("floor: eventfd wake-up of a thread in epoll_wait…");
    let floor_wake = summarize(&mut baseline::eventfd_wake_rtt(args.samples, args.gap));

    if args.json {
        print_json(
            &args,
            pin,
            threshold,
            &idle,
            &[
                ("spinning", &spinning, None),
                ("target_asleep", &asleep, Some(b_wakeups)),
                ("control_thread_call_asleep", &call, Some(call_wakeups)),
                ("floor_eventfd_wake", &floor_wake, None),
            ],
            chain_mean,
            (floor_spin, floor_queue),
        );
        return;
    }
    println!(
        "\nidle CPU over {:.1} s (default config: idle threshold {threshold:?}, pinned: {pin})",
        wall.as_secs_f64()
    );
    println!(
        "{:<10} {:>12} {:>12} {:>8} {:>8} {:>10}",
        "reactor", "cpu time", "% of a core", "sleeps", "wakeups", "loop iters"
    );
    for r in &idle {
        println!(
            "{:<10} {:>9.3} ms {:>11.4}% {:>8} {:>8} {:>10}",
            format!("core {}", r.core),
            r.cpu.as_secs_f64() * 1e3,
            r.pct,
            r.sleeps,
            r.wakeups,
            r.polls
        );
    }
    println!("\nround trip A (core {CORE_A}) → B (core {CORE_B}) → A");
    println!(
        "{:<44} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "case", "n", "min µs", "p50 µs", "p99 µs", "max µs"
    );
    let row = |name: &str, s: &Summary, note: String| {
        println!(
            "{:<44} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {note}",
            name,
            s.n,
            us(s.min),
            us(s.p50),
            us(s.p99),
            us(s.max)
        );
    };
    row(
        "spinning (both reactors busy)",
        &spinning,
        format!("back-to-back mean {:.2} µs", us(chain_mean)),
    );
    row(
        &format!("B asleep, A spinning ({:?} gap)", args.gap),
        &asleep,
        format!("B woke {b_wakeups}×"),
    );
    row(
        &format!("control thread rt.call, B asleep ({:?})", args.gap),
        &call,
        format!("B woke {call_wakeups}×"),
    );
    println!("\nfloors of this machine (no ballast; same cores, same gap)");
    println!(
        "{:<44} {:>6} {:>9} {:>9}",
        "spinning atomic ping-pong, back-to-back mean",
        chain_n,
        "",
        format!("{:.2}", us(floor_spin))
    );
    println!(
        "{:<44} {:>6} {:>9} {:>9}",
        "ArrayQueue<Box<FnOnce>> ping-pong, b2b mean",
        chain_n,
        "",
        format!("{:.2}", us(floor_queue))
    );
    row(
        &format!("eventfd wake of a thread in epoll_wait ({:?})", args.gap),
        &floor_wake,
        String::new(),
    );
}

fn print_json(
    args: &Args,
    pin: bool,
    threshold: Duration,
    idle: &[IdleRow],
    rtts: &[(&str, &Summary, Option<u64>)],
    chain_mean: Duration,
    (floor_spin, floor_queue): (Duration, Duration),
) {
    let idle_json: Vec<String> = idle
        .iter()
        .map(|r| {
            format!(
                "{{\"core\":{},\"cpu_ns\":{},\"pct_of_core\":{:.5},\"sleeps\":{},\"wakeups\":{},\"polls\":{}}}",
                r.core,
                r.cpu.as_nanos(),
                r.pct,
                r.sleeps,
                r.wakeups,
                r.polls
            )
        })
        .collect();
    let rtt_json: Vec<String> = rtts
        .iter()
        .map(|(name, s, wk)| {
            format!(
                "\"{name}\":{{\"n\":{},\"min_ns\":{},\"p50_ns\":{},\"p99_ns\":{},\"max_ns\":{}{}}}",
                s.n,
                s.min.as_nanos(),
                s.p50.as_nanos(),
                s.p99.as_nanos(),
                s.max.as_nanos(),
                wk.map(|w| format!(",\"target_wakeups\":{w}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    println!(
        "{{\"idle_secs\":{},\"pinned\":{pin},\"idle_threshold_ns\":{},\"gap_ns\":{},\"idle\":[{}],\"round_trip\":{{{},\"spinning_back_to_back_mean_ns\":{},\"floor_spin_back_to_back_mean_ns\":{},\"floor_queue_back_to_back_mean_ns\":{}}}}}",
        args.secs,
        threshold.as_nanos(),
        args.gap.as_nanos(),
        idle_json.join(","),
        rtt_json.join(","),
        chain_mean.as_nanos(),
        floor_spin.as_nanos(),
        floor_queue.as_nanos()
    );
}
