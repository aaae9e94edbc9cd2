"""The shipped Prometheus alert rules: valid PromQL, on metrics and labels the daemon exports, and
each alert firing on the series that should raise it (promtool's unit tests,
tests/prometheus/alerts_test.yml)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from daemon.metrics import Metrics
from tests.support import installed

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
#: labels Prometheus adds to every scraped series
TARGET_LABELS = {"instance", "job"}


def exported_names() -> set[str]:
    names = set()
    metrics = Metrics()
    metrics.watch_leadership()  # a node of several on PostgreSQL exports every metric
    for family in metrics.registry.collect():
        names |= {family.name, f"{family.name}_total", f"{family.name}_count", f"{family.name}_sum"}
    return names


def test_rules_use_exported_metrics() -> None:
    """Every backchannel_* series in an alert expression is one the daemon exports."""
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = {name for r in rules for name in re.findall(r"backchannel_[a-z_]+", r["expr"])}
    assert used
    assert used <= exported_names(), used - exported_names()


def test_rules_have_severity_and_summary() -> None:
    """Each rule says how bad it is and what happened."""
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert rule["annotations"]["summary"]


def _label_names() -> dict[str, set[str]]:
    """Each metric the daemon defines (a counter's ``_total`` too) with its label names; the
    store's gauges included, which the registry lists only behind the collector that reads them."""
    names: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            labels = set(metric._labelnames)  # prometheus_client lists labels nowhere public
            names[metric._name] = names[f"{metric._name}_total"] = labels
    return names


def test_rules_match_on_labels_the_metrics_have() -> None:
    """A matcher on a label the metric does not have (``status=`` where it is ``state=``) never
    matches, and the alert never fires, silently: every label a rule selects a backchannel series
    by is one the daemon sets (or Prometheus adds)."""
    known = _label_names()
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        for name, selector in re.findall(r"(backchannel_[a-z_]+)\{([^}]*)\}", rule["expr"]):
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
            assert used <= known[name] | TARGET_LABELS, (rule["alert"], name, used - known[name])


def _promtool() -> str:
    return installed("promtool", package="prometheus")


def test_rules_are_valid_promql() -> None:
    done = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_on_what_should_raise_it() -> None:
    """promtool's rule unit tests: every alert, after its ``for``, with its labels and summary, and
    not on a near miss (a store failing a minute at a time, a steady backlog, waiting in an outage)."""
    done = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert tested == alerts, alerts - tested
