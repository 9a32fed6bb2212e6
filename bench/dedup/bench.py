#!/usr/bin/env python3
"""make bench-dedup: ds-dedup against datatrove's MinHash pipeline, rensa and datasketch.

All four run in one run on the same documents, built deterministically from the real text in
../shared/data/text: each original is three passages from random places (English
web/Wikipedia/Shakespeare, or the Chinese novel); 15% of documents are copies of earlier ones
with 0-5% of their tokens replaced. Every tool uses 112 hashes as 14 bands x 8 rows and word
5-gram shingles; each prints documents/s (the whole dedup: signatures, buckets, clusters,
output; for rensa and datasketch also signatures alone, Python shingling included), peak memory
(RSS of the process tree), and precision/recall:
  recall    = planted copy pairs with exact Jaccard >= 0.8 that end in the same cluster
  precision = removed documents whose exact Jaccard with the document they were matched to >= 0.8
datatrove is about 100x slower than the others, so it runs on the first --datatrove-docs
documents of the same corpus (a deterministic prefix, which holds its own planted copies); its
docs/s is over the documents it processed and its accuracy over that prefix.

Needs: pip install datatrove orjson rensa datasketch pyarrow psutil (the tools that are missing are skipped).
Usage: python3 bench/dedup/bench.py --docs 200000 --ours target/release/ds-dedup
"""

import argparse
import functools
import gzip
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import run_measured  # noqa: E402

TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]|[^\W_]+")
BANDS, ROWS, NUM_PERM, THRESHOLD = 14, 8, 112, 0.8


def tokens(text):
    return TOKEN.findall(text.lower())


def shingles(text, n=5):
    t = tokens(text)
    if len(t) < n:
        return {" ".join(t)} if t else set()
    return {" ".join(t[i : i + n]) for i in range(len(t) - n + 1)}


def jaccard(a, b):
    return len(a & b) / len(a | b) if (a or b) else 1.0


# ---- corpus -------------------------------------------------------------------------------


def build_corpus(data_dir, n_docs, seed=1):
    d = Path(data_dir)
    english = []
    for name in ["c4_sample.jsonl.gz", "ccnet_head_0091.jsonl.gz"]:
        for line in gzip.open(d / name, "rt"):
            english.extend(json.loads(line)["text"].split())
    english.extend(gzip.open(d / "wiki_sample.txt.gz", "rt").read().split())
    english.extend((d / "tinyshakespeare.txt").read_text().split())
    chinese = [c for c in gzip.open(d / "zh_hongloumeng.txt.gz", "rt").read() if not c.isspace()]
    rng = random.Random(seed)
    docs, planted = [], []
    for i in range(n_docs):
        if docs and rng.random() < 0.15:
            src = rng.randrange(len(docs))
            rate = rng.choice([0.0, 0.005, 0.01, 0.02, 0.03, 0.05])
            text = docs[src]
            if any("\u4e00" <= c <= "\u9fff" for c in text[:50]):
                text = "".join(chr(0x4E00 + rng.randrange(2000)) if rng.random() < rate else c for c in text)
            else:
                text = " ".join(f"zz{rng.randrange(10**6)}" if rng.random() < rate else w for w in text.split(" "))
            if rng.random() < 0.5:
                text += "\nShare this article. Copyright 2024."
            planted.append((i, src))
        elif rng.random() < 0.1:
            parts = []
            for _ in range(3):
                start = rng.randrange(len(chinese) - 400)
                parts.append("".join(chinese[start : start + rng.randrange(100, 300)]))
            text = "\n".join(parts)
        else:
            parts = []
            for _ in range(3):
                start = rng.randrange(len(english) - 200)
                parts.append(" ".join(english[start : start + rng.randrange(50, 130)]))
            text = "\n".join(parts)
        docs.append(text)
    return docs, planted


def write_parquet(docs, folder, files=8):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    per = (len(docs) + files - 1) // files
    for f in range(files):
        idx = range(f * per, min(len(docs), (f + 1) * per))
        table = pa.table(
            {
                "id": [f"{i:012d}" for i in idx],
                "dump": ["CC-MAIN-BENCH"] * len(idx),
                "url": [f"https://example.org/{i}" for i in idx],
                "domain": ["example.org"] * len(idx),
                "date": ["2024-01-01T00:00:00Z"] * len(idx),
                "lang": pa.array([None] * len(idx), pa.string()),
                "lang_score": pa.array([None] * len(idx), pa.float32()),
                "text": [docs[i] for i in idx],
            }
        )
        pq.write_table(table, folder / f"part-{f:05d}.parquet", compression="zstd")


# ---- measurement --------------------------------------------------------------------------


# ---- the Python tools, each in its own process (python bench.py --tool X --work DIR) --------


class UnionFind:
    def __init__(self, n):
        self.p = list(range(n))

    def find(self, x):
        while self.p[x] != x:
            self.p[x] = self.p[self.p[x]]
            x = self.p[x]
        return x

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.p[max(a, b)] = min(a, b)


