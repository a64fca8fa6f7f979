"""The Kubernetes overlays render, every standard object is valid, and they say what we mean.

Strimzi's and KEDA's objects are validated against their CRD schemas in deploy/checks (the
schemas live beside the clone, not in it); here they are checked against the platform's own
rules: the frozen topics, one Kafka identity per service and operator, the scaling bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest

from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.topics import Topics
from stopsms.tools.manifests import K8S, OVERLAYS, render

#: Kinds that come from operators' CRDs (validated in deploy/checks), not from Kubernetes.
CUSTOM_KINDS = {
    ("kafka.strimzi.io/v1", "Kafka"),
    ("kafka.strimzi.io/v1", "KafkaNodePool"),
    ("kafka.strimzi.io/v1", "KafkaTopic"),
    ("kafka.strimzi.io/v1", "KafkaUser"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}
SERVICES = ("intake", "registry", "notifier", "console")
#: Secrets the SREs create (docs/operations.md); never in the repository.
SECRETS_CREATED_BY_SRES = {
    "stopsms-keys",
    "stopsms-tls",
    "stopsms-webhook-secrets",
    "stopsms-public-tls",
    "stopsms-export-key",
}
#: Secrets Strimzi writes: the cluster CA and one per KafkaUser.
STRIMZI_SECRETS = {"stopsms-cluster-ca-cert"}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def test_every_standard_object_is_valid_kubernetes(rendered) -> None:
    overlay, objects = rendered
    version = kubernetes_validate.latest_version()
    for o in objects:
        if (o["apiVersion"], o["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {o['kind']} {o['metadata']['name']}: {exc.message}")


def test_only_known_custom_kinds_appear(rendered) -> None:
    _, objects = rendered
    groups = ("kafka.strimzi.io", "keda.sh")
    unknown = {
        (o["apiVersion"], o["kind"])
        for o in objects
        if o["apiVersion"].split("/")[0] in groups
        and (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS
    }
    assert not unknown


def test_pods_follow_the_restricted_pod_security_profile(rendered) -> None:
    overlay, objects = rendered
    (namespace,) = of_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, spec in pod_specs(objects):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, (overlay, name)
            assert security["capabilities"]["drop"] == ["ALL"], (overlay, name)
            assert security["readOnlyRootFilesystem"] is True, (overlay, name)
            assert container["resources"]["requests"] and container["resources"]["limits"], name


def test_each_service_has_grpc_probes_a_named_port_a_budget_and_its_own_kafka_identity(
    rendered,
) -> None:
    overlay, objects = rendered
    grpc_names = {
        "intake": "stopsms.v1.IntakeService",
        "registry": "stopsms.v1.RegistryService",
        "notifier": "stopsms.v1.NotifierService",
        "console": "stopsms.v1.RegulatorService",
    }
    for service in SERVICES:
        name = f"stopsms-{service}"
        deployment = named(objects, "Deployment", name)
        spec = deployment["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == name
        (container,) = spec["containers"]
        # Liveness asks for the process, readiness for the service: a rebuilding registry
        # leaves the Service without being killed.
        assert "service" not in container["livenessProbe"]["grpc"]
        assert container["readinessProbe"]["grpc"]["service"] == grpc_names[service]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["data"]
        assert volumes["kafka-user"]["secret"]["secretName"] == name
        ports = named(objects, "Service", name)["spec"]["ports"]
        assert any(p["name"] == "grpc" for p in ports)
        assert named(objects, "PodDisruptionBudget", name)
        assert named(objects, "ServiceAccount", name)
        assert named(objects, "KafkaUser", name)


def test_every_referenced_secret_and_config_map_exists_or_is_documented(rendered) -> None:
    _, objects = rendered
    config_maps = {o["metadata"]["name"] for o in of_kind(objects, "ConfigMap")}
    kafka_users = {o["metadata"]["name"] for o in of_kind(objects, "KafkaUser")}
    operations = (K8S.parent / "docs" / "operations.md").read_text()
    for name, spec in pod_specs(objects):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, name
            if "secret" in volume:
                secret = volume["secret"]["secretName"]
                assert secret in SECRETS_CREATED_BY_SRES | STRIMZI_SECRETS | kafka_users, secret
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, name
    for secret in SECRETS_CREATED_BY_SRES:
        assert secret in operations, f"docs/operations.md does not say how to make {secret}"


def test_the_services_run_as_their_profile_needs(rendered) -> None:
    overlay, objects = rendered
    (settings,) = [
        o
        for o in of_kind(objects, "ConfigMap")
        if o["metadata"]["name"].startswith("stopsms-settings")
    ]
    expected = "development" if overlay == "dev" else "production"
    assert settings["data"]["STOPSMS_PROFILE"] == expected
    assert settings["data"]["STOPSMS_KAFKA_SECURITY_PROTOCOL"] == "SSL"


def test_topics_are_the_frozen_ones_with_their_policies(rendered) -> None:
    overlay, objects = rendered
    topics = {
        o["spec"].get("topicName", o["metadata"]["name"]): o["spec"]
        for o in of_kind(objects, "KafkaTopic")
    }
    specs = Topics()
    replicas, in_sync = (1, "1") if overlay == "dev" else (3, "2")
    for name, configs in [*specs.all_specs(), *specs.internal_specs()]:
        spec = topics.pop(name)
        assert spec["partitions"] == 12, name
        assert spec["replicas"] == replicas, name
        assert spec["config"]["min.insync.replicas"] == in_sync, name
        assert spec["config"]["unclean.leader.election.enable"] == "false", name
        for key, value in configs.items():
            assert spec["config"][key] == value, (name, key)
    assert topics == {}, "a topic the platform does not use"


def test_kafka_runs_in_kraft_with_authenticated_listeners_and_acls(rendered) -> None:
    overlay, objects = rendered
    (kafka,) = of_kind(objects, "Kafka")
    pools = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "KafkaNodePool")}
    if overlay == "prod":
        assert pools["controllers"]["roles"] == ["controller"]
        assert pools["controllers"]["replicas"] == 3
        assert pools["brokers"]["roles"] == ["broker"]
        assert pools["brokers"]["replicas"] == 3
        assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    else:
        assert pools == {"brokers": pools["brokers"]}
        assert sorted(pools["brokers"]["roles"]) == ["broker", "controller"]
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert all(listener["tls"] and listener["authentication"] for listener in listeners)
    assert any(listener["type"] != "internal" for listener in listeners), "operators' listener"


def test_an_operator_may_read_the_list_its_messages_and_cases_and_commit_its_own_groups_only(
    rendered,
) -> None:
    _, objects = rendered
    users = {o["metadata"]["name"]: o["spec"] for o in of_kind(objects, "KafkaUser")}
    parties = PartiesDirectory.load(K8S / "base" / "parties.yaml")
    operators = [p.id for p in parties if p.is_operator]
    assert operators
    for operator in operators:
        acls = users[f"operator-{operator}"]["authorization"]["acls"]
        assert sorted(
            (
                a["resource"]["type"],
                a["resource"]["name"],
                a["resource"].get("patternType", "literal"),
            )
            for a in acls
        ) == [
            ("group", f"stopsms.operator.{operator}", "literal"),
            ("group", f"stopsms.operator.{operator}.cases", "literal"),
            ("group", f"stopsms.operator.{operator}.outbound", "literal"),
            ("topic", "stopsms.cases.v1", "literal"),
            ("topic", "stopsms.outbound.v1", "literal"),
            ("topic", "stopsms.suppressions.v1", "literal"),
        ]
        assert all(set(a["operations"]) <= {"Read", "Describe"} for a in acls)
        assert all(a.get("type", "allow") == "allow" for a in acls)


def test_only_the_registry_may_write_the_suppression_list(rendered) -> None:
    _, objects = rendered
    writers = {
        o["metadata"]["name"]
        for o in of_kind(objects, "KafkaUser")
        for acl in o["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == "topic"
        and "stopsms.suppressions.v1".startswith(acl["resource"]["name"])
        and {"Write", "All"} & set(acl["operations"])
    }
    assert writers == {"stopsms-registry"}


def test_stream_processors_scale_on_lag_no_further_than_the_partitions(rendered) -> None:
    _, objects = rendered
    scaled = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"] for o in of_kind(objects, "ScaledObject")
    }
    assert set(scaled) == {"stopsms-registry", "stopsms-notifier"}
    for name, spec in scaled.items():
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= 12, name
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == name
        assert trigger["metadata"]["allowIdleConsumers"] == "false"
        authentication = named(
            objects, "TriggerAuthentication", trigger["authenticationRef"]["name"]
        )
        secrets = {ref["name"] for ref in authentication["spec"]["secretTargetRef"]}
        assert secrets == {"stopsms-cluster-ca-cert", "stopsms-keda"}
        assert named(objects, "KafkaUser", "stopsms-keda")


def test_psvas_reach_the_grpc_services_through_tls_passthrough(rendered) -> None:
    _, objects = rendered
    passthrough = {
        o["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        for o in of_kind(objects, "Ingress")
        if o["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/ssl-passthrough")
        == "true"
    }
    assert passthrough == {f"stopsms-{s}" for s in SERVICES}


def test_the_deployments_parties_directory_is_valid() -> None:
    PartiesDirectory.load(K8S / "base" / "parties.yaml")


def test_without_kustomize_the_tests_fail_saying_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from stopsms.tools.manifests import ManifestError, kustomize_command

    monkeypatch.delenv("STOPSMS_KUSTOMIZE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ManifestError, match="run deploy/bootstrap.sh"):
        kustomize_command()
