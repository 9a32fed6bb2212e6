#!/bin/bash
# One device call for the attention kernels (issue 7): attention_bench (fa2 against every wgmma
# variant, both head sizes), parity of all wgmma parts, the wgmma parts that beat fa2 on ds-1b,
# the training bench with fa2 and with those parts, torch.compile on ds-1b; ratios. Copy it into
# .devbin/ with the attention_bench, parity and bench examples and torch_llama.py.
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONUNBUFFERED=1 DSLLM_KERNEL_CACHE=/tmp/dsllm-kernels DSLLM_KERNELS_DIR=kernels
t0=$(date +%s)
timeout 60 .devbin/attention_bench 2>&1 | tee $OUT/attention_bench.log
echo "attention_bench: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
DSLLM_ATTENTION=wgmma DSLLM_WG_KERNELS=fwd,dq,dkdv timeout 60 .devbin/parity 2>&1 | tee $OUT/parity.log | grep -v "^ok "
# Parts whose wgmma kernel is correct and faster than fa2's on ds-1b.
parts=$(awk '$1=="ds-1b" {t=$4; e=$0; sub(/.*err /,"",e); split(e,v," "); ok=(v[1]=="reference" || (v[1]+0<1e-2 && v[1]!="NaN"));
  if ($3 ~ /_fa128$/) fa[$2]=t; else if (ok && ($3=="attention_forward_wg128_w2" || $3=="attention_backward_dq_wg128" || $3=="attention_backward_dkdv_wg128")) wg[$2]=t }
  END {s=""; for (k in wg) if (wg[k] < fa[k]) s = s (s==""?"":",") k; print s}' $OUT/attention_bench.log)
grep -q "all checks passed" $OUT/parity.log || parts=""
echo "wgmma parts faster than fa2 on ds-1b: '${parts}'; parity: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
DSLLM_ATTENTION=fa2 timeout 80 .devbin/bench ds-160m,ds-1b,ds-1b-gqa 2>&1 | tee $OUT/bench-fa2.jsonl | cut -c1-200
if [ -n "$parts" ]; then
  DSLLM_ATTENTION=wgmma DSLLM_WG_KERNELS=$parts timeout 80 .devbin/bench ds-160m,ds-1b,ds-1b-gqa 2>&1 | tee $OUT/bench-wgmma.jsonl | cut -c1-200
fi
echo "bench: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
timeout 110 python3 .devbin/torch_llama.py ds-1b compile 2>&1 | tee $OUT/torch.log | grep "^{"
echo "torch: $(( $(date +%s) - t0 )) s"
python3 - <<'PY'
import json, os
out = os.environ["OUT"]
torch = [json.loads(l) for l in open(f"{out}/torch.log") if l.startswith("{")]
for name in ["fa2", "wgmma"]:
    path = f"{out}/bench-{name}.jsonl"
    if not os.path.exists(path): continue
    for o in [json.loads(l) for l in open(path) if l.startswith("{")]:
        t = next((t for t in torch if t.get("config") == o["config"] and "tokens_per_s" in t), None)
        att = sum(p["total_ms"] for p in o.get("profile", []) if p["op"].startswith("attention"))
        line = f"{name} {o['config']}: {o['tokens_per_s']:.0f} tok/s step {o['step_ms']:.1f} ms MFU {o['mfu']:.3f} {o['peak_mem_gib']:.1f} GiB attention {att:.1f} ms"
        if t: line += f" | torch.compile {t['tokens_per_s']} tok/s MFU {t['mfu']} {t['peak_mem_gib']} GiB | ratio {o['tokens_per_s']/t['tokens_per_s']:.3f}"
        print(line)
PY
