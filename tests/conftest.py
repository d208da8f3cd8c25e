"""Test-wide fixtures: a real Kafka broker and a real Kubernetes control plane for the session
(see tests/kafka_broker_fixture.py and tests/k8s_cluster_fixture.py)."""

pytest_plugins = ["tests.kafka_broker_fixture", "tests.k8s_cluster_fixture"]
