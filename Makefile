# tem-operando: `make demo` and `make test` each create .venv and install into it when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of PyTorch on this machine; users with a GPU install their own torch first.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
DEMO   ?= demo

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" -e ".[gui,dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tem-operando synth $(DEMO)/session.hspy --kind session --frames 80 --seed 1 --dose 20
	$(BIN)/tem-operando info $(DEMO)/session.hspy
	$(BIN)/tem-operando analyze $(DEMO)/session.hspy --out $(DEMO)/session
	$(BIN)/python -m tem_operando.demo $(DEMO)

test: $(STAMP)
	@rm -f .pytest-current
	QT_QPA_PLATFORM=offscreen TEM_OPERANDO_CURRENT_TEST_FILE=$(CURDIR)/.pytest-current \
	  $(BIN)/python -m pytest -q -p no:cacheprovider \
	  || { rc=$$?; echo "pytest failed (exit $$rc); last test started: $$(cat .pytest-current 2>/dev/null)"; exit $$rc; }
	@rm -f .pytest-current

lint: $(STAMP)
	$(BIN)/ruff check tem_operando tests benchmarks gui

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
