#!/usr/bin/env bash
# End to end on the kind cluster of `make kind-up images deploy`: load data, train and promote
# a model in the cluster, wait for the API rollout, classify a product over HTTP, log some
# traffic and run a drift check (and, with Argo installed, the drift-check workflow).
# Needs kubectl (context: the kind cluster) and curl. Not runnable in this project's CI
# (no Docker there); the chart, images and scripts it relies on are checked by tests/packaging.
set -euo pipefail
NS=${K8S_NAMESPACE:-rakuten}
RELEASE=${RELEASE:-rakuten}
API_URL=${API_URL:-http://localhost:8000}
ROWS=${E2E_ROWS:-5000}
FULL=$RELEASE-rakuten-mlops
k() { kubectl -n "$NS" "$@"; }
step() { printf '\n== %s\n' "$*"; }

step "backends ready"
k rollout status statefulset/"$FULL"-postgres --timeout=5m
k rollout status statefulset/"$FULL"-minio --timeout=5m
k rollout status deploy/"$FULL"-mlflow --timeout=5m

POD=$(k get pod -l app.kubernetes.io/instance="$RELEASE",app.kubernetes.io/component=api \
  --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
[ -n "$POD" ] || { echo "no running API pod"; exit 1; }
run() { k exec "$POD" -c api -- "$@"; }

step "load data and train in $POD (the API image, the cluster's Postgres and MLflow)"
run rakuten-mlops db upgrade
run rakuten-mlops data generate --rows "$ROWS" --seed 1 --out /tmp/e2e/source
run rakuten-mlops data load --source /tmp/e2e/source --initial-fraction 0.6
run rakuten-mlops train --promote --output /tmp/e2e/train.json
run cat /tmp/e2e/train.json; echo

step "wait for the API to load the production model (alias poll) and finish its rollout"
k rollout status deploy/"$FULL"-api --timeout=10m
for i in $(seq 60); do
  curl -fsS "$API_URL/ready" && break
  echo " (waiting for $API_URL/ready, $i)"; sleep 5
done; echo

step "classify a product over HTTP ($API_URL via the kind port mapping)"
curl -fsS -X POST "$API_URL/predict" -H 'Content-Type: application/json' \
  -d '{"designation": "Manette sans fil Nintendo Switch Pro noire", "description": "Batterie rechargeable, vibrations HD"}'
echo

step "send drifted traffic, then run the drift check"
run rakuten-mlops data generate --rows 600 --seed 2 --drift vocabulary --drift-strength 0.8 --out /tmp/e2e/drifted
run python3 - <<'PY'
import csv, glob, json, urllib.request
rows = list(csv.DictReader(open(sorted(glob.glob("/tmp/e2e/drifted/X_*.csv"))[0], encoding="utf-8")))
items = [{"designation": r.get("designation") or "produit", "description": r.get("description") or ""} for r in rows]
for start in range(0, len(items), 200):
    req = urllib.request.Request("http://127.0.0.1:8000/predict/batch", data=json.dumps({"items": items[start:start + 200]}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
print(f"sent {len(items)} predictions")
PY
sleep 3  # the prediction log is flushed every second
run rakuten-mlops drift --json

if kubectl get crd workflowtemplates.argoproj.io >/dev/null 2>&1 && k get workflowtemplate drift-check >/dev/null 2>&1; then
  step "drift-check workflow on Argo"
  WF=$(k create -o name -f - <<YAML
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: e2e-drift-check-
spec:
  workflowTemplateRef:
    name: drift-check
YAML
)
  k wait --for=jsonpath='{.status.phase}'=Succeeded "$WF" --timeout=15m
fi

step "helm test"
helm test "$RELEASE" -n "$NS" --logs
echo "kind e2e: OK"
