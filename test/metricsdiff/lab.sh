#!/usr/bin/env bash
# Compares the Prometheus pages of upstream's and Thaw's activator and autoscaler on the lab, under a
# little traffic through the activator, and writes the differences to OUT/diff.md.
#
#   flock /tmp/thaw-lab.lock test/metricsdiff/lab.sh [OUT]     # as root, from the checkout
#
# Brings the lab up and down itself. Upstream serves :9090 only with metrics-protocol: prometheus, read
# at start, so both sides run with it and are restarted after the change.
set -euo pipefail
trap "exit 1" TERM INT
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/thaw-metricsdiff}
THAW=${THAW:-bin/thaw}
mkdir -p "$OUT"
go build -o "$OUT/metricsdiff" ./test/metricsdiff

"$THAW" lab up
trap '"$THAW" lab down' EXIT
export KUBECONFIG=$("$THAW" lab kubeconfig)
KUBECTL=${KUBECTL:-$(ls -d "${THAW_CACHE:-$HOME/.cache/thaw}"/k8s-*/bin/kubectl | tail -1)}
k() { "$KUBECTL" "$@"; }

k -n knative-serving patch configmap config-observability --type merge -p '{"data":{"metrics-protocol":"prometheus"}}'

# A revision with the activator always in its path (TBC -1), so the activator's request metrics exist.
k apply -f - <<'YAML'
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: metrics-probe
  namespace: default
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/target-burst-capacity: "-1"
        autoscaling.knative.dev/min-scale: "1"
    spec:
      containers:
        - image: ko.local/apps/helloworld:dev
YAML
k -n default wait ksvc/metrics-probe --for=condition=Ready --timeout=120s

side() { # side NAME: restart both components, send traffic, let the autoscaler scrape, take the pages
  k -n knative-serving rollout restart deployment/activator deployment/autoscaler
  k -n knative-serving rollout status deployment/activator deployment/autoscaler --timeout=120s
  # The old pods must be gone: until then the buckets (and so the autoscaler's per-revision metrics)
  # may still be theirs. One replica of each in the lab.
  for i in $(seq 1 120); do
    [ "$(k -n knative-serving get pods -l 'app in (activator,autoscaler)' --no-headers | wc -l)" -le 2 ] && break
    sleep 1
  done
  sleep 5 # the activator learns the revision's endpoints
  for i in $(seq 1 40); do
    curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: metrics-probe.default.example.com' http://10.88.0.1/
  done | sort | uniq -c
  sleep 15 # a few autoscaler ticks and scrapes, and a bucket Lease taken over
  "$OUT/metricsdiff" scrape -out "$OUT/$1"
}

side upstream
"$THAW" lab swap
side thaw
"$OUT/metricsdiff" diff "$OUT/upstream" "$OUT/thaw" | tee "$OUT/diff.md"
