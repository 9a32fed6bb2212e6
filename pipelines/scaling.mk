# ds-scaling targets (included by the top-level Makefile).
#
#   make flops CONFIG=pipelines/configs/7b.toml   M, 6N1, 6N2 (Table 3), parameters, exact FLOPs
#   make scaling-demo                             a real IsoFLOP + batch/LR sweep of tiny models on
#                                                 the demo's shards (CPU), fits, plots, a held-out run
#   make scaling-fit                              collect $(SCALING_WORK)/runs and fit again
#
# The demo's budgets are 2e10-8e10 FLOPs, below the issue's 1e12-1e13: 2 shared CPU cores train
# these tiny models at 1-4 thousand tokens/s, and 1e12 alone would be ~1M tokens per curve point.
SCALING_BIN      ?= $(BIN)/ds-scaling
SCALING_WORK     ?= $(WORK)/scaling
SCALING_TEMPLATE ?= pipelines/configs/tiny.toml
SCALING_BUDGETS  ?= 2e10,4e10,8e10
SCALING_POINTS   ?= 5
SCALING_SPAN     ?= 4
# The curves centre on SCALING_M_FACTOR x the paper's M_opt(C): at these budgets the paper's law
# asks for one-layer models of width 32, too small to learn much from 1e5 tokens.
SCALING_M_FACTOR ?= 8
SCALING_MICRO    ?= 4
# Batch x LR grids: one shape per budget (SCALING_M_FACTOR x M_opt), 3 x 3 around Eq. 1
# (SCALING_HP_BUDGETS= skips them; the fits then keep the paper's Eq. 1).
SCALING_HP_BUDGETS ?= 1e10,3e10
SCALING_HP_POINTS  ?= 3
# The held-out check: ds-pretrain --budget with the fitted laws, against the fit's prediction.
SCALING_CHECK_BUDGET ?= 2e11
SCALING_THREADS  ?= 2
CONFIG           ?= pipelines/configs/7b.toml

.PHONY: flops scaling-demo scaling-plan scaling-sweep scaling-fit scaling-check
flops:
	$(SCALING_BIN) flops --config $(CONFIG) $(if $(SEQ_LEN),--seq-len $(SEQ_LEN)) $(if $(VOCAB),--vocab $(VOCAB)) --table3

scaling-plan:
	$(SCALING_BIN) plan-isoflop --config $(SCALING_TEMPLATE) --budgets $(SCALING_BUDGETS) --points $(SCALING_POINTS) \
	  --span $(SCALING_SPAN) --m-factor $(SCALING_M_FACTOR) --seq-len $(DEMO_SEQ_LEN) --micro-batch $(SCALING_MICRO) \
	  --output $(SCALING_WORK)/plan-isoflop --runs $(SCALING_WORK)/runs
	$(if $(SCALING_HP_BUDGETS),$(SCALING_BIN) plan-hparams --config $(SCALING_TEMPLATE) --m-factor $(SCALING_M_FACTOR) --budget $(SCALING_HP_BUDGETS) \
	  --lr-points $(SCALING_HP_POINTS) --lr-span 4 --batch-points $(SCALING_HP_POINTS) --batch-span 4 \
	  --seq-len $(DEMO_SEQ_LEN) --micro-batch 2 --output $(SCALING_WORK)/plan-hparams --runs $(SCALING_WORK)/runs)

scaling-sweep: scaling-plan
	$(MAKE) -f $(SCALING_WORK)/plan-isoflop/plan.mk scaling-runs SCALING_BIN=$(BIN) SCALING_DATA=$(WORK)/tokens SCALING_THREADS=$(SCALING_THREADS)
	$(if $(SCALING_HP_BUDGETS),$(MAKE) -f $(SCALING_WORK)/plan-hparams/plan.mk scaling-runs SCALING_BIN=$(BIN) SCALING_DATA=$(WORK)/tokens SCALING_THREADS=$(SCALING_THREADS))

scaling-fit:
	$(SCALING_BIN) collect --runs $(SCALING_WORK)/runs $(wildcard $(SCALING_WORK)/check) --output $(SCALING_WORK)/runs.parquet
	$(SCALING_BIN) fit --runs $(SCALING_WORK)/runs.parquet --output $(SCALING_WORK)/fits --predict $(SCALING_CHECK_BUDGET)

# ds-pretrain picks shape, tokens, batch and LR for the larger budget from the fitted laws.
scaling-check:
	@test -f $(SCALING_WORK)/check/summary.json || { mkdir -p $(SCALING_WORK)/check && \
	  $(BIN)/ds-pretrain train --config $(SCALING_TEMPLATE) --budget $(SCALING_CHECK_BUDGET) --laws $(SCALING_WORK)/fits/fits.json \
	  --data $(WORK)/tokens --output $(SCALING_WORK)/check/budget-$(SCALING_CHECK_BUDGET) --micro-batch $(SCALING_MICRO) \
	  --eval-every 0 --eval-batches 1000 --save-every 0 --save-minutes 0 --resume --threads $(SCALING_THREADS) \
	  > $(SCALING_WORK)/check/summary.json.tmp && mv $(SCALING_WORK)/check/summary.json.tmp $(SCALING_WORK)/check/summary.json; }

scaling-demo: scaling-sweep
	$(MAKE) scaling-fit
	$(MAKE) scaling-check
	$(MAKE) scaling-fit
	@echo
	@cat $(SCALING_WORK)/fits/fits.md
	@echo "figures: $$(ls $(SCALING_WORK)/fits/*.png)"
