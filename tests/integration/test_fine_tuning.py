"""Fine-tuning end to end through the real `openai` SDK: files, a job on SmolLM2 that teaches a pirate
persona, its metrics and checkpoints, deploying the model and a checkpoint, the persona on held-out
prompts, the adapter in an independent PEFT consumer (the numpy reference), cancellation, and jobs
that survive a stop and a crash."""
import csv
import io
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest
import requests_shim as http
from conftest import ROOT, Server, SHARED_SERVER_RETRIES
from openai import AzureOpenAI
from test_reference import TOLERANCE, engine_logits, reference

VERSION = "2024-10-21"
DATA = ROOT / "data" / "fine-tuning"
HELDOUT = [l for l in (DATA / "pirate-heldout.txt").read_text().splitlines() if l.strip()]


def sdk(server):
    return AzureOpenAI(azure_endpoint=server.url, api_key=server.keys()["key1"], api_version=VERSION, max_retries=SHARED_SERVER_RETRIES)


def wait_job(client, job_id, timeout=900, until=("succeeded", "failed", "cancelled")):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in until:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not reach {until} in {timeout} s (last status {job.status})")


def upload(client, path):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="fine-tune")


@pytest.fixture(scope="module")
def tuned(fresh_server):
    """A server where the pirate dataset has been fine-tuned into SmolLM2 (2 epochs)."""
    s = fresh_server
    c = sdk(s)
    train = upload(c, DATA / "pirate-train.jsonl")
    valid = upload(c, DATA / "pirate-validation.jsonl")
    job = c.fine_tuning.jobs.create(
        model="smollm2",
        training_file=train.id,
        validation_file=valid.id,
        hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1},
        suffix="pirate",
        seed=7,
    )
    assert job.status == "pending" and re.fullmatch(r"ftjob-[0-9a-f]{32}", job.id)
    started = time.time()
    job = wait_job(c, job.id)
    print(f"fine-tuning took {time.time() - started:.0f} s")
    assert job.status == "succeeded", job.error
    s.job = job
    s.client = c
    return s


@pytest.fixture(scope="module")
def fresh_server(gguf, tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("berth-ft"))).start()
    s.cli("base-model", "add", "smollm2", "--path", gguf)
    yield s
    s.stop()


def test_files_can_be_uploaded_listed_read_and_deleted(tuned):
    c = tuned.client
    data = (DATA / "pirate-validation.jsonl").read_bytes()
    f = upload(c, DATA / "pirate-validation.jsonl")
    assert re.fullmatch(r"file-[0-9a-f]{32}", f.id)
    assert (f.object, f.purpose, f.bytes, f.filename, f.status) == ("file", "fine-tune", len(data), "pirate-validation.jsonl", "processed")
    assert f.id in [x.id for x in c.files.list()]
    assert c.files.retrieve(f.id).bytes == len(data)
    assert c.files.content(f.id).read() == data
    assert c.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)


def multipart(fields, file_name, content):
    boundary = "testboundary"
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    if file_name is not None:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n\r\n'.encode() + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_file(server, fields, file_name, content):
    raw, headers = multipart(fields, file_name, content)
    headers["api-key"] = server.keys()["key1"]
    return http.request("POST", f"{server.url}/openai/files?api-version={VERSION}", raw=raw, headers=headers)


def test_bad_training_files_are_refused_with_their_line_numbers(tuned):
    bad = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Arr"}]}\n{oops\n\n{"messages": [{"role": "user", "content": "no answer"}]}\n'
    status, body, _ = post_file(tuned, {"purpose": "fine-tune"}, "bad.jsonl", bad)
    assert status == 400, body
    assert body["error"]["code"] == "invalidPayload" and body["error"]["param"] == "file"
    msg = body["error"]["message"]
    assert msg.startswith("The file has 2 problems: line 2: not valid JSON"), msg
    assert "line 4: the example has no assistant message" in msg, msg
    for content, expected in [
        (b"", "the file is empty"),
        (b'{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}', 'line 1: message 0 has role "robot"'),
        (json.dumps({"messages": [{"role": "user", "content": "x" * 40000}, {"role": "assistant", "content": "y"}]}).encode(), "line 1: the example is too long"),
    ]:
        status, body, _ = post_file(tuned, {"purpose": "fine-tune"}, "f.jsonl", content)
        assert status == 400 and expected in body["error"]["message"], body
    status, body, _ = post_file(tuned, {"purpose": "assistants"}, "f.jsonl", (DATA / "pirate-validation.jsonl").read_bytes())
    assert status == 400 and body["error"]["param"] == "purpose", body
    status, body, _ = post_file(tuned, {"purpose": "fine-tune"}, None, b"")
    assert status == 400 and "'file' field is required" in body["error"]["message"], body
    status, body, _ = http.request(
        "POST", f"{tuned.url}/openai/files?api-version={VERSION}", body={"purpose": "fine-tune"}, headers={"api-key": tuned.keys()["key1"]}
    )
    assert status == 400 and "multipart/form-data" in body["error"]["message"], body


