#!/usr/bin/env bash
# fetch-guests.sh - fetch real guest images for popek from Debian's archive.
#
# Usage:
#   scripts/fetch-guests.sh            # fetch/extract/build everything
#   scripts/fetch-guests.sh -h|--help  # show this comment
#
# Environment:
#   POPEK_GUEST_DIR   cache directory (default: $HOME/.cache/popek/guests)
#
# Everything comes from the host's configured Debian apt sources via
# `apt-get download`; nothing is fetched from anywhere else.  Downloaded .deb
# files are kept in $POPEK_GUEST_DIR/debs/ so reruns do not download again
# (delete that directory to force a refresh).  `apt-get update` is run at most
# once, and only when a lookup or download fails.
#
# Results in $POPEK_GUEST_DIR:
#   vmlinuz              Debian kernel bzImage (package of linux-image-amd64)
#   kernel-version       e.g. "6.1.0-48-amd64"
#   busybox              static x86-64 busybox (busybox-static)
#   bios.bin             SeaBIOS 128 KiB image (seabios)
#   bios-256k.bin        SeaBIOS 256 KiB image (seabios)
#   memtest86+x64.bin    memtest86+ (optional; skipped if unavailable)
#   initramfs.cpio.gz    busybox initramfs (newc, gzip, owner 0:0)
#   manifest.txt         file / size / source .deb
#
# The initramfs /init mounts proc, sysfs and devtmpfs, prints the marker line
#   POPEK-INIT-OK
# on the console, and then:
#   * if the kernel command line has `popek.cmd=VALUE`, runs VALUE with
#     `sh -c`, prints `POPEK-CMD-EXIT <status>` and powers off (`poweroff -f`).
#     VALUE is everything after `popek.cmd=` up to the next space, and is
#     percent-decoded: `%20` is a space, `%XX` is any byte in hex (e.g. `%3B`
#     for `;`, `%22` for `"`, `%25` for a literal `%`).  `+` is NOT special.
#     Example: popek.cmd=uname%20-a%3Bcat%20/proc/cpuinfo
#     `popek.cmd=popek-check` runs /bin/popek-check, whose "check:" lines
#     (arithmetic, hashes, compression, date, a timed `sleep 1`) must be the
#     same on every correct machine.
#   * otherwise starts an interactive busybox shell on the console
#     (`setsid cttyhack sh`) and powers off when it exits.
# Note: without ACPI the kernel turns power-off into a halt
# ("reboot: System halted", then HLT with interrupts off).
#
# Needs: apt-get, apt-cache, dpkg-deb, cpio, gzip.  Missing cpio/gzip are
# installed with apt-get when running as root; otherwise the script stops.

set -euo pipefail

log() { printf 'fetch-guests: %s\n' "$*" >&2; }
die() { printf 'fetch-guests: error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
    -h|--help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" >&2; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac

DIR="${POPEK_GUEST_DIR:-$HOME/.cache/popek/guests}"
DEBS="$DIR/debs"
mkdir -p "$DEBS"
DIR="$(cd "$DIR" && pwd)"
DEBS="$DIR/debs"

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# Serialise concurrent runs on the same cache.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DIR/.lock"
    flock 9
fi

TMP="$(mktemp -d "$DIR/.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

APT_OPTS=(-q)
# As root, apt would try to drop to _apt, which cannot write into $HOME.
[ "$IS_ROOT" -eq 1 ] && APT_OPTS+=(-o APT::Sandbox::User=root)

# ---------------------------------------------------------------- apt helpers
APT_UPDATED=0
apt_update_once() {
    [ "$APT_UPDATED" -eq 1 ] && return 1   # already tried; nothing new to gain
    APT_UPDATED=1
    [ "$IS_ROOT" -eq 1 ] || { log "apt-get update needed but not running as root; skipping"; return 1; }
    log "running apt-get update (package lists look stale)..."
    if ! apt-get -q update >&2; then
        log "warning: apt-get update failed"
        return 1
    fi
    return 0
}

ensure_tool() { # tool package
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "$IS_ROOT" -eq 1 ] || die "'$1' is not installed and we are not root; install package '$2' first"
    log "installing missing host tool '$1' (package $2)"
    if ! apt-get -q install -y --no-install-recommends "$2" >&2; then
        apt_update_once || true
        apt-get -q install -y --no-install-recommends "$2" >&2 \
            || die "could not install package '$2'"
    fi
    command -v "$1" >/dev/null 2>&1 || die "'$1' still missing after installing '$2'"
}

