"""Checks that ds-sft and ds-dpo checkpoints load in transformers as LlamaForCausalLM with the
tokenizer saved beside them, and that transformers scores answers as dsllm does: the summed
log-probabilities of the chosen and rejected answers (and their EOS) under the SFT model equal
the reference log-probs ds-dpo computed with its own forward pass (reference_logps.parquet),
with the chat template written out as text.

Usage: python3 tests/python/check_align.py SFT_CHECKPOINT DPO_RUN PAIRS_JSONL [--pairs N]
(needs torch, transformers and pyarrow).
"""
import argparse
import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import torch
from transformers import AutoTokenizer, LlamaForCausalLM


def answer_logp(model, tokenizer, prompt, answer):
    context = tokenizer(f"<｜User｜>{prompt}<｜Assistant｜>").input_ids
    completion = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = torch.tensor([context + completion])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    logps = torch.log_softmax(logits[:-1], dim=-1)
    targets = ids[0, 1:]
    picked = logps[torch.arange(len(targets)), targets]
    return picked[len(context) - 1:].sum().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sft_checkpoint", type=Path)
    parser.add_argument("dpo_run", type=Path)
    parser.add_argument("pairs", type=Path)
    parser.add_argument("--pairs-checked", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(2)

    model = LlamaForCausalLM.from_pretrained(args.sft_checkpoint, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.sft_checkpoint)
    pairs = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()]
    reference = pq.read_table(args.dpo_run / "reference_logps.parquet").to_pylist()
    assert len(reference) == len(pairs), (len(reference), len(pairs))
    worst = 0.0
    for pair, ref in list(zip(pairs, reference))[: args.pairs_checked]:
        for key in ("chosen", "rejected"):
            ours = ref[f"{key}_logp"]
            theirs = answer_logp(model, tokenizer, pair["prompt"], pair[key])
            error = abs(ours - theirs) / max(1.0, abs(theirs))
            worst = max(worst, error)
            assert error < 1e-3, f"pair {ref['pair']} {key}: ds-dpo {ours} vs transformers {theirs}"

    final = json.loads((args.dpo_run / "report.json").read_text())["checkpoint"]
    dpo_dir = args.dpo_run / Path(final).name
    dpo = LlamaForCausalLM.from_pretrained(dpo_dir, torch_dtype=torch.float32).eval()
    dpo_tokenizer = AutoTokenizer.from_pretrained(dpo_dir)
    prompt = dpo_tokenizer(f"<｜User｜>{pairs[0]['prompt']}<｜Assistant｜>", return_tensors="pt")
    with torch.no_grad():
        out = dpo.generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = dpo_tokenizer.decode(out[0, prompt.input_ids.shape[1]:], skip_special_tokens=True)
    assert all(math.isfinite(p.float().sum().item()) for p in dpo.parameters())
    print(f"transformers loads {args.sft_checkpoint} and {dpo_dir} as LlamaForCausalLM; "
          f"answer log-probs of {min(len(pairs), args.pairs_checked)} pairs match ds-dpo's reference (max relative error {worst:.1e}); "
          f"DPO model's greedy answer to {pairs[0]['prompt']!r}: {answer!r}")


if __name__ == "__main__":
    main()
