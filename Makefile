# zerodown — the commands a newcomer runs. Every target sets up what it needs.
.PHONY: setup system demo test test-fast lint fmt bench clean

UV ?= uv
PY := .venv/bin/python

setup: .venv/.ok

.venv/.ok: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-extras
	@touch $@

system:
	@scripts/setup-system.sh

demo: setup
	$(PY) -m zerodown.demo

test: setup system
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	.venv/bin/ruff check src tests benchmarks examples
	.venv/bin/ruff format --check src tests benchmarks examples
	.venv/bin/mypy

fmt: setup
	.venv/bin/ruff check --fix src tests benchmarks examples
	.venv/bin/ruff format src tests benchmarks examples

bench: setup system
	$(PY) -m benchmarks

clean:
	rm -rf .venv .zerodown .pytest_cache .mypy_cache .ruff_cache
