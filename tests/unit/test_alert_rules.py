"""The shipped Prometheus alert rules refer only to metrics the daemon exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from daemon.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
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
