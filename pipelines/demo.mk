# The demo: every stage on ds-synth's corpus, each target producing its folder under $(WORK).
# Stages skip themselves when their folder's _manifest.json matches inputs and parameters.

SYNTH_DOCS_PER_DUMP ?= 2000

.PHONY: synth ingest ingest-demo
demo: build synth ingest-demo dedup-demo
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