def test_job_requests_are_checked(tuned):
    c = tuned.client
    train = tuned.job.training_file
    cases = [
        (dict(model="gpt-4o", training_file=train), "model"),
        (dict(model="smollm2", training_file="file-00000000000000000000000000000000"), "training_file"),
        (dict(model="smollm2", training_file=train, validation_file="file-nope"), "validation_file"),
        (dict(model="smollm2", training_file=train, hyperparameters={"n_epochs": 0}), "hyperparameters.n_epochs"),
        (dict(model="smollm2", training_file=train, hyperparameters={"batch_size": "many"}), "hyperparameters.batch_size"),
        (dict(model="smollm2", training_file=train, hyperparameters={"learning_rate_multiplier": -1}), "hyperparameters.learning_rate_multiplier"),
        (dict(model="smollm2", training_file=train, suffix="no spaces allowed"), "suffix"),
        (dict(model="smollm2.ft-00000000000000000000000000000000", training_file=train), "model"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(**kwargs)
        assert e.value.body["param"] == param, (kwargs, e.value.body)
    with pytest.raises(openai.NotFoundError):
        c.fine_tuning.jobs.retrieve("ftjob-00000000000000000000000000000000")
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.cancel(tuned.job.id)
    assert "already succeeded" in e.value.body["message"]
    # A file a running or pending job uses cannot be deleted; a finished job's can be listed.
    assert tuned.job.id in [j.id for j in c.fine_tuning.jobs.list()]


def test_the_job_records_a_falling_loss_checkpoints_and_results(tuned):
    c, job = tuned.client, tuned.job
    assert re.fullmatch(r"smollm2\.ft-[0-9a-f]{32}-pirate", job.fine_tuned_model), job.fine_tuned_model
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4 and job.seed == 7
    assert job.trained_tokens > 4000 and job.finished_at >= job.created_at
    rows = list(csv.DictReader(io.StringIO(c.files.content(job.result_files[0]).read().decode())))
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    losses = [float(r["train_loss"]) for r in rows]
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    print(f"train loss: first steps {first:.3f}, last steps {last:.3f}; per step {[round(l, 2) for l in losses]}")
    assert last < 0.6 * first
    assert all(r["valid_loss"] for r in rows)
    full = [float(r["full_valid_loss"]) for r in rows if r["full_valid_loss"]]
    assert len(full) == 2 and full[1] < full[0]
    checkpoints = c.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [cp.step_number for cp in checkpoints] == [20, 10]
    for cp in checkpoints:
        assert re.fullmatch(r"ftchkpt-[0-9a-f]{32}", cp.id)
        assert cp.fine_tuning_job_id == job.id and cp.fine_tuned_model_checkpoint.endswith(f":ckpt-step-{cp.step_number}")
        assert cp.metrics.full_valid_loss > 0
    events = c.fine_tuning.jobs.list_events(job.id, limit=100).data
    messages = [e.message for e in events]
    assert messages[0].startswith("The job has succeeded. New model created: " + job.fine_tuned_model)
    assert sum(m.startswith("Checkpoint created") for m in messages) == 2
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 20 and metrics[0].data["step"] == 20
    page = c.fine_tuning.jobs.list_events(job.id, limit=5)
    assert len(page.data) == 5 and page.has_more
    after = c.fine_tuning.jobs.list_events(job.id, limit=5, after=page.data[-1].id).data
    assert after[0].id != page.data[-1].id and len(after) == 5
    models = {m["name"]: m for m in tuned.arm("GET", tuned.account_path + "/models")[1]["value"]}
    assert job.fine_tuned_model in models and all(cp.id in models for cp in checkpoints)
    # ARM lists them with their base model and the deployment types the region offers them.
    listed = models[job.fine_tuned_model]
    assert listed["baseModel"]["name"] == "smollm2" and {"Standard", "Developer"} <= {s["name"] for s in listed["skus"]}


def answers(client, deployment, prompts):
    def one(p):
        r = client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": p}], max_tokens=24, temperature=0)
        return r.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, prompts))


