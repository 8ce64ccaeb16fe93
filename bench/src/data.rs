//! Contents of the buffers the load generators write (`ballast-perf --data`), shared with the
//! benches that need the same data (`ballast-lz4-accel`).

/// What write buffers hold.
#[derive(Clone, Copy, PartialEq)]
pub enum Data {
    /// Every byte the slot number.
    Fill,
    /// Words from a small vocabulary and numbers (lz4 ≈ 1.6× on 4 KiB chunks).
    Text,
    /// xorshift bytes (incompressible).
    Random,
}

impl Data {
    /// "fill", "text" or "random".
    pub fn parse(s: &str) -> Option<Data> {
        match s {
            "fill" => Some(Data::Fill),
            "text" => Some(Data::Text),
            "random" => Some(Data::Random),
            _ => None,
        }
    }

    /// Fills `b` with the content for queue slot `slot` (deterministic per slot).
    pub fn fill(self, b: &mut [u8], slot: usize) {
        let len = b.len();
        const WORDS: &[&[u8]] = &[
            b"volume ",
            b"reactor ",
            b"the ",
            b"of ",
            b"chunk ",
            b"queue ",
            b"GET /api/v1/",
            b"200 ",
            b"nvme ",
            b"write ",
            b"read ",
            b"INFO ",
            b"\n",
            b"block=",
            b"latency_us=",
            b"and ",
        ];
        let mut x =
            0x2545_F491_4F6C_DD1D_u64 ^ (slot as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        match self {
            Data::Fill => b.fill(slot as u8),
            Data::Random => b.chunks_mut(8).for_each(|c| {
                let v = next().to_le_bytes();
                c.copy_from_slice(&v[..c.len()])
            }),
            Data::Text => {
                let mut at = 0;
                while at < len {
                    let r = next();
                    // Words from a small vocabulary, and now and then a number.
                    let w: &[u8] = if r % 5 == 0 {
                        let digits = format!("{} ", (r >> 8) % 100_000);
                        let n = digits.len().min(len - at);
                        b[at..at + n].copy_from_slice(&digits.as_bytes()[..n]);
                        at += n;
                        continue;
                    } else {
                        WORDS[(r >> 3) as usize % WORDS.len()]
                    };
                    let n = w.len().min(len - at);
                    b[at..at + n].copy_from_slice(&w[..n]);
                    at += n;
                }
            }
        }
    }
}
