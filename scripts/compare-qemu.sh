#!/usr/bin/env bash
# compare-qemu.sh - runs every firmware test ROM under popek's interpreter
# and under QEMU's software emulator (Debian's qemu-system-x86, installed
# if missing) and diffs their serial output: the oracle for system
# behaviour where KVM here (kvm_pvm) cannot judge. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-system-x86_64 >/dev/null || apt-get install -y --no-install-recommends qemu-system-x86 >&2
cargo build --release --locked -q
dir=target/test-roms
cargo run --release --locked -q -p test-roms --bin write-test-roms -- "$dir" >/dev/null
status=0
for rom in "$dir"/*.rom; do
    name=$(basename "$rom" .rom)
    [ "$name" = serial-echo ] && continue # needs typed input
    ours=$(timeout 60 target/release/popek run --accel interp -m 32M --bios "$rom" </dev/null 2>/dev/null || true)
    theirs=$(timeout 60 qemu-system-x86_64 -accel tcg -machine pc -nodefaults -display none -m 32 \
        -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4 -bios "$rom" </dev/null 2>/dev/null || true)
    if [ "$ours" = "$theirs" ]; then
        echo "same     $name"
    else
        echo "DIFFERENT $name"
        diff <(echo "$theirs") <(echo "$ours") | sed 's/^/    /' || true
        status=1
    fi
done
exit $status
