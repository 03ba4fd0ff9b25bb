# The two commands of the README: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint unit browser postgres bench scale chaos clean lock

# Installs exactly what requirements.lock pins, each file checked against its hash; then
# partnerflow itself, whose ranges in pyproject.toml stay for library users.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Refresh the lock after a change of pyproject.toml's dependencies, keeping every other pin;
# `make lock UPGRADE=1` takes the newest releases the ranges allow. (Resolved on this Python,
# 3.11: a dependency only other versions need would be missing.)
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet pip-tools
	.lock-venv/bin/pip-compile --quiet $(if $(UPGRADE),--upgrade) --generate-hashes --extra dev --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml
	rm -rf .lock-venv

run: $(STAMP)
	$(PY) -m partnerflow.devrun

test: $(STAMP) lint browser postgres
	$(PY) -m pytest

# The browser tests drive Debian's chromium (Playwright cannot download its own here), with a
# font for the Japanese page (its screenshots in docs/ are made by the same browser).
browser:
	@command -v chromium >/dev/null || { \
		echo "installing chromium (Debian package) for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@fc-list 2>/dev/null | grep -qi -e wqy -e noto.*cjk || { \
		echo "installing a CJK font (Debian package) for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null; }

# The records suite also runs on a real PostgreSQL (a throwaway cluster the tests start).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
		echo "installing PostgreSQL server binaries (Debian package) for the records tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Not part of `make test` (a short version is): partnerflow against a bare workflow and two
# hand-written ones, naive and tuned (BENCHMARKS.md); under 15 minutes.
bench: $(STAMP)
	$(PY) -m bench

# Not part of `make test` (a short version is): 100,000 relationships imported into a dev server
# on a SQLite file and PostgreSQL records, then measured (BENCHMARKS.md). About 45 minutes from
# a fresh clone on this 2-core machine (the import runs at ~40 rows/s); `python -m bench.scale
# --relationships N` for fewer.
scale: $(STAMP) postgres
	$(PY) -m bench.scale

# Not part of `make test` (a short version is): 500 lives under worker kills, a server
# restart, SMTP and database outages (RELIABILITY.md).
chaos: $(STAMP) postgres
	$(PY) -m reliability

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(PY) -m pytest -m "not server"

clean:
	rm -rf $(VENV) .dev .pytest_cache .mypy_cache .ruff_cache
