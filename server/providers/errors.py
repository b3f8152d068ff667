"""Our small exception tree for provider failures, mapped from the `openai` SDK's errors.

Each error carries `user_message`: text safe to show the room (no key, no request dump). The
full detail goes to the log.
"""

from __future__ import annotations

import openai


class ProviderError(Exception):
    """The model provider failed this turn."""

    user_message = "The assistant could not answer: the model provider reported an error."


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, or failed on its side (5xx)."""

    user_message = "The assistant could not answer: the model provider is unavailable right now."


class ProviderRateLimited(ProviderError):
    """The provider refused for rate or quota reasons (429)."""

    user_message = "The assistant could not answer: the model provider is rate-limiting us."


class ProviderTimeout(ProviderError):
    """The provider took too long to answer."""

    user_message = "The assistant could not answer in time: the model provider timed out."


class ProviderAuthError(ProviderError):
    """The provider rejected our credentials (401/403)."""

    user_message = "The assistant could not answer: the server's API key was rejected."


class ProviderRejected(ProviderError):
    """The provider refused the request as invalid (4xx other than the above)."""

    user_message = "The assistant could not answer: the model provider refused the request."


class ProviderProtocolError(ProviderError):
    """The provider's stream ended early or sent something we could not read."""

    user_message = "The assistant's answer was cut off: the model provider's stream broke."


def translate(exc: openai.OpenAIError, streaming: bool = False) -> ProviderError:
    """Map an SDK exception to our tree (callers `raise translate(e) from e`); `streaming` says
    the answer had begun, so a lost connection means a broken stream."""
    detail = str(exc)
    if streaming and type(exc) is openai.APIConnectionError:
        return ProviderProtocolError(detail)
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(detail)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailable(detail)
    if isinstance(exc, openai.RateLimitError):
        return ProviderRateLimited(detail)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderAuthError(detail)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return ProviderUnavailable(detail)
        return ProviderRejected(detail)
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderProtocolError(detail)
    return ProviderError(detail)


def summary(exc: BaseException) -> str:
    """The error's kind and upstream HTTP status, e.g. "ProviderRejected (HTTP 400)": safe to
    log at any level, unlike its detail, which may quote the request (people's messages)."""
    cause = exc if isinstance(exc, openai.APIStatusError) else exc.__cause__
    status = getattr(cause, "status_code", None)
    return type(exc).__name__ + (f" (HTTP {status})" if isinstance(status, int) else "")
