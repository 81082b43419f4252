#!/usr/bin/env bash
# boot-linux.sh - boot Debian's kernel with the busybox initramfs on popek.
#
#   scripts/boot-linux.sh [popek run options...]
#
# Fetches the guest images first (cached), builds popek in release mode and
# runs it with the serial console on this terminal: you get the kernel log
# and a busybox shell; 'poweroff -f' or Ctrl-A x ends it. Extra options go
# to `popek run` (e.g. --accel kvm, --memory 1G, --timeout 60s).
# Set POPEK_APPEND to change the kernel command line.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(scripts/fetch-guests.sh)
cargo build --release --locked -q
exec target/release/popek run \
    --kernel "$dir/vmlinuz" \
    --initrd "$dir/initramfs.cpio.gz" \
    --append "${POPEK_APPEND:-console=ttyS0 panic=-1}" \
    "$@"
