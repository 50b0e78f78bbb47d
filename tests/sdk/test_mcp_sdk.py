"""The official MCP Python SDK (from PyPI, unchanged) against the local stack's MCP server, /vault/mcp.

The SDK connects over Streamable HTTP with a vault token, lists the tools, lists the secrets, and calls
`call_api` on a use-only secret bound to a test upstream on loopback that answers only when it receives
the real key; the answer comes back through the vault, and no text the SDK receives holds the key.
Without a token the SDK is refused, and the 401 names the protected-resource metadata (RFC 9728).

Run by scripts/test against the stack it started: VAULT_SMOKE_URL and VAULT_SMOKE_TOKENS.
"""

import asyncio
import importlib.metadata
import json
import os
import threading
import time
import unittest
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

VAULT = os.environ["VAULT_SMOKE_URL"]
TOKENS = dict(line.strip().split("=", 1) for line in open(os.environ["VAULT_SMOKE_TOKENS"]) if "=" in line)
TOKEN = TOKENS["M2M_TOKEN"]
RUN = str(time.time_ns())
KEY = "sk-mcp-test-" + RUN
NAME = "mcp_weather_" + RUN
received = []


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        received.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        if self.headers.get("Authorization") != "Bearer " + KEY:
            status, body = 401, {"error": "wrong key"}
        else:
            status, body = 200, {"forecast": "sunny", "path": self.path}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def vault(method, path, body=None, token=TOKEN):
    req = urllib.request.Request(VAULT + path, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def connect_and_use(token):
    headers = {"Authorization": "Bearer " + token} if token else {}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(VAULT + "/vault/mcp", http_client=http)) as client:
            tools = await client.list_tools()
            listed = await client.call_tool("list_secrets", {})
            called = await client.call_tool(
                "call_api", {"name": NAME, "method": "GET", "path": "/forecast", "query": {"city": "Oslo"}}
            )
            refused = await client.call_tool("call_api", {"name": NAME, "method": "DELETE", "path": "/forecast"})
            audit = await client.call_tool("audit", {"name": NAME, "limit": 5})
            return client.server_info, tools, listed, called, refused, audit


class McpSdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        base = "http://127.0.0.1:%d/v1" % cls.server.server_address[1]
        status, _, body = vault(
            "POST",
            "/vault/secrets",
            {"name": NAME, "value": KEY, "access": "use-only", "upstream": {"baseUrl": base, "methods": ["GET"]}},
        )
        assert status == 201, body

    @classmethod
    def tearDownClass(cls):
        vault("DELETE", "/vault/secrets/" + NAME)
        cls.server.shutdown()

    def test_tools_use_the_secret_and_never_show_it(self):
        info, tools, listed, called, refused, audit = asyncio.run(connect_and_use(TOKEN))
        self.assertEqual(info.name, "token-vault")
        self.assertEqual([t.name for t in tools.tools], ["list_secrets", "call_api", "audit"])

        names = [s["name"] for s in listed.structured_content["secrets"]]
        self.assertIn(NAME, names)

        self.assertFalse(called.is_error, called)
        self.assertEqual(called.structured_content["status"], 200)
        # The upstream's body, as text (as scrubbed, never decoded by the vault).
        self.assertEqual(json.loads(called.structured_content["body"]), {"forecast": "sunny", "path": "/v1/forecast?city=Oslo"})
        self.assertEqual(received[-1]["authorization"], "Bearer " + KEY, "the upstream got the real key")

        self.assertTrue(refused.is_error)
        self.assertEqual(json.loads(refused.structured_content["body"])["error"]["code"], "method_not_permitted")
        events = [e["event"] for e in audit.structured_content["events"]]
        self.assertIn("vault.secret.used", events)

        for result in (listed, called, refused, audit):
            text = " ".join(c.text for c in result.content) + json.dumps(result.structured_content)
            self.assertNotIn(KEY, text)
            self.assertNotIn(TOKEN, text)

    def test_without_a_token_the_client_is_refused_and_told_where_to_get_one(self):
        with self.assertRaises(BaseException) as refused:
            asyncio.run(connect_and_use(None))

        def leaves(e):
            return [x for inner in e.exceptions for x in leaves(inner)] if isinstance(e, BaseExceptionGroup) else [e]

        errors = leaves(refused.exception)
        self.assertTrue(any(isinstance(e, MCPError) for e in errors), errors)
        status, headers, _ = vault("POST", "/vault/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"}, token=None)
        self.assertEqual(status, 401)
        challenge = {k.lower(): v for k, v in headers.items()}["www-authenticate"]
        self.assertIn('resource_metadata="', challenge)
        metadata_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
        self.assertTrue(metadata_url.endswith("/.well-known/oauth-protected-resource/vault/mcp"), metadata_url)
        path = "/" + metadata_url.split("/", 3)[3]
        status, _, body = vault("GET", path, token=None)
        self.assertEqual(status, 200)
        metadata = json.loads(body)
        self.assertEqual(metadata["resource"], VAULT + "/vault/mcp")
        self.assertTrue(metadata["authorization_servers"], metadata)


if __name__ == "__main__":
    print("mcp SDK", importlib.metadata.version("mcp"))
    unittest.main(verbosity=2)
