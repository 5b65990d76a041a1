"""A minimal agent-side MCP client for toolgate, with the official MCP Python SDK.

    python3 -m venv .venv && .venv/bin/pip install 'mcp==2.3.0'
    cargo run --release -- serve --dev          # in another terminal; paste its `export` lines
    .venv/bin/python examples/mcp_client.py     # uses $REPORTING_TOKEN and http://127.0.0.1:8080/mcp

It connects with the agent's bearer token, lists the tools this agent may call, reads a report
(allowed) and /etc/passwd (denied by policy: an `isError` result carrying the decision id).
"""

import asyncio
import os
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main() -> None:
    url = os.environ.get("TOOLGATE_MCP_URL", "http://127.0.0.1:8080/mcp")
    token = os.environ.get("REPORTING_TOKEN")
    if not token:
        sys.exit("set REPORTING_TOKEN (printed by `toolgate serve --dev`)")
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = await client.list_tools()
            print("tools:", [tool.name for tool in tools.tools])
            for path in ["/srv/reports/q3-summary.txt", "/etc/passwd"]:
                result = await client.call_tool("files___read_file", {"path": path})
                text = " ".join(c.text for c in result.content if c.type == "text")
                decision = (result.meta or {}).get("io.toolgate/decision-id")
                print(f"{path}: is_error={result.is_error} decision={decision}\n  {text}")


if __name__ == "__main__":
    asyncio.run(main())
