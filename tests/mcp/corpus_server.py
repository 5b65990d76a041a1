"""An upstream MCP server that lists a corpus of real tool definitions verbatim, written with the
official Python SDK's low-level server; driven by tests/it/mcp_upstream.rs.

Usage: corpus_server.py CORPUS_JSON

CORPUS_JSON holds {"tools": [...]} (e.g. the GitHub MCP server's 117 tools from
../shared/corpora). Serves Streamable HTTP at /mcp on an ephemeral port on 127.0.0.1, printed as
the first line of stdout. `tools/call` answers with the tool's name and arguments as structured
content, so the test sees what arrived.
"""

import json
import socket
import sys

import anyio
import mcp_types as types
import uvicorn
from mcp.server.lowlevel.server import Server


def build(corpus_path: str):
    with open(corpus_path, encoding="utf-8") as f:
        tools = [types.Tool.model_validate(t) for t in json.load(f)["tools"]]

    async def list_tools(ctx, params):
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx, params):
        received = {"tool": params.name, "arguments": params.arguments or {}}
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(received))],
            structured_content=received,
        )

    server = Server("corpus-upstream", on_list_tools=list_tools, on_call_tool=call_tool)
    return server.streamable_http_app(json_response=True)


async def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(build(sys.argv[1]), log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        sys.exit(0)
