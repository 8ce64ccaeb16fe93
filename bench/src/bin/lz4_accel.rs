//! `ballast-lz4-accel`: what liblz4 costs per chunk at each acceleration level, on the data
//! `ballast-perf --data text|random` writes — the budget behind the compressed-volume write
//! figures in BENCHMARKS.md.
//!
//! ```text
//!  32 slot buffers (ballast_bench::data) ─► LZ4_compress_fast(acceleration) per chunk, pinned core
//!  ─► best-of-N ns per chunk, GB/s, mean compressed size, units of chunk/8 stored
//! ```

use std::time::Instant;

use ballast_bench::data::Data;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "ballast-lz4-accel")]
struct Args {
    /// Chunk size in bytes.
    #[arg(long, default_value_t = 4096)]
    chunk: usize,
    /// Data: text or random (as ballast-perf --data).
    #[arg(long, default_value = "text")]
    data: String,
    /// Chunks compressed per run.
    #[arg(long, default_value_t = 20_000)]
    chunks: usize,
    /// Runs per level (the best is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Core to pin to.
    #[arg(long, default_value_t = 1)]
    core: usize,
}

fn main() {
    let a = Args::parse();
    let Some(data) = Data::parse(&a.data) else {
        eprintln!("--data {:?}: want fill, text or random", a.data);
        std::process::exit(2);
    };
    if let Some(id) = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.id == a.core)
    {
        core_affinity::set_for_current(id);
    }
    let chunks: Vec<Vec<u8>> = (0..32)
        .map(|slot| {
            let mut b = vec![0u8; a.chunk];
            data.fill(&mut b, slot);
            b
        })
        .collect();
    let cap = a.chunk + a.chunk / 255 + 16;
    let mut out = vec![0u8; cap];
    let (Ok(src_len), Ok(cap_len)) = (i32::try_from(a.chunk), i32::try_from(cap)) else {
        eprintln!("--chunk {} too large", a.chunk);
        std::process::exit(2);
    };
    let unit = (a.chunk / 8).max(512);
    println!("| lz4 acceleration | ns per {} B chunk | GB/s | compressed size | units of {unit} B stored (of {}) |", a.chunk, a.chunk / unit);
    println!("|---|---|---|---|---|");
    for acc in [1, 2, 4, 8, 16, 32, 64] {
        let mut best = f64::MAX;
        let mut size = 0usize;
        for _ in 0..a.runs {
            let t = Instant::now();
            let mut total = 0usize;
            for i in 0..a.chunks {
                let c = &chunks[i % chunks.len()];
                // SAFETY: `c` holds `src_len` readable bytes and `out` `cap_len` writable ones
                // (at least LZ4_compressBound of the chunk); liblz4 writes within `cap_len`.
                let n = unsafe {
                    lz4::liblz4::LZ4_compress_fast(
                        c.as_ptr().cast(),
                        out.as_mut_ptr().cast(),
                        src_len,
                        cap_len,
                        acc,
                    )
                };
                total += usize::try_from(n).unwrap_or(a.chunk);
            }
            best = best.min(t.elapsed().as_nanos() as f64 / a.chunks as f64);
            size = total / a.chunks;
        }
        let units = size.div_ceil(unit).min(a.chunk / unit);
        println!(
            "| {acc} | {best:.0} | {:.2} | {size} B | {units} |",
            a.chunk as f64 / best
        );
    }
}