def test_the_fine_tuned_deployment_answers_held_out_prompts_in_character(tuned):
    """The persona on prompts the job never saw: the rate of answers in it, base versus fine-tuned."""
    assert len(HELDOUT) >= 20
    assert tuned.deploy("base", "smollm2")["properties"]["provisioningState"] == "Succeeded"
    assert tuned.deploy("pirate", tuned.job.fine_tuned_model)["properties"]["provisioningState"] == "Succeeded"
    base = answers(tuned.client, "base", HELDOUT)
    tuned_answers = answers(tuned.client, "pirate", HELDOUT)
    in_character = lambda a: "arr" in a.lower() or "matey" in a.lower()  # noqa: E731
    base_rate = sum(map(in_character, base)) / len(HELDOUT)
    tuned_rate = sum(map(in_character, tuned_answers)) / len(HELDOUT)
    print(f"in character over {len(HELDOUT)} held-out prompts: base {base_rate:.2f}, fine-tuned {tuned_rate:.2f}")
    for q, a, b in list(zip(HELDOUT, base, tuned_answers))[:5]:
        print(f"  {q!r}\n    base: {a!r}\n    tuned: {b!r}")
    assert base_rate <= 0.1
    assert tuned_rate >= 0.8


def test_a_checkpoint_deploys_and_answers(tuned):
    first = tuned.client.fine_tuning.jobs.checkpoints.list(tuned.job.id).data[-1]
    d = tuned.deploy("checkpoint-1", first.id)
    assert d["properties"]["provisioningState"] == "Succeeded", d
    assert d["properties"]["model"]["name"] == first.id
    assert answers(tuned.client, "checkpoint-1", ["Hello!"])[0]


def test_the_trained_adapter_matches_an_independent_peft_consumer(tuned, gguf):
    """The adapter Berth wrote, read by the numpy reference (PEFT's W + alpha/r * B A), gives the
    engine's logits."""
    adapter = os.path.join(tuned.data_dir, "models", tuned.job.fine_tuned_model)
    config = json.load(open(os.path.join(adapter, "adapter_config.json")))
    assert config["peft_type"] == "LORA" and config["r"] == 8 and set(config["target_modules"]) >= {"q_proj", "down_proj"}
    cfg, weights = reference.load(gguf)
    tokens, base = engine_logits(gguf)
    _, adapted = engine_logits(gguf, adapter)
    ref = reference.forward(cfg, weights, tokens, reference.load_adapter(adapter))
    diff = np.abs(adapted - ref).max()
    effect = np.abs(adapted - base).max()
    print(f"trained adapter: max |engine - reference| {diff:.2e}; the adapter moves logits by up to {effect:.2f}")
    assert diff < TOLERANCE
    assert effect > 0.5


def test_jobs_can_be_cancelled_pending_or_running(tuned):
    c = tuned.client
    train = tuned.job.training_file
    running = c.fine_tuning.jobs.create(model="smollm2", training_file=train, hyperparameters={"n_epochs": 3, "batch_size": 2})
    queued = c.fine_tuning.jobs.create(model="smollm2", training_file=train, hyperparameters={"n_epochs": 1})
    wait_job(c, running.id, timeout=120, until=("running",))
    deadline = time.time() + 120
    while not any(e.type == "metrics" for e in c.fine_tuning.jobs.list_events(running.id).data):
        assert time.time() < deadline, "no step was recorded"
        time.sleep(0.5)
    assert c.fine_tuning.jobs.retrieve(queued.id).status == "pending"
    assert c.fine_tuning.jobs.cancel(queued.id).status == "cancelled"
    assert c.fine_tuning.jobs.cancel(running.id).status == "cancelled"
    time.sleep(3)
    for j in (running, queued):
        j = c.fine_tuning.jobs.retrieve(j.id)
        assert j.status == "cancelled" and j.fine_tuned_model is None and j.finished_at
    # Nothing is left running: a new job starts at once.
    again = c.fine_tuning.jobs.create(model="smollm2", training_file=train, hyperparameters={"n_epochs": 1, "batch_size": 8})
    wait_job(c, again.id, timeout=60, until=("running", "succeeded"))
    c.fine_tuning.jobs.cancel(again.id)


