"""Function tools on their own: schema derivation, argument checks, execution, built-ins, loading.

Pure: no server, no provider, no conftest fixtures (runs with `--noconftest`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pytest

from server.providers.base import ToolCall, ToolSpec
from server.tools import (
    BUILTINS,
    RoomView,
    Tool,
    ToolError,
    ToolOutcome,
    ToolRegistry,
    current_time,
    load_registry,
    pick_participant,
    roll_dice,
    tool,
    who_is_here,
)

BUILTIN_NAMES = ["current_time", "who_is_here", "roll_dice", "pick_participant"]


class FakeRoom:
    """A RoomView over a fixed list of (nickname, since ms)."""

    def __init__(self, *names: str) -> None:
        self._people = [(name, 1_700_000_000_000 + i * 60_000) for i, name in enumerate(names)]

    def people(self) -> list[tuple[str, int]]:
        return list(self._people)


def call(name: str, arguments: Any = None, call_id: str = "c1") -> ToolCall:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return ToolCall(call_id, name, raw)


def error_of(outcome: ToolOutcome) -> str:
    assert not outcome.ok
    body = json.loads(outcome.output)
    assert list(body) == ["error"]
    message: str = body["error"]
    return message


def props(t: Tool) -> dict[str, Any]:
    properties: dict[str, Any] = t.parameters["properties"]
    return properties


# ----- schema derivation -----
async def greet(name: str, times: int, ratio: float, loud: bool) -> str:
    """Greet someone.

    More detail that the model does not need.
    """
    return name


def test_name_description_and_scalar_types() -> None:
    t = tool(greet)
    assert (t.name, t.description, t.needs_room) == ("greet", "Greet someone.", False)
    assert t.parameters == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "times": {"type": "integer"},
            "ratio": {"type": "number"},
            "loud": {"type": "boolean"},
        },
        "required": ["name", "times", "ratio", "loud"],
        "additionalProperties": False,
    }
    assert t.spec == ToolSpec("greet", "Greet someone.", t.parameters)


async def shapes(
    unit: Literal["c", "f"],
    level: Literal[1, 2, 3],
    tags: list[str],
    grid: list[list[int]],
    note: str | None,
    legacy: Optional[int],  # noqa: UP045 - the old spelling must work too
    limit: int = 10,
    mode: Literal["fast", "slow"] = "fast",
    maybe: Literal["a", "b"] | None = None,
) -> None:
    """Exercise every supported annotation."""


def test_literal_list_optional_and_defaults() -> None:
    t = tool(shapes)
    p = props(t)
    assert p["unit"] == {"type": "string", "enum": ["c", "f"]}
    assert p["level"] == {"type": "integer", "enum": [1, 2, 3]}
    assert p["tags"] == {"type": "array", "items": {"type": "string"}}
    assert p["grid"] == {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}
    assert p["note"] == {"type": ["string", "null"]}
    assert p["legacy"] == {"type": ["integer", "null"]}
    assert p["limit"] == {"type": "integer", "default": 10}
    assert p["mode"] == {"type": "string", "enum": ["fast", "slow"], "default": "fast"}
    assert p["maybe"] == {"type": ["string", "null"], "enum": ["a", "b", None], "default": None}
    assert t.parameters["required"] == ["unit", "level", "tags", "grid"]


async def described(
    city: Annotated[str, "city name, e.g. Paris"],
    days: Annotated[int | None, "forecast length"] = None,
    units: str = "metric",
) -> None:
    """Weather forecast.

    Args:
        city: ignored, Annotated wins.
        units (str): metric or imperial,
            as the user prefers.

    Returns:
        Nothing useful.
    """


def test_annotated_and_docstring_descriptions() -> None:
    p = props(tool(described))
    assert p["city"] == {"type": "string", "description": "city name, e.g. Paris"}
    assert p["days"] == {
        "type": ["integer", "null"],
        "description": "forecast length",
        "default": None,
    }
    assert p["units"] == {
        "type": "string",
        "description": "metric or imperial, as the user prefers.",
        "default": "metric",
    }
    assert tool(described).description == "Weather forecast."


async def with_room(room: RoomView, count: int = 1) -> int:
    """Needs the room."""
    return len(room.people()) * count


def test_room_parameter_is_injected_not_described() -> None:
    t = tool(with_room)
    assert t.needs_room
    assert list(props(t)) == ["count"]


def test_no_parameters() -> None:
    async def ping() -> str:
        """Reply pong."""
        return "pong"

    assert tool(ping).parameters["properties"] == {}


# ----- malformed tools -----
async def _undocumented(x: int) -> None:
    pass


async def _unannotated(x) -> None:  # type: ignore[no-untyped-def]
    """Doc."""


async def _varargs(*xs: int) -> None:
    """Doc."""


async def _kwargs(**kw: int) -> None:
    """Doc."""


async def _posonly(x: int, /) -> None:
    """Doc."""


async def _dict_param(x: dict[str, int]) -> None:
    """Doc."""


async def _bare_list(x: list) -> None:  # type: ignore[type-arg]
    """Doc."""


async def _union(x: int | str) -> None:
    """Doc."""


async def _object_param(x: object) -> None:
    """Doc."""


async def _bad_default_value(x: str = Path("p")) -> None:  # type: ignore[assignment]
    """Doc."""


async def _room_misnamed(view: RoomView) -> None:
    """Doc."""


async def _unresolvable(x: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
    """Doc."""


def _sync(x: int) -> None:
    """Doc."""


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (_sync, "tool '_sync': must be an async function"),
        (_undocumented, "tool '_undocumented': needs a docstring"),
        (_unannotated, "tool '_unannotated': parameter 'x': has no type annotation"),
        (_varargs, "tool '_varargs': parameter 'xs': *args"),
        (_kwargs, "tool '_kwargs': parameter 'kw': *args, **kwargs"),
        (_posonly, "tool '_posonly': parameter 'x': *args, **kwargs and positional-only"),
        (_dict_param, "tool '_dict_param': parameter 'x': unsupported annotation"),
        (_bare_list, "tool '_bare_list': parameter 'x': unsupported annotation"),
        (_union, "tool '_union': parameter 'x': unions other than `X | None`"),
        (_object_param, "tool '_object_param': parameter 'x': unsupported annotation"),
        (_bad_default_value, "tool '_bad_default_value': parameter 'x': the default"),
        (_room_misnamed, "tool '_room_misnamed': parameter 'view': a RoomView parameter"),
        (_unresolvable, "tool '_unresolvable': cannot resolve its type hints"),
    ],
)
def test_malformed_tools_are_rejected_with_a_clear_message(fn: Any, expected: str) -> None:
    with pytest.raises(ToolError) as info:
        tool(fn)
    assert str(info.value).startswith(expected)


def test_names_the_apis_reject_are_rejected() -> None:
    async def café() -> None:
        """Doc."""

    with pytest.raises(ToolError, match="the name must be 1-64 characters"):
        tool(café)


def test_literal_of_unsupported_values_is_rejected() -> None:
    async def odd(x: Literal[b"x"]) -> None:
        """Doc."""

    with pytest.raises(ToolError, match="Literal values must be"):
        tool(odd)


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ToolError, match="'greet': defined twice"):
        ToolRegistry([tool(greet), tool(greet)])


# ----- execution -----
async def add(a: int, b: int = 0) -> int:
    """Add two numbers."""
    return a + b


async def echo(text: str) -> str:
    """Echo text."""
    return text


async def choose(mode: Literal["fast", "slow"], tags: list[str] | None) -> dict[str, Any]:
    """Choose."""
    return {"mode": mode, "tags": tags}


async def explode(reason: str) -> None:
    """Always fails."""
    raise RuntimeError(reason)


async def own_timeout() -> None:
    """Times out on its own, long before the registry's limit."""
    async with asyncio.timeout(0):
        await asyncio.sleep(1)


