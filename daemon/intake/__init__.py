"""Intake: the ways notifications come in (HTTP API, webhooks, SMTP smart host)."""
