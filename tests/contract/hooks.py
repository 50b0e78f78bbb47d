"""Schemathesis hooks for the contract test (loaded through SCHEMATHESIS_HOOKS by scripts/test)."""

import schemathesis


@schemathesis.hook("filter_body")
def only_utf8_bodies(context, body):
    """Skip raw request bodies that are not UTF-8.

    Locally the API runs behind `cargo lambda watch`, whose HTTP front answers a non-UTF-8 body sent as
    `application/json` with its own 500 before any function runs. The vault's own handling of such
    bodies (400 invalid_json) is covered by the Rust integration tests, and API Gateway does not have
    this limitation.
    """
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True