async def nap(seconds: float) -> str:
    """Sleep a while."""
    await asyncio.sleep(seconds)
    return "rested"


async def odd_result() -> dict[str, Any]:
    """Returns something json cannot encode by itself."""
    return {"when": datetime(2025, 1, 2, 3, 4, 5), "path": Path("a/b")}


async def circular() -> list[Any]:
    """Returns a list that contains itself."""
    loop: list[Any] = []
    loop.append(loop)
    return loop


REGISTRY = ToolRegistry(
    tool(fn) for fn in (add, echo, choose, explode, own_timeout, nap, odd_result, circular)
)
REGISTRY_WITH_ROOM = ToolRegistry([tool(with_room)])


async def run(name: str, arguments: Any = None, limit: float = 5) -> ToolOutcome:
    return await REGISTRY.execute(call(name, arguments), FakeRoom("Al"), limit)


async def test_success_encodes_the_result_as_json() -> None:
    outcome = await run("add", {"a": 2, "b": 3})
    assert outcome == ToolOutcome("c1", "add", True, "5")
    assert outcome.result.call_id == "c1" and outcome.result.output == "5"


async def test_strings_are_returned_as_they_are_and_defaults_apply() -> None:
    assert (await run("echo", {"text": "hi there"})).output == "hi there"
    assert (await run("add", {"a": 2})).output == "2"


