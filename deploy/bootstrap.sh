#!/usr/bin/env bash
# Make this machine ready to run StopSMS: redis-server, Java and Maven (for the Kafka broker
# jars), Chromium and its driver (the link page's browser test) from the system's packages,
# and the Python package with its development tools.
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
if ((${#missing[@]})); then
  echo "installing ${missing[*]}..." >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "please install: ${missing[*]} (apt-get install -y ${missing[*]})" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp=".stopsms/.installed-$(sha256sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ] || ! python3 -c "import stopsms.v1, faust, grpc_tools" 2>/dev/null; then
  echo "installing the stopsms Python package and its tools..." >&2
  python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
  mkdir -p .stopsms && rm -f .stopsms/.installed-* && touch "$stamp"
fi
