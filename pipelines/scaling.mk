# ds-scaling targets (included by the top-level Makefile).
#
#   make flops CONFIG=pipelines/configs/7b.toml   M, 6N1, 6N2 (Table 3), parameters, exact FLOPs
#   make scaling-demo                             a real IsoFLOP + batch/LR sweep of tiny models on
#                                                 the demo's shards (CPU), fits, plots, a held-out run
#   make scaling-fit                              collect $(SCALING_WORK)/runs and fit again
#
# The demo's budgets are the issue's 1e12-1e13 FLOPs. Every run uses `--backend auto`: on the H200
# the whole demo takes a few minutes. On a CPU, run two single-threaded runs at a time (tiny
# models split over threads waste much of the second core) and give the held-out run both cores:
#   make -j2 scaling-demo THREADS=2 SCALING_THREADS=1
# That took 71 minutes on the shared 2-core dev machine (BENCHMARKS.md). For a quick CPU look,
# lower everything:
#   make scaling-demo SCALING_BUDGETS=2e10,4e10,8e10 SCALING_HP_BUDGETS=1e10,3e10 SCALING_CHECK_BUDGET=2e11
SCALING_BIN      ?= $(BIN)/ds-scaling
SCALING_WORK     ?= $(WORK)/scaling
SCALING_TEMPLATE ?= pipelines/configs/tiny.toml
SCALING_BUDGETS  ?= 1e12,3e12,1e13
SCALING_POINTS   ?= 5
SCALING_SPAN     ?= 8
# The curves centre on SCALING_M_FACTOR x the paper's M_opt(C) and span SCALING_SPAN in M (at 2,
# the H200 run's minima sat at the curves' small ends).
SCALING_M_FACTOR ?= 1
SCALING_MICRO    ?= 4
# Batch x LR grids: one shape per budget (SCALING_M_FACTOR x M_opt), 3 x 3 around Eq. 1
# (SCALING_HP_BUDGETS= skips them; the fits then keep the paper's Eq. 1).
SCALING_HP_BUDGETS ?= 1e11,3e11
SCALING_HP_POINTS  ?= 3
# The held-out check: ds-pretrain --budget with the fitted laws, against the fit's prediction.
SCALING_CHECK_BUDGET ?= 3e13
SCALING_THREADS  ?= $(THREADS)
# The held-out run trains alone (the sweep's runs may share the cores under make -j).
SCALING_CHECK_THREADS ?= $(THREADS)
# Token shards the runs train on: ../shared/data/text (real English and Chinese) packed with a
# tokenizer of SCALING_VOCAB learned tokens by `make scaling-realtext-small` when present, else
# the demo's shards. ds-synth's templated corpus is learned to its floor (~0.6 bits per byte) by
# 1e12 FLOPs, which flattens every curve above it. The vocabulary is small because the output
# layer (6·vocab·d_model FLOPs a token, outside M) would otherwise dominate these tiny shapes'
# cost: at 8k it was 2-10x M. `make scaling-realtext` packs the same text with 8k tokens
# ($(WORK)/realtext, 1.47M tokens). Runs that need more tokens than the shards hold repeat them.
REALTEXT_ROOT    ?= ../shared/data/text
SCALING_VOCAB    ?= 1000
SCALING_REALTEXT ?= $(WORK)/realtext-v$(SCALING_VOCAB)
SCALING_DATA     ?= $(if $(wildcard $(REALTEXT_ROOT)),$(SCALING_REALTEXT)/tokens,$(WORK)/tokens)
CONFIG           ?= pipelines/configs/7b.toml

.PHONY: flops scaling-demo scaling-plan scaling-sweep scaling-fit scaling-check scaling-realtext scaling-realtext-small
flops:
	$(SCALING_BIN) flops --config $(CONFIG) $(if $(SEQ_LEN),--seq-len $(SEQ_LEN)) $(if $(VOCAB),--vocab $(VOCAB)) --table3