def load_docs(work):
    return json.load(open(Path(work) / "docs.json"))


def tool_rensa(work):
    from rensa import RMinHash, RMinHashLSH

    docs = load_docs(work)
    t0 = time.time()
    sigs = []
    for text in docs:
        m = RMinHash(num_perm=NUM_PERM, seed=1)
        m.update(list(shingles(text)) or [""])
        sigs.append(m)
    sig_seconds = time.time() - t0
    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=BANDS)
    uf = UnionFind(len(docs))
    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if m.jaccard(sigs[j]) >= THRESHOLD:
                uf.union(i, j)
        lsh.insert(i, m)
    return sig_seconds, [uf.find(i) for i in range(len(docs))]


def tool_datasketch(work):
    from datasketch import MinHash, MinHashLSH

    docs = load_docs(work)
    t0 = time.time()
    sigs = MinHash.bulk([[s.encode() for s in shingles(t)] or [b""] for t in docs], num_perm=NUM_PERM, seed=1)
    sig_seconds = time.time() - t0
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, ROWS))
    uf = UnionFind(len(docs))
    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if m.jaccard(sigs[j]) >= THRESHOLD:
                uf.union(i, j)
        lsh.insert(i, m)
    return sig_seconds, [uf.find(i) for i in range(len(docs))]


def tool_datatrove(work, docs_folder="docs-datatrove"):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import JsonlWriter

    w = Path(work) / "datatrove"
    config = MinhashConfig(n_grams=5, num_buckets=BANDS, hashes_per_bucket=ROWS, seed=1)
    docs_dir = str(Path(work) / docs_folder / "CC-MAIN-BENCH")
    reader = lambda: ParquetReader(docs_dir, text_key="text", id_key="id")  # noqa: E731
    tasks = 8
    LocalPipelineExecutor(
        pipeline=[reader(), MinhashDedupSignature(output_folder=f"{w}/sigs", config=config)],
        tasks=tasks, workers=2, logging_dir=f"{w}/logs/1",
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=f"{w}/sigs", output_folder=f"{w}/buckets", config=config)],
        tasks=BANDS, workers=2, logging_dir=f"{w}/logs/2",
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=f"{w}/buckets", output_folder=f"{w}/remove", config=config, save_cluster_id=True)],
        tasks=1, logging_dir=f"{w}/logs/3",
    ).run()
    LocalPipelineExecutor(
        pipeline=[
            reader(),
            MinhashDedupFilter(input_folder=f"{w}/remove", load_cluster_ids=True, exclusion_writer=JsonlWriter(f"{w}/removed")),
            JsonlWriter(f"{w}/kept"),
        ],
        tasks=tasks, workers=2, logging_dir=f"{w}/logs/4",
    ).run()
    import pyarrow.parquet as pq

    n = sum(pq.read_metadata(f).num_rows for f in Path(docs_dir).glob("*.parquet"))
    cluster = list(range(n))
    by_cluster = {}
    for kind in ["kept", "removed"]:
        for f in sorted((w / kind).glob("*.jsonl*")):
            opener = gzip.open if f.suffix == ".gz" else open
            for line in opener(f, "rt"):
                d = json.loads(line)
                cid = d.get("metadata", {}).get("minhash_cluster_id")
                if cid is not None and cid != -1:
                    by_cluster.setdefault(cid, []).append(int(d["id"]))
    for members in by_cluster.values():
        root = min(members)
        for m in members:
            cluster[m] = root
    return None, cluster


def run_tool(name, work):
    sig_seconds, cluster = {"rensa": tool_rensa, "datasketch": tool_datasketch, "datatrove": tool_datatrove}[name](work)
    json.dump({"signature_seconds": sig_seconds, "cluster": cluster}, open(Path(work) / f"{name}.json", "w"))


# ---- scoring ------------------------------------------------------------------------------


def make_jaccard(docs):
    """Exact Jaccard of two documents' 5-gram shingle sets, computed on demand (holding every
    set of 200k documents would take gigabytes)."""

    @functools.lru_cache(maxsize=100_000)
    def hashed_shingles(i):
        return frozenset(map(hash, shingles(docs[i])))

    return lambda a, b: jaccard(hashed_shingles(a), hashed_shingles(b))


def score(n, planted, cluster, matched, jac):
    """Over documents 0..n: cluster[i] is the cluster key of doc i; matched holds (removed doc,
    doc it was matched to) pairs."""
    truth = [(a, b) for a, b in planted if a < n and jac(a, b) >= THRESHOLD]
    recall = sum(cluster[a] == cluster[b] for a, b in truth) / max(1, len(truth))
    precision = sum(jac(a, b) >= THRESHOLD for a, b in matched) / max(1, len(matched))
    return precision, recall, len(truth)


