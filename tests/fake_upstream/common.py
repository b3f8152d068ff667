"""Small helpers shared by the API modules: request bodies, text extraction, cursor pages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .script import HTTPError
from .sse import JSON, error_response

BODY_KEY = web.RequestKey("json_body", object)


class APIError(Exception):
    """Raised by handlers/helpers; the middleware turns it into the real error response."""

    status = 400

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.type = type_

    def response(self) -> web.Response:
        return error_response(self.status, self.message, self.type, self.param, self.code)


class BadRequest(APIError):
    status = 400


class NotFound(APIError):
    status = 404


_HTTP_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model", "invalid_request_error", None),
    404: ("The requested resource was not found.", "invalid_request_error", None),
    408: ("Request timed out.", "invalid_request_error", None),
    409: ("The request conflicts with another request.", "invalid_request_error", None),
    429: (
        "Rate limit reached for gpt-4o in organization org-fake on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def http_error_response(err: HTTPError) -> web.Response:
    """The real status, headers and error body for a scripted `HTTPError` fault."""
    message, type_, code = _HTTP_DEFAULTS.get(
        err.status, ("The server had an error processing your request.", "server_error", None)
    )
    headers: dict[str, str] = {}
    if err.retry_after is not None:
        seconds = err.retry_after
        headers["retry-after"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
        headers["retry-after-ms"] = str(int(seconds * 1000))
    return error_response(
        err.status,
        err.message if err.message is not None else message,
        err.type if err.type is not None else type_,
        err.param,
        err.code if err.code is not None else code,
        headers,
    )


def paginate(
    items: list[JSON],
    query: Mapping[str, str],
    *,
    default_order: str = "desc",
    default_limit: int = 20,
) -> JSON:
    """A real cursor page (`object: list`, `first_id`, `last_id`, `has_more`) over `items`
    (stored oldest first), honouring `order`, `limit`, `after` and `before`."""
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise BadRequest(
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.", param="order"
        )
    try:
        limit = int(query.get("limit", default_limit))
    except ValueError:
        raise BadRequest("Invalid 'limit': expected an integer.", param="limit") from None
    if not 1 <= limit <= 100:
        raise BadRequest(
            f"Invalid 'limit': integer out of range. Expected a value between 1 and 100, "
            f"but got {limit} instead.",
            param="limit",
        )
    seq = list(items) if order == "asc" else list(reversed(items))
    ids = [item.get("id") for item in seq]
    after, before = query.get("after"), query.get("before")
    if after:
        seq = seq[ids.index(after) + 1 :] if after in ids else []
    if before:
        ids = [item.get("id") for item in seq]
        seq = seq[: ids.index(before)] if before in ids else []
        page = seq[-limit:]
    else:
        page = seq[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(seq) > limit,
    }


def body_of(request: web.Request) -> JSON:
    """The parsed JSON body (the middleware already rejected malformed JSON); {} if empty."""
    data = request.get(BODY_KEY)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadRequest(
            "Invalid type for request body: expected an object, but got "
            f"{type(data).__name__} instead."
        )
    return data


def text_of(content: Any) -> str:
    """Plain text of a message `content` in any of the three APIs' shapes."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, dict):
                    text = text.get("value")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    return ""
