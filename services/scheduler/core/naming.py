"""Deterministic job names: the same (algorithm task, attempt) always gets the same name,
so a second dispatch of one attempt collides (409 on Kubernetes) instead of running twice."""

from __future__ import annotations

import hashlib
import re

from shared.events import AlgorithmTaskSpec

MAX_NAME = 63  # DNS-1123 label, what Kubernetes allows for Job names and label values


def job_name(spec: AlgorithmTaskSpec) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", f"ferry-{spec.algo_task_id}".lower()).strip("-")
    suffix = f"-a{spec.attempt}"
    if len(base) + len(suffix) <= MAX_NAME:
        return base + suffix
    digest = hashlib.sha256(spec.algo_task_id.encode()).hexdigest()[:10]
    keep = MAX_NAME - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"
