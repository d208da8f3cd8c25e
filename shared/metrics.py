"""Prometheus metrics shared by every service (served on /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter("ferry_events_published_total", "Events published", ["service", "topic"])
CONSUMED = Counter("ferry_events_consumed_total", "Records consumed", ["service", "topic"])
DEAD_LETTERED = Counter("ferry_dead_letters_total", "Records sent to the dead-letter topic",
                        ["consumer", "topic"])
TASKS_DISPATCHED = Counter("ferry_algorithm_tasks_dispatched_total", "Algorithm-task attempts dispatched",
                           ["runner"])
FLOWS_SPLIT = Counter("ferry_flows_total", "Flows handled by the splitter", ["outcome"])
TRANSITIONS = Counter("ferry_state_transitions_total", "Applied state transitions", ["entity", "to"])
ANOMALIES = Counter("ferry_state_anomalies_total", "Events recorded but not applied", ["kind"])
RUNNING_TASKS = Gauge("ferry_running_algorithm_tasks", "Algorithm tasks running on this runner", ["runner"])
ROUND_SECONDS = Histogram("ferry_round_seconds", "Wall time of one training round", ["role"])
ROUND_MESSAGES_REJECTED = Counter("ferry_round_messages_rejected_total",
                                  "Round messages refused by a receiver (unsigned, forged, replayed, ...)",
                                  ["kind", "reason"])
DASHBOARD_STREAMS = Gauge("ferry_dashboard_streams", "Open live-dashboard event streams on this monitor")
