"""An upstream MCP server for toolgate's interop tests, written with the official Python SDK.

Usage: upstream_server.py --token TOKEN --log FILE [--json] [--port PORT]

Serves Streamable HTTP at /mcp on 127.0.0.1, on PORT or an ephemeral port; the port is printed
as the first line of stdout. Every request must carry `Authorization: Bearer TOKEN` (401 otherwise); the
`Authorization` and `x-toolgate-assertion` headers of every request are appended to FILE as
JSON lines, so the test can check which credential reached the upstream. With --json the
server answers POSTs with plain JSON bodies instead of SSE streams.
"""

import argparse
import json
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations, ToolListChangedNotification


def build(token: str, log_path: str, json_response: bool):
    server = MCPServer("toolgate-test-upstream")

    @server.tool(
        description="The weather in a city",
        annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    )
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    @server.tool(
        description="Deletes everything",
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True),
    )
    def delete_everything(confirm: bool) -> str:
        return "deleted" if confirm else "kept"

    @server.tool(description="Takes a union Cedar cannot type")
    def untypable(value: int | str) -> str:
        return str(value)

    # Tools without annotations are destructive by default; these say they are not.
    harmless = ToolAnnotations(readOnlyHint=False, destructiveHint=False)

    @server.tool(description="Always reports a tool error", annotations=harmless)
    def always_fails(reason: str) -> str:
        raise ToolError(f"refused: {reason}")

    @server.tool(
        description="Registers `late_tool` and announces the new tool list", annotations=harmless
    )
    async def add_tool(ctx: Context) -> str:
        def late_tool(n: int) -> str:
            return f"late {n}"

        server.add_tool(late_tool, description="Added at run time", annotations=harmless)
        # On this request's own response stream, as a server may do mid-call.
        await ctx.session.send_notification(
            ToolListChangedNotification(), related_request_id=ctx.request_id
        )
        return "added"

    @server.tool(
        description="Registers `listened_tool` and announces it on the GET listen stream",
        annotations=harmless,
    )
    async def announce_tool(ctx: Context) -> str:
        def listened_tool() -> str:
            return "heard"

        server.add_tool(listened_tool, description="Announced on the listen stream", annotations=harmless)
        # Not request-scoped: the SDK sends it on the session's standalone GET stream.
        await ctx.session.send_tool_list_changed()
        return "announced"

    app = server.streamable_http_app(json_response=json_response)
    expected = f"Bearer {token}"

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            with open(log_path, "a", encoding="utf-8") as log:
                entry = {
                    "method": scope["method"],
                    "authorization": headers.get("authorization"),
                    "assertion": headers.get("x-toolgate-assertion"),
                }
                log.write(json.dumps(entry) + "\n")
            if headers.get("authorization") != expected:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": b'{"error":"unauthorized"}'})
                return
        await app(scope, receive, send)

    return guarded


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(64)
    print(sock.getsockname()[1], flush=True)

    config = uvicorn.Config(
        build(args.token, args.log, args.json), log_level="warning", lifespan="on"
    )
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        sys.exit(0)
