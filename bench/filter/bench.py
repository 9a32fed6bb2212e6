#!/usr/bin/env python3
"""make bench-filter: ds-filter against datatrove's four heuristic filters on the same documents.

The documents are real text from ../shared/data/text: the C4 sample (web pages), the CCNet head
sample (web pages) and the Wikipedia sample (one article a document), cycled until --docs
documents. datatrove runs GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter and
FineWebQualityFilter (defaults, English, spaCy word tokenizer; C4 rewrites the text before
FineWeb, as in a datatrove pipeline) on 2 worker processes, timing only the filter calls (no IO).
ds-filter runs with the same four rule families on (no language allow-list, no quality model;
language identification still runs) with --threads 2, timed as a whole process including Parquet
reading and writing. Both print documents/s and MB/s (UTF-8 bytes of input text), the ratio, and
how often the two agree on keep/reject.

Needs: datatrove[processing] (spaCy) and pyarrow in this Python.
Usage: python3 bench/filter/bench.py --docs 3000 --ours target/release/ds-filter
"""

import argparse
import gzip
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def check_dependencies():
    missing = []
    for module in ["datatrove", "spacy", "pyarrow"]:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        print(f"bench-filter needs {', '.join(missing)} in {sys.executable}: "
              f"{sys.executable} -m pip install 'datatrove[processing]' spacy pyarrow")
        sys.exit(2)


def build_corpus(data_dir, n_docs):
    d = Path(data_dir)
    base = []
    for name in ["c4_sample.jsonl.gz", "ccnet_head_0091.jsonl.gz"]:
        for line in gzip.open(d / name, "rt", encoding="utf-8"):
            base.append(json.loads(line)["text"])
    for line in gzip.open(d / "wiki_sample.txt.gz", "rt", encoding="utf-8"):
        if line.strip():
            base.append(line.strip())
    return [base[i % len(base)] for i in range(n_docs)]


def write_parquet(docs, folder):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    n = len(docs)
    table = pa.table({
        "id": [f"{i:08d}" for i in range(n)],
        "dump": ["CC-MAIN-BENCH"] * n,
        "url": [f"https://example.org/{i}" for i in range(n)],
        "domain": ["example.org"] * n,
        "date": ["2024-01-01T00:00:00Z"] * n,
        "lang": pa.array([None] * n, pa.string()),
        "lang_score": pa.array([None] * n, pa.float32()),
        "text": docs,
    })
    pq.write_table(table, folder / "part-00000.parquet", compression="zstd")


FILTERS = None


def datatrove_worker(chunk):
    """Runs the four filters on (index, text) pairs; returns (kept indices, filter seconds, CPU seconds)."""
    global FILTERS
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    if FILTERS is None:
        FILTERS = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()]
        # Warm the tokenizers (spaCy loads lazily) outside the timing.
        warm = Document(text="Warm up the tokenizer. It loads once. This is fine.", id="w")
        for f in FILTERS:
            f.filter(warm)
    kept = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for i, text in chunk:
        doc = Document(text=text, id=str(i))
        ok = True
        for f in FILTERS:
            r = f.filter(doc)
            if r is not True and (r is False or not r[0]):
                ok = False
                break
        if ok:
            kept.append(i)
    return kept, time.perf_counter() - start, time.process_time() - cpu_start


def run_datatrove(docs, workers):
    chunks = [[(i, t) for i, t in enumerate(docs) if i % workers == w] for w in range(workers)]
    # Load spaCy in every worker before the clock starts.
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(datatrove_worker, [[(0, "Warm up text.")]] * workers)
        start = time.perf_counter()
        results = pool.map(datatrove_worker, chunks)
        wall = time.perf_counter() - start
    kept = set(i for k, _, _ in results for i in k)
    return kept, wall, sum(cpu for _, _, cpu in results)


def run_ours(binary, work, threads):
    import resource

    out = work / "ours"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([binary, "--input", str(work / "docs"), "--output", str(out), "--threads", str(threads), "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    import pyarrow.parquet as pq

    kept = set()
    for f in sorted((out / "kept").rglob("*.parquet")):
        kept.update(int(i) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return kept, wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--ours", default="target/release/ds-filter")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not Path(args.data).exists():
        print(f"SKIPPED: {args.data} not found (real text lives in ../shared/data)")
        return
    check_dependencies()
    docs = build_corpus(args.data, args.docs)
    mb = sum(len(t.encode("utf-8")) for t in docs) / 1e6
    work = Path(tempfile.mkdtemp(prefix="bench-filter-"))
    try:
        write_parquet(docs, work / "docs" / "CC-MAIN-BENCH")
        print(f"{len(docs)} documents, {mb:.1f} MB of text (C4, CCNet, Wikipedia samples), {args.threads} cores")
        print(f"load average at start: {os.getloadavg()[0]:.1f}")
        print(f"{'tool':<34} {'docs/s':>10} {'MB/s':>8} {'docs/CPU-s':>10} {'kept':>6}")
        ours_kept, ours_s, ours_cpu = run_ours(args.ours, work, args.threads)
        print(f"{'ds-filter (whole process)':<34} {len(docs) / ours_s:>10.0f} {mb / ours_s:>8.2f} {len(docs) / ours_cpu:>10.0f} {len(ours_kept):>6}", flush=True)
        dt_kept, dt_s, dt_cpu = run_datatrove(docs, args.threads)
        print(f"{'datatrove 4 filters (filter calls)':<34} {len(docs) / dt_s:>10.1f} {mb / dt_s:>8.3f} {len(docs) / dt_cpu:>10.1f} {len(dt_kept):>6}")
        agree = sum((i in ours_kept) == (i in dt_kept) for i in range(len(docs))) / len(docs)
        print(f"speed-up: {dt_s / ours_s:.0f}x documents/s; {dt_cpu / ours_cpu:.0f}x per CPU-second (load-independent); "
              f"keep/reject agreement: {100 * agree:.1f}%")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
