#!/usr/bin/env bash
# compare-qemu-roms.sh [BACKEND...] - runs the benchmark workload ROMs
# at benchmark sizes (compute, memory, syscalls, port-io; see
# test-roms/src/workloads.rs and `write-test-roms --bench`) under
# popek's backends (default: interp jit kvm) and under QEMU (-accel tcg, and
# -accel kvm where the host has hardware virtualization), in one run on one
# machine, and prints a table of wall times (whole process, best of 3) with
# each one's ratio to QEMU TCG. A popek run whose output differs from QEMU's
# (or that cannot run the workload: kvm_pvm cannot do INT in long mode) is marked failed. KVM here
# may be kvm_pvm (no VT-x/AMD-V): its times are labelled so and say nothing
# about hardware virtualization (kvm_pvm needs minutes for the compute
# workload: leave kvm out with `compare-qemu-roms.sh interp jit`). Not part
# of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(interp jit kvm)
command -v qemu-system-x86_64 >/dev/null || apt-get install -y --no-install-recommends qemu-system-x86 >&2
cargo build --release --locked -q
dir=target/workload-roms
mkdir -p "$dir"
cargo run --release --locked -q -p test-roms --bin write-test-roms -- --bench "$dir" >/dev/null

kvm_label=kvm
[ -d /sys/module/kvm_pvm ] && kvm_label=kvm_pvm
hw_kvm=0
grep -q -E 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ] && hw_kvm=1

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# best3 CMD...: the best wall time of three runs; the last run's stdout is
# left in $tmp/out.
best3() {
    local best="" t
    for _ in 1 2 3; do
        local start end
        start=$(date +%s.%N)
        timeout 300 "$@" </dev/null >"$tmp/out" 2>/dev/null || true
        end=$(date +%s.%N)
        t=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
        best=$(awk -v a="${best:-$t}" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
    done
    echo "$best"
}

printf '%-10s' workload
cols=(qemu-tcg)
[ $hw_kvm -eq 1 ] && cols+=(qemu-kvm)
for b in "${backends[@]}"; do
    [ "$b" = kvm ] && cols+=("popek-$kvm_label") || cols+=("popek-$b")
done
for c in "${cols[@]}"; do printf ' %20s' "$c"; done
echo
for name in compute memory syscalls port-io; do
    rom="$dir/$name.rom"
    printf '%-10s' "$name"
    qemu=(qemu-system-x86_64 -machine pc -nodefaults -display none -m 32 -serial stdio
        -device isa-debug-exit,iobase=0xf4,iosize=4 -bios "$rom")
    tcg=$(best3 "${qemu[@]}" -accel tcg)
    reference=$(cat "$tmp/out")
    printf ' %20s' "${tcg}s"
    if [ $hw_kvm -eq 1 ]; then
        t=$(best3 "${qemu[@]}" -accel kvm)
        printf ' %20s' "${t}s ($(awk -v a="$t" -v b="$tcg" 'BEGIN { printf "%.2fx", a / b }'))"
    fi
    for b in "${backends[@]}"; do
        t=$(best3 target/release/popek run --accel "$b" -m 32M --bios "$rom")
        if [ "$(cat "$tmp/out")" != "$reference" ]; then
            printf ' %20s' "- ($b failed)"
        else
            printf ' %20s' "${t}s ($(awk -v a="$t" -v b="$tcg" 'BEGIN { printf "%.2fx", a / b }'))"
        fi
    done
    echo
done
echo "(ratios: time / QEMU TCG's time; lower is faster)"
