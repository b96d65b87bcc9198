"""HTTPS: `berth serve --tls-self-signed` makes a certificate on first start and keeps it; `--tls-cert`
and `--tls-key` serve a given one; the openai SDK and plain HTTPS clients that verify the certificate
work, and plain HTTP to the TLS port does not."""
import os
import ssl
from http import client as plain_http
import subprocess

import httpx2 as httpx  # the openai SDK's HTTP client
import pytest
import requests_shim as http
from conftest import Server, berth_bin
from openai import AzureOpenAI


def register(s, gguf):
    status, body, _ = s.arm("POST", "/berth/v1/base-models", {"name": "smollm2", "path": gguf}, api_version=None)
    assert status in (200, 201), body


def test_a_self_signed_certificate_is_made_once_and_verifies(gguf, tmp_path):
    s = Server(str(tmp_path)).start(args=("--tls-self-signed",))
    cert = tmp_path / "tls" / "cert.pem"
    try:
        assert cert.exists() and (tmp_path / "tls" / "key.pem").exists()
        assert s.url.startswith("https://") and s.creds["endpoint"].startswith("https://")
        status, _, _ = http.request("GET", s.url + "/healthz", context=s.ssl)
        assert status == 200
        register(s, gguf)
        assert s.deploy("smol", "smollm2")["properties"]["provisioningState"] == "Succeeded"
        client = AzureOpenAI(
            azure_endpoint=s.url, api_key=s.keys()["key1"], api_version="2024-10-21", max_retries=0,
            http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(cert))),
        )
        r = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
        assert r.choices[0].message.content
        # The berth CLI trusts the data directory's certificate, or the one it is given.
        assert '"smol"' in s.cli("deployment", "list").stdout
        p = s.cli("deployment", "list", "--ca-bundle", str(tmp_path / "tls" / "key.pem"), check=False)
        assert p.returncode != 0 and "holds no certificate" in p.stderr, p.stderr
        p = s.cli("deployment", "list", "--ca-bundle", "/etc/hostname", check=False)
        assert p.returncode != 0 and "holds no certificate" in p.stderr, p.stderr
        # An unverified client is refused by its own TLS stack; plain HTTP gets no HTTP answer.
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/healthz")
        conn = plain_http.HTTPConnection("127.0.0.1", s.port, timeout=10)
        with pytest.raises((plain_http.HTTPException, ConnectionError, OSError)):
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            if resp.status:
                raise plain_http.HTTPException(f"plain HTTP got {resp.status}")
        made = cert.read_bytes()
    finally:
        s.stop()
    # The next start keeps the certificate.
    s = Server(str(tmp_path)).start(args=("--tls-self-signed",))
    try:
        assert cert.read_bytes() == made
    finally:
        s.stop()


def test_a_given_certificate_is_served_and_bad_files_are_refused(gguf, tmp_path):
    (tmp_path / "a").mkdir()
    Server(str(tmp_path / "a")).start(args=("--tls-self-signed",)).stop()
    cert, key = tmp_path / "a" / "tls" / "cert.pem", tmp_path / "a" / "tls" / "key.pem"
    (tmp_path / "b").mkdir()
    s = Server(str(tmp_path / "b")).start(args=("--tls-cert", str(cert), "--tls-key", str(key)), cafile=str(cert))
    try:
        status, _, _ = http.request("GET", s.url + "/healthz", context=s.ssl)
        assert status == 200
        assert not (tmp_path / "b" / "tls").exists()
    finally:
        s.stop()
    env = dict(os.environ, BERTH_DATA_DIR=str(tmp_path / "c"))
    p = subprocess.run([berth_bin(), "serve", "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(tmp_path / "missing.pem")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "cannot read the private key" in p.stderr, p.stderr
    p = subprocess.run([berth_bin(), "serve", "--listen", "127.0.0.1:0", "--tls-cert", str(cert)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "--tls-key" in p.stderr, p.stderr
