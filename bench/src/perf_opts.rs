//! `ballast-perf`'s option checks: value parsers for clap (range checks known before anything
//! starts) and the checks that need the namespace or the controller (block size, MDTS,
//! capacity, granted queue depth). Each error names the option, the value and the limit.
//!
//! ```text
//!  clap: -q 1..=65535  -o ≥ 1  -M 0..=100  -t ≥ 1  --bdev-size-mib ≥ 1;  -r parse_target
//!  then, once the block size / controller is known:
//!    io_blocks (multiple of the block size, ≤ capacity) ─ max_transfer (≤ MDTS)
//!    buffer_memory (cores × depth × size fits)         ─ depth_note (granted < requested)
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;

/// Largest queue depth: an NVMe queue has at most 65536 entries, one of which stays empty.
pub const MAX_DEPTH: usize = 65535;
/// Most blocks one NVMe Read/Write moves (NLB is a 16-bit 0's based field).
pub const MAX_NLB: u64 = 65536;

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

/// `-q`: 1..=65535 commands per core.
pub fn parse_depth(s: &str) -> Result<usize, String> {
    match number(s)? {
        0 => Err("the queue depth must be at least 1".into()),
        d if d > MAX_DEPTH => Err(format!(
            "the queue depth is at most {MAX_DEPTH} (an NVMe queue holds 65536 entries)"
        )),
        d => Ok(d),
    }
}

/// `-o`: at least one byte (a multiple of the block size is checked once that is known).
pub fn parse_size(s: &str) -> Result<usize, String> {
    match number(s)? {
        0 => Err("the I/O size must be at least one block".into()),
        n => Ok(n),
    }
}

/// `-M`: a percentage, 0..=100.
pub fn parse_readpct(s: &str) -> Result<u32, String> {
    match number(s)? {
        p if p > 100 => Err("the read percentage is 0..=100".into()),
        p => Ok(p),
    }
}

/// `-t`: at least one second.
pub fn parse_time(s: &str) -> Result<u64, String> {
    match number(s)? {
        0 => Err("the run time must be at least 1 second".into()),
        t => Ok(t),
    }
}

/// `--bdev-size-mib`: at least 1 MiB, and a byte count that fits in 64 bits.
pub fn parse_bdev_mib(s: &str) -> Result<u64, String> {
    match number::<u64>(s)? {
        0 => Err("the bdev size must be at least 1 MiB".into()),
        m if m.checked_mul(1 << 20).is_none() => Err("the bdev size is too large".into()),
        m => Ok(m),
    }
}

/// Blocks per I/O of `size` bytes on a device of `blocks` blocks of `block_size` bytes
/// (`on` names the device for the message). Refuses a size that is not a multiple of the
/// block size (the device would move more than asked), larger than the device, or larger
/// than one NVMe command can carry.
pub fn io_blocks(size: usize, block_size: u32, blocks: u64, on: &str) -> Result<u32, String> {
    let bs = block_size as u64;
    let size = size as u64;
    if !size.is_multiple_of(bs) {
        let down = size / bs * bs;
        let up = down + bs;
        let hint = if down == 0 {
            format!("try {up}")
        } else {
            format!("try {down} or {up}")
        };
        return Err(format!(
            "-o {size}: the I/O size must be a multiple of the block size, \
             {bs} bytes on {on} ({hint})"
        ));
    }
    let nlb = size / bs;
    if nlb > blocks {
        return Err(format!(
            "-o {size}: the I/O size is larger than {on} ({} bytes)",
            blocks.saturating_mul(bs)
        ));
    }
    if nlb > MAX_NLB {
        return Err(format!(
            "-o {size}: one NVMe command moves at most {MAX_NLB} blocks ({} bytes on {on})",
            MAX_NLB * bs
        ));
    }
    Ok(nlb as u32)
}

/// Refuses an I/O larger than the controller's maximum transfer size (`max_xfer` bytes from
/// Identify Controller MDTS; 0 = no limit).
pub fn max_transfer(size: usize, max_xfer: u32) -> Result<(), String> {
    if max_xfer != 0 && size as u64 > max_xfer as u64 {
        return Err(format!(
            "-o {size}: the I/O size is larger than the controller's maximum data transfer \
             size (MDTS) of {max_xfer} bytes"
        ));
    }
    Ok(())
}

/// Refuses I/O buffers (`cores × depth × size` bytes) of more than half of `mem` bytes.
pub fn buffer_memory(cores: usize, depth: usize, size: usize, mem: u64) -> Result<(), String> {
    let need = (cores as u64)
        .checked_mul(depth as u64)
        .and_then(|n| n.checked_mul(size as u64));
    match need {
        Some(n) if n <= mem / 2 => Ok(()),
        _ => Err(format!(
            "-q {depth} -o {size} on {cores} core(s) needs {} MiB of I/O buffers, more than \
             half of this machine's {} MiB",
            need.map_or("over 2^64 bytes".to_string(), |n| (n >> 20).to_string()),
            mem >> 20
        )),
    }
}

/// Physical memory of this machine in bytes (u64::MAX if unknown).
pub fn physical_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return u64::MAX;
    }
    (pages as u64).saturating_mul(page as u64)
}

