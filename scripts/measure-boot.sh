#!/usr/bin/env bash
# measure-boot.sh - time popek under KVM from process start to the guest's
# first exit (its first port I/O, a few instructions after the reset
# vector), to the test ROM's debug-exit, and its peak RSS; on a host with
# hardware virtualization also to the initramfs's POPEK-INIT-OK marker.
#
#   scripts/measure-boot.sh [RUNS]      (default 10 runs each; prints medians)
#
# On kvm_pvm hosts the figures are labelled kvm_pvm: they say nothing about
# hardware virtualization.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
cargo build --release --locked -q
cargo run --release --locked -q -p test-roms --bin write-test-roms -- target/test-roms >/dev/null
kind=hardware
[ -d /sys/module/kvm_pvm ] && kind=kvm_pvm

median() { sort -n | awk '{a[NR]=$1} END {m=int((NR+1)/2); printf "%.2f", a[m]}'; }

measure_rom() {
    local rom=$1 first=() stop=() rss=()
    for _ in $(seq "$runs"); do
        local t0 out
        t0=$(date +%s%N)
        out=$(POPEK_TIMING=1 target/release/popek run --accel kvm -m 32M --serial none --bios "$rom" 2>&1 >/dev/null || true)
        first+=("$(awk -v t0="$t0" '/^popek-timing: first-exit/ {print ($3 - t0) / 1e6}' <<<"$out")")
        stop+=("$(awk -v t0="$t0" '/^popek-timing: stop/ {print ($3 - t0) / 1e6}' <<<"$out")")
        rss+=("$(awk '/^popek-timing: peak-rss-kib/ {print $3 / 1024}' <<<"$out")")
    done
    printf '%-22s first guest exit %6s ms   debug-exit %6s ms   peak RSS %6s MiB   (median of %d, %s)\n' \
        "$(basename "$rom")" "$(printf '%s\n' "${first[@]}" | median)" "$(printf '%s\n' "${stop[@]}" | median)" \
        "$(printf '%s\n' "${rss[@]}" | median)" "$runs" "$kind"
}

measure_rom target/test-roms/real-mode-hello.rom
measure_rom target/test-roms/long-mode-hello.rom

if [ "$kind" = hardware ]; then
    dir=$(scripts/fetch-guests.sh)
    times=()
    for _ in $(seq "$runs"); do
        t0=$(date +%s%N)
        target/release/popek run --accel kvm -m 512M --timeout 60s --kernel "$dir/vmlinuz" \
            --initrd "$dir/initramfs.cpio.gz" --append "console=ttyS0 quiet panic=-1 popek.cmd=true" </dev/null |
            while IFS= read -r line; do
                case $line in *POPEK-INIT-OK*) echo $(( ($(date +%s%N) - t0) / 1000000 )) >"target/init-ms" ;; esac
            done
        times+=("$(cat target/init-ms)")
    done
    printf 'Linux to POPEK-INIT-OK: %s ms (median of %d, quiet console)\n' "$(printf '%s\n' "${times[@]}" | median)" "$runs"
else
    echo "Linux to /init: not measured (needs hardware virtualization; this host has $kind)"
fi
