# Two commands do everything on a fresh machine: `make demo` and `make test` (`make docs`: the site alone).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs install lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,docs]'
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

# The documentation site, offline and in strict mode (a warning fails): the API reference from the docstrings,
# the CLI reference from the parsers, the tutorials executed. Open site/index.html.
SITE := site
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(SITE)

docs: $(STAMP)
	$(MKDOCS)
	@echo "docs done: open $(SITE)/index.html in a browser"

# The tests run in one process per CPU (pytest-xdist, each file's tests in one process), torch on one thread in each.
# The site is built into $(SITE) as by `make docs` (mkdocs build --strict) while the tests run: the test session
# starts the build (VAEKIT_BUILD_SITE, tests/site_build.py), the tests of the site wait for it, and a failed build
# fails the session.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	VAEKIT_BUILD_SITE=$(SITE) $(BIN)/python -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) demo-run $(SITE)
