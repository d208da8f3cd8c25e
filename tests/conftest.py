"""Test-wide fixtures: a real Kafka broker and a real Kubernetes control plane for the session
(see tests/kafka_broker_fixture.py and tests/k8s_cluster_fixture.py)."""

pytest_plugins = ["tests.kafka_broker_fixture", "tests.k8s_cluster_fixture"]


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", default=False,
                     help="tests/faults: run the long fault-injection soak and write bench/results/faults.json")