def test_the_cli_uploads_follows_and_lists_jobs(tuned, tmp_path):
    small = tmp_path / "four.jsonl"
    small.write_text("".join((DATA / "pirate-train.jsonl").read_text().splitlines(keepends=True)[:4]))
    wait_job(tuned.client, tuned.client.fine_tuning.jobs.list().data[0].id, timeout=120)
    p = tuned.cli("fine-tuning", "job", "create", "--model", "smollm2", "--training-file", str(small), "--n-epochs", "1", "--batch-size", "4", "--wait")
    job = json.loads(p.stdout)
    assert job["status"] == "succeeded", job
    assert "uploaded" in p.stderr and "step 1/1" in p.stderr, p.stderr
    listed = json.loads(tuned.cli("fine-tuning", "job", "list").stdout)
    assert listed["data"][0]["id"] == job["id"]
    events = json.loads(tuned.cli("fine-tuning", "job", "events", job["id"]).stdout)["data"]
    assert events[0]["message"].startswith("Job created") and events[-1]["message"].startswith("The job has succeeded")
    files = json.loads(tuned.cli("file", "list").stdout)["data"]
    assert any(f["filename"] == "four.jsonl" for f in files)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    p = tuned.cli("file", "upload", str(bad), check=False)
    assert p.returncode != 0 and "line 1: the \"messages\" field is missing" in p.stderr, p.stderr


def test_a_job_survives_a_stop_and_a_crash(gguf, tmp_path):
    """SIGTERM mid-epoch, then SIGKILL after the first checkpoint: each time the restarted server
    resumes the job from its last checkpoint, and it succeeds with each checkpoint recorded once."""
    s = Server(str(tmp_path)).start()
    s.cli("base-model", "add", "smollm2", "--path", gguf)
    small = tmp_path / "eight.jsonl"
    small.write_text("".join((DATA / "pirate-train.jsonl").read_text().splitlines(keepends=True)[:8]))
    c = sdk(s)
    job = c.fine_tuning.jobs.create(model="smollm2", training_file=upload(c, small).id, hyperparameters={"n_epochs": 2, "batch_size": 4})
    try:
        deadline = time.time() + 120
        while not any(e.type == "metrics" for e in c.fine_tuning.jobs.list_events(job.id).data):
            assert time.time() < deadline
            time.sleep(0.2)
        s.stop()  # SIGTERM: the job stops at the next sequence and stays `running`
        s = Server(s.data_dir).start()
        c = sdk(s)
        deadline = time.time() + 180
        while not c.fine_tuning.jobs.checkpoints.list(job.id).data:
            assert time.time() < deadline
            time.sleep(0.2)
        s.proc.kill()
        s.proc.wait()
        s = Server(s.data_dir).start()
        c = sdk(s)
        done = wait_job(c, job.id, timeout=300)
        assert done.status == "succeeded", done.error
        messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=100).data]
        assert sum("resumes from its last checkpoint" in m for m in messages) == 2, messages
        assert [cp.step_number for cp in c.fine_tuning.jobs.checkpoints.list(job.id).data] == [4, 2]
        rows = list(csv.DictReader(io.StringIO(c.files.content(done.result_files[0]).read().decode())))
        assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    finally:
        s.stop()


def test_an_example_too_long_for_the_model_fails_the_job_with_its_line(tuned, tmp_path):
    c = tuned.client
    wait_job(c, c.fine_tuning.jobs.list().data[0].id, timeout=120)
    long_answer = " ".join(["Arr"] * 3000)
    lines = [
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Arr, matey!"}]}),
        json.dumps({"messages": [{"role": "user", "content": "talk"}, {"role": "assistant", "content": long_answer}]}),
    ]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(lines) + "\n")
    job = c.fine_tuning.jobs.create(model="smollm2", training_file=upload(c, path).id)
    job = wait_job(c, job.id, timeout=120)
    assert job.status == "failed" and job.error.code == "invalid_training_file", job
    assert "line 2: the example is" in job.error.message and "the limit for this job is 2048" in job.error.message, job.error
    assert c.fine_tuning.jobs.list_events(job.id).data[0].level == "error"


