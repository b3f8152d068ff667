"""Transport details a browser would notice: per-message compression negotiation."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import StartServer

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(("setting", "negotiated"), [(False, 0), (True, 15)])
async def test_permessage_deflate_follows_the_setting(
    start_server: StartServer, setting: bool, negotiated: int
):
    server = await start_server(ws_compression=setting)
    url = f"{server.url}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, compress=15) as ws:
        opening = await ws.receive_str()  # the Engine.IO open packet
        assert opening.startswith("0{")
        assert ws.compress == negotiated
