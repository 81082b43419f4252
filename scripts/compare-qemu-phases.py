#!/usr/bin/env python3
"""compare-qemu-phases.py [ROUNDS] - the Linux boot's two phases under
QEMU's software emulator and popek's JIT, alternated ROUNDS times
(default 4): seconds to the kernel's first line (the bzImage
decompressor), to POPEK-INIT-OK (the marker), and between the two (the
kernel's own boot); then each one's medians. Uses the release build and
the guests scripts/fetch-guests.sh fetches; QEMU must be installed
(scripts/compare-qemu-linux.sh installs it). Not part of CI.
"""
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def commands(guests):
    kernel, initrd = f"{guests}/vmlinuz", f"{guests}/initramfs.cpio.gz"
    append = "console=ttyS0 panic=-1 popek.cmd=true"
    return {
        "qemu-tcg": ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-nodefaults", "-display", "none", "-m", "512",
                     "-serial", "stdio", "-kernel", kernel, "-initrd", initrd, "-append", append],
        "popek-jit": [os.path.join(ROOT, "target/release/popek"), "run", "--accel", "jit", "-m", "512M", "--kernel", kernel,
                      "--initrd", initrd, "--append", append],
    }


def phases(command):
    """(decompressor, marker, kernel) seconds of one boot."""
    start = time.monotonic()
    first = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                          text=True, errors="replace") as p:
        for line in p.stdout:
            now = time.monotonic() - start
            if first is None and "Linux version" in line:
                first = now
            if "POPEK-INIT-OK" in line:
                p.kill()
                if first is None:
                    break
                return first, now, now - first
        p.kill()
    sys.exit(f"{command[0]}: no kernel line and marker")


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    out = subprocess.run([os.path.join(HERE, "fetch-guests.sh")], capture_output=True, text=True, check=True)
    guests = out.stdout.strip().splitlines()[-1]
    results = {name: [] for name in commands(guests)}
    print("run          decompressor  marker  kernel (s)")
    for _ in range(rounds):
        for name, command in commands(guests).items():
            r = phases(command)
            results[name].append(r)
            print(f"{name:12} {r[0]:12.2f} {r[1]:7.2f} {r[2]:7.2f}", flush=True)
    for name, runs in results.items():
        medians = [statistics.median(r[i] for r in runs) for i in range(3)]
        print(f"median {name:12} {medians[0]:6.2f} {medians[1]:7.2f} {medians[2]:7.2f}")


if __name__ == "__main__":
    main()
