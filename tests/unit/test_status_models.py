"""The operations endpoints' response models take every answer the daemon can give."""

from __future__ import annotations

import pytest

from daemon.api.status_models import DrillOut
from daemon.core.model import NotificationStatus
from daemon.drills import ChannelResult, summary


@pytest.mark.parametrize("status", list(NotificationStatus))
def test_a_drill_result_in_any_status_is_an_answer(status: NotificationStatus) -> None:
    """A drill message can be cancelled or acknowledged like any notification: its result (and the
    status document that embeds the last drill) still answers 200, not a 500 of the model."""
    result = ChannelResult("hook", "01HX0000000000000000000001", status.value, None, False)
    out = DrillOut.model_validate(summary("drill-1", [result]))
    assert out.channels[0].status == status
    assert out.done is (status not in ("pending", "held"))
    assert out.ok is (status == "delivered")
