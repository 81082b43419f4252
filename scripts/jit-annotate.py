#!/usr/bin/env python3
"""jit-annotate.py - where the samples of one translated region fall, by host
instruction, for profiling the JIT's code.

    mkdir /tmp/code
    POPEK_JIT_DUMP_CODE=/tmp/code perf record -F 4999 -o /tmp/perf.data -- \\
        target/release/popek run --accel jit ...
    perf report -i /tmp/perf.data --sort sym      # regions are named bN
    scripts/jit-annotate.py b24 /tmp/perf.data /tmp/code

POPEK_JIT_DUMP_CODE makes the translator write each region's machine code
to DIR/bN-ADDRESS.bin; this script disassembles it with objdump and prints
the hottest stretches with the samples perf took at each instruction (a
sample usually lands on the instruction after a slow one).
"""
import collections
import glob
import re
import subprocess
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    name, data = sys.argv[1], sys.argv[2]
    code_dir = sys.argv[3] if len(sys.argv) > 3 else "/tmp/code"
    files = glob.glob(f"{code_dir}/{name}-*.bin")
    if not files:
        sys.exit(f"no {code_dir}/{name}-*.bin: was POPEK_JIT_DUMP_CODE={code_dir} set?")
    path = files[0]
    start = int(path.rsplit("-", 1)[1][:-4], 16)
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True, check=True).stdout
    samples = collections.Counter()
    for line in script.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] == name:
            samples[int(fields[0], 16) - start] += 1
    dis = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64", path], capture_output=True, text=True, check=True).stdout
    listing = []
    for line in dis.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)", line)
        if m:
            listing.append((int(m.group(1), 16), m.group(2)))
    total = sum(samples.values())
    print(f"{name}: {total} samples in {len(listing)} instructions")
    hot = [offset for offset, _ in samples.most_common(40)]
    shown = False
    for offset, text in listing:
        if any(abs(offset - h) < 24 for h in hot):
            print(f"{samples.get(offset, 0):6d}  {offset:5x}: {text}")
            shown = True
        elif shown:
            print("   ...")
            shown = False


if __name__ == "__main__":
    main()
