"""The monitor's HTTP API from the command line: every call has a timeout and says what it could not reach.

Errors are typed: Unreachable (no answer from URL within the timeout), NotFound
(404), IllegalCommand (409), ValidationFailed (422), each carrying the API's
own detail, so `ferry flow suspend` prints the same reason the dashboard shows.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from shared.errors import FerryError, IllegalCommand, NotFound, Unreachable, ValidationFailed

DEFAULT_URL = "http://127.0.0.1:8083"
_BY_STATUS = {404: NotFound, 409: IllegalCommand, 422: ValidationFailed}


def default_url() -> str:
    return os.environ.get("FERRY_MONITOR_URL", DEFAULT_URL)


class MonitorClient:
    def __init__(self, url: str | None = None, timeout_s: float = 10.0):
        self.url = (url or default_url()).rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "MonitorClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise Unreachable(f"the monitor at {self.url} did not answer {method} {path} within "
                              f"{self.timeout_s:g}s (--monitor or FERRY_MONITOR_URL)") from exc
        except httpx.TransportError as exc:
            raise Unreachable(f"could not reach the monitor at {self.url} ({type(exc).__name__}: {exc}); "
                              f"is it running? (--monitor or FERRY_MONITOR_URL)") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            error = _BY_STATUS.get(response.status_code, FerryError)
            raise error(f"{method} {path}: HTTP {response.status_code}: {detail}")
        return response.json()

    def flows(self, status: str | None = None, limit: int = 100) -> list[dict]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self._call("GET", "/flows", params=params)

    def flow(self, flow_id: str) -> dict:
        return self._call("GET", f"/flows/{flow_id}")

    def rounds(self, task_id: str) -> dict:
        return self._call("GET", f"/tasks/{task_id}/rounds")

    def history(self, kind: str, entity_id: str) -> list[dict]:
        return self._call("GET", f"/{kind}/{entity_id}/history")

    def command(self, verb: str, flow_id: str, reason: str = "") -> dict:
        return self._call("POST", f"/flows/{flow_id}/{verb}", params={"reason": reason} if reason else None)
