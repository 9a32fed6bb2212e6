# Evaluation (ds-eval): the demo model on bits per byte of the held-out split, and on every
# benchmark of pipelines/eval/tasks whose data is present under EVAL_DATA (missing files are
# skipped with a message). Results: $(WORK)/eval/tiny/results.{json,md}.
EVAL_DATA   ?= ../shared/data
EVAL_TASKS  ?= pipelines/eval/tasks
EVAL_LIMIT  ?=
# A Python with torch, transformers, accelerate and lm-eval for bench-eval.
EVAL_PYTHON ?= python3

.PHONY: eval bench-eval
eval:
	$(BIN)/ds-eval run --model $(WORK)/runs/tiny --tokenizer $(WORK)/tokenizer --tasks $(EVAL_TASKS) \
	  --data-root $(EVAL_DATA) --heldout $(WORK)/tokens --output $(WORK)/eval/tiny --backend auto \
	  $(if $(EVAL_LIMIT),--limit $(EVAL_LIMIT)) $(threads_flag)

# Multiple-choice items/s of ds-eval (prefix KV cache, and one forward per choice) against
# lm-evaluation-harness + transformers on the same random-init model and items (needs ../shared/data).
bench-eval: build
	$(EVAL_PYTHON) shared/eval/bench/bench_eval.py --ds-eval $(BIN)/ds-eval --config pipelines/configs/tiny.toml \
	  --data $(EVAL_DATA)/eval $(if $(THREADS),--threads $(THREADS))