# Newest valid cached .deb for a package name (empty if none).
cached_deb() { # pkg
    local f
    # shellcheck disable=SC2012
    f="$(ls -1 "$DEBS/$1"_*.deb 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$f" ] || return 0
    if dpkg-deb --info "$f" >/dev/null 2>&1; then
        printf '%s\n' "$f"
    else
        log "cached $(basename "$f") is corrupt; removing it"
        rm -f "$f"
    fi
}

# Set DEB to the path of a .deb for pkg, downloading it into $DEBS if it is
# not cached.  Not meant to be run in a subshell (apt_update_once state).
DEB=""
apt_download() { # pkg
    (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download "$1" >&2)
}
fetch_deb() { # pkg
    local pkg="$1"
    DEB="$(cached_deb "$pkg")"
    if [ -n "$DEB" ]; then
        log "using cached $(basename "$DEB")"
        return 0
    fi
    log "downloading $pkg with apt-get download..."
    if ! apt_download "$pkg"; then
        apt_update_once || return 1
        log "retrying download of $pkg..."
        apt_download "$pkg" || return 1
    fi
    DEB="$(cached_deb "$pkg")"
    [ -n "$DEB" ] || { log "apt-get download $pkg produced no .deb"; return 1; }
}

# Name of the kernel image package linux-image-amd64 currently depends on.
# apt-cache depends prints e.g.
#   linux-image-amd64
#     Depends: linux-image-6.1.0-48-amd64
# (alternatives are shown as "|Depends:"; we take the first matching line).
resolve_kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^[[:space:]]*|\{0,1\}Depends:[[:space:]]*<\{0,1\}\(linux-image-[0-9][^[:space:]>]*\)>\{0,1\}[[:space:]]*$/\1/p' \
        | head -n 1 || true
}

# --------------------------------------------------------------- verification
check_size() { # file bytes
    local n
    n="$(stat -c %s "$1")"
    [ "$n" -eq "$2" ] || die "$1: expected $2 bytes, got $n"
}
check_bzimage() { # file
    local magic
    magic="$(od -A n -t x1 -j $((0x202)) -N 4 "$1" 2>/dev/null | tr -d ' \n' || true)"
    [ "$magic" = "48647253" ] || die "$1: not a bzImage (no 'HdrS' at offset 0x202)"
}
check_elf64_x86() { # file
    local hdr
    hdr="$(od -A n -t x1 -N 20 "$1" | tr -d ' \n')"
    [ "${hdr:0:8}" = "7f454c46" ] || die "$1: not an ELF file"
    [ "${hdr:8:2}" = "02" ] || die "$1: not a 64-bit ELF"
    [ "${hdr:36:4}" = "3e00" ] || die "$1: ELF is not x86-64"
}

# --------------------------------------------------------------------- tools
command -v apt-get >/dev/null 2>&1 || die "apt-get not found (a Debian/Ubuntu host is required)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
ensure_tool gzip gzip
ensure_tool cpio cpio

MANIFEST="$TMP/manifest.txt"
: >"$MANIFEST"
add_manifest() { # name source
    printf '%-20s %10s  %s\n' "$1" "$(stat -c %s "$DIR/$1")" "$2" >>"$MANIFEST"
}
install_file() { # src destname
    cp -f "$1" "$TMP/.install"
    mv -f "$TMP/.install" "$DIR/$2"
}
extract() { # deb -> prints extraction dir
    local d
    d="$(mktemp -d "$TMP/x.XXXXXX")"
    dpkg-deb -x "$1" "$d" || die "dpkg-deb -x failed on $1"
    printf '%s\n' "$d"
}

