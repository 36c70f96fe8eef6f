"""The message bus: one interface (qaloop.bus.base.Bus) over an in-process log and Kafka."""

from qaloop.bus.base import Bus, Consumer, Message, OutMessage, Topics

__all__ = ["Bus", "Consumer", "Message", "OutMessage", "Topics"]
