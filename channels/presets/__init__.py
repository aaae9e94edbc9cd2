"""Shipped webhook body templates (``preset:`` in a webhook channel); see channels.webhook_templates.

- ``pagerduty.json.j2``: PagerDuty Events API v2 ``trigger`` event,
  https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
- ``teams.json.j2``: Microsoft Teams Workflows webhook message with an Adaptive Card,
  https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using
"""
