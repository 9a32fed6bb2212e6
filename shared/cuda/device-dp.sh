#!/bin/bash
# One multi-GPU device call for data parallelism (issue 11): dp_check on N GPUs (one process
# each, torchrun's variables): the loss curve against one GPU with the same global batch, and
# our scaling efficiency; then PyTorch DDP the same way (torch_llama.py on one GPU, then under
# torchrun on N) and both efficiencies side by side. Copy it into .devbin/ with the dp_check
# example and torch_llama.py; it runs from the repository root. N defaults to every GPU,
# CONFIG to ds-1b.
cd "$(dirname "$0")/.."
N=${N:-$(nvidia-smi -L | wc -l)}
CONFIG=${CONFIG:-ds-1b}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1
export PYTHONUNBUFFERED=1 DSLLM_KERNEL_CACHE=/tmp/dsllm-kernels NCCL_NVLS_ENABLE=0
# pip's nvidia-nccl ships libnccl.so.2 only; cudarc loads libnccl.so.
lib=$(find / -name 'libnccl.so.2' -not -path '/proc/*' 2>/dev/null | head -1)
[ -n "$lib" ] && mkdir -p /tmp/nccl && ln -sf "$lib" /tmp/nccl/libnccl.so && export LD_LIBRARY_PATH=/tmp/nccl:${LD_LIBRARY_PATH:-}
t0=$(date +%s)
for r in $(seq 0 $((N - 1))); do
  RANK=$r LOCAL_RANK=$r WORLD_SIZE=$N MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 timeout 300 .devbin/dp_check $CONFIG > $OUT/dp_rank$r.log 2>&1 &
done
wait
tail -n 3 $OUT/dp_rank*.log
echo "dp_check: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
timeout 200 python3 .devbin/torch_llama.py $CONFIG compile 2>&1 | grep "^{" | tee $OUT/torch1.log
timeout 300 torchrun --nproc_per_node $N .devbin/torch_llama.py $CONFIG compile 2>&1 | grep "^{" | tee $OUT/torchN.log
echo "torch: $(( $(date +%s) - t0 )) s"
N=$N python3 - <<'PY'
import json, os
out, n = os.environ["OUT"], int(os.environ["N"])
ours = [json.loads(l) for l in open(f"{out}/dp_rank0.log") if l.startswith("{")]
first = lambda p: next((json.loads(l) for l in open(p) if l.startswith("{")), None)
t1, tn = first(f"{out}/torch1.log"), first(f"{out}/torchN.log")
if ours:
    o = ours[0]
    print(f"dsllm {o['config']} on {n} GPUs: loss match max rel {o['max_relative_loss_difference']:.2e}, weights equal {o['weights_equal_on_all_ranks']}, "
          f"{o['tokens_per_s_data_parallel']:.0f} tok/s vs {o['tokens_per_s_one_gpu']:.0f} on one: efficiency {o['scaling_efficiency']:.3f}")
if t1 and tn:
    print(f"PyTorch DDP + torch.compile: {tn['tokens_per_s']} tok/s on {n} vs {t1['tokens_per_s']} on one: efficiency {tn['tokens_per_s'] / (n * t1['tokens_per_s']):.3f}")
    if ours:
        print(f"ratio on {n} GPUs (dsllm / PyTorch DDP): {ours[0]['tokens_per_s_data_parallel'] / tn['tokens_per_s']:.3f}")
PY
