#!/bin/bash
# One device call: parity, our benchmark (with per-op GPU times), a real-text run against the
# CPU's first steps, then the PyTorch baseline; ratios at the end. Copy this into .devbin/ with
# the parity and bench examples, ds-pretrain, torch_llama.py and (optionally) tokens/,
# tokenizer/ and cpu-metrics.jsonl from a CPU run; it runs from the repository root.
# A device call brings back at most 8 files from $OUT: this writes 8 (6 without real text).
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
export PYTHONUNBUFFERED=1 DSLLM_KERNEL_CACHE=/tmp/dsllm-kernels
# cuDNN (attention's default) and the CUDA 13 libraries from the PyTorch wheels, where present.
SP=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)/nvidia
[ -d "$SP/cudnn/lib" ] && export LD_LIBRARY_PATH=$SP/cudnn/lib:$SP/cu13/lib:${LD_LIBRARY_PATH:-}
t0=$(date +%s)
timeout 150 .devbin/parity 2>&1 | tee $OUT/parity.log | grep -v "^ok "
echo "parity: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
# The figures: the default path, steps back to back (profiling keeps AdamW on the main stream,
# so its steps are slower); then the per-op times from a profiled run.
timeout 200 .devbin/bench ${CONFIGS:-ds-160m,ds-1b,ds-1b-gqa} 2>&1 | tee $OUT/bench.jsonl | cut -c1-400
DSLLM_PROFILE=1 timeout 120 .devbin/bench ${CONFIGS:-ds-160m,ds-1b,ds-1b-gqa} > $OUT/bench-profile.jsonl 2>&1
echo "bench: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
if [ -f .devbin/cpu-metrics.jsonl ]; then
  # The CPU run's flags (see its metrics' first line), then a longer run that must keep falling.
  common="--config pipelines/configs/ds-160m.toml --data .devbin/tokens --tokenizer .devbin/tokenizer --lr 6e-4 --backend cuda --seed 0"
  timeout 90 .devbin/ds-pretrain train $common --output /tmp/gpu-4 --steps 4 --micro-batch 4 --warmup 2 --eval-every 0 --eval-batches 2 2>&1 | tail -n 3
  timeout 200 .devbin/ds-pretrain train $common --output /tmp/gpu-long --steps 360 --micro-batch 16 --warmup 30 --eval-every 60 --eval-batches 8 --save-every 0 2>&1 | tail -n 4
  mkdir -p $OUT/gpu-4 $OUT/gpu-long
  cp /tmp/gpu-4/metrics.jsonl $OUT/gpu-4/; cp /tmp/gpu-long/metrics.jsonl /tmp/gpu-long/loss.png $OUT/gpu-long/
  echo "real text: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
fi
timeout 300 python3 .devbin/torch_llama.py ${CONFIGS:-ds-160m,ds-1b,ds-1b-gqa} compile 2>&1 | tee $OUT/torch.log
echo "torch: $(( $(date +%s) - t0 )) s"
python3 - <<'PY'
import json, os
out = os.environ["OUT"]
ours = [json.loads(l) for l in open(f"{out}/bench.jsonl") if l.startswith("{")]
profiled = {o["config"]: o for o in (json.loads(l) for l in open(f"{out}/bench-profile.jsonl") if l.startswith("{"))}
torch = [json.loads(l) for l in open(f"{out}/torch.log") if l.startswith("{")]
for o in ours:
    print(f"{o['config']}: phases fwd {o['forward_ms']:.1f} / bwd {o['backward_ms']:.1f} / opt {o['optimizer_ms']:.1f} ms, warmup {o['warmup_s']:.1f} s")
    prof = profiled.get(o["config"], {})
    total = sum(p["total_ms"] for p in prof.get("profile", []) if not p["op"].startswith("·"))  # "·" rows are parts
    for p in prof.get("profile", [])[:14]:
        print(f"    {p['total_ms']:8.2f} ms  {p['calls']:4d}x  {p['op']}")
    if total:
        print(f"    {total:8.2f} ms in ops of a {prof['step_ms']:.1f} ms profiled step")
    t = next((t for t in torch if t.get("config") == o["config"] and "tokens_per_s" in t), None)
    if t:
        print(f"{o['config']}: dsllm-cuda {o['tokens_per_s']:.0f} tok/s (step {o['step_ms']:.1f} ms, MFU {o['mfu']:.3f}, {o['peak_mem_gib']:.1f} GiB) vs torch.compile {t['tokens_per_s']} tok/s (MFU {t['mfu']}, {t['peak_mem_gib']} GiB): ratio {o['tokens_per_s']/t['tokens_per_s']:.3f}")
cpu_path = ".devbin/cpu-metrics.jsonl"
if os.path.exists(cpu_path) and os.path.exists(f"{out}/gpu-4/metrics.jsonl"):
    steps = lambda p: {r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r and "step" in r}
    cpu, gpu = steps(cpu_path), steps(f"{out}/gpu-4/metrics.jsonl")
    for s in sorted(cpu):
        if s in gpu:
            print(f"real text step {s}: cpu {cpu[s]:.5f} gpu {gpu[s]:.5f} rel diff {abs(cpu[s]-gpu[s])/abs(cpu[s]):.2e}")
    evals = [r for r in map(json.loads, open(f"{out}/gpu-long/metrics.jsonl")) if "val_loss" in r]
    print("real text, 360 GPU steps, val loss:", " ".join(f"{r['step']}:{r['val_loss']:.3f}" for r in evals))
PY
