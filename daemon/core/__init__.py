"""The pure core: domain model, provider health, routing, backoff. No I/O, no clock."""
