# Per-kernel GPU time of one torch.compile training step (torch_llama.py's model), the kernels
# listed by total time, to set beside DSLLM_PROFILE's ops. Run it next to torch_llama.py (copied
# from ../shared/bench into .devbin/): python3 .devbin/torch_profile.py ds-1b
import sys, os, json, torch
sys.path.insert(0, os.path.dirname(__file__))
import torch_llama as tl
from torch.profiler import profile, ProfilerActivity

def run(name):
    d, L, H, Hkv, ff, V, T, B = tl.CONFIGS[name]
    torch.manual_seed(0)
    model = tl.Llama(d, L, H, Hkv, ff, V, T).cuda()
    m = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    x = torch.randint(0, V, (B, T), device="cuda"); y = torch.randint(0, V, (B, T), device="cuda")
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(4): step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2): step()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t > 0: rows.append((t / 2 / 1000, e.count // 2, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"== {name}: {total:.1f} ms of kernels a step")
    for t, c, k in rows[:45]:
        print(f"{t:8.2f} ms {c:5d}x  {k[:150]}")
    json.dump([dict(ms=t, calls=c, kernel=k) for t, c, k in rows], open(os.path.join(os.environ.get("OUT", "/tmp"), f"torch-profile-{name}.json"), "w"), indent=0)
    del model, m, opt; torch.cuda.empty_cache()

for n in sys.argv[1].split(","): run(n)
