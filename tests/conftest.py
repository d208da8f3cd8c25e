"""Test-wide fixtures: a real Kafka broker for the session (see tests/kafka_broker_fixture.py)."""

pytest_plugins = ["tests.kafka_broker_fixture"]


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", default=False,
                     help="tests/faults: run the long fault-injection soak and write bench/results/faults.json")
