#!/usr/bin/env python3
"""Time `mote quantize` against llama.cpp's quantizer on the same weights.

Builds the synthetic benchmark checkpoint once (../shared/bench/make_bench_model.py
writes it as an HF folder and as a bf16 GGUF), then alternates the two tools
--rounds times per type and prints the median wall time and peak RSS of each.
Needs numpy, gguf and llama-cpp-python (see docs/performance.md).

Usage: quantize_speed.py --mote target/release/mote [--work /tmp/mote-bench] [--rounds 5]
"""
import argparse, os, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_BENCH = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "bench"))


def timed(cmd):
    """Wall seconds of one run."""
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return dt


def rss_mib(cmd):
    """Peak RSS (MiB) of one run, from GNU time."""
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    return int(p.stderr.strip().splitlines()[-1]) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mote", required=True)
    ap.add_argument("--work", default="/tmp/mote-bench")
    ap.add_argument("--size", default="bench")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    base = os.path.join(a.work, a.size)
    hf, gguf = os.path.join(base, "hf"), os.path.join(base, "model-bf16.gguf")
    if not os.path.exists(gguf):
        subprocess.run([sys.executable, os.path.join(SHARED_BENCH, "make_bench_model.py"), base, "--size", a.size],
                       check=True)
    rows = []
    for mote_type, llama_type in [("int4", "q4_0"), ("int8", "q8_0")]:
        mote_cmd = [a.mote, "quantize", hf, "-o", os.path.join(base, f"{mote_type}.mote"), "--dtype", mote_type, "-q"]
        llama_cmd = [sys.executable, os.path.join(SHARED_BENCH, "quantize_gguf.py"), gguf,
                     os.path.join(base, f"{llama_type}.gguf"), llama_type]
        m, l = [], []
        for _ in range(a.rounds):
            m.append(timed(mote_cmd))
            l.append(timed(llama_cmd))
        rows.append((mote_type, llama_type, statistics.median(m), statistics.median(l), rss_mib(mote_cmd), rss_mib(llama_cmd)))
    print(f"| type | mote s | llama.cpp s | llama.cpp / mote | mote peak RSS MiB | llama.cpp peak RSS MiB |")
    print(f"|---|---|---|---|---|---|")
    for mt, lt, ms, ls, mr, lr in rows:
        print(f"| {mt} vs {lt} | {ms:.2f} | {ls:.2f} | {ls / ms:.2f}x | {mr:.0f} | {lr:.0f} |")


if __name__ == "__main__":
    main()
