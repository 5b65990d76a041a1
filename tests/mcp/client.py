"""An MCP client written with the official MCP Python SDK, driven by tests/it/mcp_server.rs.

Usage: client.py URL SCENARIO_JSON
SCENARIO_JSON: {"token": str | null, "mode": "auto" | "legacy" | "2026-07-28",
                "calls": [{"name": str, "arguments": {...}}]}
("auto", the SDK's default, probes the stateless 2026-07-28 protocol first and falls back to
the `initialize` handshake; "legacy" uses the handshake only.)
Prints one JSON object on stdout: the negotiated protocol version, the tool names listed,
each call's result (isError, text, _meta) or the error raised, and every HTTP status the
client saw; or {"error": ...} when the connection itself fails (e.g. 401 without a token).
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def describe(exc: BaseException) -> str:
    """The innermost error of an exception group, as `Type: message`."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


async def main(url: str, scenario: dict) -> dict:
    headers = {}
    if scenario.get("token"):
        headers["Authorization"] = f"Bearer {scenario['token']}"
    out: dict = {"http_statuses": []}

    async def seen(response: httpx2.Response) -> None:
        out["http_statuses"].append(response.status_code)

    try:
        async with create_mcp_http_client(headers=headers) as http:
            http.event_hooks["response"].append(seen)
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode=scenario.get("mode", "auto")) as client:
                session = client.session
                out["protocol_version"] = session.protocol_version
                out["server"] = session.server_info.name if session.server_info else None
                listed = await client.list_tools()
                out["tools"] = sorted(tool.name for tool in listed.tools)
                out["annotations"] = {
                    tool.name: tool.annotations.read_only_hint if tool.annotations else None
                    for tool in listed.tools
                }
                out["calls"] = []
                for call in scenario.get("calls", []):
                    try:
                        result = await client.call_tool(call["name"], call.get("arguments", {}))
                        texts = [c.text for c in result.content if getattr(c, "type", "") == "text"]
                        out["calls"].append(
                            {
                                "is_error": bool(result.is_error),
                                "text": "\n".join(texts),
                                "structured": result.structured_content,
                                "meta": result.meta,
                            }
                        )
                    except Exception as exc:  # noqa: BLE001 - reported to the test
                        out["calls"].append({"raised": describe(exc)})
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        out["error"] = describe(exc)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))))
