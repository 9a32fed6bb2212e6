# ds-dedup targets (included by the top-level Makefile).
#
#   make dedup-demo                 every dump of $(WORK)/docs at once (the demo)
#   make dedup DUMP=CC-MAIN-2024-26 one new dump against the existing index
#   make bench-dedup                ours vs rensa, datasketch and datatrove on the same 200k
#                                   documents in one run (datatrove alone takes ~20 minutes on 2
#                                   cores; BENCH_DATATROVE_DOCS=10000 runs it on a prefix);
#                                   BENCH_PYTHON=<venv>/bin/python
DEDUP_BIN ?= $(BIN)/ds-dedup
DEDUP_INDEX ?= $(WORK)/dedup/index
BENCH_DOCS ?= 200000
BENCH_DATATROVE_DOCS ?= 0
BENCH_PYTHON ?= python3

.PHONY: dedup-demo dedup bench-dedup
dedup-demo:
	$(DEDUP_BIN) --input $(WORK)/docs --output $(WORK)/dedup --index $(DEDUP_INDEX)

dedup:
	@test -n "$(DUMP)" || { echo "usage: make dedup DUMP=<dump name under $(WORK)/docs>"; exit 2; }
	$(DEDUP_BIN) --input $(WORK)/docs/$(DUMP) --output $(WORK)/dedup-$(DUMP) --index $(DEDUP_INDEX)

bench-dedup:
	$(CARGO) build --release -p ds-dedup
	$(BENCH_PYTHON) bench/dedup/bench.py --docs $(BENCH_DOCS) --datatrove-docs $(BENCH_DATATROVE_DOCS) --ours $(DEDUP_BIN)
