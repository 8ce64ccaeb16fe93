//! `ballast-perf`'s per-core accounting: the [`Meter`] each core's poller feeds with its
//! completions, failed I/Os counted by status ([`Failures`]), and the JSON summary of a
//! latency histogram. Only successful I/Os of the measured interval count in IOPS, MiB/s
//! and latency; failed ones, at any time (warm-up included), are counted apart.
//!
//! ```text
//!  poller: start(slot) … done(slot, Ok | Err(Failure)) ─► Meter ─ finish ─► CoreResult
//!                              │ live counters (progress)     ios + histogram (Ok, measured)
//!                              ▼                              failures (Err, whole run)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_engine::IoStatus;
use ballast_nvme::spec::Status;
use hdrhistogram::Histogram;

use crate::status_words::{self, Command};

/// Why an I/O failed: the NVMe status a target returned, or an in-process bdev's status.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failure {
    /// A target's NVMe completion status.
    Nvme(Status),
    /// An in-process bdev's completion status.
    Bdev(IoStatus),
}

impl Failure {
    /// The status in words, e.g. "Invalid Field in Command (sct 0x0 sc 0x2)".
    pub fn words(self) -> String {
        match self {
            Failure::Nvme(s) => status_words::nvme(s, Command::Io),
            Failure::Bdev(s) => status_words::bdev(s),
        }
    }
}

/// Failed I/Os, counted by status (a handful of distinct statuses at most).
#[derive(Default, Clone, Debug, PartialEq)]
pub struct Failures(Vec<(Failure, u64)>);

impl Failures {
    /// Counts `n` failures with status `f`.
    pub fn add(&mut self, f: Failure, n: u64) {
        match self.0.iter_mut().find(|(k, _)| *k == f) {
            Some((_, c)) => *c += n,
            None => self.0.push((f, n)),
        }
    }
    /// Adds another core's counts.
    pub fn merge(&mut self, o: &Failures) {
        for &(f, n) in &o.0 {
            self.add(f, n);
        }
    }
    /// All failed I/Os.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }
    /// Counts by status, most frequent first.
    pub fn sorted(&self) -> Vec<(Failure, u64)> {
        let mut v = self.0.clone();
        v.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        v
    }
    /// Most frequent first, e.g. "512 I/Os failed: Invalid Field in Command (sct 0x0 sc 0x2)".
    pub fn lines(&self) -> Vec<String> {
        self.sorted()
            .into_iter()
            .map(|(f, n)| {
                let s = if n == 1 { "" } else { "s" };
                format!("{n} I/O{s} failed: {}", f.words())
            })
            .collect()
    }
    /// Most frequent first: `[{"status": "Invalid Field in Command (…)", "count": 512}]`.
    pub fn json(&self) -> serde_json::Value {
        self.sorted()
            .into_iter()
            .map(|(f, n)| serde_json::json!({ "status": f.words(), "count": n }))
            .collect()
    }
}

/// One core's results.
pub struct CoreResult {
    /// The core.
    pub core: usize,
    /// Latency (ns) of the successful I/Os of the measured interval.
    pub hist: Histogram<u64>,
    /// Successful I/Os of the measured interval.
    pub ios: u64,
    /// Failed I/Os of the whole run (warm-up and drain included).
    pub failures: Failures,
    /// The queue broke (connection lost): why, and the I/Os it had in flight.
    pub queue_failure: Option<(String, usize)>,
    /// Length of the measured interval.
    pub elapsed: Duration,
}

/// Live counters of all cores, for the progress lines.
#[derive(Default)]
pub struct Live {
    /// Successful completions.
    pub ios: AtomicU64,
    /// Failed completions.
    pub errors: AtomicU64,
}

/// A core's accounting, common to both back ends. The first completion after `measuring`
/// turns true starts the measured interval, [`Meter::end`] ends it.
pub struct Meter {
    hist: Histogram<u64>,
    started: Vec<Instant>,
    ios: u64,
    failures: Failures,
    t_measure: Option<Instant>,
    t_end: Option<Instant>,
    live: Arc<Live>,
    measuring: Arc<AtomicBool>,
}

/// A latency histogram of 1 ns … 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

