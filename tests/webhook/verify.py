"""Verifies captured webhook requests with the reference Python implementation
of Standard Webhooks (`standardwebhooks` from PyPI), independently of the
Rust signer.

Reads JSON from stdin:
    {"secret": "whsec_...", "messages": [{"headers": {...}, "body": "..."}]}
Prints one JSON result per message, {"ok": true, "type": "..."} or
{"ok": false, "error": "..."}, and exits 0 only if every message verified.
Installed by scripts/install-test-tools into tests/webhook/.venv.
"""

import json
import sys

from standardwebhooks import Webhook


def main() -> int:
    request = json.load(sys.stdin)
    hook = Webhook(request["secret"])
    results = []
    for message in request["messages"]:
        try:
            payload = hook.verify(message["body"], message["headers"])
            results.append({"ok": True, "type": payload.get("type")})
        except Exception as err:  # report every failure, not just the first
            results.append({"ok": False, "error": f"{type(err).__name__}: {err}"})
    json.dump(results, sys.stdout)
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
