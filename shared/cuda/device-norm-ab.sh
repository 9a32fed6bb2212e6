#!/bin/bash
# RMSNorm backward A/B (issue 7, BENCHMARKS.md v9, v13): parity, then the training bench with the
# default one-pass kernel (16 rows a block) and with DSLLM_NORM_BACKWARD=rows (a block a row plus a
# column-sum pass), and torch.compile, one call.
# Copy it into .devbin/ with the parity and bench examples and torch_llama.py.
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONUNBUFFERED=1 DSLLM_KERNEL_CACHE=/tmp/dsllm-kernels
t0=$(date +%s)
timeout 60 .devbin/parity 2>&1 | tee $OUT/parity.log | grep -v "^ok "
echo "parity: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
DSLLM_PROFILE=1 timeout 100 .devbin/bench ds-160m,ds-1b,ds-1b-gqa 2>&1 | tee $OUT/bench.jsonl | cut -c1-150
DSLLM_NORM_BACKWARD=rows DSLLM_PROFILE=1 timeout 60 .devbin/bench ds-160m,ds-1b 2>&1 | tee $OUT/bench-rowsnorm.jsonl | cut -c1-150
echo "bench: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
timeout 160 python3 .devbin/torch_llama.py ds-160m,ds-1b,ds-1b-gqa compile 2>&1 | tee $OUT/torch.log | grep "^{"
echo "torch: $(( $(date +%s) - t0 )) s"
python3 - <<'PY'
import json, os
out = os.environ["OUT"]
torch = [json.loads(l) for l in open(f"{out}/torch.log") if l.startswith("{")]
for o in [json.loads(l) for l in open(f"{out}/bench.jsonl") if l.startswith("{")]:
    t = next((t for t in torch if t.get("config") == o["config"] and "tokens_per_s" in t), None)
    line = f"{o['config']}: {o['tokens_per_s']:.0f} tok/s step {o['step_ms']:.1f} ms MFU {o['mfu']:.3f} {o['peak_mem_gib']:.1f} GiB fwd {o['forward_ms']:.1f} bwd {o['backward_ms']:.1f} opt {o['optimizer_ms']:.1f}"
    if t: line += f" | torch.compile {t['tokens_per_s']} tok/s MFU {t['mfu']} {t['peak_mem_gib']} GiB | ratio {o['tokens_per_s']/t['tokens_per_s']:.3f}"
    print(line)
    for p in o.get("profile", [])[:14]:
        print(f"    {p['total_ms']:8.2f} ms  {p['calls']:4d}x  {p['op']}")
PY
python3 - <<'PY'
import json, os
out = os.environ["OUT"]
for name in ["bench", "bench-rowsnorm"]:
    for o in [json.loads(l) for l in open(f"{out}/{name}.jsonl") if l.startswith("{")]:
        norm = [p for p in o.get("profile", []) if p["op"] == "rmsnorm_backward"]
        print(f"{name} {o['config']}: {o['tokens_per_s']:.0f} tok/s step {o['step_ms']:.1f} ms; rmsnorm_backward {norm[0]['total_ms'] if norm else 0:.2f} ms")
PY
