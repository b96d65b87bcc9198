"""Plain HTTP for the ARM tests, with the standard library only (so the exact bytes are ours to check)."""
import json
import urllib.error
import urllib.request


def request(method, url, body=None, raw=None, headers=None, timeout=120, context=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None and not any(k.lower() == "content-type" for k in (headers or {})):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            status, text, hdrs = resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as e:
        status, text, hdrs = e.code, e.read().decode(), e.headers
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return status, parsed, {k.lower(): v for k, v in hdrs.items()}