async def test_optional_without_default_receives_none_and_null_is_accepted() -> None:
    assert json.loads((await run("choose", {"mode": "fast"})).output) == {
        "mode": "fast",
        "tags": None,
    }
    outcome = await run("choose", {"mode": "slow", "tags": None})
    assert json.loads(outcome.output)["tags"] is None


async def test_empty_arguments_mean_no_arguments() -> None:
    assert (await run("add", "")).output.startswith('{"error"')  # `a` is still required
    assert (await REGISTRY_WITH_ROOM.execute(call("with_room", " "), FakeRoom("A"), 1)).ok


async def test_integral_floats_count_as_integers() -> None:
    assert (await run("add", {"a": 2.0, "b": 1})).output == "3"


async def test_non_json_results_use_str() -> None:
    outcome = await run("odd_result")
    assert outcome.ok
    assert json.loads(outcome.output) == {"when": "2025-01-02 03:04:05", "path": "a/b"}


async def test_unencodable_result_is_an_error() -> None:
    assert "returned a result that is not JSON" in error_of(await run("circular"))


async def test_room_is_injected() -> None:
    room = FakeRoom("A", "B")
    outcome = await REGISTRY_WITH_ROOM.execute(call("with_room", {"count": 2}), room, 1)
    assert outcome.output == "4"


async def test_unknown_tool_lists_the_available_ones() -> None:
    message = error_of(await run("nope"))
    assert message.startswith("unknown tool 'nope'; available: add, echo, choose, explode")
    assert error_of(await ToolRegistry().execute(call("x"), FakeRoom(), 1)) == (
        "unknown tool 'x'; available: none"
    )


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("add", "{a: 1", "invalid arguments for tool 'add': arguments are not valid JSON ("),
        ("add", "[1, 2]", "for tool 'add': arguments must be a JSON object, got array"),
        ("add", '"a"', "arguments must be a JSON object, got string"),
        ("add", "null", "arguments must be a JSON object, got null"),
        ("add", {"b": 1}, "missing required parameter 'a'"),
        ("add", {"a": "1"}, "parameter 'a' must be integer, got string"),
        ("add", {"a": 1.5}, "parameter 'a' must be integer, got number"),
        ("add", {"a": True}, "parameter 'a' must be integer, got boolean"),
        ("add", {"a": 1, "c": 2}, "unknown parameter 'c'; expected: a, b"),
        ("echo", {"text": None}, "parameter 'text' must be string, got null"),
        ("choose", {"mode": "medium"}, "'mode' must be one of \"fast\", \"slow\", got \"medium\""),
        ("choose", {"mode": "fast", "tags": "x"}, "'tags' must be array or null, got string"),
        ("choose", {"mode": "fast", "tags": ["a", 2]}, "parameter 'tags'[1] must be string, got"),
        ("nap", {"seconds": "1"}, "parameter 'seconds' must be number, got string"),
    ],
)
async def test_arguments_that_do_not_fit_are_explained(
    name: str, arguments: Any, expected: str
) -> None:
    assert expected in error_of(await run(name, arguments))


