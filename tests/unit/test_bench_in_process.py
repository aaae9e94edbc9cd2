"""The benchmarks' in-process drivers still run against the code they measure.

``bench/`` is not imported by the daemon, so a change to a constructor it calls broke
``bench/intake_cpu.py --in-process`` unnoticed (found only when the figure was next asked for).
This runs it on a handful of alerts: what it asserts is that every alert is accepted (the driver
raises otherwise), not how fast.
"""

from __future__ import annotations

import pytest

from bench.intake_cpu import BODY, PATH
from bench.intake_hotpath import in_process


def test_the_intake_hot_path_driver_accepts_every_alert(capsys: pytest.CaptureFixture[str]) -> None:
    in_process(BODY, PATH, alerts=20, runs=1)
    assert "CPU per alert without server and store" in capsys.readouterr().out
