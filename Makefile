# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

DEMO_RUN := demo-run

demo: $(STAMP)
	rm -rf $(DEMO_RUN) $(DEMO_RUN)-autoencoder
	$(BIN)/vaekit info --p 0.5,0.5 --q 0.1,0.9
	$(BIN)/vaekit train --config configs/demo.toml --out $(DEMO_RUN)
	$(BIN)/vaekit sample $(DEMO_RUN) -n 64 --out $(DEMO_RUN)/samples.png
	$(BIN)/vaekit report $(DEMO_RUN)
	$(BIN)/vaekit train --config configs/demo.toml --posterior delta --out $(DEMO_RUN)-autoencoder --quiet
	$(BIN)/vaekit compare $(DEMO_RUN) $(DEMO_RUN)-autoencoder --out $(DEMO_RUN)/compare.html
	@echo "demo done: open $(DEMO_RUN)/report.html in a browser (samples: $(DEMO_RUN)/samples.png;" \
	      "the VAE against an autoencoder of the same size: $(DEMO_RUN)/compare.html)"

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) demo-run
