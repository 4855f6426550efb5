# `make run` and `make test` create .venv when missing and install the project into it.
# `make run` installs only what running needs; `make test` adds the test extras (pytest,
# hypothesis, hftbacktest with numba and polars, matplotlib, import-linter: most of the venv).
# Each stamp is remade when pyproject.toml changes, or the compiled book's source (setup.py builds
# pipeline/_cbook.pyx with Cython and the C compiler; a stale build is refused, pipeline/book.py);
# the test install also satisfies `run`.
PYTHON ?= python3
VENV := .venv
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
NEW_VENV = test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)

.PHONY: run test clean proto chaos

$(RUN_STAMP): pyproject.toml setup.py pipeline/_cbook.pyx
	$(NEW_VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml setup.py pipeline/_cbook.pyx
	$(NEW_VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/pipeline run

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache  # the layers of docs/architecture.md (contracts in pyproject.toml)
	$(VENV)/bin/python -m pytest -q

# The fault-injection run of issue 19 (about a minute; CI runs it after the tests): every sim fault and
# kill -9 of each process under load, then books, trades and counters checked (docs/operations.md).
chaos: $(STAMP)
	$(VENV)/bin/pipeline bench chaos --rate 3000 --symbols 4

# The gRPC stubs in l2pipeline/v1/ are committed; regenerate them after changing the .proto
# (tests/unit/test_grpc_stubs.py fails while they are stale; grpcio-tools is a test extra).
proto: $(STAMP)
	$(VENV)/bin/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. \
		proto/l2pipeline/v1/marketdata.proto

clean:
	rm -rf $(VENV) build *.egg-info pipeline/_cbook.c pipeline/_cbook.*.so
