#!/usr/bin/env python3
"""Time the `tokenizers` package on what `cargo bench -p mote-tests --bench
tokenizer` times mote on: encoding and decoding tools/train/heldout.txt
(160 KB of English) with the committed Llama 3 (byte-level) and Llama 2
(SentencePiece) fixture tokenizers, one thread, median of --rounds.

    python3 tools/bench/tokenizer_speed.py [--rounds 10]
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def median_seconds(f, rounds):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    text = open(os.path.join(ROOT, "tools/train/heldout.txt"), encoding="utf-8").read()
    mb = len(text.encode()) / 1e6
    for name in ["llama3-bytelevel", "llama2-sentencepiece"]:
        tok = Tokenizer.from_file(os.path.join(ROOT, "tests/fixtures/tokenizers", name, "tokenizer.json"))
        ids = tok.encode(text, add_special_tokens=False).ids
        enc = median_seconds(lambda: tok.encode(text, add_special_tokens=False), args.rounds)
        dec = median_seconds(lambda: tok.decode(ids, skip_special_tokens=True), args.rounds)
        print(f"tokenizers {name}: {len(ids)} ids; encode {mb / enc:.1f} MB/s ({enc * 1e3:.1f} ms), "
              f"decode {mb / dec:.1f} MB/s ({dec * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
