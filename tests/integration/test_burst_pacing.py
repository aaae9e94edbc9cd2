"""A burst through the running daemon: paced per destination, no 429, everything in order."""

from __future__ import annotations

from pathlib import Path

from tests.stand_ins.slack import SlackStandIn
from tests.stand_ins.twilio import TwilioStandIn
from tests.support import config_template, daemon_api, stand_ins, until

TOKEN = "burst-test-api-token-42"
SLACK_TOKEN = "xoxb-burst-slack-token-0123"
TWILIO_SID = "AC" + "fedcba9876543210" * 2
TWILIO_TOKEN = "burst-twilio-auth-token"
BURST = 50
CONFIG = config_template("""\
  slack: {{type: slack, token: "${{SLACK_TOKEN}}", targets: ["#ops"], api_url: "{slack_url}/api/", pace: 10}}
  sms: {{type: sms, account_sid: {sid}, auth_token: "${{TWILIO_TOKEN}}", from_number: "+14155550100",
         recipients: ["+14155552671"], api_url: "{twilio_url}", pace: 10}}
routes:
  - {{match: {{labels: {{to: slack}}}}, healthy: [email], outage: [slack]}}
  - {{match: {{labels: {{to: sms}}}}, healthy: [email], outage: [sms]}}
  - {{match: {{}}, healthy: [email], outage: defer}}
""")


async def test_burst_of_50_to_slack_and_sms_is_paced_and_ordered(tmp_path: Path) -> None:
    """50 critical notifications each to Slack and SMS at 10/s against 10/s limits: no 429, all, in order."""
    slack = SlackStandIn(SLACK_TOKEN, rate_per_s=10)
    twilio = TwilioStandIn(TWILIO_SID, TWILIO_TOKEN, rate_per_s=10)
    async with stand_ins(slack, twilio) as smtp:
        text = CONFIG.format(
            store=tmp_path / "outbox.db",
            api_port=0,
            smtp_port=smtp.port,
            sid=TWILIO_SID,
            slack_url=f"http://127.0.0.1:{slack.port}",
            twilio_url=twilio.base_url,
        )
        env = {"TOKEN": TOKEN, "SLACK_TOKEN": SLACK_TOKEN, "TWILIO_TOKEN": TWILIO_TOKEN}
        async with daemon_api(text, TOKEN, env) as (_, api):
            await api.post("/v1/provider/override", json={"state": "outage"})
            for to in ("slack", "sms"):
                batch = [
                    {"severity": "critical", "subject": f"{to} {i:02d}", "labels": {"to": to}}
                    for i in range(BURST)
                ]
                assert (await api.post("/v1/notifications", json=batch)).status_code == 202
            await until(lambda: len(slack.posts) >= BURST and len(twilio.sent) >= BURST, 60, every_s=0.1)
    assert slack.rate_limited == 0
    assert twilio.rate_limited == 0
    slack_subjects = [p.payload["text"].split("slack ")[1][:2] for p in slack.posts]
    assert slack_subjects == [f"{i:02d}" for i in range(BURST)]
    assert [s.body.split("sms ")[1][:2] for s in twilio.sent] == [f"{i:02d}" for i in range(BURST)]
