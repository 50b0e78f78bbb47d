"""The official OpenAI and Anthropic Python SDKs (from PyPI, unchanged) pointed at the local stack's proxy.

Each SDK gets the proxy as its base URL and the vault token as its API key; the upstream here is an
OpenAI-compatible (and an Anthropic-compatible) server on loopback that answers only the real key the
vault injects, and records every request, so the test can check that the vault token never reached it.
A plain and a streamed request each; the streamed one checks that the first delta reaches the SDK before
the upstream sends the next.

Run by scripts/test against the stack it started: VAULT_SMOKE_URL (the API, which serves the proxy
locally too) and VAULT_SMOKE_TOKENS (the tokens file scripts/dev wrote).
"""

import json
import os
import threading
import time
import unittest
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai

VAULT = os.environ["VAULT_SMOKE_URL"]
TOKENS = dict(
    line.strip().split("=", 1) for line in open(os.environ["VAULT_SMOKE_TOKENS"]) if "=" in line
)
TOKEN = TOKENS["M2M_TOKEN"]
RUN = str(time.time_ns())
OPENAI_KEY = "sk-test-openai-" + RUN
ANTHROPIC_KEY = "sk-ant-test-" + RUN

# Set by the test once it holds the first streamed delta; the upstream waits for it before the next.
first_delta_seen = threading.Event()
second_sent_early = []
received = []


def openai_chunk(text, finish=None):
    delta = {"content": text} if text is not None else {}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        received.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
        if self.path == "/v1/chat/completions":
            if self.headers.get("Authorization") != "Bearer " + OPENAI_KEY:
                return self.reply(401, {"error": {"message": "wrong key", "type": "invalid_request_error"}})
            if not body.get("stream"):
                return self.reply(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-test",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the upstream"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
                })
            self.start_stream()
            self.chunk("data: " + json.dumps(openai_chunk("Hel")) + "\n\n")
            if not first_delta_seen.wait(20):
                second_sent_early.append(True)
            self.chunk("data: " + json.dumps(openai_chunk("lo")) + "\n\n")
            self.chunk("data: " + json.dumps(openai_chunk(None, "stop")) + "\n\ndata: [DONE]\n\n")
            return self.end_stream()
        if self.path == "/v1/messages":
            if self.headers.get("x-api-key") != ANTHROPIC_KEY:
                return self.reply(401, {"type": "error", "error": {"type": "authentication_error", "message": "wrong key"}})
            message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                       "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 0}}
            if not body.get("stream"):
                done = dict(message, content=[{"type": "text", "text": "Hello from the upstream"}],
                            stop_reason="end_turn", usage={"input_tokens": 1, "output_tokens": 4})
                return self.reply(200, done)
            self.start_stream()
            for event, data in [
                ("message_start", {"type": "message_start", "message": dict(message, content=[])}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": "Hel"}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": "lo"}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   "usage": {"output_tokens": 2}}),
                ("message_stop", {"type": "message_stop"}),
            ]:
                self.chunk(f"event: {event}\ndata: {json.dumps(data)}\n\n")
            return self.end_stream()
        self.reply(404, {"error": "no such route"})


def vault_put(body):
    req = urllib.request.Request(
        VAULT + "/vault/secrets", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=300) as resp:
        assert resp.status in (200, 201), resp.status


class ModelSdksThroughTheProxy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        port = cls.server.server_address[1]
        cls.openai_name = "sdk_openai_" + RUN
        cls.anthropic_name = "sdk_anthropic_" + RUN
        vault_put({"name": cls.openai_name, "value": OPENAI_KEY, "access": "use-only",
                   "upstream": {"baseUrl": f"http://127.0.0.1:{port}/v1", "methods": ["POST"],
                                "paths": ["/chat/completions"]}})
        vault_put({"name": cls.anthropic_name, "value": ANTHROPIC_KEY, "access": "use-only",
                   "upstream": {"baseUrl": f"http://127.0.0.1:{port}", "header": "x-api-key",
                                "paths": ["/v1/messages"]}})

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        for r in received:
            text = json.dumps(r)
            assert TOKEN not in text, "the vault token reached the upstream"

    def openai(self):
        return openai.OpenAI(base_url=f"{VAULT}/vault/proxy/{self.openai_name}", api_key=TOKEN,
                             max_retries=0, timeout=300)

    def anthropic(self):
        return anthropic.Anthropic(base_url=f"{VAULT}/vault/proxy/{self.anthropic_name}", api_key=TOKEN,
                                   max_retries=0, timeout=300)

    def test_openai_chat_completion(self):
        done = self.openai().chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(done.choices[0].message.content, "Hello from the upstream")

    def test_openai_streamed_chat_completion(self):
        stream = self.openai().chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True)
        deltas = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
                first_delta_seen.set()
        self.assertEqual(deltas, ["Hel", "lo"])
        self.assertEqual(second_sent_early, [], "the first delta arrived only after the upstream gave up waiting")

    def test_anthropic_message(self):
        done = self.anthropic().messages.create(
            model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(done.content[0].text, "Hello from the upstream")

    def test_anthropic_streamed_message(self):
        with self.anthropic().messages.stream(
                model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join(stream.text_stream)
        self.assertEqual(text, "Hello")

    def test_a_wrong_token_is_refused_before_the_upstream(self):
        before = len(received)
        client = openai.OpenAI(base_url=f"{VAULT}/vault/proxy/{self.openai_name}", api_key="not-a-token",
                               max_retries=0, timeout=300)
        with self.assertRaises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(len(received), before)


if __name__ == "__main__":
    unittest.main(verbosity=2)
