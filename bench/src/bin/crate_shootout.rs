//! `ballast-crate-shootout`: single-core throughput of the candidate crates for issue 6
//! (AES-XTS encryption and lz4/zstd compression stages), to choose the implementations by
//! measurement (figures in BENCHMARKS.md, "Crate shoot-out for issue 6").
//!
//! Candidates:
//! * AES-XTS-128 and -256, data unit (DU) 4096 B and 512 B, tweak = LBA of the data unit,
//!   little-endian (SPDK, dm-crypt `plain64`):
//!   - `xts-mode` over RustCrypto `aes` (pure Rust, AES-NI by run-time detection);
//!   - `aes` with the XTS loop written here (`ballast_engine::crypto::Xts::portable`): the tweaks of a data unit are
//!     computed first, so `aes` encrypts 8 blocks in parallel instead of one at a time;
//!   - `openssl` (the system libssl through the safe `CipherCtx` API);
//!   - `aws-lc-sys` (AWS-LC's `EVP_aes_256_xts`: AWS-LC has no AES-128-XTS, and `aws-lc-rs`
//!     has no XTS in its safe API).
//! * Compression of 16 KiB and 64 KiB chunks, text-like (JSON log lines) and random data:
//!   `lz4_flex` (pure Rust, block format), `lz4` (liblz4 binding, block format), `zstd`
//!   (libzstd binding) at levels 1 and 3.
//!
//! Before timing, every candidate is checked: IEEE 1619 vectors 4 (XTS-AES-128) and 10
//! (XTS-AES-256), a cross-check of all AES-XTS candidates against each other on random data,
//! byte-exact round trips of every chunk, and lz4 block interchange between the two lz4 crates.
//!
//! Timing: the thread is pinned to one core (`--core`, default the highest). Each figure is the
//! median of `--runs` runs of about `--secs` seconds; the candidates of one group run in turn
//! within each round (A/B interleaving), so a noisy neighbour hits them alike. Encryption
//! figures count bytes encrypted (or decrypted) in place; compression figures count
//! uncompressed bytes for both directions (GB = 10^9 bytes).

use std::time::Instant;

use aes::cipher::{BlockCipher, BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Aes256};
use ballast_bench::baseline::pin_current;
use ballast_bench::bench_core;
use xts_mode::{get_tweak_default, Xts128};

struct Args {
    runs: usize,
    secs: f64,
    core: usize,
    only: Option<String>,
    verify_only: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        runs: 5,
        secs: 0.5,
        core: bench_core(),
        only: None,
        verify_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--runs" => a.runs = val("--runs").parse().unwrap_or_else(|_| usage("--runs N")),
            "--secs" => a.secs = val("--secs").parse().unwrap_or_else(|_| usage("--secs S")),
            "--core" => a.core = val("--core").parse().unwrap_or_else(|_| usage("--core N")),
            "--only" => a.only = Some(val("--only")),
            "--verify-only" => a.verify_only = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a.runs = a.runs.max(1);
    a
}

fn usage(why: &str) -> ! {
    if !why.is_empty() {
        eprintln!("error: {why}");
    }
    eprintln!(
        "usage: ballast-crate-shootout [--runs N] [--secs S] [--core N] [--only SUBSTRING] \
         [--verify-only]"
    );
    std::process::exit(if why.is_empty() { 0 } else { 2 })
}

// ------------------------------------------------------------------------------ AES-XTS ----

/// One AES-XTS implementation. `buf` holds whole data units of `du` bytes; data unit `i` is
/// processed in place with tweak `lba + i`.
trait Xts {
    fn encrypt(&mut self, buf: &mut [u8], du: usize, lba: u64);
    fn decrypt(&mut self, buf: &mut [u8], du: usize, lba: u64);
}

/// The XTS tweak of a data unit: its LBA as a 128-bit little-endian number.
fn tweak(lba: u64) -> [u8; 16] {
    u128::from(lba).to_le_bytes()
}

/// `xts-mode` over RustCrypto `aes`.
struct XtsModeCrate<C: BlockEncrypt + BlockDecrypt + BlockCipher>(Xts128<C>);

