#!/usr/bin/env python3
"""Decode speed of a paged model at budgets of 100/50/25/12.5% of its expert
bytes, layer-cycle vs LRU vs frequency-aware eviction, prefetch on and off
(hit rate, prediction accuracy, reads ahead used and wasted); and, with
--cgroup, the smallest cgroup v1 memory cap (page cache included) that
`mote bench` and llama.cpp survive.

With --text FILE the decode steps are `mote eval` over that text (every
token a step, as teacher-forced decode): the routing trace of real text,
which is what a trained router should be judged on; the bench's synthetic
token ids suit random-weight models only.

Usage: budget_table.py --mote target/release/mote --model int4.mote [--gguf q4_0.gguf]
                       [--threads 2] [--rounds 3] [--cgroup] [--text FILE [--tokens 2048]]
"""
import argparse, json, os, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_BENCH = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "bench"))
PROMPT, GEN = 32, 128


def run_json(cmd, cgroup=None):
    if cgroup:
        cmd = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return None
    lines = [l for l in p.stdout.strip().splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def plan(mote, model, context):
    info = run_json([mote, "inspect", model, "--json", "--memory-budget", "64GiB",
                     "--max-context", str(context), "--no-verify"])
    p = info["plan"]
    fixed = p["arena_bytes"] - p["expert_cache_bytes"]
    return fixed, p["expert_slots"], p["expert_slot_bytes"]


def bench(mote, model, threads, extra, cgroup=None):
    cmd = [mote, "bench", model, "--threads", str(threads), "--prompt-tokens", str(PROMPT),
           "--gen-tokens", str(GEN), "--json", "--no-verify"] + extra
    return run_json(cmd, cgroup)


def measure(a, extra):
    """One decode run's figures, from `mote bench` or (with --text) `mote eval`."""
    if not a.text:
        r = bench(a.mote, a.model, a.threads, extra)
        return r and {"tok_s": r["decode_tok_s"], "hit": r["decode_hit_rate"],
                      "read": r["storage_bytes_read_per_token"], "acc": r.get("prefetch_accuracy"),
                      "used": r.get("prefetches_used", 0), "wasted": r.get("prefetches_wasted", 0)}
    r = run_json([a.mote, "eval", a.model, "--text", a.text, "--max-tokens", str(a.tokens),
                  "--threads", str(a.threads), "--json", "--no-verify"] + extra)
    if not r:
        return None
    p = r.get("paging") or {"hit_rate": 1.0, "storage_bytes_read_per_token": 0.0}
    return {"tok_s": r["tokens_scored"] / r["seconds"], "hit": p["hit_rate"],
            "read": p["storage_bytes_read_per_token"], "acc": p.get("prefetch_accuracy"),
            "used": p.get("prefetches_used", 0), "wasted": p.get("prefetches_wasted", 0)}


def cgroup_at(limit_mib):
    path = f"/sys/fs/cgroup/memory/mote-bench-{limit_mib}"
    os.makedirs(path, exist_ok=True)
    with open(f"{path}/memory.limit_in_bytes", "w") as f:
        f.write(str(limit_mib << 20))
    # Drop this cgroup's page cache charge from earlier runs.
    try:
        with open(f"{path}/memory.force_empty", "w") as f:
            f.write("0")
    except OSError:
        pass
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mote", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cgroup", action="store_true")
    ap.add_argument("--text", help="decode steps over this text with `mote eval` instead of `mote bench`")
    ap.add_argument("--tokens", type=int, default=2048, help="with --text: tokens scored per run")
    a = ap.parse_args()

    # `mote eval` plans for its window (256 by default), `mote bench` for prompt + generated.
    fixed, experts, slot = plan(a.mote, a.model, 256 if a.text else PROMPT + GEN)
    print(f"model {a.model}: {experts} experts of {slot} bytes; everything else {fixed} bytes\n")
    full = [measure(a, [])["tok_s"] for _ in range(a.rounds)]
    full_tok_s = statistics.median(full)
    what = f"`mote eval` over {a.tokens} tokens of {a.text}" if a.text else "`mote bench`"
    print(f"full residency (memory-mapped): {full_tok_s:.1f} tok/s decode (median of {a.rounds}; {what})\n")
    print("| experts held | budget MiB | eviction | prefetch | decode tok/s | vs full | hit rate | MiB read/token | prediction used | ahead used / wasted |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for share in (1.0, 0.5, 0.25, 0.125):
        # A slot's bookkeeping is under 128 bytes; the slots start on a page.
        budget = fixed + int(experts * share) * (slot + 128) + 8192
        for eviction in ("cycle", "lru", "lfu"):
            for prefetch in (True, False):
                extra = ["--memory-budget", str(budget), "--eviction", eviction]
                if not prefetch:
                    extra.append("--no-prefetch")
                runs = [r for r in (measure(a, extra) for _ in range(a.rounds)) if r]
                if not runs:
                    print(f"| {share:.1%} | {budget / 2**20:.0f} | {eviction} | {prefetch} | failed | | | | | |")
                    continue
                tok = statistics.median(r["tok_s"] for r in runs)
                r = runs[0]
                acc = r["acc"]
                print(f"| {share:.1%} | {budget / 2**20:.0f} | {eviction} | {'on' if prefetch else 'off'} | {tok:.1f} | "
                      f"{tok / full_tok_s:.0%} | {r['hit']:.1%} | "
                      f"{r['read'] / 2**20:.1f} | {'' if acc is None else f'{acc:.0%}'} | "
                      f"{r['used']} / {r['wasted']} |")

    if a.cgroup:
        print("\n| cgroup v1 cap MiB | mote (budget = cap - 24 MiB) | llama.cpp |")
        print("|---|---|---|")
        for cap in (512, 256, 200, 160, 128, 96, 64):
            cg = cgroup_at(cap)
            m = bench(a.mote, a.model, a.threads, ["--memory-budget", f"{cap - 24}MiB"], cg)
            mres = f"{m['decode_tok_s']:.1f} tok/s, peak RSS {m['peak_rss_mib']:.0f} MiB" if m else "killed / failed"
            lres = "not run"
            if a.gguf:
                l = run_json([sys.executable, os.path.join(SHARED_BENCH, "bench_llamacpp.py"), a.gguf,
                              "--threads", str(a.threads), "--prompt-tokens", str(PROMPT),
                              "--gen-tokens", str(GEN)], cg)
                lres = f"{l['decode_tok_s']:.1f} tok/s" if l else "killed / failed"
            print(f"| {cap} | {mres} | {lres} |")


if __name__ == "__main__":
    main()
