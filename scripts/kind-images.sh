#!/usr/bin/env bash
# Build the app and MLflow images with Docker, tag each with its content digest (the image ID),
# load them into kind (scripts/kind-load.sh) and write the tags to OUT for `make deploy`.
# A rebuild after a change gives new tags, so the next `helm upgrade` rolls the pods; a rebuild
# without a change gives the same tags and rolls nothing.
set -euo pipefail
OUT=${1:-.tools/kind-images.env}
cd "$(dirname "$0")/.."

# build NAME DOCKERFILE CONTEXT -> prints the content tag
build() {
  docker build -f "$2" -t "$1:build" "$3" >&2
  local id
  id=$(docker image inspect -f '{{.Id}}' "$1:build")
  id=${id#sha256:}
  docker tag "$1:build" "$1:sha-${id:0:12}"
  echo "sha-${id:0:12}"
}

app_tag=$(build rakuten-mlops images/app/Dockerfile .)
mlflow_tag=$(build rakuten-mlops-mlflow images/mlflow/Dockerfile images/mlflow)
bash scripts/kind-load.sh "rakuten-mlops:$app_tag" "rakuten-mlops-mlflow:$mlflow_tag"
mkdir -p "$(dirname "$OUT")"
printf 'APP_TAG=%s\nMLFLOW_TAG=%s\n' "$app_tag" "$mlflow_tag" > "$OUT"
echo "images loaded into kind: rakuten-mlops:$app_tag rakuten-mlops-mlflow:$mlflow_tag (tags in $OUT)"
