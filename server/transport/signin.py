"""Sign-in by a reverse proxy: TRUSTED_USER_HEADER names the person, honoured only from
TRUSTED_PROXIES. When it is configured, a request that does not come from a trusted proxy with a
valid name in that header is refused, so nobody who reaches the port directly can skip the
proxy's sign-in."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..rooms.roster import has_control_chars, name_key


class SignInRefused(Exception):
    """The request may not use the server: `reason` says why (safe to show the client);
    `status` is the HTTP status for an HTTP route."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ProxySignIn:
    """Who a request is, as the trusted proxy says (`enabled` is False when no header is set)."""

    def __init__(self, header: str, proxies: tuple[str, ...], max_name_length: int = 32) -> None:
        self.header = header
        self._networks = [ipaddress.ip_network(p, strict=False) for p in proxies]
        self._max = max_name_length

    @property
    def enabled(self) -> bool:
        return bool(self.header)

    def name_of(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The signed-in name of a request from `peer` with `headers`, or SignInRefused."""
        if not self._trusted(peer):
            raise SignInRefused(
                "sign-in required: connect through the sign-in proxy, not to this port directly",
                status=403)
        raw = headers.get(self.header)
        if raw is None or not raw.strip():
            raise SignInRefused(f"sign-in required: the proxy sent no {self.header} header")
        return self._valid_name(raw)

    def name_of_request(self, request: web.Request) -> str:
        return self.name_of(request.remote, request.headers)

    def name_of_environ(self, environ: dict[str, Any]) -> str:
        """For a Socket.IO connect: python-engineio's REMOTE_ADDR is a constant under aiohttp,
        so the peer comes from the aiohttp request it keeps in the environ."""
        request = environ.get("aiohttp.request")
        if not isinstance(request, web.BaseRequest):
            raise SignInRefused("sign-in required: cannot tell where this connection comes from")
        return self.name_of(request.remote, request.headers)

    def _trusted(self, peer: str | None) -> bool:
        if peer is None:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def _valid_name(self, raw: str) -> str:
        """The header's value as a nickname: trimmed, 1 to MAX_NAME_LENGTH characters, no
        control characters (the roster's rules). aiohttp decodes header values as UTF-8 with
        surrogate escapes, so bytes that are not UTF-8 arrive as surrogates and are refused."""
        name = raw.strip()
        if not name or len(name) > self._max or has_control_chars(name):
            raise SignInRefused(
                f"sign-in refused: the name in {self.header} is not a valid nickname "
                f"(1 to {self._max} characters, no control characters)")
        return name


def user_id_for(name: str) -> str:
    """The stable user id of a signed-in name: the same person in every tab and room, and the
    same for look-alike spellings, which the roster treats as one nickname."""
    digest = hashlib.sha256(name_key(name).encode("utf-8")).hexdigest()
    return f"signed-{digest[:24]}"
