#!/usr/bin/env bash
# compare-qemu-linux.sh [BACKEND...] - boots Debian's kernel and the busybox
# initramfs under popek (default backend: interp) and under QEMU's software
# emulator (qemu-system-x86_64 -accel tcg, Debian's qemu-system-x86,
# installed if missing) with the same images and command line, runs the
# initramfs's /bin/popek-check in each, and prints:
#   * a table of wall time to the POPEK-INIT-OK marker, total wall time and
#     peak RSS, with popek/QEMU ratios;
#   * whether the "check:" lines are the same (the date and sleep markers
#     included).
# Both run in the same invocation on the same machine, one after the other.
# Not part of CI. Exit status 1 if the check output differs.
set -euo pipefail
cd "$(dirname "$0")/.."
backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(interp)
command -v qemu-system-x86_64 >/dev/null || apt-get install -y --no-install-recommends qemu-system-x86 >&2
command -v /usr/bin/time >/dev/null || apt-get install -y --no-install-recommends time >&2
dir=$(scripts/fetch-guests.sh 2>/dev/null)
cargo build --release --locked -q
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
append="console=ttyS0 panic=-1 popek.cmd=popek-check"

# run NAME CMD...: runs CMD with stdin closed, recording the time the marker
# appeared, the total wall time and peak RSS (KiB) into $tmp/NAME.*.
run() {
    local name=$1
    shift
    local start
    start=$(date +%s.%N)
    /usr/bin/time -f "%e %M" -o "$tmp/$name.time" "$@" </dev/null 2>/dev/null \
        | while IFS= read -r line; do
            case "$line" in *POPEK-INIT-OK*) date +%s.%N >"$tmp/$name.marker" ;; esac
            printf '%s\n' "$line"
        done | tr -d '\r' >"$tmp/$name.log" || true
    local marker=NaN
    [ -f "$tmp/$name.marker" ] && marker=$(awk -v a="$start" -v b="$(cat "$tmp/$name.marker")" 'BEGIN { print b - a }')
    read -r wall rss <"$tmp/$name.time"
    printf '%s %s %s %s\n' "$name" "$marker" "$wall" "$rss" >>"$tmp/results"
    grep '^check: ' "$tmp/$name.log" | grep -v '^check: sleep-' >"$tmp/$name.check" || true
}

run qemu-tcg timeout 600 qemu-system-x86_64 -accel tcg -machine pc -nodefaults -display none -m 512 \
    -serial stdio -kernel "$dir/vmlinuz" -initrd "$dir/initramfs.cpio.gz" -append "$append"
for b in "${backends[@]}"; do
    run "popek-$b" timeout 600 target/release/popek run --accel "$b" -m 512M \
        --kernel "$dir/vmlinuz" --initrd "$dir/initramfs.cpio.gz" --append "$append"
done

printf '%-14s %12s %10s %14s %16s %12s\n' run "to marker s" "total s" "peak RSS MiB" "marker/QEMU" "RSS/QEMU"
read -r _ qm qw qr < <(grep '^qemu-tcg ' "$tmp/results")
status=0
while read -r name m w r; do
    awk -v n="$name" -v m="$m" -v w="$w" -v r="$r" -v qm="$qm" -v qr="$qr" \
        'BEGIN { printf "%-14s %12.2f %10.2f %14.1f %15.2fx %11.2fx\n", n, m, w, r / 1024, m / qm, r / qr }'
done <"$tmp/results"
for b in "${backends[@]}"; do
    if diff -u "$tmp/qemu-tcg.check" "$tmp/popek-$b.check" >"$tmp/diff"; then
        echo "popek-check under $b: same $(wc -l <"$tmp/popek-$b.check") lines as QEMU"
    else
        echo "popek-check under $b DIFFERS from QEMU:"
        sed 's/^/    /' "$tmp/diff"
        status=1
    fi
done
exit $status
