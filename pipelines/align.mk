# Alignment (paper §5): ds-synth's digit-reversal set, SFT of the pretrained tiny model, then
# DPO of the SFT model. Each prints its before/after figures (report.json in its folder).
# The demo's hyperparameters suit the tiny model (pipelines/configs/sft-demo.toml,
# dpo-demo.toml); the paper's are in sft-7b.toml, sft-67b.toml and dpo.toml.

ALIGN_DATA ?= $(WORK)/align-data
.PHONY: align-data sft dpo align-report

align-data:
	$(BIN)/ds-synth --align --output $(ALIGN_DATA)

sft: align-data
	$(BIN)/ds-sft --model $(WORK)/runs/tiny --tokenizer $(WORK)/tokenizer --data $(ALIGN_DATA)/sft_train.jsonl \
	  --eval-task $(ALIGN_DATA)/eval_task.jsonl --eval-items 100 --max-new-tokens 24 \
	  --config pipelines/configs/sft-demo.toml --output $(WORK)/runs/sft --backend auto $(threads_flag) > /dev/null
	@python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); b,a=r["before"],r["after"]; \
	  print(f"SFT  task accuracy (held-out digit reversal, exact match): {b[\"accuracy\"]:.1%} -> {a[\"accuracy\"]:.1%}; repetition ratio {b[\"repetition_ratio\"]:.1%} -> {a[\"repetition_ratio\"]:.1%}")' \
	  $(WORK)/runs/sft/report.json

dpo: sft
	$(BIN)/ds-dpo --model $(WORK)/runs/sft --tokenizer $(WORK)/tokenizer --data $(ALIGN_DATA)/dpo_train.jsonl \
	  --eval-preferences $(ALIGN_DATA)/eval_preferences.jsonl --eval-items 100 \
	  --max-new-tokens 24 --config pipelines/configs/dpo-demo.toml --output $(WORK)/runs/dpo --backend auto $(threads_flag) > /dev/null
	@python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); b,a=r["before"],r["after"]; \
	  f=lambda m: (m["preferences"]["generated_chosen_rate"], m["preferences"]["logp_preferred_rate"], m["preferences"]["final_answer_accuracy"]); \
	  (g0,l0,t0),(g1,l1,t1)=f(b),f(a); \
	  print(f"DPO  preferred answers generated (held-out pairs): {g0:.1%} -> {g1:.1%}; log-prob prefers chosen: {l0:.1%} -> {l1:.1%}; task accuracy {t0:.1%} -> {t1:.1%}"); \
	  t=r["train"]; print(f"     training: reward accuracy {t[\"reward_accuracy_last\"]:.2f}, margin {t[\"reward_margin_last\"]:.3f}, KL/token {t[\"kl_per_token_last\"]:.4f}")' \
	  $(WORK)/runs/dpo/report.json