impl<C: BlockEncrypt + BlockDecrypt + BlockCipher + KeyInit> XtsModeCrate<C> {
    fn new(key: &[u8]) -> Self {
        let (k1, k2) = key.split_at(key.len() / 2);
        Self(Xts128::new(
            C::new_from_slice(k1).expect("key length"),
            C::new_from_slice(k2).expect("key length"),
        ))
    }
}

impl<C: BlockEncrypt + BlockDecrypt + BlockCipher> Xts for XtsModeCrate<C> {
    fn encrypt(&mut self, buf: &mut [u8], du: usize, lba: u64) {
        self.0
            .encrypt_area(buf, du, u128::from(lba), get_tweak_default);
    }
    fn decrypt(&mut self, buf: &mut [u8], du: usize, lba: u64) {
        self.0
            .decrypt_area(buf, du, u128::from(lba), get_tweak_default);
    }
}

/// `openssl` crate: one `EVP_CIPHER_CTX` per direction, keyed once; per data unit only the
/// IV (tweak) is set, then one in-place update.
struct OpensslXts {
    enc: openssl::cipher_ctx::CipherCtx,
    dec: openssl::cipher_ctx::CipherCtx,
}

impl OpensslXts {
    fn new(key: &[u8]) -> Self {
        use openssl::cipher::Cipher;
        let cipher = match key.len() {
            32 => Cipher::aes_128_xts(),
            64 => Cipher::aes_256_xts(),
            n => panic!("XTS key of {n} bytes"),
        };
        let mut enc = openssl::cipher_ctx::CipherCtx::new().expect("EVP_CIPHER_CTX_new");
        enc.encrypt_init(Some(cipher), Some(key), None)
            .expect("EVP_EncryptInit_ex");
        let mut dec = openssl::cipher_ctx::CipherCtx::new().expect("EVP_CIPHER_CTX_new");
        dec.decrypt_init(Some(cipher), Some(key), None)
            .expect("EVP_DecryptInit_ex");
        Self { enc, dec }
    }
}

impl Xts for OpensslXts {
    fn encrypt(&mut self, buf: &mut [u8], du: usize, lba: u64) {
        for (i, unit) in buf.chunks_exact_mut(du).enumerate() {
            let iv = tweak(lba + i as u64);
            self.enc.encrypt_init(None, None, Some(&iv)).expect("IV");
            let n = self.enc.cipher_update_inplace(unit, du).expect("update");
            assert_eq!(n, du);
        }
    }
    fn decrypt(&mut self, buf: &mut [u8], du: usize, lba: u64) {
        for (i, unit) in buf.chunks_exact_mut(du).enumerate() {
            let iv = tweak(lba + i as u64);
            self.dec.decrypt_init(None, None, Some(&iv)).expect("IV");
            let n = self.dec.cipher_update_inplace(unit, du).expect("update");
            assert_eq!(n, du);
        }
    }
}

/// ballast's own AES-XTS (`ballast_engine::crypto::Xts`): `portable` is the batched loop over
/// RustCrypto `aes` (tweaks of a data unit first, then 8-block AES-NI pipelining); `new` uses
/// AWS-LC's AES-256-XTS through `aws-lc-sys` for 32-byte keys. The engine's code is measured
/// here, not a copy of it.
struct EngineXts(ballast_engine::crypto::Xts);

impl EngineXts {
    fn new(key: &[u8], aws_lc: bool) -> Self {
        let (k1, k2) = key.split_at(key.len() / 2);
        let x = if aws_lc {
            ballast_engine::crypto::Xts::new(k1, k2)
        } else {
            ballast_engine::crypto::Xts::portable(k1, k2)
        };
        Self(x.expect("valid XTS key"))
    }
}

impl Xts for EngineXts {
    fn encrypt(&mut self, buf: &mut [u8], du: usize, lba: u64) {
        assert!(self.0.encrypt(buf, du, lba));
    }
    fn decrypt(&mut self, buf: &mut [u8], du: usize, lba: u64) {
        assert!(self.0.decrypt(buf, du, lba));
    }
}

const XTS_NAMES: [&str; 4] = ["xts-mode+aes", "aes (batched XTS)", "openssl", "aws-lc-sys"];

