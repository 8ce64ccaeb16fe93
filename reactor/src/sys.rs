//! The only place the reactor talks to the kernel: eventfd, timerfd and epoll.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A non-blocking eventfd used to wake a sleeping reactor.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one to the counter; wakes an epoll waiting on it.
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an fd we own. EAGAIN (counter saturated)
        // only means a wake-up is already pending, so the result is ignored.
        unsafe {
            libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Resets the counter (non-blocking).
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from an fd we own; EAGAIN means already zero.
        unsafe {
            libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A non-blocking monotonic timerfd, armed to the next timer deadline before the reactor sleeps.
#[derive(Debug)]
pub(crate) struct TimerFd(OwnedFd);

impl TimerFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: no memory-safety preconditions; the result is checked.
        let fd = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by timerfd_create and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Arms the timer to fire once after `after` (a zero duration disarms it, so use 1 ns).
    pub(crate) fn arm(&self, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; old value pointer may be null.
        unsafe {
            libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut());
        }
    }

    pub(crate) fn disarm(&self) {
        // SAFETY: an all-zero itimerspec is valid and disarms the timer.
        let spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: `spec` is a valid itimerspec; old value pointer may be null.
        unsafe {
            libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut());
        }
    }

    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from an fd we own; EAGAIN means not expired.
        unsafe {
            libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The epoll instance a reactor blocks on when idle.
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: no memory-safety preconditions; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Level-triggered readability interest in `fd`; `token` comes back in the event.
    pub(crate) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Changes the interest in `fd` (added before): readability, plus writability if
    /// `writable`.
    pub(crate) fn modify(&self, fd: RawFd, token: u64, writable: bool) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | if writable { libc::EPOLLOUT } else { 0 }) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev) })?;
        Ok(())
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is a valid (ignored) epoll_event pointer.
        cvt(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) })?;
        Ok(())
    }

    /// Blocks until an fd is readable; returns the number of events (tokens are not needed:
    /// the reactor runs all pollers after waking).
    pub(crate) fn wait(&self, events: &mut [libc::epoll_event]) -> usize {
        self.wait_for(events, -1)
    }

    /// As `wait`, with a timeout in ms (0: just look).
    fn wait_for(&self, events: &mut [libc::epoll_event], timeout_ms: libc::c_int) -> usize {
        // SAFETY: `events` is a valid writable buffer of `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                timeout_ms,
            )
        };
        n.max(0) as usize
    }
}

/// A set of sockets polled together for readability without blocking: one `epoll_wait` tells
/// which have input, so a loaded reactor reads only those (SPDK's sock group). Reading a
/// socket that has nothing costs a syscall *and* the socket lock, which on loopback contends
/// with the peer's core delivering data into it; the readiness list needs neither.
#[derive(Debug)]
pub struct ReadySet {
    ep: Epoll,
    events: Vec<libc::epoll_event>,
}

impl ReadySet {
    /// An empty set reporting up to `batch` ready sockets per [`ReadySet::poll`].
    pub fn new(batch: usize) -> io::Result<Self> {
        Ok(Self {
            ep: Epoll::new()?,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; batch.max(1)],
        })
    }

    /// Watches `fd` (level-triggered: it is reported while it has unread input, or has hung
    /// up); `token` identifies it in [`ReadySet::poll`].
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ep.add(fd, token)
    }

    /// Stops watching `fd` (before it is closed).
    pub fn remove(&self, fd: RawFd) {
        let _ = self.ep.delete(fd);
    }

    /// Appends the tokens of the sockets that are readable now to `out`; never blocks.
    pub fn poll(&mut self, out: &mut Vec<u64>) {
        let n = self.ep.wait_for(&mut self.events, 0);
        out.extend(self.events[..n].iter().map(|e| e.u64));
    }
}

/// Up to `N` byte slices gathered for one `sendmsg`, skipping a prefix already sent (by an
/// earlier, partial send).
pub struct IoVecs<'a, const N: usize> {
    /// The first `cnt` are set (left uninitialised past that: no 16 × N-byte memset per send).
    iov: [std::mem::MaybeUninit<libc::iovec>; N],
    cnt: usize,
    skip: usize,
    _parts: std::marker::PhantomData<&'a [u8]>,
}

impl<'a, const N: usize> IoVecs<'a, N> {
    /// Empty; the first `skip` bytes pushed are left out (sent by an earlier call).
    pub fn new(skip: usize) -> Self {
        Self {
            iov: [const { std::mem::MaybeUninit::uninit() }; N],
            cnt: 0,
            skip,
            _parts: std::marker::PhantomData,
        }
    }

    /// Appends `part` (less what is still to skip). Returns false, adding nothing, when all
    /// `N` iovecs are in use.
    pub fn push(&mut self, part: &'a [u8]) -> bool {
        if self.skip >= part.len() {
            self.skip -= part.len();
            return true;
        }
        if self.cnt == N {
            return false;
        }
        let rest = &part[self.skip..];
        self.iov[self.cnt] = std::mem::MaybeUninit::new(libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        });
        self.skip = 0;
        self.cnt += 1;
        true
    }

    /// True if nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.cnt == 0
    }

    /// One non-blocking `sendmsg` (no SIGPIPE) of the gathered bytes; returns how many the
    /// socket took.
    pub fn send(&self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: the first `cnt` iovecs are initialised (by `push`) and point into slices
        // borrowed for 'a, alive for the call; sendmsg reads only those `cnt` and only reads
        // them; the zeroed msghdr names no address or control data.
        let r = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = self.iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = self.cnt as _;
            libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// When a non-blocking listening socket is worth an `accept4`: at most once per interval, and
/// only if a connection is waiting (one cheap `poll`). `accept4` on an empty queue costs far
/// more than a syscall: Linux allocates, then frees, a socket and its inode on every attempt
/// (14 % of a loaded reactor at one try per 200 µs). After the reactor slept (the listener's
/// wake fd woke it) the interval has always passed, so an idle daemon accepts at once.
#[derive(Debug)]
pub struct AcceptGate {
    fd: RawFd,
    every: Duration,
    last: std::time::Instant,
}

impl AcceptGate {
    /// A gate for listening socket `fd`, opening at most every `every`.
    pub fn new(fd: RawFd, every: Duration) -> Self {
        Self {
            fd,
            every,
            last: std::time::Instant::now() - every,
        }
    }

    /// True if the caller should accept now (then accept until `WouldBlock`).
    pub fn open(&mut self) -> bool {
        let now = std::time::Instant::now();
        if now.duration_since(self.last) < self.every {
            return false;
        }
        self.last = now;
        let mut p = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents != 0
    }
}

#[cfg(test)]
mod tests {
    use super::IoVecs;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn iovecs_skip_what_was_sent_and_stop_when_full() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let parts: [&[u8]; 4] = [b"head", b"", b"payload", b"tail"];
        // Skip 6 bytes: "head" and "pa"; 2 iovecs hold "yload" and "tail"; a third is refused.
        let mut iov = IoVecs::<2>::new(6);
        assert!(iov.is_empty());
        for p in parts {
            assert!(iov.push(p));
        }
        assert!(!iov.push(b"more"), "a third iovec does not fit");
        assert_eq!(iov.send(a.as_raw_fd()).unwrap(), 9);
        let mut got = [0u8; 9];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"yloadtail");
        drop(b);
        // The peer is gone: the error is returned, not a SIGPIPE.
        let mut iov = IoVecs::<1>::new(0);
        iov.push(b"x");
        assert!(iov.send(a.as_raw_fd()).is_err());
    }
}
