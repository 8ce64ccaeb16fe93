#!/usr/bin/env bash
# ci/test.sh — every test of ballast, from a fresh Debian 12 machine (run as root).
#
#   1. installs what the tests need (Debian packages: protobuf-compiler for ballast-csi's
#      build, always; the QEMU guest cache for interop);
#   2. cargo fmt --check, cargo clippy -D warnings;
#   3. cargo test for the whole workspace (unit, conformance, protocol tests);
#   4. interop: the Linux kernel NVMe/TCP initiator, nvme-cli and fio in a QEMU guest
#      against ballastd on the host (ci/interop-*.sh).
#
# Environment: SKIP_INTEROP=1 skips step 4 (e.g. on a laptop without root);
#              CARGO_TEST_ARGS are passed to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

log() { printf '\n=== %s\n' "$*"; }

if [[ ${SKIP_INTEROP:-0} != 1 ]]; then
    log "installing interop dependencies (Debian packages, guest kernel cache)"
    bash ci/kernel-initiator-vm.sh setup
fi

# ballast-csi's build runs protoc on csi/proto/csi.proto (csi/build.rs).
if ! command -v protoc >/dev/null; then
    log "installing protobuf-compiler (protoc, for ballast-csi's build)"
    [[ $EUID == 0 ]] || { echo "protoc missing: apt-get install protobuf-compiler (as root)"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have empty package lists: update once on failure.
    apt-get install -y --no-install-recommends protobuf-compiler >/dev/null \
        || { apt-get update >/dev/null
             apt-get install -y --no-install-recommends protobuf-compiler >/dev/null; }
fi

# Static checks of the Kubernetes deployment (deploy/kubernetes, the Dockerfile): ~1 s, no
# cluster; installs python3-yaml when no python3 has PyYAML.
log "deploy/check.sh (Kubernetes manifests)"
bash deploy/check.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo build --release (daemon and tools)"
cargo build --release --workspace --bins

log "cargo test"
# shellcheck disable=SC2086
cargo test --workspace ${CARGO_TEST_ARGS:-} 2>&1 | tee /tmp/ballast-cargo-test.log
grep -q '^test result: ok' /tmp/ballast-cargo-test.log

if [[ ${SKIP_INTEROP:-0} != 1 ]]; then
    log "interop tests (kernel initiator in a QEMU guest)"
    fail=0
    for t in ci/interop-*.sh; do
        [[ -f $t ]] || continue
        log "$t"
        bash "$t" || fail=1
    done
    [[ $fail == 0 ]] || { echo "interop tests failed"; exit 1; }
fi
log "all tests passed"
