"""What a reload (SIGHUP) checks of a new configuration against the running daemon.

:meth:`daemon.app.Daemon.reload` applies the routes, tokens, directory and templates of a file that
is good as a whole. Here, what makes a good file a rejected reload (a channel the new routes use
that did not start with the daemon, an SMTP certificate that cannot be loaded), the running SMTP
intake given its new settings, and the sections only a restart applies, named so that a warning
says so.
"""

from __future__ import annotations

import ssl

from daemon.config import Config, ConfigError, ConfigProblem
from daemon.core.routing import channels_used
from daemon.intake.smtp import SmtpIntake
from daemon.yamlsource import load_yaml


def reload_smtp(config: Config, running: SmtpIntake | None) -> list[str]:
    """Give the running SMTP intake its new users, networks, rules and certificate; the fields
    that need a restart. A certificate that cannot be loaded rejects the reload."""
    new = config.intake.smtp
    if running is None or new is None:
        return [] if (running is None) == (new is None) else ["intake.smtp"]
    try:
        return [f"intake.smtp.{field}" for field in running.reload(new)]
    except (OSError, ssl.SSLError) as exc:
        message = f"the certificate or key cannot be loaded: {exc}"
        raise ConfigError([_problem(config, ("intake", "smtp", "tls"), message)]) from exc


def built_once(new: Config, running: Config) -> list[str]:
    """The sections a reload does not apply (the channels' settings, the checks and thresholds,
    the store, dispatching, drills, the API's listener and limits, the intake workers), where
    ``new`` changed them."""
    changed = [
        name
        for name in ("channels", "provider", "store", "dispatch", "drills")
        if getattr(new, name) != getattr(running, name)
    ]
    if new.api.model_copy(update={"tokens": running.api.tokens}) != running.api:  # tokens reload
        changed.append("api")
    if new.intake.workers != running.intake.workers:
        changed.append("intake.workers")
    return changed


def only_running_channels(config: Config, running: Config) -> None:
    """A reloaded policy may only route through the channels started with the daemon: one added by
    the reload would never send, and what it was given would wait for a restart unannounced."""
    new = sorted(channels_used(config.policy()) - set(running.channels))
    if not new:
        return
    message = "a new channel the routes use: channels start with the daemon, so restart to add it"
    raise ConfigError([_problem(config, ("channels", n), message) for n in new])


def _problem(config: Config, path: tuple[str, ...], message: str) -> ConfigProblem:
    """A problem at ``path`` of the file ``config`` was read from, with its line."""
    source = config.source
    filename = source.filename if source is not None else "<config>"
    line = load_yaml(source.text).line_of(path) if source is not None else None
    return ConfigProblem(filename, line, ".".join(path), message)
