#!/usr/bin/env bash
# End to end on the kind cluster of `make kind-up images deploy`, through the paths a user runs:
#   1. upload a generated dataset to the landing zone as one drop (`rakuten-mlops data upload`,
#      from the app image);
#   2. run incremental-load from its CronWorkflow (`argo submit --from cronwf/...`);
#   3. train through the rakuten-train WorkflowTemplate: the gate must promote the version;
#   4. wait until the ServedModel reports Ready with that version and the API's /model serves it;
#   5. send drifted traffic, run drift-check from its CronWorkflow: severity high, retrain;
#   6. roll back with `rakuten-mlops rollback`: the operator must serve the previous version;
#   7. `helm test`.
# Every step asserts its outcome; the first one missing stops the script with a message and a
# non-zero exit. Needs kubectl (context: the kind cluster), helm, argo (v4 CLI), curl, python3.
set -euo pipefail
NS=${K8S_NAMESPACE:-rakuten}
RELEASE=${RELEASE:-rakuten}
API_URL=${API_URL:-http://localhost:8000}
ROWS=${E2E_ROWS:-5000}
DRIFTED_ROWS=${E2E_DRIFTED_ROWS:-600}
TIMEOUT=${E2E_TIMEOUT:-900}   # seconds, for each wait
POLL=${E2E_POLL:-5}           # seconds between two looks
FLUSH=${E2E_FLUSH_SECONDS:-3} # the API flushes its prediction log every second
RUN_ID=${E2E_RUN_ID:-$(date +%s)}
PYTHON=${PYTHON:-python3}
FULL=$RELEASE-rakuten-mlops

k() { kubectl -n "$NS" "$@"; }
step() { printf '\n== %s\n' "$*"; }
fail() {
  printf '\nkind e2e FAILED: %s\n' "$*" >&2
  exit 1
}

# json EXPR: evaluate a Python expression on the JSON document read from stdin (named d)
json() {
  "$PYTHON" -c 'import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1])
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}

# wait_for WHAT COMMAND...: run COMMAND until it succeeds, or fail after TIMEOUT seconds
wait_for() {
  local what=$1 deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${TIMEOUT}s waiting for $what"
    sleep "$POLL"
  done
}

workflow_finished() {
  case "$(k get workflow "$1" -o jsonpath='{.status.phase}')" in
    Succeeded | Failed | Error) return 0 ;;
    *) return 1 ;;
  esac
}

# run_workflow ARGS...: `argo submit ARGS`, wait, fail unless it Succeeded; prints its name
run_workflow() {
  local name phase
  name=$(argo -n "$NS" submit "$@" -o name)
  name=${name##*/}
  [ -n "$name" ] || fail "argo submit $* gave no workflow name"
  wait_for "workflow $name to finish" workflow_finished "$name"
  phase=$(k get workflow "$name" -o jsonpath='{.status.phase}')
  if [ "$phase" != Succeeded ]; then
    argo -n "$NS" get "$name" >&2 || true
    fail "workflow $name ($*) ended $phase"
  fi
  echo "$name"
}

# node_output WORKFLOW NODE PARAMETER: an output parameter of the node whose displayName is NODE
node_output() {
  k get workflow "$1" -o json | json "next(p['value'] for n in d['status']['nodes'].values() if n['displayName'] == '$2' for p in n.get('outputs', {}).get('parameters', []) if p['name'] == '$3')"
}

served_is() {
  local status
  status=$(k get servedmodel "$FULL" -o json | json "d.get('status', {})")
  [ "$(json "d.get('phase', '')" <<<"$status")" = Ready ] && [ "$(json "d.get('servedVersion', '')" <<<"$status")" = "$1" ]
}

api_serves() {
  local version
  version=$(curl -fsS "$API_URL/model" | json "d.get('version') or ''") || return 1
  [ "$version" = "$1" ]
}

# wait until the operator reports VERSION Ready and the API answers with it
wait_served() {
  wait_for "ServedModel $FULL to report Ready with version $1" served_is "$1"
  wait_for "$API_URL/model to report version $1" api_serves "$1"
  echo "ServedModel $FULL: Ready, serving version $1; $API_URL/model agrees"
}

step "0. the release is up (helm install --wait finished on an empty registry)"
for deploy in api mlflow operator ui; do
  k rollout status deploy/"$FULL-$deploy" --timeout="${TIMEOUT}s"
done
k rollout status statefulset/"$FULL-postgres" --timeout="${TIMEOUT}s"
k rollout status statefulset/"$FULL-minio" --timeout="${TIMEOUT}s"

step "1. upload a generated dataset ($ROWS rows) to the landing zone"
LANDING_URL=$(k get cronworkflow incremental-load \
  -o jsonpath='{.spec.workflowSpec.arguments.parameters[?(@.name=="source")].value}')
case "$LANDING_URL" in
  s3://*) echo "landing zone: $LANDING_URL" ;;
  *) fail "incremental-load does not read a landing zone (source: '$LANDING_URL')" ;;
esac
LANDING_SECRET=$(k get cronworkflow incremental-load \
  -o jsonpath='{.spec.workflowSpec.templates[?(@.name=="load")].container.env[?(@.name=="AWS_ACCESS_KEY_ID")].valueFrom.secretKeyRef.name}')
