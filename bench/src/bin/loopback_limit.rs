//! `ballast-loopback-limit`: what this machine can do for NVMe/TCP-shaped traffic with no
//! storage logic at all — the ceiling the target's efficiency is reported against.
//!
//! A responder thread (one core) and a requester thread (another core) exchange messages of
//! NVMe/TCP sizes over loopback TCP, both busy-polling non-blocking sockets (the strategy the
//! target and perf tool use), with one send and one receive syscall per batch:
//!
//! ```text
//!  requester ── 72-byte "capsule" (+ payload for writes) ──► responder
//!  requester ◄── 24-byte header + payload (reads) / 24-byte "response" (writes) ── responder
//! ```
//!
//! It keeps `-q` exchanges in flight and reports IOPS and round-trip percentiles.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser, Debug, Clone)]
#[command(name = "ballast-loopback-limit")]
struct Args {
    /// Exchanges in flight.
    #[arg(short = 'q', long, default_value_t = 32)]
    depth: usize,
    /// Payload bytes.
    #[arg(short = 'o', long, default_value_t = 4096)]
    size: usize,
    /// read (payload target→host) or write (payload host→target).
    #[arg(short = 'w', long, default_value = "read")]
    dir: String,
    /// Seconds.
    #[arg(short = 't', long, default_value_t = 5)]
    time: u64,
    /// Core of the responder ("target").
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Core of the requester ("host").
    #[arg(long, default_value_t = 1)]
    client_core: usize,
    /// JSON output.
    #[arg(long)]
    json: bool,
    /// Reads only: send each reply as two iovecs, a header of `--hdr` bytes and the payload
    /// straight out of a `--window`-byte buffer at a random 512-byte-aligned offset (the shape of the
    /// target's zero-copy reads), instead of one contiguous copy per reply.
    #[arg(long)]
    iov: bool,
    /// Header bytes of each reply with `--iov`.
    #[arg(long, default_value_t = 24)]
    hdr: usize,
    /// Bytes of the buffer `--iov` payloads are taken from (random 512-byte-aligned offsets;
    /// 0: always the same payload, like the contiguous mode's).
    #[arg(long, default_value_t = 1 << 20)]
    window: usize,
}

const CAPSULE: usize = 72;
const RESP: usize = 24;

fn pin(core: usize) {
    if let Some(id) = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.id == core)
    {
        core_affinity::set_for_current(id);
    }
}

