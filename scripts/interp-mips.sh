#!/usr/bin/env bash
# interp-mips.sh - guest MIPS of the interpreter on the compute ROM, and the
# same ROM's wall time under KVM (labelled kvm_pvm on hosts without
# hardware virtualization), from a release build.
#
#   scripts/interp-mips.sh [ITERATIONS-ROM-RUNS]   (default 5 runs; median)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --locked -q
cargo run --release --locked -q -p test-roms --bin write-test-roms -- target/test-roms >/dev/null
rom=target/test-roms/compute.rom
kind=kvm
[ -d /sys/module/kvm_pvm ] && kind=kvm_pvm
median() { sort -n | awk '{a[NR]=$1} END {m=int((NR+1)/2); printf "%.1f", a[m]}'; }
mips=(); kvm_ms=(); interp_ms=()
for _ in $(seq "$runs"); do
    out=$(POPEK_TIMING=1 target/release/popek run --accel interp -m 32M --serial none --bios "$rom" 2>&1 || true)
    start=$(awk '/^popek-timing: vcpu-start/ {print $3}' <<<"$out")
    stop=$(awk '/^popek-timing: stop/ {print $3}' <<<"$out")
    n=$(awk '/^popek-timing: retired/ {print $3}' <<<"$out")
    mips+=("$(awk -v n="$n" -v a="$start" -v b="$stop" 'BEGIN {print n / ((b - a) / 1e3)}')")
    interp_ms+=("$(awk -v a="$start" -v b="$stop" 'BEGIN {print (b - a) / 1e6}')")
    t0=$(date +%s%N)
    target/release/popek run --accel kvm -m 32M --serial none --bios "$rom" >/dev/null 2>&1 || true
    kvm_ms+=("$(( ($(date +%s%N) - t0) / 1000000 ))")
done
printf 'interp: %s guest MIPS (%s ms for %s instructions; median of %d)\n' \
    "$(printf '%s\n' "${mips[@]}" | median)" "$(printf '%s\n' "${interp_ms[@]}" | median)" "$n" "$runs"
printf '%s: %s ms for the same ROM, whole process (median of %d)\n' "$kind" "$(printf '%s\n' "${kvm_ms[@]}" | median)" "$runs"
