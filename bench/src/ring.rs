//! Cross-reactor message workloads: a one-way flood (throughput) and ping-pong round trips
//! (latency, spinning or with the target asleep).
//!
//! Reactor [`CORE_A`] sends, reactor [`CORE_B`] receives/answers. The state lives in
//! thread-locals of the reactors, so the messages are zero-sized closures (a `Box` of a ZST
//! does not allocate) unless `capture` asks for closures that carry a `u64` (one small heap
//! allocation per message, as most real messages carry context).

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use ballast_reactor::{Error, Runtime};

use crate::{now_ns, CORE_A, CORE_B};

/// Sends `f` to `core`, spinning while the target's ring is full. Returns the retries.
#[inline]
fn send_spin<F: FnOnce() + Send + Copy + 'static>(core: usize, f: F) -> u64 {
    let mut retries = 0;
    loop {
        match ballast_reactor::send(core, f) {
            Ok(()) => return retries,
            Err(Error::RingFull(_)) => {
                retries += 1;
                std::hint::spin_loop();
            }
            Err(e) => panic!("send to reactor {core}: {e}"),
        }
    }
}

// ------------------------------------------------------------------------- flood ----

thread_local! {
    static FLOOD_SEEN: Cell<u64> = const { Cell::new(0) };
    static FLOOD_TARGET: Cell<u64> = const { Cell::new(0) };
    static FLOOD_SUM: Cell<u64> = const { Cell::new(0) };
    static FLOOD_DONE: RefCell<Option<SyncSender<Duration>>> = const { RefCell::new(None) };
}

/// Start of the current flood, stamped by the sender, read by the receiver's last message.
static FLOOD_T0: AtomicU64 = AtomicU64::new(0);

/// Result of one flood.
#[derive(Debug, Clone, Copy)]
pub struct FloodResult {
    /// From the first send on A to the last message run on B.
    pub elapsed: Duration,
    /// Times the sender found B's ring full and retried.
    pub ring_full_retries: u64,
}

#[inline]
fn on_flood(v: u64) {
    FLOOD_SUM.set(FLOOD_SUM.get().wrapping_add(v));
    let seen = FLOOD_SEEN.get() + 1;
    FLOOD_SEEN.set(seen);
    if seen == FLOOD_TARGET.get() {
        let el = Duration::from_nanos(now_ns() - FLOOD_T0.load(Ordering::Acquire));
        if let Some(tx) = FLOOD_DONE.with(|d| d.borrow_mut().take()) {
            let _ = tx.send(el);
        }
    }
}

/// Sends `n` messages one way from reactor A to reactor B (back to back, retrying on a full
/// ring) and measures until the last one has run on B.
pub fn flood(rt: &Runtime, n: u64, capture: bool) -> FloodResult {
    assert!(n > 0);
    let (done_tx, done_rx) = sync_channel(1);
    rt.call(CORE_B, move || {
        FLOOD_SEEN.set(0);
        FLOOD_TARGET.set(n);
        FLOOD_DONE.with(|d| *d.borrow_mut() = Some(done_tx));
    })
    .expect("set up receiver");
    let (ret_tx, ret_rx) = sync_channel(1);
    rt.send(CORE_A, move || {
        let mut retries = 0;
        FLOOD_T0.store(now_ns(), Ordering::Release);
        if capture {
            for i in 0..n {
                retries += send_spin(CORE_B, move || on_flood(black_box(i)));
            }
        } else {
            for _ in 0..n {
                retries += send_spin(CORE_B, || on_flood(1));
            }
        }
        let _ = ret_tx.send(retries);
    })
    .expect("start sender");
    let ring_full_retries = ret_rx.recv().expect("sender result");
    let elapsed = done_rx.recv().expect("receiver result");
    FloodResult {
        elapsed,
        ring_full_retries,
    }
}

// ---------------------------------------------------------------------- ping-pong ----

struct PingPong {
    remaining: u64,
    capture: bool,
    /// Time each round trip separately (else only the whole chain).
    record_each: bool,
    /// Pause between round trips (a reactor timer on A); `None`: back to back.
    gap: Option<Duration>,
    start: Instant,
    ping_at: Instant,
    samples: Vec<Duration>,
    done: Option<SyncSender<PingPongResult>>,
}

thread_local! {
    static PP: RefCell<Option<PingPong>> = const { RefCell::new(None) };
}

/// Result of a chain of round trips A → B → A.
#[derive(Debug, Clone, Default)]
pub struct PingPongResult {
    /// Round trips done.
    pub round_trips: u64,
    /// Time of the whole chain (including the gaps, if any).
    pub total: Duration,
    /// Each round trip (only when timed separately).
    pub samples: Vec<Duration>,
}

/// On A: send a ping to B, whose answer runs [`pong`] on A.
fn ping() {
    let capture = PP.with(|p| {
        let mut p = p.borrow_mut();
        let p = p.as_mut().expect("ping-pong state");
        if p.record_each {
            p.ping_at = Instant::now();
        }
        p.capture
    });
    if capture {
        let tag = black_box(0x5eed_u64);
        send_spin(CORE_B, move || {
            send_spin(CORE_A, move || pong(black_box(tag)));
        });
    } else {
        send_spin(CORE_B, || {
            send_spin(CORE_A, || pong(0));
        });
    }
}

/// On A: a round trip finished.
fn pong(_tag: u64) {
    enum Next {
        Ping,
        After(Duration),
        Done(SyncSender<PingPongResult>, PingPongResult),
    }
    let next = PP.with(|p| {
        let mut guard = p.borrow_mut();
        let p = guard.as_mut().expect("ping-pong state");
        if p.record_each {
            let rtt = p.ping_at.elapsed();
            p.samples.push(rtt);
        }
        p.remaining -= 1;
        if p.remaining == 0 {
            let p = guard.take().expect("ping-pong state");
            let res = PingPongResult {
                round_trips: 0, // set by the caller
                total: p.start.elapsed(),
                samples: p.samples,
            };
            return Next::Done(p.done.expect("result channel"), res);
        }
        match p.gap {
            Some(g) => Next::After(g),
            None => Next::Ping,
        }
    });
    match next {
        Next::Ping => ping(),
        Next::After(g) => {
            ballast_reactor::timer_after(g, ping).expect("timer on A");
        }
        Next::Done(tx, res) => {
            let _ = tx.send(res);
        }
    }
}

/// Runs `n` round trips A → B → A. With `record_each` every round trip is timed on A (adds
/// two clock reads per round trip); with `gap` A waits that long (on a reactor timer) before
/// each ping, so that B can fall asleep if its idle threshold is shorter.
pub fn ping_pong(
    rt: &Runtime,
    n: u64,
    capture: bool,
    record_each: bool,
    gap: Option<Duration>,
) -> PingPongResult {
    assert!(n > 0);
    let (tx, rx) = sync_channel(1);
    rt.send(CORE_A, move || {
        let now = Instant::now();
        PP.with(|p| {
            *p.borrow_mut() = Some(PingPong {
                remaining: n,
                capture,
                record_each,
                gap,
                start: now,
                ping_at: now,
                samples: Vec::with_capacity(if record_each { n as usize } else { 0 }),
                done: Some(tx),
            })
        });
        match gap {
            Some(g) => {
                ballast_reactor::timer_after(g, ping).expect("timer on A");
            }
            None => ping(),
        }
    })
    .expect("start ping-pong");
    let mut res = rx.recv().expect("ping-pong result");
    res.round_trips = n;
    res
}
