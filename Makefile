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

bench-scale:  ## National scale (about 30 minutes, ~4 GB of Redis): 10 million links, 5 million proofs, a million opt-outs through the console, the view with 50 million entries; writes bench/results.json.
	$(PYTHON) -m bench.links_scale --links 10000000
	$(PYTHON) -m bench.proofs_scale --proofs 5000000
	$(PYTHON) -m bench.console_scale --optouts 1000000
	$(PYTHON) -m bench.registry --national --entries 50000000

# Each benchmark at tiny sizes, as a target of its own: bench-smoke runs them two at a time
# (each starts its own Kafka and Redis on ports it binds itself, in a directory of its own),
# longest first; about half the time of running them one after the other.
SMOKE = STOPSMS_BENCH_SMOKE=1 $(PYTHON) -m
SMOKE_RUNS = smoke-propagation-sweep smoke-registry smoke-registry-national smoke-rekey \
	smoke-complaints-load smoke-links-scale smoke-propagation smoke-stream-layer smoke-intake \
	smoke-proofs-scale smoke-console-scale smoke-complaints smoke-audit smoke-reseal smoke-message-check smoke-classifier
.PHONY: $(SMOKE_RUNS)

SMOKE_JOBS = 2
bench-smoke:  ## Every benchmark at tiny sizes (CI), two at a time (SMOKE_JOBS): each must run to the end; nothing is recorded.
	$(MAKE) --no-print-directory -j$(SMOKE_JOBS) --output-sync=target $(SMOKE_RUNS)

smoke-propagation-sweep:
	$(SMOKE) bench.propagation_sweep --rates 20 --seconds 5 --drain 20 --psvas 3 --many-parties 0
smoke-registry:
	$(SMOKE) bench.registry --entries 20000 --numbers 20000 --seconds 1 --concurrency 4
smoke-registry-national:
	$(SMOKE) bench.registry --national --entries 100000 --seconds 1 --bucket-bits 16
smoke-rekey:
	$(SMOKE) bench.rekey --subjects 2000 --broker-subjects 2000 --grace 2
smoke-complaints-load:
	$(SMOKE) bench.complaints_load --seconds 3
smoke-links-scale:
	$(SMOKE) bench.links_scale --links 40000 --lookups 20
smoke-propagation:
	$(SMOKE) bench.propagation --count 10 --rate 10
smoke-stream-layer:
	$(SMOKE) bench.stream_layer --requests 2000
smoke-intake:
	$(SMOKE) bench.intake --seconds 1 --rate 50 --in-flight 8
smoke-proofs-scale:
	$(SMOKE) bench.proofs_scale --proofs 20000 --lookups 50
smoke-console-scale:
	$(SMOKE) bench.console_scale --optouts 1000 --searches 10
smoke-complaints:
	$(SMOKE) bench.complaints --backlog 200 --seconds 2
smoke-audit:
	$(SMOKE) bench.audit --seconds 1 --concurrency 4
smoke-reseal:
	$(SMOKE) bench.reseal --subjects 2000
smoke-message-check:
	$(SMOKE) bench.message_check --texts 500 --rounds 1
smoke-classifier:
	$(SMOKE) bench.classifier --rounds 1

fetch-kafka:  ## Fetch the Kafka broker jars into the local cache (once).
	$(PYTHON) -m stopsms.tools.launcher fetch