[ -n "$LANDING_SECRET" ] || fail "incremental-load gets no landing zone credentials"
IMAGE=$(k get deploy "$FULL-api" -o jsonpath='{.spec.template.spec.containers[0].image}')
UPLOAD=e2e-upload-$RUN_ID
k apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $UPLOAD
  labels:
    app.kubernetes.io/instance: $RELEASE
    app.kubernetes.io/component: landing-upload
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: upload
      image: $IMAGE
      imagePullPolicy: IfNotPresent
      command: ["sh", "-ec"]
      args:
        - rakuten-mlops data generate --rows $ROWS --seed 1 --out /tmp/drop && rakuten-mlops data upload /tmp/drop --to $LANDING_URL/e2e-$RUN_ID
      env:
        - {name: HOME, value: /tmp}
        - {name: RAKUTEN_HOME, value: /tmp/rakuten}
        - {name: AWS_ACCESS_KEY_ID, valueFrom: {secretKeyRef: {name: $LANDING_SECRET, key: access-key-id}}}
        - {name: AWS_SECRET_ACCESS_KEY, valueFrom: {secretKeyRef: {name: $LANDING_SECRET, key: secret-access-key}}}
        - {name: AWS_ENDPOINT_URL, valueFrom: {configMapKeyRef: {name: $FULL-config, key: RAKUTEN_LANDING_ENDPOINT, optional: true}}}
        - {name: AWS_DEFAULT_REGION, valueFrom: {configMapKeyRef: {name: $FULL-config, key: RAKUTEN_LANDING_REGION, optional: true}}}
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: ["ALL"]}}
      resources: {requests: {cpu: 100m, memory: 256Mi}, limits: {cpu: "1", memory: 1Gi}}
      volumeMounts: [{name: tmp, mountPath: /tmp}]
  volumes: [{name: tmp, emptyDir: {}}]
YAML
pod_finished() {
  case "$(k get pod "$UPLOAD" -o jsonpath='{.status.phase}')" in
    Succeeded | Failed) return 0 ;;
    *) return 1 ;;
  esac
}
wait_for "pod $UPLOAD to finish" pod_finished
k logs "$UPLOAD" || true
[ "$(k get pod "$UPLOAD" -o jsonpath='{.status.phase}')" = Succeeded ] || fail "the upload to $LANDING_URL/e2e-$RUN_ID failed"
k delete pod "$UPLOAD" --wait=false >/dev/null

step "2. incremental-load from its CronWorkflow"
WF=$(run_workflow --from cronwf/incremental-load)
echo "workflow $WF: Succeeded"
POD=$(k get pod -l app.kubernetes.io/instance="$RELEASE",app.kubernetes.io/component=api \
  --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
[ -n "$POD" ] || fail "no running API pod"
run() { k exec "$POD" -c api -- "$@"; }
LOADED=$(run rakuten-mlops data status --json | json "d['total_products']")
[ "$LOADED" -gt 0 ] || fail "incremental-load succeeded but products is empty"
echo "products: $LOADED rows"

step "3. train through the rakuten-train WorkflowTemplate"
WF=$(run_workflow --from workflowtemplate/rakuten-train -p model=sgd)
V1=$(node_output "$WF" "$WF" version)
DECISION=$(node_output "$WF" "$WF" decision)
echo "workflow $WF: version $V1, gate decision $DECISION"
[ "$DECISION" = promoted ] || fail "the first version ($V1) was not promoted: $DECISION"

step "4. the operator rolls the API to version $V1"
wait_served "$V1"
curl -fsS -X POST "$API_URL/predict" -H 'Content-Type: application/json' \
  -d '{"designation": "Manette sans fil Nintendo Switch Pro noire", "description": "Batterie rechargeable"}'
echo

step "5. drifted traffic ($DRIFTED_ROWS predictions), then drift-check from its CronWorkflow"
SENT=$(k exec -i "$POD" -c api -- sh -ec "rakuten-mlops data generate --rows $DRIFTED_ROWS --seed 2 \
  --drift vocabulary --drift-strength 0.8 --out /tmp/e2e-drifted-$RUN_ID >/dev/null && python3 - /tmp/e2e-drifted-$RUN_ID" <<'PY'
import csv, glob, json, sys, urllib.request
rows = list(csv.DictReader(open(sorted(glob.glob(sys.argv[1] + "/X_*.csv"))[0], encoding="utf-8")))
items = [{"designation": r.get("designation") or "produit", "description": r.get("description") or ""} for r in rows]
for start in range(0, len(items), 200):
    req = urllib.request.Request("http://127.0.0.1:8000/predict/batch", data=json.dumps({"items": items[start:start + 200]}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
print(len(items))
PY
)
[ "$SENT" -ge "$DRIFTED_ROWS" ] || fail "only $SENT of $DRIFTED_ROWS drifted predictions were sent"
sleep "$FLUSH"
WF=$(run_workflow --from cronwf/drift-check)
SEVERITY=$(node_output "$WF" drift report | json "d.get('severity', 'none')")
RETRAIN=$(node_output "$WF" decide decision | json "d['retrain']")
echo "workflow $WF: drift severity $SEVERITY, retrain $RETRAIN"
[ "$SEVERITY" = high ] || fail "no drift detected on drifted traffic (severity: $SEVERITY)"
[ "$RETRAIN" = true ] || fail "drift severity $SEVERITY but the decision is not to retrain"
V2=$(node_output "$WF" retrain version)
DECISION=$(node_output "$WF" retrain decision)
echo "retraining: version $V2, gate decision $DECISION"

step "6. roll back with rakuten-mlops rollback: the operator follows"
if [ "$DECISION" != promoted ]; then
  # the gate kept $V1: put $V2 in production by hand so that there is a version to roll back from
  run rakuten-mlops promote "$V2" --force --reason "kind e2e: a second production version"
fi
wait_served "$V2"
run rakuten-mlops rollback --reason "kind e2e"
wait_served "$V1"

step "7. helm test"
helm test "$RELEASE" -n "$NS" --logs
echo "kind e2e: OK"
