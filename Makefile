# rakuten-mlops: every target runs on the embedded default unless said otherwise.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAKUTEN_HOME ?= $(CURDIR)/.rakuten

.PHONY: help venv demo test test-long test-quick chaos lint bench bench-serve bench-predlog serve ui render-workflows clean \
        kind-up images deploy kind-e2e kind-down helm-check images-podman

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/rakuten-mlops: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/rakuten-mlops ## create the virtualenv and install the package with dev tools

demo: venv ## run the whole pipeline on the embedded default (SQLite + local MLflow)
	$(BIN)/python -m rakuten_mlops.demo

test: venv ## the test suite as CI runs it (slow tests included; the minutes-long delivery scenarios are in test-long)
	$(BIN)/python -m pytest -q -m "not long" --durations=25

test-long: venv ## the progressive-delivery scenarios that take a minute or more each
	$(BIN)/python -m pytest -q -m long

chaos: venv ## the faults-and-load campaign on loopback servers; prints the table of figures (RAKUTEN_CHAOS_SCALE shortens it)
	$(BIN)/python -m pytest -q -m chaos tests/chaos

test-quick: venv ## fast subset (no real servers, no image builds)
	$(BIN)/python -m pytest -q -m "not slow and not e2e"

lint: venv ## ruff
	$(BIN)/ruff check src tests workflows operator
	$(BIN)/ruff format --check src tests workflows operator

bench: venv ## benchmarks: generation, loading, training, drift (ratios against peers)
	$(BIN)/python -m benchmarks.run

bench-serve: venv ## prediction API vs `mlflow models serve` under wrk (needs Debian's wrk)
	$(BIN)/python -m benchmarks.bench_serve

bench-predlog: venv ## prediction log at 10M rows, day partitions vs unpartitioned (Postgres; ~15 min, 6 GB disk)
	$(BIN)/python -m benchmarks.bench_predlog

serve: venv ## run the prediction API on :8000 (embedded default)
	$(BIN)/rakuten-mlops serve --port 8000

ui: venv ## the control room on :8501
	$(BIN)/rakuten-mlops ui --port 8501

render-workflows: venv ## regenerate the Argo YAML in charts/rakuten-mlops/files/workflows from workflows/*.py
	$(BIN)/python -m workflows render

# ---- Kubernetes (docs/kubernetes.md). kind-up/images/deploy/kind-e2e/kind-down need Docker, kind,
# kubectl and helm on your machine; helm-check and images-podman are what runs here and in CI.
KIND_CLUSTER ?= rakuten
K8S_NAMESPACE ?= rakuten
RELEASE ?= rakuten
KPS_VERSION ?= 88.5.3
HELM ?= $(shell command -v helm 2>/dev/null || echo .tools/bin/helm)
CHART := charts/rakuten-mlops
# written by `make images`: the content tags of the images loaded into kind
KIND_IMAGES := .tools/kind-images.env
# tag of the podman builds (images-podman), checked here
IMAGE_TAG ?= 0.1.0

kind-up: ## kind cluster + Argo Workflows v4.1.2 + kube-prometheus-stack + metrics-server (needs docker, kind, kubectl, helm)
	kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' || kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml
	kubectl apply -f k8s/namespace.yaml
	kubectl apply --server-side -k k8s/argo
	kubectl apply -k k8s/metrics-server
	$(HELM) upgrade --install kube-prometheus-stack kube-prometheus-stack \
	  --repo https://prometheus-community.github.io/helm-charts --version $(KPS_VERSION) \
	  -n monitoring --create-namespace -f k8s/kube-prometheus-stack-values.yaml --wait --timeout 15m
	kubectl -n argo rollout status deploy/workflow-controller --timeout=5m
	kubectl -n kube-system rollout status deploy/metrics-server --timeout=5m

images: ## build both images with docker, tag them by content, load them into kind (docker save + kind load image-archive)
	KIND_CLUSTER=$(KIND_CLUSTER) bash scripts/kind-images.sh $(KIND_IMAGES)

deploy: ## helm upgrade --install the chart on kind (kind values, the tags of `make images`) and wait until every pod is ready
	@test -f $(KIND_IMAGES) || { echo "run 'make images' first ($(KIND_IMAGES) is missing)"; exit 1; }
	source $(KIND_IMAGES) && $(HELM) upgrade --install $(RELEASE) $(CHART) -n $(K8S_NAMESPACE) --create-namespace \
	  -f $(CHART)/ci/kind-values.yaml --set image.tag=$$APP_TAG --set mlflow.image.tag=$$MLFLOW_TAG \
	  --wait --timeout 15m

kind-e2e: ## on kind: upload data, incremental-load, train, operator rollout, drift-check, rollback, helm test
	K8S_NAMESPACE=$(K8S_NAMESPACE) RELEASE=$(RELEASE) bash scripts/kind-e2e.sh

kind-down: ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

helm-check: venv ## helm lint + template + strict validation of the chart (the non-image packaging checks)
	$(BIN)/python -m pytest -q tests/packaging -m "not slow"

images-podman: ## build both images with podman here (stand-in base image: scripts/build-base-image.sh)
	CONTAINERS_CONF=$(CURDIR)/images/containers.conf bash scripts/build-base-image.sh
	CONTAINERS_CONF=$(CURDIR)/images/containers.conf podman build --pull=never --network host --format docker \
	  -t localhost/rakuten-mlops:$(IMAGE_TAG) -f images/app/Dockerfile .
	CONTAINERS_CONF=$(CURDIR)/images/containers.conf podman build --pull=never --network host --format docker \
	  -t localhost/rakuten-mlops-mlflow:$(IMAGE_TAG) images/mlflow

clean: ## remove the embedded default's files
	rm -rf .rakuten
