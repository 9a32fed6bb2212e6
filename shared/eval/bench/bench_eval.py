"""make bench-eval: multiple-choice scoring throughput of ds-eval against lm-evaluation-harness
(HFLM, transformers, float32) on the same checkpoint and the same items, in the same run.

Usage: python3 bench_eval.py --ds-eval target/release/ds-eval [--config pipelines/configs/tiny.toml]
         [--tokenizer DIR] [--data ../shared/data/eval] [--threads N] [--items 200]

The checkpoint is a random-init model that `ds-eval random-model` writes (the same weights for
both). Items: ARC-Easy, ARC-Challenge and OpenBookQA dev items (llm-foundry format) up to
--items, scored with lm-eval's ARC template ("<query>\\nAnswer:" + " <choice>", acc and acc_norm)
through a custom task YAML over a local JSON-lines file (HF datasets offline). ds-eval runs twice:
with the prefix KV cache (its default) and with one full forward per choice (lm-eval's scheme).
Times exclude model loading on both sides. Prints one JSON line per system and the ratios, and
the largest per-request difference of log-likelihood between the two.
"""
import argparse, json, os, subprocess, sys, tempfile, time

parser = argparse.ArgumentParser()
parser.add_argument("--ds-eval", required=True)
parser.add_argument("--config", default="pipelines/configs/tiny.toml")
parser.add_argument("--tokenizer", default="shared/eval/tests/fixtures/tiny")
parser.add_argument("--data", default="../shared/data/eval")
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--items", type=int, default=200)
parser.add_argument("--batch-size", type=int, default=16, help="lm-eval batch size")
args = parser.parse_args()

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

items = []
for name in ["arc_easy.dev.jsonl", "arc_challenge.dev.jsonl", "openbookqa.dev.jsonl"]:
    path = os.path.join(args.data, name)
    if not os.path.exists(path):
        sys.exit(f"bench-eval: {path} is missing (needs ../shared/data)")
    with open(path) as f:
        items += [json.loads(line) for line in f if line.strip()]
items = items[: args.items]

work = tempfile.mkdtemp(prefix="bench-eval-")
model = os.path.join(work, "model")
subprocess.run([args.ds_eval, "random-model", "--config", args.config, "--tokenizer", args.tokenizer,
                "--output", model, "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
data = os.path.join(work, "items.jsonl")
with open(data, "w") as f:
    for item in items:
        f.write(json.dumps({"query": item["query"], "choices": item["choices"], "gold": item["gold"]}) + "\n")
with open(os.path.join(work, "bench_mc.toml"), "w") as f:
    f.write('name = "bench_mc"\nkind = "multiple_choice"\ndata = "items.jsonl"\nprompt = "{query}\\nAnswer:"\n'
            'choices = "choices"\ngold = "gold"\n')
with open(os.path.join(work, "bench_mc.yaml"), "w") as f:
    f.write(f"""task: bench_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
""")


def ds_eval(scoring):
    out = os.path.join(work, f"ds-eval-{scoring}")
    subprocess.run([args.ds_eval, "run", "--model", model, "--tasks", os.path.join(work, "bench_mc.toml"),
                    "--data-root", work, "--output", out, "--backend", "cpu", "--scoring", scoring,
                    "--threads", str(args.threads), "--force"], check=True, stdout=subprocess.DEVNULL)
    task = json.load(open(os.path.join(out, "results.json")))["tasks"][0]
    return task


results = {}
for scoring in ["prefix", "full"]:
    task = ds_eval(scoring)
    results[f"ds-eval ({scoring})"] = {"items": task["items"], "seconds": task["seconds"],
                                       "items_per_s": task["items"] / task["seconds"],
                                       "acc": task["metrics"]["acc"], "acc_norm": task["metrics"]["acc_norm"]}
    if scoring == "prefix":
        ours = task["per_item"]

import torch
import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

torch.set_num_threads(args.threads)
lm = HFLM(pretrained=model, device="cpu", dtype="float32", batch_size=args.batch_size)
manager = TaskManager(include_path=work)
started = time.perf_counter()
out = lm_eval.simple_evaluate(model=lm, tasks=["bench_mc"], task_manager=manager, log_samples=True)
seconds = time.perf_counter() - started
metrics = out["results"]["bench_mc"]
results[f"lm-eval {lm_eval.__version__ if hasattr(lm_eval, '__version__') else ''} HFLM"] = {
    "items": len(items), "seconds": seconds, "items_per_s": len(items) / seconds,
    "acc": metrics.get("acc,none"), "acc_norm": metrics.get("acc_norm,none"), "batch_size": args.batch_size}

# Same numbers? Largest per-request difference of log-likelihood.
diff = 0.0
for sample in out["samples"]["bench_mc"]:
    theirs = [r[0] for r in sample["filtered_resps"]]
    mine = ours[sample["doc_id"]]["logprobs"]
    diff = max(diff, max(abs(float(a) - b) for a, b in zip(theirs, mine)))

for name, r in results.items():
    print(json.dumps({"system": name, **r}))
lm_rate = [r for n, r in results.items() if n.startswith("lm-eval")][0]["items_per_s"]
summary = {"threads": args.threads, "config": args.config, "max_abs_logprob_diff": diff,
           "prefix_vs_lm_eval": results["ds-eval (prefix)"]["items_per_s"] / lm_rate,
           "full_vs_lm_eval": results["ds-eval (full)"]["items_per_s"] / lm_rate,
           "prefix_vs_full": results["ds-eval (prefix)"]["items_per_s"] / results["ds-eval (full)"]["items_per_s"]}
print(json.dumps(summary))
