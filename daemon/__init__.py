"""backchannel: a communication failover daemon."""

__version__ = "0.1.0"
