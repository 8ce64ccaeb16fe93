//! Functional tests of the reactor runtime (no timing assertions beyond generous functional
//! bounds such as "an idle reactor used less than a tenth of a second of CPU in a second").

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_reactor::{self as reactor, PollStatus, Runtime, RuntimeConfig};

fn rt(n: usize) -> Runtime {
    Runtime::start(RuntimeConfig {
        cores: (0..n).collect(),
        pin: false,
        ..Default::default()
    })
    .unwrap()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn call_runs_on_target_core() {
    let rt = rt(3);
    for core in rt.cores() {
        assert_eq!(rt.call(core, reactor::current_core).unwrap(), Some(core));
    }
    assert!(matches!(
        rt.call(7, || ()),
        Err(ballast_reactor::Error::NoSuchReactor(7))
    ));
    assert_eq!(reactor::current_core(), None);
    rt.shutdown();
}

#[test]
fn messages_between_reactors_keep_per_sender_order() {
    let rt = rt(3);
    const N: u64 = 20_000;
    let seen: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    // Reactors 1 and 2 each send N numbered messages to reactor 0.
    for sender in [1usize, 2] {
        let seen = seen.clone();
        rt.send(sender, move || {
            for i in 0..N {
                let seen = seen.clone();
                loop {
                    let s2 = seen.clone();
                    match reactor::send(0, move || s2.lock().unwrap().push((sender, i))) {
                        Ok(()) => break,
                        Err(ballast_reactor::Error::RingFull(_)) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
                drop(seen);
            }
        })
        .unwrap();
    }
    wait_until("all messages", || {
        seen.lock().unwrap().len() == 2 * N as usize
    });
    let seen = seen.lock().unwrap();
    for sender in [1usize, 2] {
        let from: Vec<u64> = seen.iter().filter(|m| m.0 == sender).map(|m| m.1).collect();
        assert_eq!(
            from,
            (0..N).collect::<Vec<_>>(),
            "order from sender {sender}"
        );
    }
    drop(seen);
    rt.shutdown();
}

#[test]
fn full_ring_is_an_error_not_a_loss() {
    let rt = Runtime::start(RuntimeConfig {
        cores: vec![0],
        pin: false,
        ring_capacity: 4,
        ..Default::default()
    })
    .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Block the reactor so the ring fills.
    rt.send(0, move || {
        let _ = rx.recv();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..10 {
        let ran = ran.clone();
        match rt.send(0, move || {
            ran.fetch_add(1, Ordering::SeqCst);
        }) {
            Ok(()) => accepted += 1,
            Err(ballast_reactor::Error::RingFull(0)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(accepted, 4);
    assert_eq!(refused, 6);
    tx.send(()).unwrap();
    wait_until("accepted messages", || ran.load(Ordering::SeqCst) == 4);
    rt.shutdown();
}

#[test]
fn pollers_run_and_unregister_themselves() {
    let rt = rt(1);
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    rt.call(0, move || {
        let handle: Rc<Cell<Option<reactor::PollerHandle>>> = Rc::default();
        let h2 = handle.clone();
        let h = reactor::register_poller("count-to-100", move || {
            if c.fetch_add(1, Ordering::SeqCst) + 1 == 100 {
                reactor::unregister_poller(h2.get().unwrap());
            }
            PollStatus::Busy
        })
        .unwrap();
        handle.set(Some(h));
    })
    .unwrap();
    wait_until("poller to finish", || count.load(Ordering::SeqCst) >= 100);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        count.load(Ordering::SeqCst),
        100,
        "poller ran after unregister"
    );
    assert_eq!(rt.stats()[0].pollers, 0);
    rt.shutdown();
}

#[test]
fn timers_and_periodic_pollers_fire_while_idle() {
    let rt = rt(1);
    let fired = Arc::new(AtomicUsize::new(0));
    let ticks = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let (f, t, c) = (fired.clone(), ticks.clone(), cancelled.clone());
    rt.call(0, move || {
        reactor::timer_after(Duration::from_millis(30), move || {
            f.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let h = reactor::timer_after(Duration::from_millis(10), move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert!(reactor::cancel_timer(h));
        assert!(!reactor::cancel_timer(h));
        let h = reactor::register_periodic_poller("tick", Duration::from_millis(5), move || {
            t.fetch_add(1, Ordering::SeqCst);
            PollStatus::Idle
        })
        .unwrap();
        reactor::on_shutdown(move || reactor::unregister_poller(h)).unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    assert_eq!(cancelled.load(Ordering::SeqCst), 0);
    let n = ticks.load(Ordering::SeqCst);
    // 300 ms / 5 ms = 60 periods; the periodic poller must keep running while the reactor
    // sleeps between ticks (generous bounds: this is a functional check).
    assert!((10..=70).contains(&n), "periodic poller ran {n} times");
    let s = &rt.stats()[0];
    assert!(s.sleeps >= 5, "reactor never slept between ticks: {s:?}");
    rt.shutdown();
}

#[test]
fn idle_reactor_blocks_and_wakes_on_message() {
    let rt = rt(2);
    std::thread::sleep(Duration::from_millis(50)); // past the idle threshold
    let before = rt.stats();
    let cpu0: Vec<Duration> = before
        .iter()
        .map(|s| reactor::thread_cpu_time_of(s.tid).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let after = rt.stats();
    for (i, s) in after.iter().enumerate() {
        let cpu = reactor::thread_cpu_time_of(s.tid).unwrap() - cpu0[i];
        // A spinning reactor would burn ~1 s here; a sleeping one a few microseconds.
        assert!(
            cpu < Duration::from_millis(100),
            "idle reactor {} used {cpu:?} CPU in 1 s",
            s.core
        );
        assert!(
            s.polls - before[i].polls < 1000,
            "idle reactor kept polling: {} polls",
            s.polls - before[i].polls
        );
    }
    // A message wakes it.
    let w0 = rt.stats()[1].wakeups;
    assert_eq!(rt.call(1, reactor::current_core).unwrap(), Some(1));
    assert!(
        rt.stats()[1].wakeups > w0,
        "message did not count a wake-up"
    );
    rt.shutdown();
}

#[test]
fn wake_fd_wakes_a_sleeping_reactor() {
    let rt = rt(1);
    let got = Arc::new(AtomicUsize::new(0));
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let g = got.clone();
    rt.call(0, move || {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        reactor::add_wake_fd(b.as_raw_fd()).unwrap();
        let fd = b.as_raw_fd();
        let mut b = b;
        let h = reactor::register_poller("reader", move || {
            let mut buf = [0u8; 64];
            match b.read(&mut buf) {
                Ok(n) if n > 0 => {
                    g.fetch_add(n, Ordering::SeqCst);
                    PollStatus::Busy
                }
                _ => PollStatus::Idle,
            }
        })
        .unwrap();
        reactor::on_shutdown(move || {
            reactor::remove_wake_fd(fd);
            reactor::unregister_poller(h);
        })
        .unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let sleeps = rt.stats()[0].sleeps;
    assert!(sleeps >= 1);
    use std::io::Write;
    (&a).write_all(b"hello").unwrap();
    wait_until("socket data", || got.load(Ordering::SeqCst) == 5);
    let t0 = Instant::now();
    rt.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "shutdown hook did not unregister"
    );
    drop(a);
}

#[test]
fn shutdown_runs_hooks_and_waits_for_pollers_to_drain() {
    let rt = rt(2);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let hooks = Arc::new(AtomicUsize::new(0));
    for core in rt.cores() {
        let (fl, done, hk) = (in_flight.clone(), completed.clone(), hooks.clone());
        rt.call(core, move || {
            // A "device" that completes work 2 ms after it was started, and a submitter that
            // keeps work in flight until shutdown asks it to stop.
            let stopping = Rc::new(Cell::new(false));
            let pending: Rc<std::cell::RefCell<Vec<Instant>>> = Rc::default();
            let s2 = stopping.clone();
            reactor::on_shutdown(move || {
                hk.fetch_add(1, Ordering::SeqCst);
                s2.set(true);
            })
            .unwrap();
            let me: Rc<Cell<Option<reactor::PollerHandle>>> = Rc::default();
            let me2 = me.clone();
            let h = reactor::register_poller("workload", move || {
                let now = Instant::now();
                let mut p = pending.borrow_mut();
                let before = p.len();
                p.retain(|t| *t > now);
                let finished = before - p.len();
                fl.fetch_sub(finished, Ordering::SeqCst);
                done.fetch_add(finished, Ordering::SeqCst);
                if !stopping.get() && p.len() < 8 {
                    p.push(now + Duration::from_millis(2));
                    fl.fetch_add(1, Ordering::SeqCst);
                }
                if stopping.get() && p.is_empty() {
                    reactor::unregister_poller(me2.get().unwrap());
                }
                PollStatus::Busy
            })
            .unwrap();
            me.set(Some(h));
        })
        .unwrap();
    }
    wait_until("work in flight", || completed.load(Ordering::SeqCst) > 100);
    assert!(in_flight.load(Ordering::SeqCst) > 0);
    let t0 = Instant::now();
    rt.shutdown();
    assert_eq!(hooks.load(Ordering::SeqCst), 2);
    assert_eq!(in_flight.load(Ordering::SeqCst), 0, "work lost at shutdown");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "drain hit the timeout"
    );
    assert!(rt.send(0, || ()).is_err());
}

#[test]
fn pinning_to_a_missing_core_is_refused() {
    let err = Runtime::start(RuntimeConfig {
        cores: vec![1000],
        pin: true,
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(
        err,
        ballast_reactor::Error::CoreUnavailable { core: 1000, .. }
    ));
}
