#!/usr/bin/env bash
# Operations checks on real tools: promtool on the Prometheus files and on the
# service's /metrics, a real Prometheus server scraping the running service
# (queried through its HTTP API), and the Kubernetes manifests against the
# Kubernetes schemas (kubernetes-validate from PyPI).
#
#   tests/ops/check.sh            (make ops-check installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # url, seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

echo "== promtool check config / rules"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/rules.yml

echo "== the service, on the tiny models"
PORT=$(free_port)
PORT=$PORT NLP_SERVE__SERVER__HOST=127.0.0.1 NLP_SERVE__LOGGING__LEVEL=warn \
  ./target/release/nlp-serve --profile tiny > "$WORK/nlp-serve.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PORT/ready" 60
for body in '{"prompt":"Hello","max_new_tokens":4}' '{"prompt":"Hi","max_new_tokens":2,"temperature":0}'; do
  curl -sf "http://127.0.0.1:$PORT/complete" -d "$body" > /dev/null
done
curl -sf "http://127.0.0.1:$PORT/qa" -d '{"question":"What is learning?"}' > /dev/null
curl -sf "http://127.0.0.1:$PORT/translate" -d '{"text":"Hello."}' > /dev/null

echo "== promtool check metrics"
curl -sf "http://127.0.0.1:$PORT/metrics" | promtool check metrics

echo "== schemathesis: fuzzing the API from its own OpenAPI document"
# Every check but positive_data_acceptance: token-count limits (prompt plus
# max_new_tokens within the model's context) cannot be expressed in OpenAPI,
# so some schema-valid bodies are rightly refused with 422.
st run "http://127.0.0.1:$PORT/api-docs/openapi.json" --checks all \
  --exclude-checks positive_data_acceptance -n "${FUZZ_EXAMPLES:-100}" --generation-deterministic

echo "== a real Prometheus scraping it"
PROM_PORT=$(free_port)
cp deploy/prometheus/rules.yml "$WORK/rules.yml"
sed -e "s/localhost:8080/127.0.0.1:$PORT/" -e "s/scrape_interval: 15s/scrape_interval: 1s/" \
  deploy/prometheus/prometheus.yml > "$WORK/prometheus.yml"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" > "$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" 60
query() { curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1"; }
for _ in $(seq 1 100); do
  ready=$(query 'sum(nlp_serve_model_ready{job="nlp-serve"})' | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
  [ "$ready" = "3" ] && break
  sleep 0.2
done
[ "$ready" = "3" ] || { echo "Prometheus did not ingest nlp_serve_model_ready (got $ready)"; cat "$WORK/prometheus.log"; exit 1; }
requests=$(query 'sum(nlp_serve_http_requests_total{job="nlp-serve",status="200"})' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])')
tokens=$(query 'sum(nlp_serve_generated_tokens_total{job="nlp-serve",task="completion"})' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])')
up=$(query 'up{job="nlp-serve"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])')
rules=$(curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/rules" | python3 -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
echo "Prometheus sees: up=$up, models ready=$ready, 200 responses=$requests, generated tokens=$tokens, alerting rules loaded=$rules"
[ "$up" = "1" ] && [ "$requests" -ge 4 ] && [ "$tokens" -ge 6 ] && [ "$rules" -ge 5 ]

echo "== Kubernetes manifests against the schemas"
kubernetes-validate --strict --kubernetes-version 1.30.0 \
  deploy/kubernetes/base/deployment.yaml deploy/kubernetes/base/service.yaml \
  deploy/kubernetes/base/hpa.yaml deploy/kubernetes/base/pdb.yaml
# The HPA variant, as kustomize would merge it (metrics list replaced).
python3 - "$WORK/hpa-queue-depth.yaml" <<'PY'
import sys, yaml
base = yaml.safe_load(open("deploy/kubernetes/base/hpa.yaml"))
patch = yaml.safe_load(open("deploy/kubernetes/hpa-queue-depth/hpa-patch.yaml"))
base["spec"]["metrics"] = patch["spec"]["metrics"]
yaml.safe_dump(base, open(sys.argv[1], "w"))
PY
kubernetes-validate --strict --kubernetes-version 1.30.0 "$WORK/hpa-queue-depth.yaml"
echo "ops checks passed"
