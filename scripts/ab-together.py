#!/usr/bin/env python3
"""ab-together.py BINARY_A BINARY_B [PAIRS] - compares two popek builds on
the Linux boot's decompressor by running them at the same time, one per
core, PAIRS times (default 6): each pair's seconds to the kernel's first
line, and B's time over A's. Both runs of a pair see the same host, so the
ratio cancels most of a noisy host's drift: pairs of one build gave
ratios with a standard deviation of 0.02 to 0.07 while `ab-boot.sh`'s
alternated runs of it spread by 20% and more.

Only for single-threaded phases: the decompressor runs on the vCPU thread
alone once its loops are compiled. The kernel's boot keeps the compiler
thread busy too, and two builds sharing two cores would slow each other
(use `ab-boot.sh` there).

    cp target/release/popek /tmp/popek-before   # ... change, rebuild ...
    scripts/ab-together.py /tmp/popek-before target/release/popek 8

Set POPEK_AB_MARK to time to another line of the serial output; extra
environment for one build goes through a wrapper script:
    printf '#!/bin/sh\\nPOPEK_JIT_GROUPS=0 exec /tmp/popek "$@"\\n' >/tmp/a
"""
import os
import statistics
import subprocess
import sys
import threading
import time


def guests():
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([os.path.join(here, "fetch-guests.sh")], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def boot(binary, guest_dir, mark, times, key):
    """Boots `binary` until `mark` appears on the console; records the seconds."""
    args = [binary, "run", "--accel", "jit", "-m", "512M", "--kernel", f"{guest_dir}/vmlinuz",
            "--initrd", f"{guest_dir}/initramfs.cpio.gz", "--append", "console=ttyS0 panic=-1 popek.cmd=true"]
    start = time.monotonic()
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL) as p:
        for line in p.stdout:
            if mark in line:
                times[key] = time.monotonic() - start
                break
        p.kill()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    a, b = sys.argv[1], sys.argv[2]
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    mark = os.environ.get("POPEK_AB_MARK", "Linux version").encode()
    guest_dir = guests()
    ratios = []
    print("pair   A       B       B/A")
    for i in range(pairs):
        times = {}
        # Started in turn first, so neither always gets the head start.
        order = [(a, "a"), (b, "b")] if i % 2 == 0 else [(b, "b"), (a, "a")]
        threads = [threading.Thread(target=boot, args=(binary, guest_dir, mark, times, key)) for binary, key in order]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if "a" not in times or "b" not in times:
            sys.exit(f"pair {i + 1}: a boot ended before {mark.decode()!r}")
        ratios.append(times["b"] / times["a"])
        print(f"{i + 1:4d}  {times['a']:.3f}  {times['b']:.3f}  {ratios[-1]:.3f}", flush=True)
    spread = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    print(f"B/A mean {statistics.mean(ratios):.3f}, median {statistics.median(ratios):.3f}, standard deviation {spread:.3f} ({pairs} pairs)")


if __name__ == "__main__":
    main()
