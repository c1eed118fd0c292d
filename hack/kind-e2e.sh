#!/usr/bin/env bash
# The kind path, for users with Docker: a kind cluster, the platform's own images built and loaded into
# it, then `mlplatform demo` against it, the flow `make demo` runs on the local platform (the chart with
# bundled PostgreSQL and MinIO, a TrainingRun trained and promoted, a ModelDeployment serving it, one
# prediction).
#   hack/kind-e2e.sh [DEMO OPTIONS]   create (or reuse) the cluster, build, load, run the demo with them
#   hack/kind-e2e.sh --down           delete the cluster
#   hack/kind-e2e.sh --list-images    the images it builds, "<image>:<tag> <folder>" a line
# Environment: KIND_CLUSTER_NAME (default mlplatform), KIND_NODE_IMAGE (default: the kind release's own).
# Third-party images (postgres, minio/minio, python, busybox, alpine/git) are pulled by the kind node as
# any cluster pulls them: pre-loading would download each twice and repeat the chart's tags here.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER_NAME:-mlplatform}
CHART=charts/mlplatform
# The platform's own images and the folders they are built from (local-images.yaml maps the same pairs),
# tagged with the chart's appVersion: the tag the chart, the operator and the examples use.
IMAGES=(
  "mlplatform/operator operator"
  "mlplatform/mlflow-server images/mlflow-server"
  "mlplatform/trainer-sklearn trainer_images/sklearn"
  "mlplatform/trainer-minimal trainer_images/minimal"
)
STARTED=$(date +%s)

say() { echo "kind-e2e [$(date +%H:%M:%S) +$(($(date +%s) - STARTED))s] $*"; }

require_tools() {
  local tool missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "kind-e2e: not found on PATH: ${missing[*]} (this script needs $*)" >&2
    exit 127
  fi
}

list_images() {
  local version entry
  version=$(sed -nE 's/^appVersion:[[:space:]]*"?([^"[:space:]]+)"?[[:space:]]*$/\1/p' "$CHART/Chart.yaml")
  if [[ -z $version ]]; then
    echo "kind-e2e: no appVersion in $CHART/Chart.yaml" >&2
    exit 1
  fi
  for entry in "${IMAGES[@]}"; do
    echo "${entry%% *}:$version ${entry#* }"
  done
}

ensure_cluster() {
  if kind get clusters 2>/dev/null | grep -x "$CLUSTER" >/dev/null; then
    say "reusing the kind cluster $CLUSTER"
    return
  fi
  local create=(kind create cluster --name "$CLUSTER" --wait 180s)
  if [[ -n ${KIND_NODE_IMAGE:-} ]]; then
    create+=(--image "$KIND_NODE_IMAGE")
  fi
  say "creating the kind cluster $CLUSTER"
  "${create[@]}"
}

build_and_load() {
  local listed images line image folder
  listed=$(list_images)
  mapfile -t images <<<"$listed"
  for line in "${images[@]}"; do
    read -r image folder <<<"$line"
    say "building $image from $folder/"
    docker build --tag "$image" "$folder"
    say "loading $image into $CLUSTER"
    kind load docker-image --name "$CLUSTER" "$image"
  done
}

ensure_cli() {
  if [[ ! -x .venv/bin/mlplatform ]]; then
    say "installing the mlplatform CLI into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet -e .
  fi
}

show_cluster_state() {
  say "the demo failed; the cluster as it stands:"
  kubectl get pods --all-namespaces --output wide || true
  kubectl get events --all-namespaces --sort-by=.lastTimestamp || true
}

run_demo() {
  KUBECONFIG=$(mktemp)
  export KUBECONFIG
  trap 'rm -f "$KUBECONFIG"' EXIT
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
  say "running mlplatform demo $*"
  if ! .venv/bin/mlplatform demo "$@"; then
    show_cluster_state
    exit 1
  fi
  say "done; the cluster stays up: kubectl --context kind-$CLUSTER get trainingruns,modeldeployments -A"
}

case ${1:-} in
  --list-images) list_images; exit ;;
  --down) require_tools kind; kind delete cluster --name "$CLUSTER"; exit ;;
  -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit ;;
esac
require_tools docker kind kubectl helm
ensure_cluster
build_and_load
ensure_cli
run_demo "$@"
