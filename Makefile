# Everything runs inside .venv, created on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

# The test command of README.md and CI: every test, the slow end-to-end ones included.
test: install
	$(BIN)/python -m pytest tests

# Everything but the slow end-to-end tests, for quick iterations.
test-fast: install
	$(BIN)/python -m pytest tests -m "not slow"

# The main job: data -> training -> archive -> TorchServe -> requests -> stop.
demo: install
	BIN=$(BIN) scripts/demo.sh

# Benchmarks: figures printed and saved under bench/results/. The serving
# benchmarks use the demo model and data (trained here first if missing).
bench: install save/mmf_transformer_final.pth
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/model_forward.py
	$(BIN)/python bench/precision.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/soak.py

save/mmf_transformer_final.pth:
	test -f data/datasets/charades/defaults/Charades/Charades_v1_train.csv || \
		$(BIN)/python scripts/make_synthetic_charades.py --out data
	BIN=$(BIN) scripts/train.sh

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) save data logs .pytest_cache .ruff_cache key_file.json demo.mp4 response.txt
