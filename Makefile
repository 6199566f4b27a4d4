# The two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
# The interpreter .venv is built with: the first of python3.11 (tested), python3.12, python3.13 and
# python3 that runs and is a version pyproject.toml accepts (ray 2.60 and torch 2.14 publish wheels
# for 3.11-3.13). `make PYTHON=/path/to/python3.12 ...` picks one by hand.
ifeq ($(origin PYTHON), undefined)
PYTHON := $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' >/dev/null 2>&1 \
	&& { command -v $$p; break; }; done)
endif
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser test demo reproduce bench gpu-check clean

$(STAMP): pyproject.toml
	@test -x $(PY) || test -n "$(PYTHON)" || { echo "No Python 3.11, 3.12 or 3.13 found (python3 is" \
		"$$(python3 --version 2>&1)). Install Python 3.11, e.g. 'sudo apt install python3.11 python3.11-venv'," \
		"'pyenv install 3.11' or 'uv python install 3.11', then run make again (or make PYTHON=/path/to/python3.11)."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) browser

# Debian's headless Chromium for the search page's browser test (tests/test_search_browser.py),
# installed when missing: apt-get as root, through sudo otherwise. Without apt-get (not Debian or
# Ubuntu) it says so and that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if ! command -v apt-get >/dev/null 2>&1; then echo "no chromium and no apt-get: the browser test is skipped"; \
		else if [ "$$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi; \
		{ $$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } \
			|| echo "installing chromium failed: the browser test is skipped"; fi; }

test: $(STAMP) browser
	RAY_AUTH_MODE=disabled $(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) jobs/demo.py $(DEMO_ARGS)

# Table 2 over 3 training seeds on fresh test crops, the augmented classifier beside the paper's
# pipeline, and the information ceilings of the first two seeds (attrgan/devtools/reproduce.py;
# about two hours on 2 cores). REPRODUCE_ARGS="--seeds 5 --no-augmented" etc.
reproduce: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) jobs/reproduce.py $(REPRODUCE_ARGS)

bench: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) -m attrgan.devtools.bench $(BENCH_ARGS)

# On a machine with NVIDIA GPUs: gpu tests, paper-preset training on every GPU, GPU extraction,
# figures to gpu-check.json (attrgan/devtools/gpu_check.py). Exits 2 without CUDA.
gpu-check: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) -m attrgan.devtools.gpu_check $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
