# Alignment (paper §5): ds-synth's digit-reversal set, SFT of the pretrained tiny model, then
# DPO of the SFT model on on-policy pairs (ds-dpo --on-policy: the SFT model's own wrong
# answers to prompts SFT never saw are the rejected ones). Each prints its before/after
# figures: the ds-eval tasks that `ds-synth --align` writes (run through ds-eval's library on
# the held-out sets), the repetition ratio (SFT), the preferred-answer rates and reward
# figures (DPO); all of it is in report.json in the run folder. The demo's hyperparameters
# suit the tiny model (pipelines/configs/sft-demo.toml, dpo-demo.toml); the paper's are in
# sft-7b.toml, sft-67b.toml and dpo.toml.

ALIGN_DATA       ?= $(WORK)/align-data
ALIGN_EVAL_ITEMS ?= 100
align_tasks = $(addprefix $(ALIGN_DATA)/tasks/,digit_reversal.toml preferred_answer.toml preferred_logprob.toml)
align_eval = --eval-data-root $(ALIGN_DATA) --eval-items $(ALIGN_EVAL_ITEMS) --max-new-tokens 32 --backend auto $(threads_flag)
.PHONY: align-data sft dpo align-eval

align-data:
	$(BIN)/ds-synth --align --output $(ALIGN_DATA) > /dev/null

sft: align-data
	$(BIN)/ds-sft --model $(WORK)/runs/tiny --tokenizer $(WORK)/tokenizer --data $(ALIGN_DATA)/sft_train.jsonl \
	  --eval-task $(ALIGN_DATA)/eval_task.jsonl --eval-tasks $(align_tasks) $(align_eval) \
	  --config pipelines/configs/sft-demo.toml --output $(WORK)/runs/sft > /dev/null

dpo: sft
	$(BIN)/ds-dpo --model $(WORK)/runs/sft --tokenizer $(WORK)/tokenizer --data $(ALIGN_DATA)/dpo_train.jsonl \
	  --eval-preferences $(ALIGN_DATA)/eval_preferences.jsonl --eval-task $(ALIGN_DATA)/eval_task.jsonl \
	  --eval-tasks $(align_tasks) $(align_eval) --on-policy \
	  --config pipelines/configs/dpo-demo.toml --output $(WORK)/runs/dpo > /dev/null

# The three checkpoints (pretrained, SFT, DPO) through the ds-eval binary on the alignment tasks.
align-eval: dpo
	@for run in tiny sft dpo; do \
	  $(BIN)/ds-eval run --model $(WORK)/runs/$$run --tokenizer $(WORK)/tokenizer --tasks $(ALIGN_DATA)/tasks \
	    --data-root $(ALIGN_DATA) --limit $(ALIGN_EVAL_ITEMS) --output $(WORK)/eval/align-$$run --backend auto $(threads_flag) > /dev/null || exit $$?; \
	  echo "== $$run"; cat $(WORK)/eval/align-$$run/results.md; \
	done
	@echo; echo "Alignment on the held-out sets, base model -> SFT -> DPO ($(WORK)/runs/dpo/alignment.md):"
	@cat $(WORK)/runs/dpo/alignment.md
