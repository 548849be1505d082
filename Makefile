# The two commands a newcomer types: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Two workers (one per core of a small machine), a test file's tests on one worker (module fixtures such as
# the GPU check's CPU smoke run once), one thread each: tiny models only contend for cores with more.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first, so nothing below pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/storyloop demo

# Runs every test on SQLite and, through a throwaway cluster, on PostgreSQL.
test: $(STAMP)
	OMP_NUM_THREADS=1 scripts/with-postgres.sh $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-data .pytest_cache
