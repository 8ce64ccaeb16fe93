//! Floors of this machine, measured the same way as the reactor figures but without ballast,
//! so that a noisy, virtualised 2-core box can be judged by ratios (reactor ÷ floor) rather
//! than by absolute numbers alone:
//!
//! * [`spin_rtt`]: two pinned threads bounce an atomic between them (the cache-line round
//!   trip a spinning cross-core message can never beat);
//! * [`eventfd_wake_rtt`]: a spinning thread wakes a thread blocked in `epoll_wait` on an
//!   eventfd and spins until it answers (what a sleeping reactor's wake-up costs the kernel
//!   and, here, the hypervisor);
//! * [`memcpy_4k`]: random 4 KiB copies to/from a RAM region on one core (the malloc bdev's
//!   floor).

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{CORE_A, CORE_B};

fn pin(core: usize) {
    if crate::can_pin(&[core]) {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
}

/// Runs `f` on a new thread pinned to `core` and returns its result (the caller stays
/// unpinned, so it does not share a core with reactors it starts later).
fn on_core<T: Send + 'static>(core: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        pin(core);
        f()
    })
    .join()
    .expect("pinned measuring thread")
}

/// Mean round trip of `n` back-to-back ping-pongs of an atomic counter between a thread on
/// [`CORE_A`] and one on [`CORE_B`], both spinning.
pub fn spin_rtt(n: u64) -> Duration {
    let ball = Arc::new(crossbeam_utils::CachePadded::new(AtomicU64::new(0)));
    let b = ball.clone();
    let answer = std::thread::spawn(move || {
        pin(CORE_B);
        for i in 0..n {
            while b.load(Ordering::Acquire) != 2 * i + 1 {
                spin_loop();
            }
            b.store(2 * i + 2, Ordering::Release);
        }
    });
    let el = on_core(CORE_A, move || {
        // Let the other thread get going before the clock starts.
        std::thread::sleep(Duration::from_millis(10));
        let t0 = Instant::now();
        for i in 0..n {
            ball.store(2 * i + 1, Ordering::Release);
            while ball.load(Ordering::Acquire) != 2 * i + 2 {
                spin_loop();
            }
        }
        t0.elapsed()
    });
    answer.join().expect("answer thread");
    el / n as u32
}

/// Wakes a thread blocked in `epoll_wait` on an eventfd (on [`CORE_B`]) from a spinning thread
/// (on [`CORE_A`], busy-waiting `gap` between pings so the other has long been asleep) and
/// times each round trip until the woken thread's answer is seen. `n` samples.
pub fn eventfd_wake_rtt(n: u64, gap: Duration) -> Vec<Duration> {
    // SAFETY: eventfd and epoll_create1 have no memory-safety preconditions; checked below.
    let (efd, ep) = unsafe {
        (
            libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC),
            libc::epoll_create1(libc::EPOLL_CLOEXEC),
        )
    };
    assert!(efd >= 0 && ep >= 0, "eventfd/epoll_create1 failed");
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: valid fds we own and a valid epoll_event the kernel copies.
    let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev) };
    assert_eq!(rc, 0, "epoll_ctl");
    let answered = Arc::new(crossbeam_utils::CachePadded::new(AtomicBool::new(false)));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, s) = (answered.clone(), stop.clone());
    let sleeper = std::thread::spawn(move || {
        pin(CORE_B);
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        loop {
            // SAFETY: `evs` is a valid, writable array of 4 events for the whole call.
            let r = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 4, -1) };
            if r <= 0 {
                continue;
            }
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into a local u64 from an eventfd we own.
            unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) };
            if s.load(Ordering::Acquire) {
                return;
            }
            a.store(true, Ordering::Release);
        }
    });
    let one = 1u64;
    let samples = on_core(CORE_A, move || {
        let mut samples = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let until = Instant::now() + gap;
            while Instant::now() < until {
                spin_loop();
            }
            answered.store(false, Ordering::Relaxed);
            let t = Instant::now();
            // SAFETY: writes 8 bytes from a local u64 to an eventfd we own.
            unsafe { libc::write(efd, (&one as *const u64).cast(), 8) };
            while !answered.load(Ordering::Acquire) {
                spin_loop();
            }
            samples.push(t.elapsed());
        }
        samples
    });
    stop.store(true, Ordering::Release);
    // SAFETY: as above.
    unsafe { libc::write(efd, (&one as *const u64).cast(), 8) };
    sleeper.join().expect("sleeper thread");
    // SAFETY: closing fds we own, after the only other user has exited.
    unsafe {
        libc::close(ep);
        libc::close(efd);
    }
    samples
}