/// Candidate `idx` of [`XTS_NAMES`] keyed with `key` (32 bytes: XTS-AES-128, 64: -256);
/// `None` where the candidate lacks that key size.
fn make_xts(idx: usize, key: &[u8]) -> Option<Box<dyn Xts>> {
    let aes256 = match key.len() {
        32 => false,
        64 => true,
        n => panic!("XTS key of {n} bytes"),
    };
    Some(match (idx, aes256) {
        (0, false) => Box::new(XtsModeCrate::<Aes128>::new(key)),
        (0, true) => Box::new(XtsModeCrate::<Aes256>::new(key)),
        (1, _) => Box::new(EngineXts::new(key, false)),
        (2, _) => Box::new(OpensslXts::new(key)),
        (3, false) => return None,
        (3, true) => Box::new(EngineXts::new(key, true)),
        _ => unreachable!(),
    })
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Checks every AES-XTS candidate: the IEEE 1619 vectors (encrypt and decrypt), then the
/// candidates against each other on `bytes` of random data, for both key sizes and DU sizes,
/// starting at an LBA above 2^32. Panics on the first mismatch.
fn verify_xts(bytes: usize) {
    let pt: Vec<u8> = (0..512).map(|i| i as u8).collect();
    for (name, key, dusn, ct) in ballast_engine::crypto::IEEE1619_VECTORS {
        let (key, ct) = (hex(key), hex(ct));
        for (idx, cand) in XTS_NAMES.iter().enumerate() {
            let Some(mut x) = make_xts(idx, &key) else {
                continue;
            };
            let mut buf = pt.clone();
            x.encrypt(&mut buf, 512, dusn);
            assert!(buf == ct, "{cand}: {name} encrypt mismatch");
            x.decrypt(&mut buf, 512, dusn);
            assert!(buf == pt, "{cand}: {name} decrypt mismatch");
        }
    }
    let mut rng = Rng(0x5eed_1619);
    let data = rng.bytes(bytes);
    for key_len in [32, 64] {
        let key = rng.bytes(key_len);
        for du in [4096, 512] {
            let lba = (1 << 32) + 7;
            let mut reference: Option<Vec<u8>> = None;
            for (idx, cand) in XTS_NAMES.iter().enumerate() {
                let Some(mut x) = make_xts(idx, &key) else {
                    continue;
                };
                let mut buf = data.clone();
                x.encrypt(&mut buf, du, lba);
                assert!(buf != data, "{cand}: ciphertext equals plaintext");
                match &reference {
                    None => reference = Some(buf.clone()),
                    Some(r) => assert!(
                        *r == buf,
                        "{cand} disagrees with {} (key {key_len} B, DU {du})",
                        XTS_NAMES[0]
                    ),
                }
                x.decrypt(&mut buf, du, lba);
                assert!(buf == data, "{cand}: round trip (key {key_len} B, DU {du})");
            }
        }
    }
}

// -------------------------------------------------------------------------- compression ----

/// One block compressor: `compress` returns the compressed length (output in `dst`, which
/// holds at least [`bound`] bytes); `decompress` fills `dst` (the chunk's exact size).
trait Codec {
    fn compress(&mut self, src: &[u8], dst: &mut [u8]) -> usize;
    fn decompress(&mut self, src: &[u8], dst: &mut [u8]) -> usize;
}

/// Output room that every candidate accepts: `lz4_flex` asks for 1.1 n + 20 up front (liblz4
/// needs n + n/255 + 16, zstd n + n/128 + a few hundred bytes).
fn bound(n: usize) -> usize {
    lz4_flex::block::get_maximum_output_size(n).max(n + n / 64 + 1024)
}

struct Lz4Flex;
impl Codec for Lz4Flex {
    fn compress(&mut self, src: &[u8], dst: &mut [u8]) -> usize {
        lz4_flex::block::compress_into(src, dst).expect("lz4_flex compress")
    }
    fn decompress(&mut self, src: &[u8], dst: &mut [u8]) -> usize {
        lz4_flex::block::decompress_into(src, dst).expect("lz4_flex decompress")
    }
}

/// liblz4 through the `lz4` crate: raw block format (no size prefix), LZ4_compress_default.
struct Lz4C;
impl Codec for Lz4C {
    fn compress(&mut self, src: &[u8], dst: &mut [u8]) -> usize {
        lz4::block::compress_to_buffer(src, None, false, dst).expect("lz4 compress")
    }
    fn decompress(&mut self, src: &[u8], dst: &mut [u8]) -> usize {
        let n = i32::try_from(dst.len()).expect("chunk size");
        lz4::block::decompress_to_buffer(src, Some(n), dst).expect("lz4 decompress")
    }
}

/// libzstd through the `zstd` crate's bulk API, contexts reused across chunks.
struct Zstd {
    c: zstd::bulk::Compressor<'static>,
    d: zstd::bulk::Decompressor<'static>,
}
impl Zstd {
    fn new(level: i32) -> Self {
        Self {
            c: zstd::bulk::Compressor::new(level).expect("zstd compressor"),
            d: zstd::bulk::Decompressor::new().expect("zstd decompressor"),
        }
    }
}
impl Codec for Zstd {
    fn compress(&mut self, src: &[u8], dst: &mut [u8]) -> usize {
        self.c.compress_to_buffer(src, dst).expect("zstd compress")
    }
    fn decompress(&mut self, src: &[u8], dst: &mut [u8]) -> usize {
        self.d
            .decompress_to_buffer(src, dst)
            .expect("zstd decompress")
    }
}

const CODEC_NAMES: [&str; 4] = ["lz4_flex", "lz4 (liblz4)", "zstd -1", "zstd -3"];

fn make_codec(idx: usize) -> Box<dyn Codec> {
    match idx {
        0 => Box::new(Lz4Flex),
        1 => Box::new(Lz4C),
        2 => Box::new(Zstd::new(1)),
        3 => Box::new(Zstd::new(3)),
        _ => unreachable!(),
    }
}

/// A corpus cut into chunks, with each chunk's compressed form.
struct Compressed {
    out: Vec<Vec<u8>>,
    lens: Vec<usize>,
}

impl Compressed {
    fn new(corpus: &[u8], chunk: usize) -> Self {
        let n = corpus.len() / chunk;
        Self {
            out: (0..n).map(|_| vec![0; bound(chunk)]).collect(),
            lens: vec![0; n],
        }
    }

    fn compress_all(&mut self, c: &mut dyn Codec, corpus: &[u8], chunk: usize) {
        for ((src, dst), len) in corpus
            .chunks_exact(chunk)
            .zip(self.out.iter_mut())
            .zip(self.lens.iter_mut())
        {
            *len = c.compress(src, dst);
        }
    }

    fn decompress_all(&self, c: &mut dyn Codec, scratch: &mut [u8]) {
        for (src, len) in self.out.iter().zip(&self.lens) {
            let n = c.decompress(&src[..*len], scratch);
            assert_eq!(n, scratch.len());
        }
    }

    fn compressed_bytes(&self) -> usize {
        self.lens.iter().sum()
    }
}

/// Round trip of every chunk through every codec, byte-exact, and lz4 blocks exchanged
/// between `lz4_flex` and liblz4 in both directions.
fn verify_codecs(corpus: &[u8], chunk: usize) {
    let mut scratch = vec![0u8; chunk];
    let mut packed: Vec<Compressed> = Vec::new();
    for (idx, name) in CODEC_NAMES.iter().enumerate() {
        let mut c = make_codec(idx);
        let mut p = Compressed::new(corpus, chunk);
        p.compress_all(c.as_mut(), corpus, chunk);
        for (i, (src, len)) in p.out.iter().zip(&p.lens).enumerate() {
            let n = c.decompress(&src[..*len], &mut scratch);
            assert!(
                n == chunk && scratch[..] == corpus[i * chunk..(i + 1) * chunk],
                "{name}: chunk {i} round trip"
            );
        }
        packed.push(p);
    }
    for (from, to) in [(0, 1), (1, 0)] {
        let mut c = make_codec(to);
        for (i, (src, len)) in packed[from].out.iter().zip(&packed[from].lens).enumerate() {
            let n = c.decompress(&src[..*len], &mut scratch);
            assert!(
                n == chunk && scratch[..] == corpus[i * chunk..(i + 1) * chunk],
                "{} cannot read {} chunk {i}",
                CODEC_NAMES[to],
                CODEC_NAMES[from]
            );
        }
    }
}

// --------------------------------------------------------------------------------- data ----

/// splitmix64: deterministic data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Text-like data: JSON log lines, with fixed keys, words from small vocabularies, and
/// random numbers, timestamps and request ids (the ids and numbers keep the ratio realistic,
/// about 2-4x for lz4).
fn text_like(n: usize, seed: u64) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["info", "info", "warn", "debug"];
    const HOSTS: [&str; 6] = ["ba-01", "ba-02", "ba-03", "edge-7", "edge-9", "store-12"];
    const OPS: [&str; 6] = [
        "read",
        "write",
        "flush",
        "unmap",
        "write_zeroes",
        "identify",
    ];
    const MSGS: [&str; 6] = [
        "request completed",
        "capsule received",
        "r2t sent to host",
        "queue pair connected",
        "keep alive timeout extended",
        "bdev io completed with status success",
    ];
    const USERS: [&str; 5] = [
        "alice",
        "bob",
        "carol",
        "nqn.2014-08.org.nvmexpress:uuid",
        "dave",
    ];
    let mut rng = Rng(seed);
    let mut out = String::with_capacity(n + 512);
    while out.len() < n {
        let ts = 1_795_000_000_000u64 + rng.below(86_400_000);
        out.push_str(&format!(
            "{{\"ts\":{ts},\"level\":\"{}\",\"host\":\"{}\",\"req\":\"{:016x}\",\"op\":\"{}\",\
             \"lba\":{},\"len\":{},\"qid\":{},\"latency_us\":{},\"user\":\"{}\",\"msg\":\"{}\"}}\n",
            rng.pick(&LEVELS),
            rng.pick(&HOSTS),
            rng.next(),
            rng.pick(&OPS),
            rng.below(1 << 28),
            4096 << rng.below(5),
            rng.below(32),
            rng.below(5000),
            rng.pick(&USERS),
            rng.pick(&MSGS),
        ));
    }
    let mut v = out.into_bytes();
    v.truncate(n);
    v
}

