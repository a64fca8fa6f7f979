#!/usr/bin/env bash
# Make this machine ready to run StopSMS: redis-server, Java and Maven (for the Kafka broker
# jars), Chromium, its driver and NSS's tools (the browser tests) from the system's packages,
# kustomize (Go) for rendering k8s/, and the Python package with its development tools.
# Idempotent and quick when everything is there; `make up` and `make test` run it first.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
# The link page is tested in a real headless browser.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# The CNDP's console is tested in that browser holding the regulator's client certificate,
# put in its NSS database with certutil and pk12util.
command -v pk12util >/dev/null || missing+=(libnss3-tools)
# Go builds kustomize, below (kubectl has one built in).
command -v kustomize >/dev/null || command -v go >/dev/null || command -v kubectl >/dev/null \
  || missing+=(golang-go)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}..." >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "please install: ${missing[*]} (apt-get install -y ${missing[*]})" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# kustomize renders k8s/ in the tests (tests/unit/test_k8s_manifests.py), from Go's modules.
KUSTOMIZE_VERSION=v5.7.1
if ! command -v kustomize >/dev/null && command -v go >/dev/null \
    && [ ! -x "$(go env GOPATH)/bin/kustomize" ]; then
  echo "installing kustomize ${KUSTOMIZE_VERSION}..." >&2
  # The platform runs without it (`make up`); only the manifest tests need it, and they say so.
  go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}" \
    || echo "kustomize could not be built with $(go version); the k8s/ tests will fail until" \
      "kustomize (or kubectl) is on the PATH" >&2
fi

stamp=".stopsms/.installed-$(sha256sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ] || ! python3 -c "import stopsms.v1, faust, grpc_tools" 2>/dev/null; then
  echo "installing the stopsms Python package and its tools..." >&2
  python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
  mkdir -p .stopsms && rm -f .stopsms/.installed-* && touch "$stamp"
fi
