"""Delivery channels: one module per kind, each behind :class:`channels.base.Channel`."""

from __future__ import annotations

from channels.base import Channel, ChannelConfigError, ChannelError, OutboundMessage, Receipt

__all__ = ["Channel", "ChannelConfigError", "ChannelError", "OutboundMessage", "Receipt"]