async def test_a_raising_tool_becomes_an_error_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="server.tools"):
        outcome = await run("explode", {"reason": "disk on fire"})
    assert error_of(outcome) == "tool 'explode' failed: RuntimeError: disk on fire"
    assert any(r.exc_info for r in caplog.records)


async def test_a_tools_own_timeout_is_a_failure_not_ours() -> None:
    assert error_of(await run("own_timeout")) == "tool 'own_timeout' failed: TimeoutError"


async def test_a_slow_tool_times_out() -> None:
    started = time.monotonic()
    outcome = await run("nap", {"seconds": 5}, limit=0.05)
    assert error_of(outcome) == "tool 'nap' timed out after 0.05 s"
    assert time.monotonic() - started < 2


async def test_calls_run_concurrently() -> None:
    calls = [call("nap", {"seconds": 0.2}, f"c{i}") for i in range(3)]
    started = time.monotonic()
    outcomes = await asyncio.gather(*(REGISTRY.execute(c, FakeRoom(), 5) for c in calls))
    assert time.monotonic() - started < 0.5
    assert [(o.call_id, o.ok, o.output) for o in outcomes] == [
        ("c0", True, "rested"),
        ("c1", True, "rested"),
        ("c2", True, "rested"),
    ]


async def test_cancellation_propagates() -> None:
    task = asyncio.create_task(run("nap", {"seconds": 5}))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ----- built-ins -----
def test_builtins_and_their_schemas() -> None:
    assert [t.name for t in BUILTINS] == BUILTIN_NAMES
    by_name = {t.name: t for t in BUILTINS}
    assert [t.name for t in BUILTINS if t.needs_room] == ["who_is_here", "pick_participant"]
    assert props(by_name["who_is_here"]) == {}
    assert props(by_name["current_time"])["timezone"]["type"] == ["string", "null"]
    assert by_name["roll_dice"].parameters["required"] == []
    assert all(t.description.endswith(".") for t in BUILTINS)


async def test_current_time_in_utc_by_default() -> None:
    before = datetime.now().astimezone()
    now = await current_time()
    parsed = datetime.fromisoformat(now["iso"])
    assert now["timezone"] == "UTC" and parsed.utcoffset() is not None
    assert parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs((parsed - before).total_seconds()) < 5
    assert now["weekday"] == parsed.strftime("%A")


async def test_current_time_in_a_zone() -> None:
    now = await current_time("Asia/Kolkata")  # no daylight saving: always +05:30
    assert now["timezone"] == "Asia/Kolkata"
    assert now["iso"].endswith("+05:30")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../etc/passwd", ""])
async def test_current_time_with_an_invalid_zone(zone: str) -> None:
    with pytest.raises(ValueError, match=r"unknown time zone .*IANA name"):
        await current_time(zone)
    outcome = await REGISTRY_OF_BUILTINS.execute(
        call("current_time", {"timezone": zone}), FakeRoom(), 1
    )
    assert error_of(outcome).startswith("tool 'current_time' failed: ValueError: unknown time zone")


REGISTRY_OF_BUILTINS = ToolRegistry(BUILTINS)


async def test_who_is_here() -> None:
    people = await who_is_here(FakeRoom("Al", "Bea"))
    assert people == [
        {"name": "Al", "since": "2023-11-14T22:13:20+00:00"},
        {"name": "Bea", "since": "2023-11-14T22:14:20+00:00"},
    ]
    assert await who_is_here(FakeRoom()) == []


