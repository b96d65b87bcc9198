"""The portal in headless Chromium (Debian's `chromium`, driven by `playwright-core`): `tests/portal/walk.mjs`
walks the seed's path against a real server and saves a screenshot of each page (to
BERTH_PORTAL_SCREENSHOTS, by default target/portal-screenshots)."""
import os
import pathlib
import shutil
import subprocess

import pytest
from conftest import ROOT, Server


def test_the_portal_walks_from_fine_tuning_to_chat_and_deletion(gguf, tmp_path):
    walk = ROOT / "tests" / "portal" / "walk.mjs"
    if not (ROOT / "tests" / "portal" / "node_modules" / "playwright-core").exists() or not shutil.which(os.environ.get("CHROMIUM", "chromium")):
        if os.environ.get("CI"):
            raise AssertionError("the portal test needs chromium and tests/portal/node_modules (scripts/test.sh installs them)")
        pytest.skip("chromium or playwright-core is missing: scripts/test.sh installs them")
    (tmp_path / "data").mkdir()
    s = Server(str(tmp_path / "data")).start()
    try:
        status, body, _ = s.arm("POST", "/berth/v1/base-models", {"name": "smollm2", "path": gguf}, api_version=None)
        assert status in (200, 201), body
        # Something already deployed, so that the dialog's quota refusal is real.
        assert s.deploy("smol", "smollm2", capacity=50)["properties"]["provisioningState"] == "Succeeded"
        training = tmp_path / "pirate-small.jsonl"
        lines = (ROOT / "data" / "fine-tuning" / "pirate-train.jsonl").read_text().splitlines()[:12]
        training.write_text("\n".join(lines) + "\n")
        shots = pathlib.Path(os.environ.get("BERTH_PORTAL_SCREENSHOTS", ROOT / "target" / "portal-screenshots"))
        env = dict(
            os.environ,
            BERTH_URL=s.url,
            BERTH_TOKEN=s.token,
            BERTH_API_KEY=s.keys()["key1"],
            BERTH_TRAINING_FILE=str(training),
            SCREENSHOTS=str(shots),
            CHROMIUM=shutil.which(os.environ.get("CHROMIUM", "chromium")),
        )
        p = subprocess.run(["node", str(walk)], env=env, capture_output=True, text=True, timeout=900)
        print(p.stdout)
        assert p.returncode == 0, f"{p.stdout}\n{p.stderr}\nserver log:\n{s.read_log()[-3000:]}"
        for name in ["01-sign-in.png", "02-fine-tuning.png", "03-models.png", "04-deploy-dialog.png", "05-deployments.png", "06-playground.png", "07-costs.png", "08-deleted.png", "09-playground-with-a-key.png", "10-deployments-last-hour.png"]:
            assert (shots / name).stat().st_size > 10_000, name
    finally:
        s.stop()