# $(call realtext_tokens,folder,learned tokens): ../shared/data/text as documents, a tokenizer
# trained on them and the packed shards, all under the folder.
define realtext_tokens
$(1)/tokens/index.json:
	@test -d $(REALTEXT_ROOT) || { echo "scaling-realtext: $(REALTEXT_ROOT) not found (set REALTEXT_ROOT)"; exit 2; }
	python3 pipelines/scripts/realtext_docs.py $(REALTEXT_ROOT) $(1)/docs
	$(BIN)/ds-tokenizer train --input $(1)/docs --output $(1)/tokenizer --learned-tokens $(2) --model-vocab 0 $(threads_flag)
	$(BIN)/ds-pack --input $(1)/docs --tokenizer $(1)/tokenizer --output $(1)/tokens \
	  --seq-len $(DEMO_SEQ_LEN) --val-fraction 0.05 $(threads_flag)
endef
scaling-realtext: $(WORK)/realtext/tokens/index.json
scaling-realtext-small: $(SCALING_REALTEXT)/tokens/index.json
$(eval $(call realtext_tokens,$(WORK)/realtext,8000))
$(if $(filter-out $(WORK)/realtext,$(SCALING_REALTEXT)),$(eval $(call realtext_tokens,$(SCALING_REALTEXT),$(SCALING_VOCAB))))

scaling-plan:
	$(SCALING_BIN) plan-isoflop --config $(SCALING_TEMPLATE) --budgets $(SCALING_BUDGETS) --points $(SCALING_POINTS) \
	  --span $(SCALING_SPAN) --m-factor $(SCALING_M_FACTOR) --seq-len $(DEMO_SEQ_LEN) --micro-batch $(SCALING_MICRO) \
	  --output $(SCALING_WORK)/plan-isoflop --runs $(SCALING_WORK)/runs
	$(if $(SCALING_HP_BUDGETS),$(SCALING_BIN) plan-hparams --config $(SCALING_TEMPLATE) --m-factor $(SCALING_M_FACTOR) --budget $(SCALING_HP_BUDGETS) \
	  --lr-points $(SCALING_HP_POINTS) --lr-span 4 --batch-points $(SCALING_HP_POINTS) --batch-span 4 \
	  --seq-len $(DEMO_SEQ_LEN) --micro-batch 2 --output $(SCALING_WORK)/plan-hparams --runs $(SCALING_WORK)/runs)

scaling-sweep: scaling-plan $(if $(findstring /realtext,$(SCALING_DATA)),$(SCALING_DATA)/index.json)
	$(MAKE) -f $(SCALING_WORK)/plan-isoflop/plan.mk scaling-runs SCALING_BIN=$(BIN) SCALING_DATA=$(SCALING_DATA) SCALING_THREADS=$(SCALING_THREADS)
	$(if $(SCALING_HP_BUDGETS),$(MAKE) -f $(SCALING_WORK)/plan-hparams/plan.mk scaling-runs SCALING_BIN=$(BIN) SCALING_DATA=$(SCALING_DATA) SCALING_THREADS=$(SCALING_THREADS))

scaling-fit:
	$(SCALING_BIN) collect --runs $(SCALING_WORK)/runs $(wildcard $(SCALING_WORK)/check) --output $(SCALING_WORK)/runs.parquet
	$(SCALING_BIN) fit --runs $(SCALING_WORK)/runs.parquet --output $(SCALING_WORK)/fits --predict $(SCALING_CHECK_BUDGET)

# ds-pretrain picks shape, tokens, batch and LR for the larger budget from the fitted laws.
scaling-check:
	@test -f $(SCALING_WORK)/check/summary.json || { mkdir -p $(SCALING_WORK)/check && \
	  $(BIN)/ds-pretrain train --config $(SCALING_TEMPLATE) --budget $(SCALING_CHECK_BUDGET) --laws $(SCALING_WORK)/fits/fits.json \
	  --data $(SCALING_DATA) --output $(SCALING_WORK)/check/budget-$(SCALING_CHECK_BUDGET) --micro-batch $(SCALING_MICRO) \
	  --eval-every 0 --eval-batches 1000 --save-every 0 --save-minutes 0 --resume $(if $(SCALING_CHECK_THREADS),--threads $(SCALING_CHECK_THREADS)) \
	  > $(SCALING_WORK)/check/summary.json.tmp && mv $(SCALING_WORK)/check/summary.json.tmp $(SCALING_WORK)/check/summary.json; }

scaling-demo: scaling-sweep
	$(MAKE) scaling-fit
	$(MAKE) scaling-check
	$(MAKE) scaling-fit
	@echo
	@cat $(SCALING_WORK)/fits/fits.md
	@echo "figures: $$(ls $(SCALING_WORK)/fits/*.png)"
