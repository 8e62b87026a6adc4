# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use (see scripts/setup_env.sh) and reuse it afterwards.
PY := .venv/bin/python
STAMP := .venv/.hravatar-installed

.PHONY: demo test lint venv bench clean

$(STAMP): pyproject.toml scripts/setup_env.sh scripts/fetch_assets.py
	bash scripts/setup_env.sh

venv: $(STAMP)

demo: $(STAMP)
	.venv/bin/hravatar demo

test: $(STAMP)
	.venv/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/rasterizer.py

clean:
	rm -rf .venv build src/*.egg-info
