# Real Common Crawl. Lists a dump's WET files, downloads a slice of them, and ingests it.
# Needs network access to data.commoncrawl.org (not available on the development machines).
#
#   make cc-paths DUMP=CC-MAIN-2024-22                 # the list of ~90,000 WET paths
#   make cc-download DUMP=CC-MAIN-2024-22 CC_FILES=64  # the first 64 files (about 10 GB)
#   make cc-ingest DUMP=CC-MAIN-2024-22                # documents Parquet under $(WORK)/docs/
#
# On a cluster, ingest shards by file: ds-ingest --task-id $$SLURM_ARRAY_TASK_ID --num-tasks N
# (see pipelines/slurm/).

CC_BASE      ?= https://data.commoncrawl.org
CC_FILES     ?= 16
CC_PARALLEL  ?= 8
CC_DIR        = $(WORK)/cc/$(DUMP)

.PHONY: cc-paths cc-download cc-ingest
cc-paths:
	@test -n "$(DUMP)" || { echo "usage: make cc-paths DUMP=CC-MAIN-YYYY-WW"; exit 2; }
	mkdir -p $(CC_DIR)
	curl -fsSL --retry 5 $(CC_BASE)/crawl-data/$(DUMP)/wet.paths.gz | gunzip > $(CC_DIR)/wet.paths.tmp
	mv $(CC_DIR)/wet.paths.tmp $(CC_DIR)/wet.paths
	@wc -l < $(CC_DIR)/wet.paths | xargs echo "WET files in $(DUMP):"

# Downloads with retries into files named after their path (crawl-data/<dump>/segments/...),
# so ds-ingest reads the dump name from the path; partial downloads never keep the final name.
cc-download: cc-paths
	head -n $(CC_FILES) $(CC_DIR)/wet.paths | xargs -P $(CC_PARALLEL) -I{} sh -c \
	  'test -s "$(CC_DIR)/{}" || { mkdir -p "$$(dirname "$(CC_DIR)/{}")" && \
	   curl -fsSL --retry 5 -o "$(CC_DIR)/{}.part" "$(CC_BASE)/{}" && mv "$(CC_DIR)/{}.part" "$(CC_DIR)/{}"; }'

cc-ingest:
	@test -n "$(DUMP)" || { echo "usage: make cc-ingest DUMP=CC-MAIN-YYYY-WW"; exit 2; }
	$(BIN)/ds-ingest --input $(CC_DIR)/crawl-data --dump $(DUMP) --output $(WORK)/docs/$(DUMP) $(threads_flag)
