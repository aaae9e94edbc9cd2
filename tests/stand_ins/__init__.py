"""Stand-in vendor servers on 127.0.0.1 for behaviour tests (what Prism's fixed examples cannot do)."""
