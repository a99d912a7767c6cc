# Two entry points (see README): `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install tools bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(VENV)/bin/xrfproc warmup  # compile the numba kernels once per machine (~/.cache/xrfproc/numba)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xrfproc demo demo_output

# outside tools some tests drive: the MCP Inspector (npm) and a headless Chromium (Debian, root only);
# where they cannot be installed those tests are skipped (never in CI, where CI=true makes them required)
tools:
	@if command -v npm >/dev/null && [ ! -x .ci/node/node_modules/.bin/mcp-inspector ]; then \
		mkdir -p .ci/node && npm install --prefix .ci/node --silent --no-audit --no-fund @modelcontextprotocol/inspector@0.15; fi
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "could not install chromium: the browser test will be skipped"; fi

test: $(STAMP) tools
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(PY) bench/fit.py --quick

clean:
	rm -rf $(VENV) demo_output
