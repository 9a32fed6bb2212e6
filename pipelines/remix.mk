# ds-remix targets (included by the top-level Makefile).
#
#   make remix                       $(WORK)/filtered/kept resampled to REMIX_CONFIG's mixture into
#                                    $(WORK)/mix (report.md printed; report.png is the bar chart)
#   make remix REMIX_GROUP_BY=domain the same grouped by another column (shares reported; groups
#                                    the config does not name follow its [default] rule)
REMIX_BIN      ?= $(BIN)/ds-remix
REMIX_CONFIG   ?= pipelines/configs/remix-demo.toml
REMIX_INPUT    ?= $(WORK)/filtered/kept
REMIX_OUTPUT   ?= $(WORK)/mix
REMIX_GROUP_BY ?=

.PHONY: remix
remix:
	$(REMIX_BIN) --input $(REMIX_INPUT) --output $(REMIX_OUTPUT) --config $(REMIX_CONFIG) \
	  $(if $(REMIX_GROUP_BY),--group-by $(REMIX_GROUP_BY)) $(threads_flag)
	@cat $(REMIX_OUTPUT)/report.md
