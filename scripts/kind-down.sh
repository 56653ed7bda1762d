#!/usr/bin/env bash
# Deletes the kind cluster of scripts/kind-up.sh; the model cache in .pomona/kind-models stays.
set -euo pipefail
kind delete cluster --name "${POMONA_KIND_CLUSTER:-pomona}"