/// Reads whatever is available into `buf[*end..]`; false on EOF/error.
fn fill(s: &mut TcpStream, buf: &mut [u8], end: &mut usize) -> bool {
    match s.read(&mut buf[*end..]) {
        Ok(0) => false,
        Ok(n) => {
            *end += n;
            true
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => true,
        Err(_) => false,
    }
}

/// Consumes the complete `req_len`-byte requests in `rx[*start..*end]` (compacting the
/// buffer); returns how many there were.
fn take_requests(rx: &mut [u8], start: &mut usize, end: &mut usize, req_len: usize) -> usize {
    let n = (*end - *start) / req_len;
    *start += n * req_len;
    if *start == *end {
        *start = 0;
        *end = 0;
    } else if *end > rx.len() / 2 {
        rx.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
    }
    n
}

fn flush(s: &mut TcpStream, tx: &mut Vec<u8>, sent: &mut usize) -> bool {
    while *sent < tx.len() {
        match s.write(&tx[*sent..]) {
            Ok(n) => *sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    if *sent == tx.len() {
        tx.clear();
        *sent = 0;
    }
    true
}

fn main() {
    let a = Args::parse();
    let read = match a.dir.as_str() {
        "read" => true,
        "write" => false,
        d => {
            eprintln!("-w {d:?}: want read or write");
            std::process::exit(2);
        }
    };
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (iov, hdr, size, window) = (
        a.iov && read,
        if a.iov { a.hdr } else { RESP },
        a.size,
        a.window,
    );
    let (req_len, resp_len) = if read {
        (CAPSULE, hdr + a.size)
    } else {
        (CAPSULE + a.size, RESP)
    };
    let sc = a.server_core;
    let server = std::thread::spawn(move || {
        pin(sc);
        let (mut s, _) = l.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        s.set_nonblocking(true).expect("nonblocking");
        let mut rx = vec![0u8; 1 << 20];
        let (mut start, mut end) = (0usize, 0usize);
        let mut tx = Vec::with_capacity(1 << 20);
        let mut sent = 0;
        let payload = vec![0xA5u8; resp_len];
        if iov {
            serve_iov(s, rx, hdr, size, window);
            return;
        }
        loop {
            if !fill(&mut s, &mut rx, &mut end) {
                return;
            }
            for _ in 0..take_requests(&mut rx, &mut start, &mut end, req_len) {
                tx.extend_from_slice(&payload);
            }
            if !flush(&mut s, &mut tx, &mut sent) {
                return;
            }
        }
    });
    pin(a.client_core);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_nonblocking(true).expect("nonblocking");
    let req = vec![0x5Au8; req_len];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("hist");
    let mut started = std::collections::VecDeque::with_capacity(a.depth);
    let mut tx = Vec::with_capacity(a.depth * req_len);
    let mut sent = 0;
    let mut rx = vec![0u8; 1 << 20];
    let mut end = 0usize;
    let mut done = 0u64;
    let t0 = Instant::now();
    let warm = Duration::from_millis(500);
    let total = warm + Duration::from_secs(a.time);
    let mut t_measure = None;
    loop {
        let now = Instant::now();
        let elapsed = now - t0;
        if elapsed >= total {
            break;
        }
        while started.len() < a.depth {
            tx.extend_from_slice(&req);
            started.push_back(now);
        }
        if !flush(&mut s, &mut tx, &mut sent) {
            break;
        }
        if !fill(&mut s, &mut rx, &mut end) {
            break;
        }
        let n = end / resp_len;
        if n > 0 {
            let now = Instant::now();
            for _ in 0..n {
                let st = started.pop_front().expect("in flight");
                if now - t0 >= warm {
                    if t_measure.is_none() {
                        t_measure = Some(now);
                    } else {
                        done += 1;
                        let _ = hist.record((now - st).as_nanos() as u64);
                    }
                }
            }
            rx.copy_within(n * resp_len..end, 0);
            end -= n * resp_len;
        }
    }
    let secs = t_measure.map_or(0.0, |t| t.elapsed().as_secs_f64());
    drop(s);
    let _ = server.join();
    let iops = done as f64 / secs.max(1e-9);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "dir": a.dir, "size": a.size, "depth": a.depth, "iops": iops.round(),
                "lat_us": {"p50": us(0.5), "p99": us(0.99), "avg": hist.mean() / 1000.0},
            })
        );
    } else {
        println!(
            "loopback limit {} {} B QD{}: {:.0} IOPS, {:.1} MiB/s, RTT p50 {:.2} us p99 {:.2} us",
            a.dir,
            a.size,
            a.depth,
            iops,
            iops * a.size as f64 / 1048576.0,
            us(0.5),
            us(0.99)
        );
    }
}

/// The `--iov` responder: one sendmsg per batch of replies, each reply a `hdr`-byte header
/// and a `size`-byte payload window at a random 512-byte-aligned offset of a `window`-byte buffer.
fn serve_iov(mut s: TcpStream, mut rx: Vec<u8>, hdr: usize, size: usize, window: usize) {
    use std::os::fd::AsRawFd;
    let region = vec![0xA5u8; window + size];
    let slots = (window / 512).max(1);
    let header = vec![0x5Au8; hdr];
    let mut pending: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    let mut sent = 0usize; // bytes of the front reply already sent
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        if !fill(&mut s, &mut rx, &mut end) {
            return;
        }
        for _ in 0..take_requests(&mut rx, &mut start, &mut end, CAPSULE) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            pending.push_back((seed as usize % slots) * 512);
        }
        while !pending.is_empty() {
            let mut iov = ballast_reactor::IoVecs::<128>::new(sent);
            for &off in pending.iter().take(64) {
                iov.push(&header);
                iov.push(&region[off..off + size]);
            }
            let r = match iov.send(s.as_raw_fd()) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return,
            };
            let mut n = r + sent;
            sent = 0;
            while !pending.is_empty() {
                if n < hdr + size {
                    sent = n;
                    break;
                }
                n -= hdr + size;
                pending.pop_front();
            }
            if sent > 0 {
                break;
            }
        }
    }
}
