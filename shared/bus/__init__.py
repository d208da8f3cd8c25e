"""The message bus port and its adapters (in-process, Kafka)."""

from shared.bus.port import Bus, Consumer, Record, TopicPartition

__all__ = ["Bus", "Consumer", "Record", "TopicPartition"]