async def test_pick_participant_picks_without_repeats() -> None:
    room = FakeRoom("Al", "Bea", "Cy", "Dee")
    one = await pick_participant(room)
    assert one["out_of"] == 4 and len(one["picked"]) == 1 and one["picked"][0] in "Al Bea Cy Dee"
    order = await pick_participant(room, count=4)
    assert sorted(order["picked"]) == ["Al", "Bea", "Cy", "Dee"]


async def test_pick_participant_is_fair_enough() -> None:
    room = FakeRoom("Al", "Bea", "Cy")
    firsts = Counter([(await pick_participant(room, 3))["picked"][0] for _ in range(600)])
    assert set(firsts) == {"Al", "Bea", "Cy"}
    assert min(firsts.values()) > 100  # expected 200 each; this fails by chance ~never


@pytest.mark.parametrize("count", [0, 4])
async def test_pick_participant_bounds(count: int) -> None:
    with pytest.raises(ValueError, match="count must be between 1 and 3"):
        await pick_participant(FakeRoom("Al", "Bea", "Cy"), count)


async def test_pick_participant_in_an_empty_room() -> None:
    with pytest.raises(ValueError, match="nobody is in the room"):
        await pick_participant(FakeRoom())


async def test_dice_show_every_face_and_stay_in_range() -> None:
    result = await roll_dice(sides=6, count=100)
    assert result["sides"] == 6 and len(result["rolls"]) == 100
    assert result["total"] == sum(result["rolls"])
    faces: Counter[int] = Counter()
    for _ in range(30):
        faces.update((await roll_dice(6, 100))["rolls"])
    assert set(faces) == {1, 2, 3, 4, 5, 6}
    assert min(faces.values()) > 350  # expected 500 each
    assert set((await roll_dice(2, 100))["rolls"]) <= {1, 2}


