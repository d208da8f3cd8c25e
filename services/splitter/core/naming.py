"""Which names are safe, and the ids the splitter derives from them.

Safe names
----------
Flow ids, step names and party names end up in Kubernetes Job names, label
values and Kafka keys, so they follow the strictest of those rules, the
DNS-1123 label: 1 to 63 characters of ``a-z``, ``0-9`` and ``-``, starting and
ending with a letter or digit (``SAFE_NAME``).

Derived ids
-----------
``task_id(flow, step)``                 = ``"{flow}.{step}"``
``algo_task_id(flow, step, party, role)`` = ``"{flow}.{step}.{party}.{role}"``

The ``.`` separator cannot occur inside a safe name, which makes the readable
form injective: flow ``a-b`` step ``c`` and flow ``a`` step ``b-c`` stay
distinct. When the readable form is longer than 63 characters, or a part is
not a safe name (role names come from plug-in specs, which the splitter does
not police), the id is instead

    sanitised prefix (cut to fit) + "-" + first 12 hex digits of sha256(parts)

so it is still readable at a glance, at most 63 characters, made of
``a-z0-9.-`` only, a valid Kubernetes label value and DNS-1123 subdomain, and
derived from the exact parts (48 bits of hash keep distinct inputs distinct).
The same inputs always give the same id, which is what makes redelivered
flows plan to the same tasks.
"""

from __future__ import annotations

import hashlib
import re

MAX_ID_LENGTH = 63  # Kubernetes label values and DNS-1123 labels
SAFE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
SAFE_NAME_RULE = ("must be 1-63 characters of lowercase letters, digits and '-', "
                  "starting and ending with a letter or digit")
DIGEST_LENGTH = 12
_SEPARATOR = "."
_UNSAFE_RUN = re.compile(r"[^a-z0-9-]+")


def is_safe_name(name: str) -> bool:
    return len(name) <= MAX_ID_LENGTH and SAFE_NAME.match(name) is not None


def task_id(flow_id: str, step: str) -> str:
    return derived_id(flow_id, step)


def algo_task_id(flow_id: str, step: str, party: str, role: str) -> str:
    return derived_id(flow_id, step, party, role)


def derived_id(*parts: str) -> str:
    readable = _SEPARATOR.join(parts)
    if len(readable) <= MAX_ID_LENGTH and all(is_safe_name(p) for p in parts):
        return readable
    # \0 cannot occur in any part, so the hashed text is as injective as the tuple of parts
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:DIGEST_LENGTH]
    prefix = _SEPARATOR.join(_sanitised(p) for p in parts)
    keep = MAX_ID_LENGTH - DIGEST_LENGTH - 1
    prefix = prefix[:keep].rstrip(".-")
    return f"{prefix}-{digest}" if prefix else digest


def _sanitised(part: str) -> str:
    return _UNSAFE_RUN.sub("-", part.lower()).strip("-") or "x"
