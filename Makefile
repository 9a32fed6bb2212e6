# dsllm: the pipeline, stage by stage. `make demo` runs it on the embedded default corpus;
# `make test` runs the tests. Each stage is a target writing its own folder under $(WORK).

CARGO        ?= cargo
TARGET_DIR   := $(or $(CARGO_TARGET_DIR),target)
BIN          := $(TARGET_DIR)/release
WORK         ?= work
THREADS      ?=
threads_flag  = $(if $(THREADS),--threads $(THREADS))

# The demo corpus: ds-synth's dumps (see pipelines/demo.mk for sizes).
DEMO_DUMPS   := CC-MAIN-2024-10 CC-MAIN-2024-14 CC-MAIN-2024-18

.PHONY: all build demo test test-rust test-python bench clean help
bench: bench-ingest bench-dedup bench-filter bench-pack bench-cpu-train bench-eval

# Encode+pack and BPE training against Python tokenizers on the same text (needs ../shared/data).
bench-pack: build
	python3 shared/tokens/bench/bench_pack.py
all: build

help:
	@echo "make demo                      the whole pipeline on the embedded default corpus"
	@echo "make test                      unit, property and end-to-end tests (+ Python interop)"
	@echo "make synth | ingest-demo | filter | remix | tokenizer | pack | ...   one stage of the demo"
	@echo "make ingest DUMP=CC-MAIN-2024-22 IN=path/to/wet/files   ingest a real dump"
	@echo "make bench                     every benchmark; make bench-<stage> for one"
	@echo "see pipelines/cc.mk for real Common Crawl downloads"

build:
	$(CARGO) build --release --workspace --bins

include pipelines/demo.mk
include pipelines/dedup.mk
include pipelines/filter.mk
include pipelines/remix.mk
include pipelines/cc.mk
include pipelines/scaling.mk
include pipelines/eval.mk
include pipelines/align.mk

test: test-rust test-python test-cudnn

# Builds the binaries first: the end-to-end tests in tests/ run them.
test-rust:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# cuDNN attention's graphs against the cuDNN the GPU machine runs (fetched once; no GPU needed).
test-cudnn:
	CARGO="$(CARGO)" bash shared/cuda/cudnn-cpu-test.sh

# Interop: what the stages write opens unchanged in pyarrow, polars and duckdb; ds-ingest on
# bench-ingest's pages keeps every WET text and finds the WARC pages' main text (needs ../shared/data).
TEST_WORK := $(TARGET_DIR)/python-interop
test-python:
	$(CARGO) build --bins -p ds-synth -p ds-ingest
	rm -rf $(TEST_WORK)
	$(TARGET_DIR)/debug/ds-synth --output $(TEST_WORK)/synth --docs-per-dump 300 --dumps 2 >/dev/null
	for d in CC-MAIN-2024-10 CC-MAIN-2024-14; do \
	  $(TARGET_DIR)/debug/ds-ingest --input $(TEST_WORK)/synth/$$d --output $(TEST_WORK)/docs/$$d >/dev/null || exit 1; done
	python3 tests/python/check_docs.py $(TEST_WORK)/docs/CC-MAIN-2024-10 $(TEST_WORK)/docs/CC-MAIN-2024-14
	python3 tests/python/check_ingest_extraction.py $(TARGET_DIR)/debug/ds-ingest

clean:
	rm -rf $(WORK)
