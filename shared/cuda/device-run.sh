#!/bin/bash
# One device call: parity, our benchmark, then the PyTorch baseline; ratios at the end.
# Copy this into .devbin/ with the parity and bench binaries and torch_llama.py (see
# BENCHMARKS-cuda-notes.md); it runs from the repository root.
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
export PYTHONUNBUFFERED=1 DSLLM_KERNEL_CACHE=/tmp/dsllm-kernels
t0=$(date +%s)
timeout 150 .devbin/parity 2>&1 | tee $OUT/parity.log | grep -v "^ok "
echo "parity: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
timeout 200 .devbin/bench ${CONFIGS:-ds-160m,ds-1b,ds-1b-gqa} 2>&1 | tee $OUT/bench.jsonl
echo "bench: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
timeout 300 python3 .devbin/torch_llama.py ${CONFIGS:-ds-160m,ds-1b,ds-1b-gqa} compile 2>&1 | tee $OUT/torch.log
echo "torch: $(( $(date +%s) - t0 )) s"
python3 - <<'PY'
import json, os
out = os.environ["OUT"]
ours = [json.loads(l) for l in open(f"{out}/bench.jsonl") if l.startswith("{")]
torch = [json.loads(l) for l in open(f"{out}/torch.log") if l.startswith("{")]
for o in ours:
    print(f"{o['config']}: phases fwd {o['forward_ms']:.1f} / bwd {o['backward_ms']:.1f} / opt {o['optimizer_ms']:.1f} ms, warmup {o['warmup_s']:.1f} s")
    t = next((t for t in torch if t.get("config") == o["config"] and "tokens_per_s" in t), None)
    if t:
        print(f"{o['config']}: dsllm-cuda {o['tokens_per_s']:.0f} tok/s (step {o['step_ms']:.1f} ms, MFU {o['mfu']:.3f}, {o['peak_mem_gib']:.1f} GiB) vs torch.compile {t['tokens_per_s']} tok/s (MFU {t['mfu']}, {t['peak_mem_gib']} GiB): ratio {o['tokens_per_s']/t['tokens_per_s']:.3f}")
PY
