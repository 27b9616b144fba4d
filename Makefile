# Everything runs inside .venv, created on first use with a supported Python
# (3.11, 3.12 or 3.13): PYTHON=/path/to/python picks one, else the first found.
PYTHON ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast test-pythons lint demo bench constraints clean

install: $(STAMP)

# the tested set of every dependency is pinned by constraints.txt
$(STAMP): pyproject.toml constraints.txt
	@if [ ! -x $(BIN)/python ]; then \
		python="$$(scripts/find_python.sh "$(PYTHON)")" || exit 1; \
		echo "creating $(VENV) with $$python ($$($$python --version 2>&1))"; \
		$$python -m venv $(VENV) || { rm -rf $(VENV); exit 1; }; \
	fi
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The test command of README.md and CI: every test, the slow end-to-end ones included.
test: install
	$(BIN)/python -m pytest tests

# Everything but the slow end-to-end tests, for quick iterations.
test-fast: install
	$(BIN)/python -m pytest tests -m "not slow"

# `make test` in a fresh clone and .venv for each supported Python found here (python3.X on PATH,
# pyenv's versions), then a table of install time and passed/failed/skipped. KEEP=1 keeps the clones.
test-pythons:
	scripts/test_pythons.sh

# The main job: data -> training -> archive -> TorchServe -> requests -> stop.
demo: install
	BIN=$(BIN) scripts/demo.sh

# Benchmarks: figures printed and saved under bench/results/. The serving
# benchmarks use the demo model and data (trained here first if missing).
# Run as modules from the repository root (bench/ imports bench.common and devtools/ from it).
bench: install save/mmf_transformer_final.pth
	$(BIN)/python -m bench.preprocess
	$(BIN)/python -m bench.data_loading
	$(BIN)/python -m bench.model_forward
	$(BIN)/python -m bench.precision
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.timeline
	$(BIN)/python -m bench.live
	$(BIN)/python -m bench.hostile
	$(BIN)/python -m bench.soak
	$(BIN)/python -m bench.preemption

save/mmf_transformer_final.pth:
	$(BIN)/python scripts/make_synthetic_charades.py --out data --skip-existing
	BIN=$(BIN) scripts/train.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Re-pin constraints.txt to what .venv holds (after changing pyproject.toml and testing).
constraints: install
	$(BIN)/python -m pip list --format=freeze --exclude-editable \
		| { sed -n '1,3p' constraints.txt; grep -vE '^(minimmf|pip|setuptools|wheel)=='; } > constraints.txt.new \
		&& mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) save data logs .pytest_cache .ruff_cache key_file.json demo.mp4 response.txt .cache/minimmf/charades_clips .torchserve