impl Meter {
    /// A meter of `depth` queue slots.
    pub fn new(depth: usize, live: Arc<Live>, measuring: Arc<AtomicBool>) -> Self {
        Meter {
            hist: histogram(),
            started: vec![Instant::now(); depth],
            ios: 0,
            failures: Failures::default(),
            t_measure: None,
            t_end: None,
            live,
            measuring,
        }
    }
    /// The I/O of `slot` was submitted at `now`.
    pub fn start(&mut self, slot: usize, now: Instant) {
        self.started[slot] = now;
    }
    /// The I/O of `slot` completed at `now`.
    pub fn done(&mut self, slot: usize, outcome: Result<(), Failure>, now: Instant) {
        let ok = match outcome {
            Ok(()) => {
                self.live.ios.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(f) => {
                self.failures.add(f, 1);
                self.live.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        if self.measuring.load(Ordering::Relaxed) && self.t_end.is_none() {
            // The first completion of the measured interval starts it.
            if self.t_measure.is_none() {
                self.t_measure = Some(now);
                return;
            }
            if ok {
                self.ios += 1;
                let ns = now.duration_since(self.started[slot]).as_nanos() as u64;
                let _ = self.hist.record(ns.max(1));
            }
        }
    }
    /// The measured interval ends (stop seen); completions after it are not counted.
    pub fn end(&mut self, now: Instant) {
        if self.t_end.is_none() {
            self.t_end = Some(now);
        }
    }
    /// The results of core `core`.
    pub fn finish(self, core: usize, queue_failure: Option<(String, usize)>) -> CoreResult {
        let end = self.t_end.unwrap_or_else(Instant::now);
        CoreResult {
            core,
            elapsed: self
                .t_measure
                .map_or(Duration::ZERO, |t| end.saturating_duration_since(t)),
            hist: self.hist,
            ios: self.ios,
            failures: self.failures,
            queue_failure,
        }
    }
}

/// IOPS, MiB/s and latency (µs) of `ios` I/Os of `size` bytes in `secs` seconds.
pub fn summary(h: &Histogram<u64>, ios: u64, secs: f64, size: usize) -> serde_json::Value {
    let us = |v: u64| v as f64 / 1000.0;
    let iops = if secs > 0.0 { ios as f64 / secs } else { 0.0 };
    serde_json::json!({
        "ios": ios,
        "iops": iops.round(),
        "mib_s": (iops * size as f64 / 1048576.0 * 10.0).round() / 10.0,
        "lat_us": {
            "avg": (h.mean() / 10.0).round() / 100.0,
            "min": us(h.min()),
            "max": us(h.max()),
            "p50": us(h.value_at_quantile(0.50)),
            "p90": us(h.value_at_quantile(0.90)),
            "p99": us(h.value_at_quantile(0.99)),
            "p99_9": us(h.value_at_quantile(0.999)),
            "p99_99": us(h.value_at_quantile(0.9999)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> Meter {
        Meter::new(4, Arc::default(), Arc::new(AtomicBool::new(true)))
    }

    #[test]
    fn failed_ios_are_not_counted_as_ios_or_latency() {
        let mut m = meter();
        let t = Instant::now();
        let bad = Err(Failure::Nvme(Status::INVALID_FIELD));
        m.done(0, Ok(()), t); // starts the measured interval
        m.done(1, Ok(()), t + Duration::from_micros(10));
        m.done(2, bad, t + Duration::from_micros(20));
        m.done(3, bad, t + Duration::from_micros(30));
        m.done(0, Err(Failure::Bdev(IoStatus::OutOfRange)), t);
        m.end(t + Duration::from_secs(1));
        assert_eq!(m.live.ios.load(Ordering::Relaxed), 2);
        assert_eq!(m.live.errors.load(Ordering::Relaxed), 3);
        let r = m.finish(0, None);
        assert_eq!(r.ios, 1);
        assert_eq!(r.hist.len(), 1);
        assert_eq!(r.failures.total(), 3);
        assert_eq!(
            r.failures.lines(),
            [
                "2 I/Os failed: Invalid Field in Command (sct 0x0 sc 0x2)",
                "1 I/O failed: LBA out of range"
            ]
        );
        assert_eq!(r.failures.json()[0]["count"], 2);
        let s = summary(&r.hist, r.ios, r.elapsed.as_secs_f64(), 4096);
        assert_eq!(s["ios"], 1);
        assert_eq!(s["iops"], 1.0);
    }

    #[test]
    fn failures_during_warm_up_are_counted_too() {
        let mut m = meter();
        m.measuring.store(false, Ordering::Relaxed);
        let bad = Err(Failure::Nvme(Status::INTERNAL_ERROR));
        m.done(0, bad, Instant::now());
        m.done(1, Ok(()), Instant::now());
        let r = m.finish(0, None);
        assert_eq!((r.ios, r.failures.total()), (0, 1));
        assert_eq!(r.elapsed, Duration::ZERO);
    }

    #[test]
    fn failures_of_several_cores_merge_by_status() {
        let mut a = Failures::default();
        a.add(Failure::Nvme(Status::LBA_OUT_OF_RANGE), 2);
        let mut b = Failures::default();
        b.add(Failure::Nvme(Status::INVALID_FIELD), 1);
        b.add(Failure::Nvme(Status::LBA_OUT_OF_RANGE), 3);
        a.merge(&b);
        assert_eq!(a.total(), 6);
        assert_eq!(
            a.lines()[0],
            "5 I/Os failed: LBA Out of Range (sct 0x0 sc 0x80)"
        );
    }

    #[test]
    fn no_successful_io_summarises_as_zero() {
        let s = summary(&histogram(), 0, 1.0, 4096);
        assert_eq!(
            (s["iops"].as_f64(), s["mib_s"].as_f64()),
            (Some(0.0), Some(0.0))
        );
    }
}
