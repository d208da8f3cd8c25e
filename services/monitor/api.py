"""The monitor's query and control API (FastAPI; OpenAPI at /docs and /openapi.json).

Reads come from the folded state; suspend/resume/cancel are checked against it
(409 with the reason when illegal) and then published as TaskCommands, which
the scheduler carries out and the monitor folds like any other event.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import asdict
from typing import Any, Callable

from fastapi import APIRouter, HTTPException

from services.monitor.core import check_command
from services.monitor.core.query import get_algo_task, get_flow, get_task, history, list_flows, list_tasks
from services.monitor.core.state import MonitorState
from shared.events import CommandKind, EntityKind, Status, TaskCommand


def _plain(value: Any) -> Any:
    if isinstance(value, enum.IntEnum):
        return value.name  # wire enums: Status, CommandKind, EntityKind
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def flow_json(state: MonitorState, flow_id: str) -> dict | None:
    flow = get_flow(state, flow_id)
    if flow is None:
        return None
    body = _plain(asdict(flow))
    body["tasks"] = [_plain(asdict(t)) for t in list_tasks(state, flow_id)]
    return body


def _not_found(kind: str, ident: str) -> HTTPException:
    return HTTPException(404, detail=f"unknown {kind} {ident!r}")


def build_router(state: Callable[[], MonitorState], publish_command: Callable) -> APIRouter:
    router = APIRouter()

    @router.get("/flows")
    async def flows(status: str | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
        wanted = None
        if status is not None:
            try:
                wanted = Status[status.upper()]
            except KeyError:
                raise HTTPException(422, detail=f"status: unknown value {status!r}; one of {[s.name for s in Status]}")
        return [_plain(asdict(f)) for f in list_flows(state(), wanted, limit, offset)]

    @router.get("/flows/{flow_id}")
    async def flow(flow_id: str) -> dict:
        body = flow_json(state(), flow_id)
        if body is None:
            raise _not_found("flow", flow_id)
        return body

    @router.get("/tasks/{task_id}")
    async def task(task_id: str) -> dict:
        view = get_task(state(), task_id)
        if view is None:
            raise _not_found("task", task_id)
        return _plain(asdict(view))

    @router.get("/algorithm-tasks/{algo_task_id}")
    async def algo_task(algo_task_id: str) -> dict:
        view = get_algo_task(state(), algo_task_id)
        if view is None:
            raise _not_found("algorithm task", algo_task_id)
        return _plain(asdict(view))

    @router.get("/{kind}/{entity_id}/history")
    async def entity_history(kind: str, entity_id: str) -> list[dict]:
        entity = {"flows": EntityKind.FLOW, "tasks": EntityKind.TASK,
                  "algorithm-tasks": EntityKind.ALGORITHM_TASK}.get(kind)
        if entity is None:
            raise HTTPException(404, detail=f"unknown collection {kind!r}")
        records = history(state(), entity, entity_id)
        if records is None:
            raise _not_found(kind.rstrip("s"), entity_id)
        return [_plain(asdict(r)) for r in records]

    async def _command(kind: CommandKind, flow_id: str, task_id: str, reason: str) -> dict:
        current = state()
        if task_id:
            view = get_task(current, task_id)
            if view is None:
                raise _not_found("task", task_id)
            flow_id = view.flow_id
        elif get_flow(current, flow_id) is None:
            raise _not_found("flow", flow_id)
        command = TaskCommand(uuid.uuid4().hex, kind, flow_id, task_id, "api", reason)
        why_not = check_command(current, command)
        if why_not is not None:
            raise HTTPException(409, detail=why_not)
        await publish_command(command)
        return {"command_id": command.command_id, "kind": kind.name, "flow_id": flow_id, "task_id": task_id}

    for verb, kind in (("suspend", CommandKind.SUSPEND), ("resume", CommandKind.RESUME),
                       ("cancel", CommandKind.CANCEL)):
        def make(kind=kind):
            async def on_flow(flow_id: str, reason: str = "") -> dict:
                return await _command(kind, flow_id, "", reason)

            async def on_task(task_id: str, reason: str = "") -> dict:
                return await _command(kind, "", task_id, reason)
            return on_flow, on_task
        on_flow, on_task = make()
        router.add_api_route(f"/flows/{{flow_id}}/{verb}", on_flow, methods=["POST"], status_code=202)
        router.add_api_route(f"/tasks/{{task_id}}/{verb}", on_task, methods=["POST"], status_code=202)
    return router
