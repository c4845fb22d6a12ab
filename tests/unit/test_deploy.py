"""The deployment assets, checked as far as this machine can (no Docker engine runs here): the compose file's
services, images, health checks and LAM_* settings; Prometheus's configuration and alert rules with promtool;
the Grafana dashboard's queries against the metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from streams.cli import build_parser
from streams.metrics import LAG_FAMILIES, worker_metric_names
from streams.settings import ROOT, Settings, env_name, load

DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LAM_SERVICES = ("topics", "worker", "lag-exporter", "simulator")
KNOWN_METRICS = worker_metric_names() | set(LAG_FAMILIES) | {"up"}


def test_compose_has_the_whole_system_from_official_images():
    assert set(SERVICES) == {"kafka", "topics", "worker", "lag-exporter", "prometheus", "grafana", "simulator"}
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:4.")
    assert "controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "KRaft, no ZooKeeper"
    assert SERVICES["prometheus"]["image"].startswith("prom/prometheus:")
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana:")
    for name in LAM_SERVICES:
        assert (ROOT / SERVICES[name]["build"]["context"] / SERVICES[name]["build"]["dockerfile"]).is_file()
    assert SERVICES["simulator"]["profiles"] == ["demo"]
    assert all("profiles" not in s for n, s in SERVICES.items() if n != "simulator")


def test_lam_services_run_real_commands_with_real_settings():
    names = {env_name(f.name) for f in fields(Settings)}
    for name in LAM_SERVICES:
        service = SERVICES[name]
        build_parser().parse_args(service["command"])  # a UsageError here is a command that doesn't exist
        env = service["environment"]
        assert set(env) <= names, f"{name}: {set(env) - names} are not Settings fields"
        load({}, {k: str(v) for k, v in env.items()})  # values parse and validate
    assert SERVICES["topics"]["command"] == ["topics", "create"]
    assert SERVICES["simulator"]["command"][:2] == ["produce", "--simulate"]


def test_start_order_and_health_checks():
    assert SERVICES["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert SERVICES["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert SERVICES["worker"]["deploy"]["replicas"] >= 2
    assert "container_name" not in SERVICES["worker"] and "ports" not in SERVICES["worker"], "must stay scalable"
    port = SERVICES["worker"]["environment"]["LAM_WEB_PORT"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(SERVICES["worker"]["healthcheck"]["test"])
    for name in ("kafka", "lag-exporter", "prometheus", "grafana"):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_mounted_files_exist():
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./deploy"):
                assert (ROOT / source).exists(), source


def test_prometheus_scrapes_the_ports_the_services_listen_on():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["lam-worker"]["dns_sd_configs"][0]
    assert worker["names"] == ["worker"] and str(worker["port"]) == SERVICES["worker"]["environment"]["LAM_WEB_PORT"]
    exporter_port = SERVICES["lag-exporter"]["environment"]["LAM_LAG_EXPORTER_PORT"]
    assert jobs["lam-lag-exporter"]["static_configs"][0]["targets"] == [f"lag-exporter:{exporter_port}"]


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (.ci/run does it)", pytrace=False)
    return subprocess.run([exe, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml"),
                                  ("test", "rules", "alerts.test.yml")])
def test_promtool_accepts_the_configuration_and_the_alerts_fire_when_they_should(args):
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def metric_names(promql: str) -> set[str]:
    return set(re.findall(r"\b(?:lam|kafka)_[a-z0-9_]+", promql)) | set(re.findall(r"\bup(?=\{)", promql))


def alerts() -> list[dict]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alerts_use_metrics_that_exist_and_the_runbook_explains_each():
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    names = {rule["alert"] for rule in alerts()}
    assert {"LamConsumerLagGrowing", "LamDeadLetterRate", "LamNoActionsWhileTouchpointsFlow", "LamWorkerDown"} <= names
    for rule in alerts():
        assert metric_names(rule["expr"]) <= KNOWN_METRICS, rule["alert"]
        assert f"## {rule['alert']}" in runbook, f"docs/runbook.md has no section for {rule['alert']}"
        assert rule["annotations"]["runbook"] == f"docs/runbook.md#{rule['alert'].lower()}"


DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "lam.json").read_text())


def test_dashboard_charts_only_metrics_that_exist():
    exprs = [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]
    assert exprs and all(metric_names(e) for e in exprs)
    for expr in exprs:
        assert metric_names(expr) <= KNOWN_METRICS, expr
    charted = set().union(*map(metric_names, exprs))
    for wanted in ("lam_messages_consumed_total", "kafka_consumergroup_group_lag", "lam_action_latency_seconds_bucket",
                   "lam_dead_letters_total", "lam_actions_emitted_total"):
        assert wanted in charted


def test_dashboard_is_provisioned_with_its_datasource():
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasource["datasources"]}
    used = {p["datasource"]["uid"] for p in DASHBOARD["panels"]}
    used |= {t["datasource"]["uid"] for p in DASHBOARD["panels"] for t in p["targets"]}
    assert used <= uids
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "lam.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert any(v.endswith(":" + path + ":ro") and v.startswith("./deploy/grafana/dashboards")
               for v in SERVICES["grafana"]["volumes"])
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_dockerfile_runs_lam_and_ships_what_the_worker_needs():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["lam"]' in dockerfile
    for folder in ("streams", "model", "sim"):
        assert f"COPY {folder} {folder}" in dockerfile and (ROOT / folder).is_dir()
    assert re.search(r"^USER (?!root)", dockerfile, re.M), "the worker must not run as root"
    assert Path(DEPLOY / "Dockerfile.dockerignore").read_text().startswith("#")
