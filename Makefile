# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, generate the demo data set, run the FixRes demo
#   make test   - create .venv, run the test suite
# The virtual environment is (re)built when pyproject.toml or the constraints file change.
# CUDA=13 (default): constraints.txt, PyPI's torch (CUDA 13.0) and nvidia-dali-cuda130: NVIDIA
# driver R580 or newer. CUDA=12: constraints-cu12.txt, torch's CUDA 12.8 build from PyTorch's
# index and nvidia-dali-cuda120, for R550/R570 drivers (docs/maintainers.md). The CPU-only
# machine runs either. Switching rebuilds .venv.
# The ffcv extra builds FFCV from source against libjpeg-turbo and OpenCV: `system-deps`
# installs their headers with apt-get when pkg-config does not find them (root or sudo).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CUDA ?= 13
ifeq ($(CUDA),12)
OTHER_CUDA := 13
CONSTRAINTS := constraints-cu12.txt
TORCH_INDEX := --extra-index-url https://download.pytorch.org/whl/cu128
DALI_EXTRA := dali-cu12
else ifeq ($(CUDA),13)
OTHER_CUDA := 12
CONSTRAINTS := constraints.txt
TORCH_INDEX :=
DALI_EXTRA := dali
else
$(error CUDA must be 12 or 13, got $(CUDA))
endif
EXTRAS ?= test,plots,ffcv,$(DALI_EXTRA),codec,tensorboard
comma := ,
STAMP := $(VENV)/.installed-cuda$(CUDA)-$(subst $(comma),-,$(EXTRAS))
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/demo

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
FFCV_APT := libturbojpeg0-dev libopencv-dev pkg-config

.PHONY: demo test data lock clean-demo system-deps simd wheelhouse device-wheels device-core-wheels gpu-check

$(STAMP): pyproject.toml $(CONSTRAINTS) | system-deps
	@echo "installing the CUDA $(CUDA) stack: $(CONSTRAINTS), extras $(EXTRAS)$(if $(TORCH_INDEX), (torch from PyTorch's cu128 index))"
	if ls $(VENV)/.installed-cuda$(OTHER_CUDA)-* >/dev/null 2>&1; then rm -rf $(VENV); fi  # one stack per venv
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) $(TORCH_INDEX) -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

system-deps:
	@command -v cjpeg >/dev/null || { echo "installing cjpeg (libjpeg-turbo-progs: the tests' arithmetic-coded JPEG)"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends libjpeg-turbo-progs; }
	@if echo "$(EXTRAS)" | grep -q ffcv && ! pkg-config --exists libturbojpeg opencv4 2>/dev/null; then \
		echo "installing FFCV's build prerequisites: $(FFCV_APT)"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(FFCV_APT); \
	fi

data: $(STAMP)
	$(BIN)/python -m loaders.demo_data --out $(DEMO_DATA)

demo: data
	$(BIN)/python train.py fixres --data $(DEMO_DATA) --out $(DEMO_RUN)

