"""``python -m daemon`` is ``backchannel``."""

from daemon.cli import main

raise SystemExit(main())