/// Direction of [`memcpy_4k`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDir {
    /// Region → buffer (as a malloc-bdev read).
    Read,
    /// Buffer → region (as a malloc-bdev write).
    Write,
}

/// A RAM region of `bytes`, fully touched, and 32 page-aligned 4 KiB buffers.
pub struct CopyFloor {
    region: Vec<u8>,
    bufs: Vec<Box<[u8; 4096]>>,
    rng: u64,
}

impl CopyFloor {
    /// Allocates and touches the region (call on the core that will copy).
    pub fn new(bytes: usize) -> CopyFloor {
        assert!(bytes >= 4096);
        CopyFloor {
            region: vec![0x5a; bytes],
            bufs: (0..32).map(|_| Box::new([0xa5; 4096])).collect(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Does `n` copies of 4 KiB at random 4 KiB-aligned offsets; returns the time taken.
    pub fn run(&mut self, n: u64, dir: CopyDir) -> Duration {
        let slots = (self.region.len() / 4096) as u64;
        let t0 = Instant::now();
        for i in 0..n {
            let mut x = self.rng;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.rng = x;
            let slot =
                ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) as u128 * slots as u128) >> 64) as usize;
            let off = slot * 4096;
            let buf = &mut self.bufs[(i % 32) as usize];
            match dir {
                CopyDir::Read => buf.copy_from_slice(&self.region[off..off + 4096]),
                CopyDir::Write => self.region[off..off + 4096].copy_from_slice(&buf[..]),
            }
            std::hint::black_box(&mut self.bufs);
        }
        t0.elapsed()
    }
}

/// Pins the calling thread to `core` (if the machine has it).
pub fn pin_current(core: usize) {
    pin(core);
}

/// Mean round trip of `n` back-to-back ping-pongs through two `crossbeam_queue::ArrayQueue`s of
/// boxed closures (the reactor's ring type, same capacity), between spinning threads on
/// [`CORE_A`] and [`CORE_B`] that run each closure they pop, with no reactor loop around them.
pub fn queue_rtt(n: u64, capacity: usize) -> Duration {
    type Msg = Box<dyn FnOnce() + Send>;
    let to_b = Arc::new(crossbeam_queue::ArrayQueue::<Msg>::new(capacity));
    let to_a = Arc::new(crossbeam_queue::ArrayQueue::<Msg>::new(capacity));
    let (qb, qa) = (to_b.clone(), to_a.clone());
    let answer = std::thread::spawn(move || {
        pin(CORE_B);
        for _ in 0..n {
            let m = loop {
                match qb.pop() {
                    Some(m) => break m,
                    None => spin_loop(),
                }
            };
            m();
            if qa.push(Box::new(|| ())).is_err() {
                panic!("ring full");
            }
        }
    });
    let el = on_core(CORE_A, move || {
        std::thread::sleep(Duration::from_millis(10));
        let t0 = Instant::now();
        for _ in 0..n {
            if to_b.push(Box::new(|| ())).is_err() {
                panic!("ring full");
            }
            let m = loop {
                match to_a.pop() {
                    Some(m) => break m,
                    None => spin_loop(),
                }
            };
            m();
        }
        t0.elapsed()
    });
    answer.join().expect("answer thread");
    el / n as u32
}
