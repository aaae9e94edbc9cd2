"""Configuration of message templates (``template:`` on a channel, ``templates:`` on a route).

Each template is compiled and tried on a sample notification while the configuration loads, so a
syntax error or a misspelt variable is reported with the file, line and path like any other
configuration error, never at send time. Reference: ``docs/templates.md``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from daemon.configbase import Model
from daemon.message_templates import MessageTemplate, TemplateError, compile_pair


class MessageTemplateConfig(Model):
    #: the subject line (collapsed to one line); absent: the notification's own
    subject: str | None = Field(None, min_length=1, max_length=2000)
    #: the text; absent: the notification's own
    body: str | None = Field(None, min_length=1, max_length=20000)

    @model_validator(mode="after")
    def _compiles(self) -> MessageTemplateConfig:
        if self.subject is None and self.body is None:
            raise ValueError("a template needs subject, body or both")
        try:
            compile_pair(self.subject, self.body)
        except TemplateError as exc:
            raise ValueError(f"template {exc}") from None
        return self

    def compiled(self) -> MessageTemplate:
        return compile_pair(self.subject, self.body)