# -------------------------------------------------------------------- kernel
KPKG="$(resolve_kernel_pkg)"
if [ -z "$KPKG" ]; then
    log "apt-cache depends linux-image-amd64 found no linux-image-[0-9]* dependency"
    apt_update_once || true
    KPKG="$(resolve_kernel_pkg)"
fi
KDEB=""
if [ -n "$KPKG" ]; then
    log "kernel package: $KPKG"
    if fetch_deb "$KPKG"; then
        KDEB="$DEB"
    elif apt_update_once; then
        # The lists may have moved on to a newer kernel ABI; re-resolve.
        KPKG="$(resolve_kernel_pkg)"
        if [ -n "$KPKG" ] && fetch_deb "$KPKG"; then
            log "kernel package after update: $KPKG"
            KDEB="$DEB"
        fi
    fi
fi
if [ -z "$KDEB" ]; then
    # Offline fallback: newest kernel image already in the cache.
    # shellcheck disable=SC2012
    KDEB="$(ls -1 "$DEBS"/linux-image-[0-9]*_*.deb 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$KDEB" ] || die "could not resolve or download the linux-image-amd64 kernel package"
    log "warning: falling back to cached $(basename "$KDEB")"
fi
X="$(extract "$KDEB")"
shopt -s nullglob
VMLINUZ=("$X"/boot/vmlinuz-*)
shopt -u nullglob
[ "${#VMLINUZ[@]}" -eq 1 ] || die "$(basename "$KDEB"): expected exactly one boot/vmlinuz-*, found ${#VMLINUZ[@]}"
KVER="${VMLINUZ[0]##*/vmlinuz-}"
install_file "${VMLINUZ[0]}" vmlinuz
printf '%s\n' "$KVER" >"$TMP/kernel-version"
mv -f "$TMP/kernel-version" "$DIR/kernel-version"
check_bzimage "$DIR/vmlinuz"
add_manifest vmlinuz "$(basename "$KDEB")"
add_manifest kernel-version "$(basename "$KDEB")"
log "kernel $KVER -> $DIR/vmlinuz"

# ------------------------------------------------------------------- busybox
fetch_deb busybox-static || die "could not download busybox-static"
BBDEB="$DEB"
X="$(extract "$BBDEB")"
[ -f "$X/bin/busybox" ] || die "$(basename "$BBDEB") has no /bin/busybox"
install_file "$X/bin/busybox" busybox
chmod 0755 "$DIR/busybox"
check_elf64_x86 "$DIR/busybox"
add_manifest busybox "$(basename "$BBDEB")"

# ------------------------------------------------------------------- seabios
fetch_deb seabios || die "could not download seabios"
SBDEB="$DEB"
X="$(extract "$SBDEB")"
for f in bios.bin bios-256k.bin; do
    [ -f "$X/usr/share/seabios/$f" ] || die "$(basename "$SBDEB") has no /usr/share/seabios/$f"
    install_file "$X/usr/share/seabios/$f" "$f"
    add_manifest "$f" "$(basename "$SBDEB")"
done
check_size "$DIR/bios.bin" 131072
check_size "$DIR/bios-256k.bin" 262144

# ------------------------------------------------------ memtest86+ (optional)
if fetch_deb memtest86+; then
    MTDEB="$DEB"
    X="$(extract "$MTDEB")"
    if [ -f "$X/boot/memtest86+x64.bin" ]; then
        install_file "$X/boot/memtest86+x64.bin" memtest86+x64.bin
        check_bzimage "$DIR/memtest86+x64.bin"
        add_manifest memtest86+x64.bin "$(basename "$MTDEB")"
    else
        log "warning: $(basename "$MTDEB") has no /boot/memtest86+x64.bin; skipping memtest"
    fi