/// The note to print when the target granted fewer queue entries than `-q` asked for.
pub fn depth_note(requested: usize, granted: usize) -> Option<String> {
    (granted < requested).then(|| {
        format!(
            "queue depth {requested} requested, target allows {granted} per queue: using {granted}"
        )
    })
}

/// A parsed `-r` transport ID.
pub struct Trid {
    /// traddr:trsvcid (port 4420 if not given).
    pub addr: SocketAddr,
    /// subnqn.
    pub subnqn: String,
    /// hostnqn, if given.
    pub hostnqn: Option<String>,
    /// ns (1 if not given).
    pub nsid: u32,
}

/// `-r 'trtype:tcp traddr:A [trsvcid:P] [subnqn:N] [hostnqn:H] [ns:I]'`.
pub fn parse_target(s: &str) -> Result<Trid, String> {
    let mut kv = HashMap::new();
    for part in s.split_whitespace() {
        let (k, v) = part
            .split_once(':')
            .ok_or_else(|| format!("-r: bad field {part:?} (want key:value)"))?;
        kv.insert(k.to_ascii_lowercase(), v.to_string());
    }
    if kv.get("trtype").map(|t| t.to_ascii_lowercase()) != Some("tcp".into()) {
        return Err("-r: trtype:tcp is required".into());
    }
    let addr = kv.get("traddr").ok_or("-r: traddr missing")?;
    let port = kv.get("trsvcid").map(String::as_str).unwrap_or("4420");
    let ip: std::net::IpAddr = addr
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| format!("-r: traddr {addr:?} is not an IP address"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("-r: trsvcid {port:?} is not a port"))?;
    let subnqn = kv
        .get("subnqn")
        .cloned()
        .unwrap_or_else(|| "nqn.2026-11.io.ballast:default".into());
    let nsid = match kv.get("ns") {
        None => 1,
        Some(n) => n
            .parse()
            .ok()
            .filter(|&n| n != 0 && n != u32::MAX)
            .ok_or_else(|| format!("-r: ns {n:?} is not a namespace ID"))?,
    };
    Ok(Trid {
        addr: SocketAddr::new(ip, port),
        subnqn,
        hostnqn: kv.get("hostnqn").cloned(),
        nsid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_refuse_impossible_values() {
        assert!(parse_depth("0").is_err());
        assert_eq!(parse_depth("65535"), Ok(65535));
        assert!(parse_depth("65536").is_err());
        assert!(parse_depth("x").unwrap_err().contains("not a whole number"));
        assert!(parse_size("0").is_err());
        assert_eq!(parse_readpct("100"), Ok(100));
        assert!(parse_readpct("150").is_err());
        assert!(parse_time("0").is_err());
        assert_eq!(parse_time("1"), Ok(1));
        assert!(parse_bdev_mib("0").is_err());
        assert!(parse_bdev_mib(&u64::MAX.to_string()).is_err());
    }

    #[test]
    fn io_size_must_fit_the_block_size_and_device() {
        assert_eq!(io_blocks(4096, 512, 100, "x"), Ok(8));
        let e = io_blocks(7, 512, 100, "bdev null").unwrap_err();
        assert!(e.contains("multiple of the block size, 512 bytes on bdev null (try 512)"));
        let e = io_blocks(1000, 512, 100, "x").unwrap_err();
        assert!(e.contains("try 512 or 1024"), "{e}");
        assert!(io_blocks(512 * 101, 512, 100, "x")
            .unwrap_err()
            .contains("larger than x"));
        assert!(io_blocks(512 * 65537, 512, 1 << 30, "x")
            .unwrap_err()
            .contains("at most 65536 blocks"));
    }

    #[test]
    fn mdts_memory_and_depth() {
        assert!(max_transfer(131072, 131072).is_ok());
        assert!(max_transfer(1 << 20, 0).is_ok());
        let e = max_transfer(1 << 20, 131072).unwrap_err();
        assert!(
            e.contains("1048576") && e.contains("MDTS) of 131072 bytes"),
            "{e}"
        );
        assert!(buffer_memory(1, 32, 4096, 1 << 30).is_ok());
        assert!(buffer_memory(2, 65535, 1 << 20, 1 << 30).is_err());
        assert!(buffer_memory(usize::MAX, usize::MAX, 2, 1 << 30).is_err());
        assert_eq!(depth_note(32, 127), None);
        assert_eq!(
            depth_note(4096, 127).as_deref(),
            Some("queue depth 4096 requested, target allows 127 per queue: using 127")
        );
    }

    #[test]
    fn target_fields() {
        let t = parse_target("trtype:TCP traddr:127.0.0.1 subnqn:nqn.X").unwrap();
        assert_eq!(
            (t.addr.port(), t.subnqn.as_str(), t.nsid),
            (4420, "nqn.X", 1)
        );
        assert!(parse_target("trtype:rdma traddr:127.0.0.1").is_err());
        assert!(parse_target("trtype:tcp traddr:127.0.0.1 ns:x").is_err());
        assert!(parse_target("trtype:tcp traddr:127.0.0.1 ns:0").is_err());
        assert_eq!(
            parse_target("trtype:tcp traddr:127.0.0.1 ns:2")
                .unwrap()
                .nsid,
            2
        );
    }
}
