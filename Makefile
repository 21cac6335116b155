# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, generate the demo data set, run the FixRes demo
#   make test   - create .venv, run the test suite
# The virtual environment is (re)built when pyproject.toml or constraints.txt change.
# The ffcv extra builds FFCV from source against libjpeg-turbo and OpenCV: `system-deps`
# installs their headers with apt-get when pkg-config does not find them (root or sudo).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= test,plots,ffcv,dali,codec
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/demo

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
FFCV_APT := libturbojpeg0-dev libopencv-dev pkg-config

.PHONY: demo test data lock clean-demo system-deps simd

$(STAMP): pyproject.toml constraints.txt | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

system-deps:
	@if echo "$(EXTRAS)" | grep -q ffcv && ! pkg-config --exists libturbojpeg opencv4 2>/dev/null; then \
		echo "installing FFCV's build prerequisites: $(FFCV_APT)"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(FFCV_APT); \
	fi

data: $(STAMP)
	$(BIN)/python -m loaders.demo_data --out $(DEMO_DATA)

demo: data
	$(BIN)/python train.py fixres --data $(DEMO_DATA) --out $(DEMO_RUN)

test: $(STAMP)
	$(BIN)/python -m pytest

# Pin what is installed now (after changing pyproject.toml's ranges).
lock: $(STAMP)
	{ head -3 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean-demo:
	rm -rf $(DEMO_RUN)

# Pillow-SIMD (the `simd` extra) replaces Pillow, so it lives in a venv of its own, built
# from source with AVX2 (needs a C compiler, libjpeg-turbo and zlib headers:
# apt-get install build-essential libjpeg62-turbo-dev zlib1g-dev). Benchmarks run in it as
# `.venv-simd/bin/python -m bench.loader_throughput ...`.
SIMD_VENV := .venv-simd

simd: $(SIMD_VENV)/.installed

$(SIMD_VENV)/.installed: pyproject.toml constraints.txt
	test -x $(SIMD_VENV)/bin/python || $(PYTHON) -m venv $(SIMD_VENV)
	$(SIMD_VENV)/bin/python -m pip install -q -c constraints.txt -e ".[plots]"
	$(SIMD_VENV)/bin/python -m pip uninstall -q -y pillow
	CC="cc -mavx2" $(SIMD_VENV)/bin/python -m pip install -q --no-deps --no-binary pillow-simd \
		--force-reinstall -c constraints.txt pillow-simd
	touch $@