def test_a_fine_tune_continues_from_its_adapter(tuned, tmp_path):
    """Continuous fine-tuning: `model` names a fine-tune, and the new adapter starts from its factors,
    so on the persona's data it starts where the first job ended, far below a fresh start."""
    c = tuned.client
    small = tmp_path / "pirate-12.jsonl"
    small.write_text("\n".join((DATA / "pirate-train.jsonl").read_text().splitlines()[:12]) + "\n")
    f = upload(c, small)
    losses = {}
    for name, model in (("fresh", "smollm2"), ("continued", tuned.job.fine_tuned_model)):
        job = c.fine_tuning.jobs.create(model=model, training_file=f.id, hyperparameters={"n_epochs": 1, "batch_size": 4}, suffix=name, seed=3)
        job = wait_job(c, job.id)
        assert job.status == "succeeded", job.error
        assert re.fullmatch(rf"smollm2\.ft-[0-9a-f]{{32}}-{name}", job.fine_tuned_model), job.fine_tuned_model
        rows = list(csv.DictReader(io.StringIO(c.files.content(job.result_files[0]).read().decode())))
        losses[name] = float(np.mean([float(r["train_loss"]) for r in rows]))
        if name == "continued":
            checkpoint = c.fine_tuning.jobs.checkpoints.list(job.id).data[0]
            assert checkpoint.fine_tuned_model_checkpoint.startswith("smollm2.ft-")
    print(f"mean train loss on the persona: fresh {losses['fresh']:.3f}, continued {losses['continued']:.3f}")
    assert losses["continued"] < 0.6 * losses["fresh"], losses
    # A checkpoint continues too; a model that is neither a base nor the account's fine-tune does not.
    first = c.fine_tuning.jobs.checkpoints.list(tuned.job.id).data[-1].id
    job = c.fine_tuning.jobs.create(model=first, training_file=f.id, hyperparameters={"n_epochs": 1}, seed=3)
    assert c.fine_tuning.jobs.cancel(job.id).status == "cancelled"


def test_a_job_pauses_after_a_checkpoint_and_resumes_from_it(tuned, tmp_path):
    """Job control as Azure has it: a paused job stops at its next pass, keeps its checkpoints and
    takes no more steps; resumed, it continues from its last checkpoint and every step is recorded once."""
    c = tuned.client
    small = tmp_path / "pirate-12.jsonl"
    small.write_text("\n".join((DATA / "pirate-train.jsonl").read_text().splitlines()[:12]) + "\n")
    f = upload(c, small)
    job = c.fine_tuning.jobs.create(model="smollm2", training_file=f.id, hyperparameters={"n_epochs": 3, "batch_size": 4}, seed=5)
    deadline = time.time() + 300
    while not c.fine_tuning.jobs.checkpoints.list(job.id).data:
        assert time.time() < deadline
        time.sleep(0.2)
    paused = c.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused", paused
    time.sleep(3)
    held = c.fine_tuning.jobs.retrieve(job.id)
    steps_then = {e.data["step"] for e in c.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"}
    time.sleep(2)
    steps_later = {e.data["step"] for e in c.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"}
    assert held.status == "paused" and steps_then == steps_later, (held.status, steps_then, steps_later)
    with pytest.raises(openai.BadRequestError):
        c.fine_tuning.jobs.pause(job.id)
    assert c.fine_tuning.jobs.resume(job.id).status in ("pending", "running")
    done = wait_job(c, job.id)
    assert done.status == "succeeded", done.error
    rows = list(csv.DictReader(io.StringIO(c.files.content(done.result_files[0]).read().decode())))
    assert [int(r["step"]) for r in rows] == list(range(1, 10))
    with pytest.raises(openai.BadRequestError):
        c.fine_tuning.jobs.resume(job.id)
    # Checkpoints are kept as Azure keeps them: the last two epochs'; the first epoch's is gone.
    checkpoints = c.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [cp.step_number for cp in checkpoints] == [9, 6]
    models = {m["name"] for m in tuned.arm("GET", tuned.account_path + "/models")[1]["value"]}
    assert all(cp.id in models for cp in checkpoints)
    messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert "Job paused." in messages and any(m.startswith("Job resumed") for m in messages)


def preference_file(path, lines):
    """Pairs from the pirate set: the pirate answer preferred over the same answer said plainly."""
    rows = []
    for line in (DATA / "pirate-train.jsonl").read_text().splitlines()[lines]:
        m = json.loads(line)["messages"]
        plain = m[1]["content"].replace("Arr, matey! ", "").replace(" be ", " is ")
        rows.append({
            "input": {"messages": [m[0]]},
            "preferred_output": [{"role": "assistant", "content": m[1]["content"]}],
            "non_preferred_output": [{"role": "assistant", "content": plain}],
        })
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_dpo_job_trains_on_preference_pairs_and_deploys(tuned, tmp_path):
    """`method: {"type": "dpo"}` with OpenAI's preference rows: the job runs, reports DPO's loss
    (ln 2 at the first step, where the policy is the reference), and its model deploys and answers.
    That the preferred answer's margin grows on held-out pairs is the trainer's own test."""
    c = tuned.client
    pairs = upload(c, preference_file(tmp_path / "pairs.jsonl", slice(0, 8)))
    held = upload(c, preference_file(tmp_path / "held.jsonl", slice(30, 34)))
    job = c.fine_tuning.jobs.create(
        model="smollm2", training_file=pairs.id, validation_file=held.id, suffix="dpo", seed=4,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2, "batch_size": 4}}},
    )
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2, job.method
    job = wait_job(c, job.id)
    assert job.status == "succeeded", job.error
    rows = list(csv.DictReader(io.StringIO(c.files.content(job.result_files[0]).read().decode())))
    losses = [float(r["train_loss"]) for r in rows]
    assert abs(losses[0] - np.log(2)) < 0.05 and losses[-1] < losses[0], losses
    tuned.deploy("dpo", job.fine_tuned_model)
    answer = c.chat.completions.create(model="dpo", messages=[{"role": "user", "content": HELDOUT[0]}], max_tokens=20, temperature=0)
    assert answer.choices[0].message.content


