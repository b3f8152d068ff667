"""Assistants API v2 runs: create (streamed or polled), submit_tool_outputs, cancel, steps."""

from __future__ import annotations

import asyncio
import copy
from typing import TYPE_CHECKING

from aiohttp import web

from .assistants_api import (
    AssistantsAPI,
    active_run,
    last_user_text,
    make_message,
    new_run,
)
from .common import BadRequest, NotFound, body_of, http_error_response, paginate
from .script import (
    CutStream,
    HTTPError,
    Reply,
    Stall,
    Text,
    ToolCalls,
    split_args,
    text_plan,
    with_stop,
)
from .sse import (
    JSON,
    ClientGone,
    Cut,
    Emits,
    Event,
    Pause,
    RawData,
    SSEStream,
    background_pauser,
    drain,
    json_response,
    new_id,
    now,
    pump,
    truncated_json,
)

if TYPE_CHECKING:
    from .server import FakeUpstream

_DONE = Event("done", "[DONE]")
_USAGE = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}


def _ev(name: str, obj: JSON) -> Event:
    return Event(name, copy.deepcopy(obj))


class RunsAPI:
    def __init__(self, fake: FakeUpstream, assistants: AssistantsAPI) -> None:
        self.fake = fake
        self.assistants = assistants
        self.steps: dict[str, list[JSON]] = {}  # run id -> steps (oldest first)

    def routes(self) -> list[web.RouteDef]:
        base = "/v1/threads/{tid}/runs"
        return [
            web.post("/v1/threads/runs", self.create_thread_and_run),
            web.post(base, self.create),
            web.get(base, self.list),
            web.get(base + "/{rid}", self.retrieve),
            web.post(base + "/{rid}", self.update),
            web.post(base + "/{rid}/cancel", self.cancel),
            web.post(base + "/{rid}/submit_tool_outputs", self.submit_tool_outputs),
            web.get(base + "/{rid}/steps", self.list_steps),
            web.get(base + "/{rid}/steps/{sid}", self.get_step),
        ]

    def _run(self, request: web.Request) -> JSON:
        tid = self.assistants.thread_id(request)
        rid = request.match_info["rid"]
        run = self.fake.runs.get(rid)
        if run is None or run["thread_id"] != tid:
            raise NotFound(f"No run found with id '{rid}'.")
        return run

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_response(self._run(request))

    async def update(self, request: web.Request) -> web.Response:
        run = self._run(request)
        body = body_of(request)
        if "metadata" in body:
            run["metadata"] = body["metadata"] or {}
        return json_response(run)

    async def list(self, request: web.Request) -> web.Response:
        tid = self.assistants.thread_id(request)
        runs = [r for r in self.fake.runs.values() if r["thread_id"] == tid]
        return json_response(paginate(runs, request.query))

    async def list_steps(self, request: web.Request) -> web.Response:
        return json_response(paginate(self.steps.get(self._run(request)["id"], []), request.query))

    async def get_step(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        for step in self.steps.get(self._run(request)["id"], []):
            if step["id"] == sid:
                return json_response(step)
        raise NotFound(f"No run step found with id '{sid}'.")

    async def create_thread_and_run(self, request: web.Request) -> web.StreamResponse:
        body = body_of(request)
        self.assistants.assistant(str(body.get("assistant_id")))
        thread = self.assistants.new_thread(body.get("thread") or {})
        return await self._create(request, thread["id"], body, thread_created=thread)

    async def create(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, self.assistants.thread_id(request), body_of(request))

    async def _create(
        self, request: web.Request, tid: str, body: JSON, thread_created: JSON | None = None
    ) -> web.StreamResponse:
        fake = self.fake
        aid = body.get("assistant_id")
        if not aid:
            raise BadRequest("Missing required parameter: 'assistant_id'.", param="assistant_id")
        assistant = self.assistants.assistant(aid)
        running = active_run(fake, tid)
        if running:
            raise BadRequest(f"Thread {tid} already has an active run {running}.")
        extra = [
            self.assistants.received(tid, m, f"additional_messages[{i}]")
            for i, m in enumerate(body.get("additional_messages") or [])
        ]
        reply = fake.pop_reply(last_user_text(fake.threads[tid] + extra))
        if isinstance(reply, HTTPError):
            return http_error_response(reply)
        fake.threads[tid].extend(extra)
        run = new_run(tid, assistant, body)
        fake.runs[run["id"]] = run
        self.steps[run["id"]] = []
        emits = self._start(run, reply, thread_created)
        return await self._respond(request, emits, run, bool(body.get("stream")))

    async def submit_tool_outputs(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        run = self._run(request)
        body = body_of(request)
        if run["status"] != "requires_action":
            raise BadRequest(f'Runs in status "{run["status"]}" do not accept tool outputs.')
        outputs = body.get("tool_outputs")
        if not isinstance(outputs, list):
            raise BadRequest("Missing required parameter: 'tool_outputs'.", param="tool_outputs")
        expected = [c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"]]
        got = [o.get("tool_call_id") for o in outputs if isinstance(o, dict)]
        if sorted(map(str, got)) != sorted(expected):
            raise BadRequest(
                f"Expected tool outputs for call_ids {expected}, got {got}", param="tool_outputs"
            )
        reply = fake.pop_reply(last_user_text(fake.threads.get(run["thread_id"], [])))
        if isinstance(reply, HTTPError):
            return http_error_response(reply)
        by_id = {o["tool_call_id"]: str(o.get("output", "")) for o in outputs}
        for call_id in expected:
            fake.record_tool_output(call_id, by_id[call_id])
        step = self.steps[run["id"]][-1]
        for call in step["step_details"]["tool_calls"]:
            call["function"]["output"] = by_id.get(call["id"])
        emits = self._resume(run, step, reply)
        return await self._respond(request, emits, run, bool(body.get("stream")))

    async def cancel(self, request: web.Request) -> web.Response:
        run = self._run(request)
        if run["status"] not in ("queued", "in_progress", "requires_action"):
            raise BadRequest(f"Cannot cancel run with status '{run['status']}'.")
        run["status"] = "cancelling"
        answer = json_response(run)
        if self.fake.cancel_latency > 0:
            self.fake.spawn(self._finish_cancel(run, self.fake.cancel_latency))
        else:
            self._cancelled(run)
        return answer

    async def _finish_cancel(self, run: JSON, latency: float) -> None:
        await asyncio.sleep(latency)
        self._cancelled(run)

    def _cancelled(self, run: JSON) -> None:
        stamp = now()
        run.update(status="cancelled", cancelled_at=stamp, required_action=None, expires_at=None)
        for step in self.steps.get(run["id"], []):
            if step["status"] == "in_progress":
                step.update(status="cancelled", cancelled_at=stamp)
        for message in self.fake.threads.get(run["thread_id"], []):
            if message["run_id"] == run["id"] and message["status"] == "in_progress":
                message.update(
                    status="incomplete",
                    incomplete_at=stamp,
                    incomplete_details={"reason": "run_cancelled"},
                )

    async def _respond(
        self, request: web.Request, emits: Emits, run: JSON, stream: bool
    ) -> web.StreamResponse:
        if not stream:
            snapshot = copy.deepcopy(run)
            self.fake.spawn(drain(emits, background_pauser(self.fake.closing)))
            return json_response(snapshot)
        sse = SSEStream(request, self.fake.closing)
        try:
            await sse.open()
            outcome = await pump(sse, emits)
        except (ConnectionError, ClientGone):
            outcome = "gone"
        if outcome == "gone":
            # Real runs keep going server-side; the fake leaves the run active until /cancel.
            run["client_disconnected"] = True
            await emits.aclose()
        return sse.response

    async def _start(self, run: JSON, reply: Reply, thread: JSON | None) -> Emits:
        if thread is not None:
            yield _ev("thread.created", thread)
        yield _ev("thread.run.created", run)
        yield _ev("thread.run.queued", run)
        run.update(status="in_progress", started_at=now())
        yield _ev("thread.run.in_progress", run)
        async for item in self._step(run, reply):
            yield item

    async def _resume(self, run: JSON, step: JSON, reply: Reply) -> Emits:
        run.update(status="queued", required_action=None)
        yield _ev("thread.run.queued", run)
        run["status"] = "in_progress"
        yield _ev("thread.run.in_progress", run)
        step.update(status="completed", completed_at=now(), usage=dict(_USAGE))
        yield _ev("thread.run.step.completed", step)
        async for item in self._step(run, reply):
            yield item

    def _new_step(self, run: JSON, kind: str, details: JSON) -> JSON:
        step: JSON = {
            "id": new_id("step_"),
            "object": "thread.run.step",
            "created_at": now(),
            "run_id": run["id"],
            "assistant_id": run["assistant_id"],
            "thread_id": run["thread_id"],
            "type": kind,
            "status": "in_progress",
            "cancelled_at": None,
            "completed_at": None,
            "expired_at": None,
            "failed_at": None,
            "last_error": None,
            "step_details": details,
            "usage": None,
        }
        self.steps[run["id"]].append(step)
        return step

    async def _cancel_tail(self, run: JSON) -> Emits:
        """The end of a stream whose run was cancelled meanwhile."""
        while run["status"] == "cancelling":
            yield Pause(0.01)
        if run["status"] == "cancelled":
            yield _ev("thread.run.cancelled", run)
        yield _DONE

    async def _step(self, run: JSON, reply: Reply) -> Emits:
        """One model turn inside a run: a tool_calls step or a message_creation step."""
        fake = self.fake
        if isinstance(reply, Stall):
            yield Pause(reply.seconds)
            reply = reply.then or Text(f"Echo: {last_user_text(fake.threads[run['thread_id']])}")
        if run["status"] != "in_progress":
            async for item in self._cancel_tail(run):
                yield item
            return
        if isinstance(reply, ToolCalls):
            delay = fake.delay_for(reply.delay)
            step = self._new_step(run, "tool_calls", {"type": "tool_calls", "tool_calls": []})
            yield _ev("thread.run.step.created", step)
            yield _ev("thread.run.step.in_progress", step)
            calls: list[JSON] = []
            for index, call in enumerate(reply.calls):
                call_id = call.call_id or new_id("call_")
                first = {"name": call.name, "arguments": "", "output": None}
                deltas = [{"id": call_id, "function": first}]
                deltas += [{"function": {"arguments": p}} for p in split_args(call.arguments)]
                for n, delta in enumerate(deltas):
                    if n and delay:
                        yield Pause(delay)
                        if run["status"] != "in_progress":
                            async for item in self._cancel_tail(run):
                                yield item
                            return
                    details = {
                        "type": "tool_calls",
                        "tool_calls": [{"index": index, "type": "function", **delta}],
                    }
                    yield Event(
                        "thread.run.step.delta",
                        {
                            "id": step["id"],
                            "object": "thread.run.step.delta",
                            "delta": {"step_details": details},
                        },
                    )
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": call.name,
                            "arguments": call.arguments,
                            "output": None,
                        },
                    }
                )
            step["step_details"]["tool_calls"] = calls
            required = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {
                        "name": c["function"]["name"],
                        "arguments": c["function"]["arguments"],
                    },
                }
                for c in calls
            ]
            run.update(
                status="requires_action",
                required_action={
                    "type": "submit_tool_outputs",
                    "submit_tool_outputs": {"tool_calls": required},
                },
            )
            yield _ev("thread.run.requires_action", run)
            yield _DONE
            return
        pieces, stop_at, delay = text_plan(reply, fake.delta_delay)
        tid = run["thread_id"]
        message = make_message(
            tid,
            "assistant",
            [],
            run_id=run["id"],
            assistant_id=run["assistant_id"],
            status="in_progress",
        )
        if tid in fake.threads:
            fake.threads[tid].append(message)
        step = self._new_step(
            run,
            "message_creation",
            {"type": "message_creation", "message_creation": {"message_id": message["id"]}},
        )
        yield _ev("thread.run.step.created", step)
        yield _ev("thread.run.step.in_progress", step)
        yield _ev("thread.message.created", message)
        yield _ev("thread.message.in_progress", message)
        text = ""
        for i, piece in with_stop(pieces, stop_at):
            delta = {
                "id": message["id"],
                "object": "thread.message.delta",
                "delta": {
                    "content": [
                        {"index": 0, "type": "text", "text": {"value": piece, "annotations": []}}
                    ]
                },
            }
            if i < 0:
                if isinstance(reply, CutStream):
                    yield Cut(clean=reply.clean)
                else:
                    yield RawData(truncated_json(delta), "thread.message.delta")
                return
            if i and delay:
                yield Pause(delay)
                if run["status"] != "in_progress":
                    async for item in self._cancel_tail(run):
                        yield item
                    return
            text += piece
            message["content"] = [{"type": "text", "text": {"value": text, "annotations": []}}]
            yield Event("thread.message.delta", delta)
        stamp = now()
        message.update(status="completed", completed_at=stamp)
        yield _ev("thread.message.completed", message)
        step.update(status="completed", completed_at=stamp, usage=dict(_USAGE))
        yield _ev("thread.run.step.completed", step)
        run.update(status="completed", completed_at=stamp, expires_at=None, usage=dict(_USAGE))
        yield _ev("thread.run.completed", run)
        yield _DONE
