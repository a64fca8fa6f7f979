# StopSMS: the everyday commands. `make up` runs the platform, `make test` runs the tests.
PYTHON ?= python3
PROTO_FILES := $(wildcard protos/stopsms/v1/*.proto)
BUF ?= $(shell command -v buf 2>/dev/null || echo $(HOME)/go/bin/buf)

.PHONY: install up test test-unit lint protos protos-check buf-lint bench bench-scale bench-smoke chaos chaos-ci check-schemas fetch-kafka

install:  ## System packages (redis-server, Java, Maven, Chromium, NSS tools) and the Python package, when missing.
	bash deploy/bootstrap.sh

up: install  ## Run Kafka, Redis and the four services; Ctrl-C stops everything.
	$(PYTHON) -m stopsms.tools.cli up

test: install  ## Every test: unit, integration and end to end (starts its own Kafka and Redis).
	$(PYTHON) -m pytest -q tests

test-unit:
	$(PYTHON) -m pytest -q tests/unit

check-schemas:  ## docker-compose.yml and the Strimzi and KEDA objects of k8s/ against the schemas in STOPSMS_SCHEMAS (default ../shared/schemas).
	$(PYTHON) -m pytest -q deploy/checks

chaos: install  ## Eight fault scenarios under load (5,000 opt-outs each at 200/s), each ending with the ledger check.
	$(PYTHON) -m chaos --optouts 5000 --rate 200

chaos-ci: install  ## The same scenarios, reduced for CI (600 opt-outs each at 50/s).
	$(PYTHON) -m chaos --optouts 600 --rate 50

protos:  ## Regenerate services/stopsms/v1 from protos/ with the pinned grpcio-tools.
	$(PYTHON) -m stopsms.tools.protogen generate

protos-check:  ## Fail when the committed generated code differs from a regeneration.
	$(PYTHON) -m stopsms.tools.protogen check

buf-lint:  ## buf lint (STANDARD) and no breaking change against main.
	cd protos && $(BUF) lint
	cd protos && $(BUF) breaking --against '../.git#branch=main,subdir=protos'

lint: protos-check buf-lint  ## ruff, mypy, the layer contracts (import-linter), the generated-code check and buf.
	$(PYTHON) -m ruff check services tests bench chaos deploy examples
	$(PYTHON) -m ruff format --check services tests bench chaos deploy examples
	$(PYTHON) -m mypy
	lint-imports

bench:  ## Propagation, audit overhead, intake, registry, the stream layer, the reply classifier, the campaign check, complaint assessment (alone, and under the normal opt-out load on the whole platform) the propagation sweep and re-sealing (each against a raw baseline); writes bench/results.json.
	$(PYTHON) -m bench.propagation
	$(PYTHON) -m bench.audit
	$(PYTHON) -m bench.intake
	$(PYTHON) -m bench.registry
	$(PYTHON) -m bench.stream_layer
	$(PYTHON) -m bench.classifier
	$(PYTHON) -m bench.message_check
	$(PYTHON) -m bench.complaints
	$(PYTHON) -m bench.complaints_load
	$(PYTHON) -m bench.propagation_sweep
	$(PYTHON) -m bench.reseal
	$(PYTHON) -m bench.rekey

bench-scale:  ## National scale (about 25 minutes, ~4 GB of Redis): 10 million links, 5 million proofs, the view with 50 million entries; writes bench/results.json.
	$(PYTHON) -m bench.links_scale --links 10000000
	$(PYTHON) -m bench.proofs_scale --proofs 5000000
	$(PYTHON) -m bench.registry --national --entries 50000000

bench-smoke:  ## Every benchmark at tiny sizes (CI): each must run to the end; nothing is recorded.
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.propagation --count 10 --rate 10
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.audit --seconds 1 --concurrency 4
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.intake --seconds 1 --rate 50 --in-flight 8
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.registry --entries 20000 --numbers 20000 --seconds 1 --concurrency 4
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.stream_layer --requests 2000
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.classifier --rounds 1
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.message_check --texts 500 --rounds 1
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.complaints --backlog 200 --seconds 2
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.complaints_load --seconds 3
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.propagation_sweep --rates 20 --seconds 5 --drain 20 --psvas 3 --many-parties 0
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.links_scale --links 40000 --lookups 20
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.reseal --subjects 2000
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.rekey --subjects 2000 --broker-subjects 2000 --grace 2
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.proofs_scale --proofs 20000 --lookups 50
	STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m bench.registry --national --entries 100000 --seconds 1 --bucket-bits 16

fetch-kafka:  ## Fetch the Kafka broker jars into the local cache (once).
	$(PYTHON) -m stopsms.tools.launcher fetch