else
    log "warning: memtest86+ unavailable; skipping it (optional)"
fi

# ----------------------------------------------------------------- initramfs
ST="$TMP/initramfs"
mkdir -p "$ST"/{bin,dev,proc,sys,tmp,root,etc,usr}
ln -s bin "$ST/sbin"
ln -s ../bin "$ST/usr/bin"
ln -s ../bin "$ST/usr/sbin"
chmod 1777 "$ST/tmp"
chmod 0700 "$ST/root"
cp "$DIR/busybox" "$ST/bin/busybox"
chmod 0755 "$ST/bin/busybox"
"$DIR/busybox" --list >"$TMP/applets" || die "$DIR/busybox --list failed"
NAPPLETS=0
while IFS= read -r a; do
    case "$a" in ""|busybox|*/*) continue ;; esac
    ln -s busybox "$ST/bin/$a"
    NAPPLETS=$((NAPPLETS + 1))
done <"$TMP/applets"
[ -e "$ST/bin/sh" ] && [ -e "$ST/bin/cttyhack" ] && [ -e "$ST/bin/poweroff" ] \
    || die "$DIR/busybox lacks one of the applets sh, cttyhack, poweroff"
# The kernel opens /dev/console before running /init; provide the nodes when
# we can (root).  /init also re-opens the console after mounting devtmpfs.
if [ "$IS_ROOT" -eq 1 ]; then
    mknod -m 0600 "$ST/dev/console" c 5 1
    mknod -m 0666 "$ST/dev/null" c 1 3
else
    log "warning: not root, initramfs has no /dev/console node (init copes)"
fi
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ST/etc/passwd"
printf 'root:x:0:\n' >"$ST/etc/group"

cat >"$ST/init" <<'EOF'
#!/bin/busybox sh
# popek initramfs init (generated by scripts/fetch-guests.sh)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root

[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
grep -q '^[^ ]* /dev ' /proc/mounts || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
grep -q '^[^ ]* /dev/pts ' /proc/mounts || mount -t devpts devpts /dev/pts
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1

echo "POPEK-INIT-OK"

power_off() {
    sync
    poweroff -f
    # Only reached if poweroff failed; never let init exit (kernel panic).
    while :; do sleep 3600; done
}

# popek.cmd=VALUE: VALUE runs to the next space and is percent-decoded
# (%20 = space, %XX = byte 0xXX, %25 = '%'); '+' is literal.
raw=
set -f
for w in $(cat /proc/cmdline); do
    case "$w" in
        popek.cmd=*) raw="${w#popek.cmd=}" ;;
    esac
done
set +f
if [ -n "$raw" ]; then
    esc=$(printf '%s' "$raw" | sed -e 's/\\/\\\\/g' -e 's/%\([0-9A-Fa-f][0-9A-Fa-f]\)/\\x\1/g')
    cmd=$(printf '%b' "$esc")
    sh -c "$cmd"
    status=$?
    echo "POPEK-CMD-EXIT $status"
    power_off
fi

echo "popek initramfs: busybox shell; 'poweroff -f' to quit"
setsid cttyhack sh
power_off
EOF
chmod 0755 "$ST/init"
sh -n "$ST/init" || die "$ST/init: syntax error (host sh -n)"
"$DIR/busybox" sh -n "$ST/init" || die "$ST/init: syntax error (busybox sh -n)"

# popek-check: work whose output is the same on every correct x86-64 machine
# (integer and floating-point arithmetic, hashing, compression), plus the
# clock: today's UTC date and a one-second sleep timed by the guest's own
# uptime. Run it with popek.cmd=popek-check; tests compare its "check:"
# lines with QEMU's (tests/data/linux-check.txt).
cat >"$ST/bin/popek-check" <<'CHECK_EOF'
#!/bin/busybox sh
echo "check: arith $((123456789 * 987 % 1000003)) $(( (1 << 40) / 7 )) $((-17 / 5)) $((-17 % 5)) $((0x7fffffffffffffff + 1))"
echo "check: dc $(dc -e '2 100 ^ p') $(dc -e '10 k 2 v p')"
echo "check: awk $(awk 'BEGIN { x = 1; for (i = 1; i <= 50; i++) x = x * 1.1 + 1 / i; printf "%.12f %.9e %d %.17g", x, x * 1e-300 * 1e-10, int(x * 1000), 0.1 + 0.2 }')"
seq 1 30000 >/tmp/check.txt
echo "check: md5 $(md5sum </tmp/check.txt)"
echo "check: sha1 $(sha1sum </tmp/check.txt)"
echo "check: sha256 $(sha256sum </tmp/check.txt)"
echo "check: sha512 $(sha512sum </tmp/check.txt | cut -c1-32)"
gzip -9 -c /tmp/check.txt >/tmp/check.gz
gunzip -c /tmp/check.gz | cmp - /tmp/check.txt && echo "check: gzip round trip ok, $(wc -c </tmp/check.gz) bytes, md5 $(md5sum </tmp/check.gz)"
bzip2 -c /tmp/check.txt >/tmp/check.bz2
bunzip2 -c /tmp/check.bz2 | cmp - /tmp/check.txt && echo "check: bzip2 round trip ok, $(wc -c </tmp/check.bz2) bytes"
echo "check: sort $(sort -r -n /tmp/check.txt | head -c 30 | md5sum)"
echo "check: date $(date -u +%Y-%m-%d)"
echo "check: sleep-begin"
t0=$(cut -d' ' -f1 /proc/uptime)
sleep 1
t1=$(cut -d' ' -f1 /proc/uptime)
echo "check: sleep-end"
echo "check: sleep 1 $(awk -v a="$t0" -v b="$t1" 'BEGIN { d = b - a; print (d >= 0.99 && d < 1.5) ? "ok" : "took " d " s" }')"
CHECK_EOF
chmod 0755 "$ST/bin/popek-check"
"$DIR/busybox" sh -n "$ST/bin/popek-check" || die "popek-check: syntax error (busybox sh -n)"

# Reproducible-ish: fixed mtimes, sorted names, owner 0:0, no gzip timestamp.
find "$ST" -exec touch -h -d @0 {} +
CPIO_OPTS=(-o -H newc -R 0:0 --null --quiet)
CPIO_HELP="$(cpio --help 2>&1 || true)"
case "$CPIO_HELP" in *--reproducible*) CPIO_OPTS+=(--reproducible) ;; esac
(cd "$ST" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio "${CPIO_OPTS[@]}") \
    | gzip -n -9 >"$TMP/initramfs.cpio.gz"
mv -f "$TMP/initramfs.cpio.gz" "$DIR/initramfs.cpio.gz"
gzip -t "$DIR/initramfs.cpio.gz" || die "$DIR/initramfs.cpio.gz: gzip test failed"
LISTING="$(gzip -dc "$DIR/initramfs.cpio.gz" | cpio -t --quiet)"
for f in init bin/busybox bin/sh; do
    grep -qx "$f" <<<"$LISTING" || die "$DIR/initramfs.cpio.gz: missing $f"
done
add_manifest initramfs.cpio.gz "built: $(basename "$BBDEB") + /init ($NAPPLETS applet links)"

# ------------------------------------------------------------------ manifest
{
    printf '# popek guest images (scripts/fetch-guests.sh)\n'
    printf '# %-18s %10s  %s\n' file bytes source
    cat "$MANIFEST"
} >"$TMP/manifest.final"
mv -f "$TMP/manifest.final" "$DIR/manifest.txt"

log "done; summary:"
sed 's/^/  /' "$DIR/manifest.txt" >&2
log "guest directory:"
printf '%s\n' "$DIR"
