#!/usr/bin/env python3
"""Python parity check for dsllm-tokens (issue 5).

Loads a tokenizer.json written by the Rust crate with Python `tokenizers` (and, when
installed, transformers' PreTrainedTokenizerFast / AutoTokenizer) and checks that they give
the ids the Rust side wrote for every test string, and decode them back.

    python3 shared/tokens/tests/python_parity.py                 # builds a fixture with cargo
    python3 shared/tokens/tests/python_parity.py --fixture DIR   # DIR has tokenizer.json, parity_cases.json

Exit 0: all match. Exit 1: a mismatch (the first few are printed). Exit 2: usage/setup error.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

CRATE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_fixture(directory):
    """Runs the Rust example that trains a small tokenizer and writes the cases."""
    command = ["cargo", "run", "--quiet", "-p", "dsllm-tokens", "--example", "write_parity_fixture", "--", directory]
    subprocess.run(command, cwd=CRATE_DIR, check=True)


def check(fixture):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("python_parity: the Python package `tokenizers` is not installed (pip install tokenizers)", file=sys.stderr)
        return 2
    with open(os.path.join(fixture, "parity_cases.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    tokenizer_path = os.path.join(fixture, "tokenizer.json")
    tokenizer = Tokenizer.from_file(tokenizer_path)

    failures = []
    texts = [case["text"] for case in cases]
    batch = tokenizer.encode_batch(texts, add_special_tokens=False)
    for case, encoding in zip(cases, batch):
        text = case["text"]
        if encoding.ids != case["ids"]:
            failures.append(("tokenizers.encode", text, case["ids"], encoding.ids))
        with_bos = tokenizer.encode(text).ids
        if with_bos != case["ids_with_bos"]:
            failures.append(("tokenizers.encode(add_special_tokens=True)", text, case["ids_with_bos"], with_bos))
        decoded = tokenizer.decode(case["ids"], skip_special_tokens=False)
        if decoded != text:
            failures.append(("tokenizers.decode", text, text, decoded))

    checked = ["tokenizers"]
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
    except ImportError:
        print("python_parity: transformers not installed; checked Python tokenizers only", file=sys.stderr)
    else:
        fast = PreTrainedTokenizerFast(tokenizer_file=tokenizer_path)
        auto = AutoTokenizer.from_pretrained(fixture)
        checked += ["PreTrainedTokenizerFast", "AutoTokenizer"]
        for case in cases:
            text = case["text"]
            if fast.encode(text, add_special_tokens=False) != case["ids"]:
                failures.append(("PreTrainedTokenizerFast.encode", text, case["ids"], fast.encode(text, add_special_tokens=False)))
            if auto(text)["input_ids"] != case["ids_with_bos"]:
                failures.append(("AutoTokenizer", text, case["ids_with_bos"], auto(text)["input_ids"]))
            if auto.decode(case["ids"]) != text:
                failures.append(("AutoTokenizer.decode", text, text, auto.decode(case["ids"])))

    for where, text, expected, actual in failures[:5]:
        print(f"MISMATCH {where} on {text[:80]!r}:\n  rust:   {str(expected)[:200]}\n  python: {str(actual)[:200]}", file=sys.stderr)
    if failures:
        print(f"python_parity: {len(failures)} mismatches over {len(cases)} strings", file=sys.stderr)
        return 1
    print(json.dumps({"python_parity": "ok", "strings": len(cases), "checked": checked}))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", help="folder with tokenizer.json and parity_cases.json (default: build one with cargo)")
    args = parser.parse_args()
    if args.fixture:
        return check(args.fixture)
    with tempfile.TemporaryDirectory() as directory:
        build_fixture(directory)
        return check(directory)


if __name__ == "__main__":
    sys.exit(main())
