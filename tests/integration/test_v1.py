"""The v1 surface (`/openai/v1/...`, as Azure's newer documentation uses it): the plain `OpenAI` client
with `base_url`, the deployment named in the body's `model`, no api-version, the API key sent as a
bearer token, on the server's and the account's endpoint."""
import os

import openai
import pytest
import requests_shim as http
from conftest import SHARED_SERVER_RETRIES

HI = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def v1(server):
    key = server.keys()["key1"]
    return server, key, openai.OpenAI(base_url=f"{server.url}/openai/v1/", api_key=key, max_retries=SHARED_SERVER_RETRIES)


def test_the_plain_openai_client_chats_streams_and_completes(v1):
    s, key, client = v1
    answer = client.chat.completions.create(model="smol", messages=HI, max_completion_tokens=8, temperature=0, seed=1)
    assert answer.choices[0].message.content and answer.usage.completion_tokens <= 8, answer
    # The same answer as the deployment-path surface gives.
    azure = openai.AzureOpenAI(azure_endpoint=s.url, api_key=key, api_version="2024-10-21", max_retries=0)
    same = azure.chat.completions.create(model="smol", messages=HI, max_tokens=8, temperature=0, seed=1)
    assert same.choices[0].message.content == answer.choices[0].message.content
    stream = client.chat.completions.create(model="smol", messages=HI, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content and chunks[-1].usage.completion_tokens > 0
    completion = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert completion.choices[0].text


def test_models_files_and_jobs_answer_on_v1_and_on_the_account_endpoint(v1):
    s, key, client = v1
    ids = [m.id for m in client.models.list()]
    assert "smollm2" in ids and s.ft_model in ids
    # Upload a training file and start a job through the plain client, then cancel it.
    training = open(os.path.join(os.path.dirname(__file__), "..", "..", "data", "fine-tuning", "pirate-train.jsonl"), "rb")
    uploaded = client.files.create(file=training, purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.id in [f.id for f in client.files.list()]
    job = client.fine_tuning.jobs.create(model="smollm2", training_file=uploaded.id, suffix="v1")
    assert job.status in ("pending", "running"), job
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert job.id in [j.id for j in client.fine_tuning.jobs.list()]
    account = openai.OpenAI(base_url=f"{s.url}/accounts/{s.creds['account']}/openai/v1/", api_key=key, max_retries=0)
    assert account.chat.completions.create(model="smol", messages=HI, max_tokens=2).usage.completion_tokens <= 2
    # A bearer token of a principal works too.
    token = openai.OpenAI(base_url=f"{s.url}/openai/v1/", api_key=s.token, max_retries=0)
    assert token.chat.completions.create(model="smol", messages=HI, max_tokens=2).choices


def test_v1_refusals_name_what_is_wrong(v1):
    s, key, client = v1
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nowhere", messages=HI, max_tokens=2)
    assert e.value.body["code"] == "DeploymentNotFound"
    status, body, _ = http.request("POST", s.url + "/openai/v1/chat/completions", body={"messages": HI}, headers={"api-key": key})
    assert (status, body["error"]["param"], body["error"]["code"]) == (400, "model", "missing_required_parameter"), body
    status, body, _ = http.request("POST", s.url + "/openai/v1/chat/completions?api-version=2024-13-99", body={"model": "smol", "messages": HI}, headers={"api-key": key})
    assert (status, body["error"]["code"]) == (400, "InvalidApiVersion"), body
    for version in ["preview", "latest", "2024-10-21"]:
        status, body, _ = http.request("POST", s.url + f"/openai/v1/chat/completions?api-version={version}", body={"model": "smol", "messages": HI, "max_tokens": 1}, headers={"api-key": key})
        assert status == 200, body
    status, body, _ = http.request("POST", s.url + "/openai/v1/chat/completions", body={"model": "smol", "messages": HI, "store": True}, headers={"api-key": key})
    assert (status, body["error"]["param"]) == (400, "store"), body
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{s.url}/openai/v1/", api_key="wrong", max_retries=0).models.list()
