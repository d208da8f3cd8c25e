"""Test-wide fixtures: a real Kafka broker for the session (see tests/kafka_broker_fixture.py)."""

pytest_plugins = ["tests.kafka_broker_fixture"]
