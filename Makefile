# smsgw developer commands. Everything installs into .venv from the project's own files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the metadata changes or a package folder gains/loses a module
# (the strict editable install is a link tree: mypy sees exactly the installed layout).
PKG_DIRS := $(shell find smsgw protocol adapters -type d -not -name __pycache__)

.PHONY: run test typecheck bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=69" wheel

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml $(PKG_DIRS)
	rm -rf build/__editable__*
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=strict
	touch $@

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml $(PKG_DIRS)
	rm -rf build/__editable__*
	$(BIN)/pip install --quiet -e . --config-settings editable_mode=strict
	touch $@

## make run: the full daemon on conf/smsgw.yaml (SQLite under var/, embedded simulator, REST API on 127.0.0.1:8080)
run: $(VENV)/.installed
	$(BIN)/smsgw db upgrade -c conf/smsgw.yaml
	$(BIN)/smsgw run -c conf/smsgw.yaml

## make test: type check, then the whole suite
test: $(VENV)/.installed-test
	$(BIN)/mypy smsgw protocol adapters tests
	$(BIN)/pytest

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy smsgw protocol adapters tests

bench: $(VENV)/.installed
	$(BIN)/python scripts/bench/cmpp_throughput.py --count 200000 --connections 1 --reports off
	$(BIN)/python scripts/bench/cmpp_throughput.py --count 200000 --connections 1 --reports on
	$(BIN)/python scripts/bench/e2e.py --count 50000 --mode batch
	$(BIN)/python scripts/bench/e2e.py --count 20000 --mode single
	$(BIN)/python scripts/bench/db_poll.py --url sqlite:///$(CURDIR)/var/bench-legacy.db --rows 20000
	$(BIN)/python scripts/bench/url_interface.py --count 10000
	$(BIN)/python scripts/bench/file_import.py --rows 100000

## make soak: the long kill -9 crash loop (not part of make test)
soak: $(VENV)/.installed
	$(BIN)/python scripts/bench/crash_loop.py

clean:
	rm -rf var $(VENV) build *.egg-info .hypothesis .mypy_cache