@pytest.mark.parametrize(
    ("sides", "count", "expected"),
    [
        (1, 1, "sides must be between 2 and 1000, got 1"),
        (1001, 1, "sides must be between 2 and 1000, got 1001"),
        (6, 0, "count must be between 1 and 100, got 0"),
        (6, 101, "count must be between 1 and 100, got 101"),
    ],
)
async def test_dice_bounds(sides: int, count: int, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        await roll_dice(sides, count)


async def test_dice_through_the_registry() -> None:
    outcome = await REGISTRY_OF_BUILTINS.execute(call("roll_dice", {"sides": 20}), FakeRoom(), 1)
    assert 1 <= json.loads(outcome.output)["rolls"][0] <= 20
    bad = await REGISTRY_OF_BUILTINS.execute(call("roll_dice", {"sides": 0}), FakeRoom(), 1)
    assert "sides must be between 2 and 1000, got 0" in error_of(bad)


# ----- loading from settings -----
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> str:
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_all_none_and_a_subset() -> None:
    assert load_registry().names() == BUILTIN_NAMES
    assert load_registry(" ALL ").names() == BUILTIN_NAMES
    assert "roll_dice" in load_registry() and "nope" not in load_registry()
    assert len(load_registry("none")) == 0
    assert len(load_registry("")) == 0
    subset = load_registry("roll_dice, who_is_here,")
    assert subset.names() == ["who_is_here", "roll_dice"]
    assert [s.name for s in subset.specs()] == ["who_is_here", "roll_dice"]


def test_unknown_enabled_name() -> None:
    with pytest.raises(ToolError) as info:
        load_registry("roll_dice,coin_flip")
    assert str(info.value) == (
        "TOOLS_ENABLED: unknown tool 'coin_flip'; available: "
        "current_time, who_is_here, roll_dice, pick_participant"
    )


async def test_the_examples_module() -> None:
    registry = load_registry("all", "examples.team_tools")
    assert registry.names() == [*BUILTIN_NAMES, "team_timezones", "standup_order"]
    only = load_registry("standup_order,team_timezones", "examples.team_tools")
    assert only.names() == ["team_timezones", "standup_order"]
    order = await only.execute(call("standup_order", {"last": "al"}), FakeRoom("Al", "Bea"), 1)
    assert json.loads(order.output)[-1] == "Al"
    zones = await only.execute(call("team_timezones", {"name": "bob"}), FakeRoom(), 1)
    assert json.loads(zones.output)[0]["timezone"] == "America/New_York"
    missing = await only.execute(call("team_timezones", {"name": "Zed"}), FakeRoom(), 1)
    assert "'Zed' is not in the team list" in error_of(missing)


def test_a_module_that_cannot_be_imported() -> None:
    with pytest.raises(ToolError, match=r"^TOOLS_MODULE: cannot import 'no_such_pkg\.tools': No"):
        load_registry(module="no_such_pkg.tools")


def test_a_module_that_fails_while_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = write_module(tmp_path, monkeypatch, "rt_broken", "raise RuntimeError('no config')\n")
    with pytest.raises(ToolError, match="TOOLS_MODULE: importing 'rt_broken' failed: Runtime"):
        load_registry(module=name)


def test_public_async_functions_defined_in_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = (
        "from server.tools import current_time, tool\n"
        "import asyncio\n"
        "from asyncio import sleep\n"
        "async def zeta(n: int) -> int:\n"
        "    '''Last letter.'''\n"
        "    return n\n"
        "async def _private() -> None:\n"
        "    '''Hidden.'''\n"
        "def helper() -> None:\n"
        "    '''Not async.'''\n"
        "@tool\n"
        "async def alpha() -> str:\n"
        "    '''Decorated.'''\n"
        "    return 'a'\n"
    )
    name = write_module(tmp_path, monkeypatch, "rt_found", source)
    assert load_registry(module=name).names() == [*BUILTIN_NAMES, "zeta", "alpha"]


def test_a_tools_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = (
        "from server.tools import tool\n"
        "async def one() -> int:\n"
        "    '''One.'''\n"
        "    return 1\n"
        "async def two() -> int:\n"
        "    '''Two.'''\n"
        "    return 2\n"
        "TOOLS = [tool(two)]\n"
    )
    name = write_module(tmp_path, monkeypatch, "rt_listed", source)
    assert load_registry("two", name).names() == ["two"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "async def bad(x):\n    '''Doc.'''\n",
            "TOOLS_MODULE: rt_bad: tool 'bad': parameter 'x': has no type annotation",
        ),
        (
            "async def nodoc(x: int) -> None:\n    pass\n",
            "TOOLS_MODULE: rt_bad: tool 'nodoc': needs a docstring",
        ),
        (
            "def sync() -> None:\n    '''Doc.'''\nTOOLS = [sync]\n",
            "TOOLS_MODULE: rt_bad: tool 'sync': must be an async function",
        ),
        ("TOOLS = 'roll_dice'\n", "TOOLS_MODULE: rt_bad.TOOLS must be a list"),
        ("TOOLS = ['roll_dice']\n", "TOOLS_MODULE: rt_bad: tool \"'roll_dice'\": must be an async"),
        ("TOOLS = []\n", "TOOLS_MODULE: 'rt_bad' defines no tools"),
        ("X = 1\n", "TOOLS_MODULE: 'rt_bad' defines no tools"),
        (
            "async def roll_dice() -> int:\n    '''Mine.'''\n    return 4\n",
            "TOOLS_MODULE: tool 'roll_dice' has the name of a built-in",
        ),
        (
            "async def twice() -> None:\n    '''Doc.'''\nTOOLS = [twice, twice]\n",
            "TOOLS_MODULE: tool 'twice': defined twice",
        ),
    ],
)
def test_a_malformed_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    name = write_module(tmp_path, monkeypatch, "rt_bad", source)
    with pytest.raises(ToolError) as info:
        load_registry(module=name)
    assert str(info.value).startswith(expected)
