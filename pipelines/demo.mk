# The demo: every stage on ds-synth's corpus, each target producing its folder under $(WORK).
# Stages skip themselves when their folder's _manifest.json matches inputs and parameters.

SYNTH_DOCS_PER_DUMP ?= 2000

.PHONY: synth ingest ingest-demo
demo: build synth ingest-demo dedup-demo filter remix tokenizer pack pretrain eval sft dpo align-eval
	@echo
	@echo "demo done: outputs under $(WORK)/ (inspect any of them with $(BIN)/ds-inspect PATH)"

synth:
	$(BIN)/ds-synth --output $(WORK)/synth --docs-per-dump $(SYNTH_DOCS_PER_DUMP) $(threads_flag)

ingest-demo:
	@for d in $(DEMO_DUMPS); do \
	  $(BIN)/ds-ingest --input $(WORK)/synth/$$d --output $(WORK)/docs/$$d $(threads_flag) || exit $$?; \
	done
	$(BIN)/ds-inspect $(WORK)/docs/$(firstword $(DEMO_DUMPS)) --samples 1 | head -40

# One dump from anywhere: make ingest DUMP=CC-MAIN-2024-22 IN="path/to/*.warc.wet.gz"
ingest:
	@test -n "$(DUMP)" -a -n "$(IN)" || { echo "usage: make ingest DUMP=CC-MAIN-YYYY-WW IN=files-or-folder"; exit 2; }
	$(BIN)/ds-ingest --input $(IN) --dump $(DUMP) --output $(WORK)/docs/$(DUMP) $(threads_flag)

# ds-ingest against datatrove (WarcReader; + Trafilatura on WARC) and resiliparse on the same
# WET and WARC files built from ../shared/data/text: docs/s, CPU, memory, and on WARC how much of
# each page's main text is found. BENCH_INGEST_PAGES pages, BENCH_PYTHON=<venv>/bin/python.
BENCH_INGEST_PAGES ?= 10000
.PHONY: bench-ingest
bench-ingest: build
	@$(BENCH_PYTHON) -c "import datatrove, trafilatura, warcio, cchardet, magic, resiliparse, fastwarc, pyarrow, psutil" 2>/dev/null || \
	  $(BENCH_PYTHON) -m pip install -q "datatrove[io,processing]" lxml_html_clean resiliparse pyarrow psutil || \
	  { echo "bench-ingest needs: $(BENCH_PYTHON) -m pip install 'datatrove[io,processing]' lxml_html_clean resiliparse pyarrow psutil"; exit 2; }
	$(BENCH_PYTHON) bench/ingest/bench.py --pages $(BENCH_INGEST_PAGES) --ours $(BIN)/ds-ingest

# Tokenizer and shards read the remix's output ($(WORK)/mix: kept documents with `repeat`;
# ds-pack writes a document `repeat` times, the tokenizer learns from each once). The demo
# uses a small vocabulary (the default is the paper's 100,000 learned tokens padded to
# 102,400) and short sequences so the tiny model trains on CPU.
DEMO_VOCAB   ?= 4000
DEMO_SEQ_LEN ?= 256
.PHONY: tokenizer pack pretrain bench-cpu-train
tokenizer:
	$(BIN)/ds-tokenizer train --input $(WORK)/mix --output $(WORK)/tokenizer \
	  --learned-tokens $(DEMO_VOCAB) --model-vocab 0 $(threads_flag)
	$(BIN)/ds-tokenizer stats --tokenizer $(WORK)/tokenizer --input $(WORK)/mix --max-documents 2000

pack:
	$(BIN)/ds-pack --input $(WORK)/mix --tokenizer $(WORK)/tokenizer --output $(WORK)/tokens \
	  --seq-len $(DEMO_SEQ_LEN) --val-fraction 0.02 $(threads_flag)

PRETRAIN_STEPS ?= 200
pretrain:
	$(BIN)/ds-pretrain train --config pipelines/configs/tiny.toml --data $(WORK)/tokens --tokenizer $(WORK)/tokenizer \
	  --output $(WORK)/runs/tiny --steps $(PRETRAIN_STEPS) --micro-batch 8 --eval-every 50 --eval-batches 8 \
	  --save-every 100 --backend auto --resume $(threads_flag)

bench-cpu-train: build
	$(BIN)/ds-pretrain bench --config pipelines/configs/tiny.toml --backend cpu --threads 2 --steps 5 --micro-batch 8 --vocab 16384
	$(BIN)/ds-pretrain bench --config pipelines/configs/ds-160m.toml --backend cpu --threads 2 --steps 1 --micro-batch 1 --seq-len 2048
