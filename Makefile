# yuqing: `make demo` runs the whole pipeline on embedded defaults; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; set TORCH_SPEC="torch" (or a CUDA wheel) on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
DATA ?= ../shared/data
DEMO_DIR ?= .demo
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.yuqing-installed

.PHONY: install demo screenshot test chaos lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	@if [ -d "$(DATA)" ]; then \
		$(BIN)/yuqing demo --workdir $(DEMO_DIR) --data $(DATA); \
	else \
		echo "no $(DATA): using Hugging Face dataset ids (needs the Hub and 'pip install .[hub]')"; \
		$(BIN)/yuqing demo --workdir $(DEMO_DIR); \
	fi
	$(BIN)/yuqing dashboard --db $(DEMO_DIR)/yuqing.duckdb --output $(DEMO_DIR)/dashboard.html

# docs/dashboard.png: the dashboard of the last `make demo`, rendered by headless Chromium
screenshot: $(STAMP)
	$(BIN)/yuqing dashboard --db $(DEMO_DIR)/yuqing.duckdb --output $(DEMO_DIR)/dashboard.html
	$(BIN)/python -m tests.flows.browser $(DEMO_DIR)/dashboard.html docs/dashboard.png

test: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m pytest -q $(PYTEST_ARGS)

chaos: $(STAMP)  # the chaos suite at full size (docs/reliability.md); CHAOS_ARGS to resize
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m tests.chaos --all $(CHAOS_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check flows nlp storage infra tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
