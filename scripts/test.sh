#!/usr/bin/env bash
# test.sh - everything CI runs: fetch Debian's guest images (cached), then
# the whole workspace's tests, guest boots included. Tests that need
# hardware virtualization skip with a printed reason on hosts without it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo is not installed (https://rustup.rs)" >&2
    exit 1
fi
scripts/fetch-guests.sh >/dev/null
# The KVM tests and the kick signal need /dev/kvm; say what this host has.
if [ -e /dev/kvm ]; then
    if [ -d /sys/module/kvm_pvm ]; then
        echo "test.sh: /dev/kvm is kvm_pvm (no hardware virtualization): Linux boot tests will skip" >&2
    fi
else
    echo "test.sh: no /dev/kvm: KVM tests will skip" >&2
fi
# --nocapture so that skipped tests show their reasons in the log.
cargo test --workspace --locked "$@" -- --nocapture 2>&1