// ------------------------------------------------------------------------------- timing ----

/// Runs `pass` (returning bytes processed) until `secs` have passed; GB/s.
fn rate(secs: f64, mut pass: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut bytes = 0usize;
    loop {
        bytes += pass();
        let el = start.elapsed().as_secs_f64();
        if el >= secs {
            return bytes as f64 / el / 1e9;
        }
    }
}

/// Median, min and max.
fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[0], v[n - 1])
}

fn fmt(s: (f64, f64, f64)) -> String {
    format!("**{:.2}** ({:.2}–{:.2})", s.0, s.1, s.2)
}

/// Working set of the AES-XTS runs: 256 KiB (64 × 4 KiB), cache-resident like a buffer that
/// just arrived from the socket.
const XTS_BYTES: usize = 256 << 10;
/// Corpus of the compression runs (each run walks all its chunks).
const CORPUS_BYTES: usize = 4 << 20;

fn bench_xts(a: &Args) {
    println!(
        "\n## AES-XTS, one core, GB/s: median (min–max) of {} runs",
        a.runs
    );
    println!("\n| Cipher, data unit | Candidate | Encrypt GB/s | Decrypt GB/s |");
    println!("|---|---|---|---|");
    let mut rng = Rng(0xae5);
    let data = rng.bytes(XTS_BYTES);
    for (label, key_len) in [("AES-XTS-256", 64), ("AES-XTS-128", 32)] {
        let key = rng.bytes(key_len);
        for du in [4096, 512] {
            let group = format!("{label}, DU {du}");
            if a.only.as_ref().is_some_and(|o| !group.contains(o.as_str())) {
                continue;
            }
            let mut cands: Vec<(&str, Box<dyn Xts>)> = XTS_NAMES
                .iter()
                .enumerate()
                .filter_map(|(i, name)| Some((*name, make_xts(i, &key)?)))
                .collect();
            let mut buf = data.clone();
            let mut enc = vec![Vec::new(); cands.len()];
            let mut dec = vec![Vec::new(); cands.len()];
            for (_, c) in cands.iter_mut() {
                // Warm-up (page faults, frequency, lazy CPU-feature detection).
                rate(a.secs / 5.0, || {
                    c.encrypt(&mut buf, du, 0);
                    c.decrypt(&mut buf, du, 0);
                    2 * buf.len()
                });
            }
            for _ in 0..a.runs {
                for (i, (_, c)) in cands.iter_mut().enumerate() {
                    enc[i].push(rate(a.secs, || {
                        c.encrypt(&mut buf, du, 1000);
                        buf.len()
                    }));
                    dec[i].push(rate(a.secs, || {
                        c.decrypt(&mut buf, du, 1000);
                        buf.len()
                    }));
                }
            }
            for (i, (name, _)) in cands.iter().enumerate() {
                println!(
                    "| {group} | {name} | {} | {} |",
                    fmt(stats(&mut enc[i])),
                    fmt(stats(&mut dec[i]))
                );
            }
        }
    }
}

