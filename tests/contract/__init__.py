"""Contract tests: our adapters' requests against the vendors' own OpenAPI specs served by Prism."""
