#!/usr/bin/env bash
# ab-boot.sh BINARY_A BINARY_B [PAIRS] - compares two popek builds on the
# Linux boot under the JIT, alternating them PAIRS times (default 4): for
# each run, the seconds from start to the kernel's first line (the bzImage
# decompressor's share), to POPEK-INIT-OK (the marker), and between the
# two (the kernel's own boot); then the mean, median and minimum of each
# per build. Alternating spreads a noisy host's drift over both builds;
# the spread within a build says how far to trust the difference.
#
#   cp target/release/popek /tmp/popek-before   # ... change, rebuild ...
#   scripts/ab-boot.sh /tmp/popek-before target/release/popek
#
# Extra arguments for popek go in POPEK_AB_ARGS; environment variables for
# B alone (a knob under test) in POPEK_AB_ENV_B, e.g. "POPEK_JIT_THRESHOLD=2000".
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,16p' "$0"; exit 2; }
a=$1 b=$2 pairs=${3:-4}
dir=$(scripts/fetch-guests.sh 2>/dev/null)

# stamp NAME BINARY [ENV...]: one boot; prints "NAME first marker kernel".
stamp() {
    local name=$1 bin=$2
    shift 2
    local start first="" marker=""
    start=$(date +%s.%N)
    while IFS= read -r line; do
        case "$line" in
            *"Linux version"*) [ -n "$first" ] || first=$(date +%s.%N) ;;
            *POPEK-INIT-OK*) marker=$(date +%s.%N) ;;
        esac
    done < <(env "$@" "$bin" run --accel jit -m 512M --kernel "$dir/vmlinuz" --initrd "$dir/initramfs.cpio.gz" \
        --append "console=ttyS0 panic=-1 popek.cmd=true" ${POPEK_AB_ARGS:-} 2>/dev/null </dev/null)
    [ -n "$first" ] && [ -n "$marker" ] || { echo "$name: the boot did not reach the marker" >&2; return 1; }
    awk -v n="$name" -v s="$start" -v f="$first" -v m="$marker" 'BEGIN { printf "%s %.3f %.3f %.3f\n", n, f - s, m - s, m - f }'
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT
echo "build  first-line  marker  kernel  (seconds)"
for _ in $(seq "$pairs"); do
    stamp A "$a" | tee -a "$results"
    # shellcheck disable=SC2086
    stamp B "$b" ${POPEK_AB_ENV_B:-} | tee -a "$results"
done
awk '{ n[$1]++; f[$1] += $2; m[$1] += $3; k[$1] += $4 }
     END { for (x in n) printf "mean %s  %.3f  %.3f  %.3f  (%d runs)\n", x, f[x] / n[x], m[x] / n[x], k[x] / n[x], n[x] }' "$results" | sort
# The median and the fastest run too: a noisy host's slow spells pull the
# mean up, and one build's fastest run is the nearest to its cost.
for build in A B; do
    for stat in median min; do
        printf '%s %s' "$stat" "$build"
        for column in 2 3 4; do
            awk -v b="$build" -v c="$column" '$1 == b { print $c }' "$results" | sort -n |
                awk -v s="$stat" '{ v[NR] = $1 } END { if (s == "min") x = v[1]; else x = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "  %.3f", x }'
        done
        echo
    done
done