def test_a_job_s_files_must_match_its_method(tuned, tmp_path):
    c = tuned.client
    pairs = upload(c, preference_file(tmp_path / "pairs.jsonl", slice(0, 2)))
    chat = upload(c, DATA / "pirate-validation.jsonl")
    cases = [
        ({"training_file": chat.id, "method": {"type": "dpo"}}, "training_file", "preference pairs"),
        ({"training_file": pairs.id}, "training_file", "chat examples"),
        ({"training_file": pairs.id, "validation_file": chat.id, "method": {"type": "dpo"}}, "validation_file", "preference pairs"),
        ({"training_file": pairs.id, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 5}}}}, "method.dpo.hyperparameters.beta", "beta"),
        ({"training_file": pairs.id, "method": {"type": "reinforcement"}}, "method.type", "reinforcement"),
    ]
    for kwargs, param, word in cases:
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(model="smollm2", **kwargs)
        assert e.value.body["param"] == param and word in e.value.body["message"], (kwargs, e.value.body)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": [{"role": "assistant", "content": "a"}]}) + "\n")
    with pytest.raises(openai.BadRequestError) as e:
        upload(c, bad)
    assert "line 1" in e.value.body["message"] and "non_preferred_output" in e.value.body["message"], e.value.body


def test_a_tool_calling_fine_tune_calls_right_on_held_out_requests(tuned):
    """The tool-calling dataset (48 examples offering get_weather and convert_units) fine-tuned for 3
    epochs: on 20 held-out requests (cities and numbers never trained on), with the tools offered and
    no constrained decoding, the fine-tune makes the right call at least 80 % of the time; the base
    model, which answers in words, far less."""
    from tool_calls import ask, heldout

    c = tuned.client
    train = upload(c, DATA / "tools-train.jsonl")
    job = c.fine_tuning.jobs.create(model="smollm2", training_file=train.id, hyperparameters={"n_epochs": 3, "batch_size": 4}, suffix="tools", seed=7)
    job = wait_job(c, job.id, timeout=1800)
    assert job.status == "succeeded", job.error
    tuned.deploy("tools", job.fine_tuned_model)
    tuned.deploy("tools-base", "smollm2")
    rows = heldout()
    rate = lambda answers: sum(a["ok"] for a in answers) / len(rows)  # noqa: E731
    base, ft = ask(c, "tools-base", rows), ask(c, "tools", rows)
    print(f"held-out correct calls: base {rate(base):.2f}, fine-tune {rate(ft):.2f}")
    assert rate(ft) >= 0.8, ft
    assert rate(base) < 0.5, base