# Lint and format check first (seconds), then the tests.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Pin what is installed now (after changing pyproject.toml's ranges) into the CUDA stack's file
# (make lock CUDA=12 writes constraints-cu12.txt), under its leading comment.
lock: $(STAMP)
	{ awk '/^[^#]/{exit} {print}' $(CONSTRAINTS); $(BIN)/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

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

# Offline install: every pinned requirement (constraints.txt) for another Python and platform in
# $(WHEELHOUSE): wheels where PyPI has one for that target, else the source archive (FFCV, fastargs,
# ...: listed at the end), and the build backends. There:
#   pip install --no-index --find-links $(WHEELHOUSE) -c $(WHEELHOUSE)/requirements.txt -e ".[test,plots,ffcv,dali,codec,tensorboard]"
# ($(WHEELHOUSE)/requirements.txt: the pins of constraints.txt less the names left out, so that a
# target's own torch stands.)
# FFCV builds from source on the target: it needs a C++ compiler, pkg-config and the headers of
# libjpeg-turbo and OpenCV 4 (apt-get install build-essential pkg-config libturbojpeg0-dev libopencv-dev).
# WITHOUT_TORCH=1 leaves out torch, torchvision, triton and the CUDA libraries torch brings (for a
# target that has them); EXCLUDE="a b" leaves out more names.
PY ?= 3.12
PLATFORM ?= manylinux_2_28_x86_64
WHEELHOUSE ?= wheelhouse/py$(PY)-$(PLATFORM)
TORCH_STACK := torch torchvision triton cuda-bindings cuda-pathfinder cuda-toolkit nvidia-cublas nvidia-cuda-cupti \
	nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver \
	nvidia-cusparse nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
LEFT_OUT = pillow-simd $(EXCLUDE) $(if $(WITHOUT_TORCH),$(TORCH_STACK))
GLIBC_MINOR = $(word 3,$(subst _, ,$(PLATFORM)))
ARCH = $(patsubst manylinux_2_$(GLIBC_MINOR)_%,%,$(PLATFORM))
# pip matches platform tags exactly: every glibc up to the target's, and the legacy aliases.
PLATFORM_TAGS = $(foreach n,$(shell seq 5 $(GLIBC_MINOR)),--platform manylinux_2_$(n)_$(ARCH)) \
	--platform manylinux2014_$(ARCH) --platform manylinux2010_$(ARCH) --platform manylinux1_$(ARCH)

wheelhouse:
	mkdir -p $(WHEELHOUSE)
	grep -E '^[A-Za-z0-9_.-]+==' constraints.txt \
		| grep -v -i -E '^($(subst $() ,|,$(strip $(LEFT_OUT))))==' > $(WHEELHOUSE)/requirements.txt
	$(PYTHON) -m pip download -q --no-deps --prefer-binary --python-version $(PY) --implementation cp \
		$(PLATFORM_TAGS) -d $(WHEELHOUSE) -r $(WHEELHOUSE)/requirements.txt setuptools wheel
	@echo "$$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels, $$(du -sh $(WHEELHOUSE) | cut -f1) in $(WHEELHOUSE); built on the target:" \
		$$(cd $(WHEELHOUSE) && ls *.tar.gz *.zip 2>/dev/null)

# The GPU check (bench/gpu_check.py, planned in bench/gpu_plan.py): the plan with each stage's
# estimated seconds first, then the cuda tests and the GPU benchmarks, into bench/results/<machine>/.
# On a GPU machine with the project installed (make test does it); on a lent device machine run
# `bash bench/device.sh core` instead (docs/maintainers.md):
#   make gpu-check [PLAN=core|extra] [STAGES=train-resnet50,...]
PLAN ?= core
STAGES ?=
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m bench.gpu_check --plan $(PLAN) --stages "$(STAGES)"

# simplejpeg for the lent device machine (optional: without it pil decodes with Pillow), in .whl/:
# carry .whl with `bash bench/device.sh core`.
device-core-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(DEVICE_PLATFORM_TAGS) -d .whl $$(grep -i -E "^simplejpeg==" constraints.txt)

# What the lent device machine lacks (Python 3.12, torch 2.11 there; see bench/device.sh): DALI and
# its dependencies at the versions of constraints.txt, and the TorchCodec built for torch 2.11,
# packed into one tar in .whl-parts/ parts of 55 MiB, with a MANIFEST (sha256, then the parts).
DEVICE_PACKAGES := nvidia-dali-cuda130 nvidia-nvimgcodec-cu13 nvidia-nvjpeg nvidia-nvjpeg2k-cu13 nvidia-nvtiff-cu13 \
	nvidia-libnvcomp-cu13 astunparse gast optree nvtx makefun libcst
DEVICE_TORCHCODEC ?= torchcodec==0.16.0
DEVICE_PLATFORM_TAGS = $(foreach n,$(shell seq 17 35),--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64
device-wheels:
	rm -rf .whl-parts /tmp/lowres-device-wheels && mkdir -p .whl-parts /tmp/lowres-device-wheels
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(DEVICE_PLATFORM_TAGS) -d /tmp/lowres-device-wheels $(DEVICE_TORCHCODEC) \
		$$(for p in $(DEVICE_PACKAGES); do grep -i -E "^$$p==" constraints.txt; done)
	tar cf .whl-parts/device-wheels.tar -C /tmp/lowres-device-wheels .
	cd .whl-parts && split -b 55M device-wheels.tar device-wheels.tar.part- \
		&& { sha256sum device-wheels.tar; ls device-wheels.tar.part-*; } > MANIFEST && rm device-wheels.tar
	@ls -l /tmp/lowres-device-wheels .whl-parts
