"""Provider checks (probes): one module per kind, each behind :class:`daemon.checks.base.Check`."""
