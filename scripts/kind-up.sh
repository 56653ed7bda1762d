#!/usr/bin/env bash
# Pomona on a laptop: a kind cluster with two CPU inference nodes, the image built and loaded, the
# chart installed, the quickstart model applied and one chat completion sent through the gateway.
# Needs docker (with a running engine), kind, kubectl, helm and curl. Run from anywhere: npm run kind:up
set -euo pipefail

cd "$(dirname "$0")/.."

cluster="${POMONA_KIND_CLUSTER:-pomona}"
image="${POMONA_IMAGE:-pomona:dev}"
namespace="${POMONA_NAMESPACE:-pomona-system}"
gateway="http://127.0.0.1:30080"

for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is not on PATH" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "kind-up: the docker engine is not running" >&2; exit 1; }

# The agents run as uid 1000 and write their cache into these host folders (kind-config.yaml).
mkdir -p .pomona/kind-models/worker .pomona/kind-models/worker2
chmod 0777 .pomona/kind-models/worker .pomona/kind-models/worker2

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  echo "kind-up: cluster $cluster exists, reusing it"
else
  kind create cluster --name "$cluster" --config kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$cluster" >/dev/null

docker build --tag "$image" .
kind load docker-image "$image" --name "$cluster"

helm upgrade --install pomona charts/pomona \
  --namespace "$namespace" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
  --set gateway.service.type=NodePort --set gateway.service.nodePort=30080 \
  --wait --timeout 10m

# The quickstart model (a 260K-parameter GGUF), its policy and a key, in the system namespace.
kubectl -n "$namespace" apply -f examples/quickstart.yaml
kubectl -n "$namespace" wait --for=condition=Ready inferencemodel/stories --timeout=10m

echo "kind-up: waiting for the operator to mint the quickstart key"
for _ in $(seq 1 60); do
  kubectl -n "$namespace" get secret quickstart >/dev/null 2>&1 && break
  sleep 2
done
# Read into a variable and never echoed: keys stay out of terminals and CI logs.
key="$(kubectl -n "$namespace" get secret quickstart -o jsonpath='{.data.key}' | base64 -d)"

echo "kind-up: smoke request to $gateway/v1/chat/completions"
for attempt in $(seq 1 30); do
  if answer="$(curl --silent --show-error --fail --max-time 60 "$gateway/v1/chat/completions" \
    --header "Authorization: Bearer $key" --header 'Content-Type: application/json' \
    --data '{"model":"stories","max_tokens":16,"messages":[{"role":"user","content":"Once upon a time"}]}')"; then
    echo "$answer"
    break
  fi
  [ "$attempt" = 30 ] && { echo "kind-up: the gateway never answered" >&2; exit 1; }
  sleep 2
done

cat <<DONE

Pomona is up in kind cluster "$cluster".
  gateway:   $gateway/v1
  a key:     kubectl -n $namespace get secret quickstart -o jsonpath='{.data.key}' | base64 -d
  admin key: kubectl -n $namespace get secret pomona-admin -o jsonpath='{.data.key}' | base64 -d
  remove:    npm run kind:down
DONE
