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

from fastapi import APIRouter, Body, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

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


# Ids the splitter makes: safe names joined by '.', or a hashed form of them (a-z, 0-9, '.', '-').
ID_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,252}$"
_ID_DOC = "a flow, task or algorithm task id: 1-253 characters of a-z, 0-9, '.' and '-'"
MAX_LIMIT = 1000
MAX_REASON = 500


def _id(what: str, strict: bool = False):
    """A path id. Reads take any 1-253 characters (a rejected flow keeps the id it was sent with);
    commands only ids the splitter can have made."""
    if strict:
        return Path(..., pattern=ID_PATTERN, description=f"the {what} id ({_ID_DOC})")
    return Path(..., min_length=1, max_length=253, description=f"the {what} id")


class CommandBody(BaseModel):
    """Optional JSON body of suspend/resume/cancel; anything else in it is refused (422)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=MAX_REASON, description="why, for the history")


_NOT_FOUND = {404: {"description": "no such flow or task"}}
_COMMAND_RESPONSES = {**_NOT_FOUND, 409: {"description": "the command makes no sense in the current status"},
                      422: {"description": "an invalid id, reason or body"}}


def _not_found(kind: str, ident: str) -> HTTPException:
    return HTTPException(404, detail=f"unknown {kind} {ident!r}")


def build_router(state: Callable[[], MonitorState], publish_command: Callable) -> APIRouter:
    router = APIRouter()

    @router.get("/flows", responses={422: {"description": "an unknown status, or limit/offset out of range"}})
    async def flows(status: str | None = Query(None, description="only flows in this status, e.g. RUNNING"),
                    limit: int = Query(100, ge=1, le=MAX_LIMIT, description=f"at most this many (1-{MAX_LIMIT})"),
                    offset: int = Query(0, ge=0, description="skip this many first")) -> list[dict]:
        wanted = None
        if status is not None:
            try:
                wanted = Status[status.upper()]
            except KeyError:
                raise HTTPException(422, detail=f"status: unknown value {status!r}; one of {[s.name for s in Status]}")
        return [_plain(asdict(f)) for f in list_flows(state(), wanted, limit, offset)]

    @router.get("/flows/{flow_id}", responses=_NOT_FOUND)
    async def flow(flow_id: str = _id("flow")) -> dict:
        body = flow_json(state(), flow_id)
        if body is None:
            raise _not_found("flow", flow_id)
        return body

    @router.get("/tasks/{task_id}", responses=_NOT_FOUND)
    async def task(task_id: str = _id("task")) -> dict:
        view = get_task(state(), task_id)
        if view is None:
            raise _not_found("task", task_id)
        return _plain(asdict(view))

    @router.get("/algorithm-tasks/{algo_task_id}", responses=_NOT_FOUND)
    async def algo_task(algo_task_id: str = _id("algorithm task")) -> dict:
        view = get_algo_task(state(), algo_task_id)
        if view is None:
            raise _not_found("algorithm task", algo_task_id)
        return _plain(asdict(view))

    @router.get("/{kind}/{entity_id}/history", responses=_NOT_FOUND)
    async def entity_history(kind: str, entity_id: str = _id("entity")) -> list[dict]:
        entity = {"flows": EntityKind.FLOW, "tasks": EntityKind.TASK,
                  "algorithm-tasks": EntityKind.ALGORITHM_TASK}.get(kind)
        if entity is None:
            raise HTTPException(404, detail=f"unknown collection {kind!r}")
        records = history(state(), entity, entity_id)
        if records is None:
            raise _not_found(kind.rstrip("s"), entity_id)
        return [_plain(asdict(r)) for r in records]

    def _reason(query: str, body: CommandBody | None) -> str:
        if body is not None and body.reason and query and body.reason != query:
            raise HTTPException(422, detail="reason: given in the query and the body, differently")
        return (body.reason if body is not None else "") or query

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
            async def on_flow(flow_id: str = _id("flow", strict=True),
                              reason: str = Query("", max_length=MAX_REASON, description="why (or in the body)"),
                              body: CommandBody | None = Body(None)) -> dict:
                return await _command(kind, flow_id, "", _reason(reason, body))

            async def on_task(task_id: str = _id("task", strict=True),
                              reason: str = Query("", max_length=MAX_REASON, description="why (or in the body)"),
                              body: CommandBody | None = Body(None)) -> dict:
                return await _command(kind, "", task_id, _reason(reason, body))
            return on_flow, on_task
        on_flow, on_task = make()
        router.add_api_route(f"/flows/{{flow_id}}/{verb}", on_flow, methods=["POST"], status_code=202,
                             responses=_COMMAND_RESPONSES, summary=f"{verb.capitalize()} every task of a flow")
        router.add_api_route(f"/tasks/{{task_id}}/{verb}", on_task, methods=["POST"], status_code=202,
                             responses=_COMMAND_RESPONSES, summary=f"{verb.capitalize()} one task")
    return router
