# ds-filter targets (included by the top-level Makefile).
#
#   make filter                      the demo: a quality model trained on ds-synth's labels, then
#                                    every dump of $(WORK)/dedup/kept filtered into $(WORK)/filtered
#   make filter DUMP=CC-MAIN-2024-26 one real dump: $(WORK)/dedup-$(DUMP)/kept (or DEDUP_KEPT=...)
#                                    into $(WORK)/filtered-$(DUMP); QUALITY_MODEL=... to score
#   make bench-filter                ours vs datatrove's four filters on the same documents
FILTER_BIN     ?= $(BIN)/ds-filter
FILTER_CONFIG  ?=
MIN_QUALITY    ?= 0.5
DEDUP_KEPT     ?= $(WORK)/dedup-$(DUMP)/kept/$(DUMP)
BENCH_PYTHON   ?= python3
BENCH_FILTER_DOCS ?= 3000
filter_config_flag = $(if $(FILTER_CONFIG),--config $(FILTER_CONFIG))

.PHONY: filter quality-model bench-filter

ifeq ($(DUMP),)
QUALITY_MODEL ?= $(WORK)/quality/model.dsqm
filter: quality-model
	$(FILTER_BIN) --input $(WORK)/dedup/kept --output $(WORK)/filtered --quality-model $(QUALITY_MODEL) \
	  --min-quality $(MIN_QUALITY) $(filter_config_flag) $(threads_flag)
	@cat $(WORK)/filtered/report.md
else
QUALITY_MODEL ?=
filter:
	$(FILTER_BIN) --input $(DEDUP_KEPT) --output $(WORK)/filtered-$(DUMP) $(filter_config_flag) $(threads_flag) \
	  $(if $(QUALITY_MODEL),--quality-model $(QUALITY_MODEL) --min-quality $(MIN_QUALITY))
endif

# The demo's quality model: ds-synth's clean families are the reference text, its noise
# families the web noise (the demo runs on generated data only). On real data, train on
# reference text against raw web text: ds-filter train-quality --positive ... --negative ...
quality-model: $(WORK)/quality/model.dsqm
$(WORK)/quality/model.dsqm: $(WORK)/synth/ground_truth.parquet
	$(FILTER_BIN) train-quality --input $(WORK)/docs --labels $(WORK)/synth/ground_truth.parquet \
	  --positive-families clean_en,clean_zh --output $(WORK)/quality/model.dsqm

# datatrove's GopherQuality + GopherRepetition + C4Quality + FineWebQuality vs ds-filter with
# the same rule families, 2 cores, real text from ../shared/data/text.
# (`build`, not `-p ds-filter`: one package alone unifies features differently and rebuilds arrow.)
bench-filter: build
	@$(BENCH_PYTHON) -c "import datatrove, spacy, pyarrow" 2>/dev/null || $(BENCH_PYTHON) -m pip install -q "datatrove[processing]" pyarrow || \
	  { echo "bench-filter needs datatrove[processing] and pyarrow: $(BENCH_PYTHON) -m pip install 'datatrove[processing]' pyarrow"; exit 2; }
	$(BENCH_PYTHON) bench/filter/bench.py --docs $(BENCH_FILTER_DOCS) --ours $(FILTER_BIN)