def pairs_from_clusters(cluster):
    first = {}
    pairs = []
    for i, c in enumerate(cluster):
        if c in first:
            pairs.append((i, first[c]))
        else:
            first[c] = i
    return pairs


def run_ours(binary, work, n):
    import pyarrow.parquet as pq

    out = work / "ours"
    secs, peak, _, cpu = run_measured([binary, "--input", str(work / "docs"), "--output", str(out), "--threads", "2"])
    cluster = list(range(n))
    matched = []
    for f in sorted((out / "removed").rglob("*.parquet")):
        t = pq.read_table(f, columns=["id", "dup_of"]).to_pydict()
        for a, b in zip(t["id"], t["dup_of"]):
            cluster[int(a)] = int(b)
            matched.append((int(a), int(b)))
    return secs, peak, cluster, matched, None, cpu


def run_python_tool(tool, work, n):
    secs, peak, _, cpu = run_measured([sys.executable, __file__, "--tool", tool, "--work", str(work)])
    r = json.load(open(work / f"{tool}.json"))
    cluster = r["cluster"]
    sig_rate = n / r["signature_seconds"] if r["signature_seconds"] else None
    return secs, peak, cluster, pairs_from_clusters(cluster), sig_rate, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--datatrove-docs", type=int, default=10_000, help="prefix of the corpus datatrove runs on (0: all)")
    ap.add_argument("--ours", default="target/release/ds-dedup")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text"))
    ap.add_argument("--tools", default="ours,rensa,datasketch,datatrove")
    ap.add_argument("--tool", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tool:
        return run_tool(args.tool, args.work)
    if not Path(args.data).exists():
        print(f"SKIPPED: {args.data} not found (real text lives in ../shared/data)")
        return
    work = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    try:
        docs, planted = build_corpus(args.data, args.docs)
        write_parquet(docs, work / "docs" / "CC-MAIN-BENCH")
        dt_docs = len(docs) if args.datatrove_docs <= 0 else min(args.datatrove_docs, len(docs))
        write_parquet(docs[:dt_docs], work / "docs-datatrove" / "CC-MAIN-BENCH")
        json.dump(docs, open(work / "docs.json", "w"))
        jac = make_jaccard(docs)
        print(
            f"{len(docs)} documents, {len(planted)} planted copies, {sum(map(len, docs)) / 2**20:.0f} MB of text, "
            f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}"
        )
        if "datatrove" in args.tools and dt_docs < len(docs):
            print(f"datatrove runs on the first {dt_docs} documents only (a deterministic prefix of the same corpus)")
        print(f"{'tool':<12} {'docs':>7} {'docs/s':>9} {'docs/CPU-s':>10} {'sig docs/s':>11} {'peak MB':>8} {'precision':>10} {'recall':>7}")
        results = {}
        for tool in args.tools.split(","):
            n = dt_docs if tool == "datatrove" else len(docs)
            try:
                if tool == "ours":
                    secs, peak, cluster, matched, sig_rate, cpu = run_ours(args.ours, work, n)
                else:
                    secs, peak, cluster, matched, sig_rate, cpu = run_python_tool(tool, work, n)
            except Exception as e:  # a tool that cannot run here is reported, not fatal
                print(f"{tool:<12} failed: {str(e)[:300]}")
                continue
            precision, recall, n_truth = score(n, planted, cluster, matched, jac)
            results[tool] = {
                "documents": n,
                "docs_per_s": n / secs,
                "docs_per_cpu_s": n / cpu if cpu > 0 else None,
                "cpu_seconds": cpu,
                "signature_docs_per_s": sig_rate,
                "peak_mb": peak,
                "precision": precision,
                "recall": recall,
                "true_pairs": n_truth,
            }
            sig = f"{sig_rate:>11.0f}" if sig_rate else f"{'':>11}"
            per_cpu = f"{n / cpu:>10.0f}" if cpu > 0 else f"{'':>10}"
            print(f"{tool:<12} {n:>7} {n / secs:>9.0f} {per_cpu} {sig} {peak:>8.0f} {precision:>10.3f} {recall:>7.3f}", flush=True)
        ours = results.get("ours")
        if ours:
            for tool in ["rensa", "datasketch", "datatrove"]:
                if tool in results:
                    r = results[tool]
                    base = r["signature_docs_per_s"] or r["docs_per_s"]
                    what = "its signature rate" if r["signature_docs_per_s"] else f"its whole dedup of {r['documents']} docs"
                    print(f"ours (whole dedup) / {tool} ({what}): {ours['docs_per_s'] / base:.1f}x")
                    if not r["signature_docs_per_s"] and r["docs_per_cpu_s"] and ours["docs_per_cpu_s"]:
                        print(f"  per CPU second (load-independent): {ours['docs_per_cpu_s'] / r['docs_per_cpu_s']:.1f}x")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        print(json.dumps({"documents": len(docs), "datatrove_documents": dt_docs, "results": results}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