fn bench_codecs(a: &Args, corpora: &[(&str, Vec<u8>)]) {
    println!(
        "\n## Compression, one core, GB/s of uncompressed data: median (min–max) of {} runs",
        a.runs
    );
    println!("\n| Data, chunk | Candidate | Ratio | Compress GB/s | Decompress GB/s |");
    println!("|---|---|---|---|---|");
    for (data_name, corpus) in corpora {
        for chunk in [16 << 10, 64 << 10] {
            let group = format!("{data_name}, {} KiB", chunk >> 10);
            if a.only.as_ref().is_some_and(|o| !group.contains(o.as_str())) {
                continue;
            }
            let mut cands: Vec<Box<dyn Codec>> = (0..CODEC_NAMES.len()).map(make_codec).collect();
            let mut packed: Vec<Compressed> = (0..cands.len())
                .map(|_| Compressed::new(corpus, chunk))
                .collect();
            let mut scratch = vec![0u8; chunk];
            let total = corpus.len() / chunk * chunk;
            for (c, p) in cands.iter_mut().zip(packed.iter_mut()) {
                rate(a.secs / 5.0, || {
                    p.compress_all(c.as_mut(), corpus, chunk);
                    p.decompress_all(c.as_mut(), &mut scratch);
                    2 * total
                });
            }
            let mut comp = vec![Vec::new(); cands.len()];
            let mut decomp = vec![Vec::new(); cands.len()];
            for _ in 0..a.runs {
                for (i, (c, p)) in cands.iter_mut().zip(packed.iter_mut()).enumerate() {
                    comp[i].push(rate(a.secs, || {
                        p.compress_all(c.as_mut(), corpus, chunk);
                        total
                    }));
                    decomp[i].push(rate(a.secs, || {
                        p.decompress_all(c.as_mut(), &mut scratch);
                        total
                    }));
                }
            }
            for (i, name) in CODEC_NAMES.iter().enumerate() {
                println!(
                    "| {group} | {name} | {:.3}× | {} | {} |",
                    total as f64 / packed[i].compressed_bytes() as f64,
                    fmt(stats(&mut comp[i])),
                    fmt(stats(&mut decomp[i]))
                );
            }
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let a = parse_args();
    let corpora = [
        ("text-like", text_like(CORPUS_BYTES, 42)),
        ("random", Rng(7).bytes(CORPUS_BYTES)),
    ];
    verify_xts(XTS_BYTES);
    for (_, corpus) in &corpora {
        for chunk in [16 << 10, 64 << 10] {
            verify_codecs(corpus, chunk);
        }
    }
    println!(
        "verified: IEEE 1619 vectors 4 and 10 on all AES-XTS candidates, candidates agree on \
         random data; every chunk round-trips byte-exact; lz4_flex <-> liblz4 blocks interchange"
    );
    if a.verify_only {
        return;
    }
    pin_current(a.core);
    println!(
        "core {}, {} runs of {} s, load average at start {}",
        a.core,
        a.runs,
        a.secs,
        loadavg()
    );
    bench_xts(&a);
    bench_codecs(&a, &corpora);
    println!("\nload average at end {}", loadavg());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xts_candidates_pass_ieee1619_and_agree() {
        verify_xts(16 << 10);
    }

    #[test]
    fn codecs_round_trip_and_lz4_blocks_interchange() {
        verify_codecs(&text_like(128 << 10, 1), 16 << 10);
        verify_codecs(&Rng(3).bytes(64 << 10), 16 << 10);
    }
}
