#!/usr/bin/env bash
# bench/pipelines.sh — issue 6's volume benchmarks over NVMe/TCP: 4K QD32 IOPS of a crypto
# volume, compressed volumes and the crypto+compress stack, each as a ratio to a plain malloc
# volume measured in the same repetition (A/B interleaved; medians and spread of the ratios).
#
# One ballastd reactor (core 0) exports one subsystem with a namespace per volume (256 MiB
# each, malloc underneath); ballast-perf drives one namespace at a time from core 1. Each
# namespace is first filled by a sequential 128K write of the same data (so reads hit stored
# chunks, not the unwritten-reads-zeros path).
#
# Usage: bash bench/pipelines.sh [REPS] [SECONDS] [DATA]   (defaults 3, 5, text)
#   DATA: text (compressible, lz4 ≈ 2.5×) or random (incompressible).
#   ONLY="1 2": measure only these namespaces (nsids below; 1, the plain volume, always runs).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
SECS=${2:-5}
DATA=${3:-text}
OUT=${OUT:-/tmp/ballast-bench-pipelines}
mkdir -p "$OUT"
cargo build --release -q -p ballastd -p ballast-rpc -p ballast-bench --bins
BIN=target/release
MIB=256
BLOCKS=$((MIB * 1024 * 1024 / 512))
NQN=nqn.2026-11.io.ballast:pipelines
. bench/lib.sh
port=$(free_port)

# nsid | label | volume bdev
vols=(
    "1|plain (malloc)|Plain"
    "2|crypto AES-XTS-256|Crypto"
    "3|compress lz4 16K|CompLz4"
    "4|compress lz4 4K|CompLz4k"
    "5|compress zstd-1 16K|CompZstd"
    "6|compress lz4 16K over crypto|CompCrypto"
    "7|crypto AES-XTS-256, 4 KiB blocks|Crypto4k"
)
python3 - "$BLOCKS" "$NQN" "$port" >"$OUT/config.json" <<'PY'
import json, sys
blocks, nqn, port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = lambda n: {"method": "bdev_malloc_create", "params": {"name": n, "num_blocks": blocks, "block_size": 512}}
c = lambda base, name, algo, chunk: {"method": "bdev_compress_create", "params": {
    "base_bdev_name": base, "name": name, "algorithm": algo, "chunk_size": chunk}}
m4k = {"method": "bdev_malloc_create", "params": {"name": "M6", "num_blocks": blocks // 8, "block_size": 4096}}
bdev = [m("Plain"), m("M1"), m("M2"), m("M3"), m("M4"), m("M5"), m4k,
        {"method": "bdev_crypto_create", "params": {"base_bdev_name": "M1", "name": "Crypto", "key_name": "k0"}},
        c("M2", "CompLz4", "lz4", 16384), c("M3", "CompLz4k", "lz4", 4096), c("M4", "CompZstd", "zstd", 16384),
        {"method": "bdev_crypto_create", "params": {"base_bdev_name": "M5", "name": "Crypt5", "key_name": "k0"}},
        c("Crypt5", "CompCrypto", "lz4", 16384),
        {"method": "bdev_crypto_create", "params": {"base_bdev_name": "M6", "name": "Crypto4k", "key_name": "k0"}}]
names = ["Plain", "Crypto", "CompLz4", "CompLz4k", "CompZstd", "CompCrypto", "Crypto4k"]
nvmf = [{"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
        {"method": "nvmf_create_subsystem", "params": {"nqn": nqn, "allow_any_host": True}}]
nvmf += [{"method": "nvmf_subsystem_add_ns", "params": {"nqn": nqn, "namespace": {"nsid": i + 1, "bdev_name": n}}}
         for i, n in enumerate(names)]
nvmf.append({"method": "nvmf_subsystem_add_listener", "params": {"nqn": nqn, "listen_address": {
    "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port}}})
print(json.dumps({"subsystems": [
    {"subsystem": "accel", "config": [{"method": "accel_crypto_key_create", "params": {
        "name": "k0", "cipher": "AES_XTS", "key": "00112233445566778899aabbccddeeff" * 2,
        "key2": "ffeeddccbbaa99887766554433221100" * 2}}]},
    {"subsystem": "bdev", "config": bdev}, {"subsystem": "nvmf", "config": nvmf}]}))
PY
if [ -n "${ONLY:-}" ]; then
    keep=()
    for v in "${vols[@]}"; do
        IFS='|' read -r ns _ _ <<<"$v"
        if [ "$ns" = 1 ] || [[ " $ONLY " == *" $ns "* ]]; then keep+=("$v"); fi
    done
    vols=("${keep[@]}")
fi
start_ballastd "$port" "$OUT/ballastd.log" -m 0x1 -r "$OUT/sock" -c "$OUT/config.json"
perf() { # nsid, args...
    local ns=$1
    shift
    $BIN/ballast-perf -c 0x2 --json --quiet --data "$DATA" "$@" \
        -r "trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:$NQN ns:$ns"
}
for v in "${vols[@]}"; do
    IFS='|' read -r ns _ _ <<<"$v"
    perf "$ns" -w write -o 131072 -q 8 -t 4 --warmup 0 >/dev/null
done

: >"$OUT/results.jsonl"
for rep in $(seq "$REPS"); do
    for w in randread randwrite; do
        for v in "${vols[@]}"; do
            IFS='|' read -r ns label _ <<<"$v"
            r=$(perf "$ns" -w "$w" -o 4096 -q 32 -t "$SECS")
            python3 -c 'import json,sys; r=json.loads(sys.argv[1])["total"]; print(json.dumps({"rep": int(sys.argv[2]), "w": sys.argv[3], "vol": sys.argv[4], "iops": r["iops"], "p50": r["lat_us"]["p50"]}))' \
                "$r" "$rep" "$w" "$label" >>"$OUT/results.jsonl"
        done
    done
done
./target/release/ballast-rpc -s "$OUT/sock" bdev_compress_get_stats >"$OUT/stats.json"

python3 - "$OUT/results.jsonl" "$OUT/stats.json" "$REPS" "$SECS" "$DATA" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
stats = {s["name"]: s for s in json.load(open(sys.argv[2]))}
print(f"4K QD32, {sys.argv[3]} reps × {sys.argv[4]} s, data={sys.argv[5]}; ratio = volume / plain in the same rep\n")
print("| volume | randread IOPS (median) | ratio (median, spread) | randwrite IOPS (median) | ratio (median, spread) |")
print("|---|---|---|---|---|")
vols = []
for r in rows:
    if r["vol"] not in vols:
        vols.append(r["vol"])
def cell(vol, w):
    mine = {r["rep"]: r["iops"] for r in rows if r["vol"] == vol and r["w"] == w}
    base = {r["rep"]: r["iops"] for r in rows if r["vol"] == vols[0] and r["w"] == w}
    ratios = [mine[k] / base[k] for k in mine if k in base and base[k] > 0]
    return (f"{st.median(mine.values())/1000:.0f} k",
            f"{st.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})")
for v in vols:
    a, b = cell(v, "randread")
    c, d = cell(v, "randwrite")
    print(f"| {v} | {a} | {b} | {c} | {d} |")
print()
for n, s in sorted(stats.items()):
    print(f"- {n}: {s['algorithm']} {s['chunk_size']} B chunks, {s['mapped_bytes'] >> 20} MiB written "
          f"in {s['allocated_bytes'] >> 20} MiB: ratio {s['compression_ratio']:.2f}×")
PY
