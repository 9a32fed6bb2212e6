#!/usr/bin/env python3
"""`make bench-pack`: dsllm-tokens against Python `tokenizers` on the same text, same tokenizer.

1. Builds documents from the real text in ../shared/data/text (optionally repeated to a size).
2. Rust (examples/bench_pack.rs): trains the BPE tokenizer, then encodes + packs into shards
   on --threads threads; reports seconds and MB/s.
3. Python: loads the tokenizer.json Rust wrote and times `encode_batch` on the same documents
   on the same number of threads; trains a BPE with the same pre-tokenizer, vocabulary size
   and alphabet on the same documents with Python's trainer.

Targets (issue 5): encode+pack >= 1.5x Python's encode_batch MB/s; training time <= 1.1x Python's.
Prints one JSON object; exit 1 when a target is missed (--no-fail to only report).
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

CRATE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TEXT_DIR = os.path.normpath(os.path.join(CRATE_DIR, "../../../shared/data/text"))


def read_documents(text_dir):
    """Paragraphs of the plain texts and the rows of the JSONL samples, as (id, text)."""
    documents = []

    def add_paragraphs(name, text):
        for i, paragraph in enumerate(text.split("\n\n")):
            if paragraph.strip():
                documents.append((f"{name}:{i}", paragraph))

    with open(os.path.join(text_dir, "tinyshakespeare.txt"), encoding="utf-8") as f:
        add_paragraphs("shakespeare", f.read())
    for name in ["zh_hongloumeng.txt.gz", "wiki_sample.txt.gz"]:
        with gzip.open(os.path.join(text_dir, name), "rt", encoding="utf-8") as f:
            text = f.read()
        # The novel has one paragraph a line: group lines into documents of ~4 KB.
        if name.startswith("zh_"):
            lines, chunk = text.split("\n"), []
            for i, line in enumerate(lines):
                chunk.append(line)
                if sum(len(l) for l in chunk) > 1500 or i == len(lines) - 1:
                    documents.append((f"{name}:{i}", "\n".join(chunk)))
                    chunk = []
        else:
            add_paragraphs(name, text)
    for name in ["c4_sample.jsonl.gz", "ccnet_head_0091.jsonl.gz"]:
        path = os.path.join(text_dir, name)
        if os.path.exists(path):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for i, line in enumerate(f):
                    row = json.loads(line)
                    text = row.get("text") or row.get("raw_content") or ""
                    if text.strip():
                        documents.append((f"{name}:{i}", text))
    return documents


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-dir", default=DEFAULT_TEXT_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--learned-tokens", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1, help="repeat the documents (new ids) to scale the text")
    parser.add_argument("--rounds", type=int, default=3, help="encode/pack rounds; the fastest counts (shared machines)")
    parser.add_argument("--cargo-target-dir", default=None)
    parser.add_argument("--no-fail", action="store_true")
    args = parser.parse_args()
    if not os.path.isdir(args.text_dir):
        print(f"bench_pack: {args.text_dir} is absent; nothing to measure", file=sys.stderr)
        return 2
    # Python tokenizers' rayon pool reads this when it starts: set before the import.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    from tokenizers import Tokenizer, pre_tokenizers, trainers

    base = read_documents(args.text_dir)
    documents = [(f"{id}#{r}", text) for r in range(args.repeat) for id, text in base]
    texts = [text for _, text in documents]
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)

    with tempfile.TemporaryDirectory() as work:
        docs_path = os.path.join(work, "docs.jsonl")
        with open(docs_path, "w", encoding="utf-8") as f:
            for id, text in documents:
                f.write(json.dumps({"id": id, "text": text}, ensure_ascii=False) + "\n")
        env = dict(os.environ)
        if args.cargo_target_dir:
            env["CARGO_TARGET_DIR"] = args.cargo_target_dir
        command = ["cargo", "run", "--quiet", "--release", "-p", "dsllm-tokens", "--example", "bench_pack", "--",
                   docs_path, os.path.join(work, "out"), str(args.learned_tokens), str(args.threads), str(args.rounds)]
        rust = json.loads(subprocess.run(command, cwd=CRATE_DIR, env=env, check=True, capture_output=True, text=True).stdout)

        tokenizer_path = os.path.join(rust["tokenizer_dir"], "tokenizer.json")
        tokenizer = Tokenizer.from_file(tokenizer_path)
        tokenizer.encode_batch(texts[:100], add_special_tokens=False)  # warm the pool
        encode_seconds = float("inf")
        for _ in range(max(1, args.rounds)):
            started = time.perf_counter()
            encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
            encode_seconds = min(encode_seconds, time.perf_counter() - started)
        python_tokens = sum(len(e.ids) for e in encodings) + len(encodings)  # + one EOS each, as packed

        # Same pre-tokenizer (loaded from the Rust file), same alphabet, size and min count.
        trainee = Tokenizer.from_file(tokenizer_path)
        trainer = trainers.BpeTrainer(vocab_size=args.learned_tokens, min_frequency=2, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        started = time.perf_counter()
        trainee.train_from_iterator(texts, trainer=trainer)
        python_train_seconds = time.perf_counter() - started

    python_mb_per_s = text_bytes / 1e6 / encode_seconds
    result = {
        "documents": len(documents),
        "text_mb": round(text_bytes / 1e6, 2),
        "threads": args.threads,
        "learned_tokens": rust["learned_tokens"],
        "rust_encode_pack_mb_per_s": round(rust["pack_mb_per_s"], 2),
        "python_encode_batch_mb_per_s": round(python_mb_per_s, 2),
        "encode_speedup": round(rust["pack_mb_per_s"] / python_mb_per_s, 2),
        "same_token_count": python_tokens == rust["tokens"],
        "rust_train_seconds": round(rust["train_seconds"], 2),
        "python_train_seconds": round(python_train_seconds, 2),
        "train_time_ratio": round(rust["train_seconds"] / python_train_seconds, 2),
        "bytes_per_token": round(rust["bytes_per_token"], 3),
    }
    result["targets_met"] = result["encode_speedup"] >= 1.5 and result["train_time_ratio"] <= 1.1
    print(json.dumps(result))
    return 0 if result["targets_met"] or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
