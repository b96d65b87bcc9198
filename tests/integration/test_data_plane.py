"""The Azure OpenAI data plane through the real `openai` SDK (AzureOpenAI), plus raw HTTP for what the
SDK cannot send (malformed JSON)."""
import concurrent.futures
import json
import uuid

import openai
import pytest
import requests_shim as http
from openai import AzureOpenAI
from conftest import SHARED_SERVER_RETRIES

VERSION = "2024-10-21"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server):
    return AzureOpenAI(azure_endpoint=server.url, api_key=server.keys()["key1"], api_version=VERSION, max_retries=SHARED_SERVER_RETRIES)


def test_chat_completion_answers_with_usage(client):
    r = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=30, temperature=0)
    assert "Paris" in r.choices[0].message.content
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == "smollm2"
    assert r.choices[0].finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 10 and 1 <= u.completion_tokens <= 30
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # Other tests may have asked the same question: whole 16-token blocks of it can come from the cache.
    assert u.prompt_tokens_details.cached_tokens % 16 == 0 and u.prompt_tokens_details.cached_tokens < u.prompt_tokens


def test_a_repeated_prompt_prefix_comes_from_the_cache(client):
    nonce = uuid.uuid4().hex
    system = {"role": "system", "content": f"[{nonce}] You are the berth planner of a busy container port. " * 4}
    messages = [system, {"role": "user", "content": "Which berth is free?"}]
    first = client.chat.completions.create(model="smol", messages=messages, max_tokens=8, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    second = client.chat.completions.create(model="smol", messages=messages, max_tokens=8, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached % 16 == 0 and first.usage.prompt_tokens - 16 <= cached < first.usage.prompt_tokens, cached
    assert second.choices[0].message.content == first.choices[0].message.content
    # Streaming reports the cached tokens in its usage chunk too; another question shares the system prompt.
    other = messages[:1] + [{"role": "user", "content": "Which ship comes next?"}]
    stream = client.chat.completions.create(model="smol", messages=other, max_tokens=4, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    usage = [c.usage for c in stream if c.usage][0]
    assert usage.prompt_tokens_details.cached_tokens >= 48
    # The fine-tuned deployment on the same base never reuses the base deployment's blocks.
    ft = client.chat.completions.create(model="smol-ft", messages=messages, max_tokens=2, temperature=0)
    assert ft.usage.prompt_tokens_details.cached_tokens == 0


def test_a_full_queue_answers_429_with_retry_after(fresh_server):
    fresh_server.stop()
    fresh_server.start(args=["--max-batch", "1", "--queue-depth", "1"])
    assert fresh_server.deploy("smol", "smollm2")["properties"]["provisioningState"] == "Succeeded"
    url = f"{fresh_server.url}/openai/deployments/smol/chat/completions?api-version={VERSION}"
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 64}
    key = fresh_server.keys()["key1"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: http.request("POST", url, body=body, headers={"api-key": key}), range(8)))
    statuses = sorted(a[0] for a in answers)
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1 and set(statuses) == {200, 429}, statuses
    status, err, headers = next(a for a in answers if a[0] == 429)
    assert err["error"]["code"] == "429" and "retry" in err["error"]["message"].lower()
    assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) >= 1


def test_streaming_matches_the_non_streamed_answer(client):
    whole = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=25, temperature=0)
    stream = client.chat.completions.create(
        model="smol", messages=QUESTION, max_tokens=25, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    pieces, roles, finish, usage = [], [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
            assert chunk.choices == []
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert roles == ["assistant"]
    assert "".join(pieces) == whole.choices[0].message.content
    assert len(pieces) > 3, "text arrives token by token"
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_raw_stream_frames(server):
    key = server.keys()["key1"]
    body = {"messages": QUESTION, "max_tokens": 3, "temperature": 0, "stream": True}
    status, text, headers = http.request(
        "POST", f"{server.url}/openai/deployments/smol/chat/completions?api-version={VERSION}", body=body, headers={"api-key": key}
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    frames = [f for f in text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert frames[-1] == "data: [DONE]"
    first = json.loads(frames[0][6:])
    assert first["choices"] == [] and first["prompt_filter_results"][0]["prompt_index"] == 0
    last = json.loads(frames[-2][6:])
    assert last["choices"][0]["finish_reason"] == "length" and last["object"] == "chat.completion.chunk"


def test_stop_sequences_n_and_seed(client):
    full = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Count from 1 to 10."}], max_tokens=40, temperature=0)
    text = full.choices[0].message.content
    assert "5" in text, text
    cut = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Count from 1 to 10."}], max_tokens=40, temperature=0, stop=["5"])
    assert cut.choices[0].message.content == text[: text.index("5")]
    assert cut.choices[0].finish_reason == "stop"
    a = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=12, temperature=0.9, seed=7, n=2)
    b = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=12, temperature=0.9, seed=7, n=2)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_completions_api(client):
    r = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert r.object == "text_completion" and "Paris" in r.choices[0].text
    assert 1 <= r.usage.completion_tokens <= 5
    default = client.completions.create(model="smol", prompt="Once upon a time", temperature=0)
    assert default.usage.completion_tokens <= 16
    echoed = client.completions.create(model="smol", prompt="Once upon a time", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("Once upon a time")
    two = client.completions.create(model="smol", prompt=["One, two,", "Red, green,"], max_tokens=3, temperature=0)
    assert [c.index for c in two.choices] == [0, 1]
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="smol", prompt="The capital of France is", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_bearer_token_auth(server):
    token = json.loads(server.cli("token").stdout)
    assert token["tokenType"] == "Bearer" and token["tenant"] == server.creds["tenantId"]
    c = AzureOpenAI(azure_endpoint=server.url, azure_ad_token=token["accessToken"], api_version=VERSION, max_retries=0)
    r = c.chat.completions.create(model="smol", messages=QUESTION, max_tokens=5, temperature=0)
    assert r.choices[0].message.content
    # The account's own endpoint (what `account show` reports) works with either credential.
    endpoint = json.loads(server.cli("account", "show").stdout)["properties"]["endpoint"]
    c = AzureOpenAI(azure_endpoint=endpoint, azure_ad_token=token["accessToken"], api_version=VERSION, max_retries=0)
    assert c.chat.completions.create(model="smol", messages=QUESTION, max_tokens=2).choices


def test_errors_in_the_contract_shape(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-deployment", messages=QUESTION)
    assert e.value.body["code"] == "DeploymentNotFound"
    bad = AzureOpenAI(azure_endpoint=server.url, api_key="wrong", api_version=VERSION, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="smol", messages=QUESTION)
    assert e.value.status_code == 401 and e.value.body["code"] == "401"
    for kwargs, param in [
        ({"temperature": 5}, "temperature"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 100000}, "messages"),
        ({"logit_bias": {"999999": 1}}, "logit_bias"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}, "tools[0].function.parameters"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="smol", messages=QUESTION, **kwargs)
        assert e.value.body["param"] == param and e.value.body["type"] == "invalid_request_error", (kwargs, e.value.body)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="smol", prompt=[1, 49152], max_tokens=2)
    assert e.value.body["param"] == "prompt" and "49152" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smol", messages=[])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smol", messages=[{"role": "wizard", "content": "hi"}])
    assert e.value.body["param"] == "messages[0].role"
    key = server.keys()["key1"]
    url = f"{server.url}/openai/deployments/smol/chat/completions?api-version={VERSION}"
    status, body, headers = http.request("POST", url, raw=b'{"messages": [', headers={"api-key": key})
    assert status == 400 and body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_json"
    assert headers["x-request-id"] and headers["apim-request-id"] == headers["x-request-id"]
    status, body, _ = http.request("POST", url, body={"messages": QUESTION})
    assert status == 401 and body["error"]["code"] == "401"


def test_adapter_deployment_differs_from_base_and_lists_models(server, client):
    base = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=12, temperature=0)
    ft = client.chat.completions.create(model="smol-ft", messages=QUESTION, max_tokens=12, temperature=0)
    assert ft.model == server.ft_model and ft.model.startswith("smollm2.ft-")
    assert ft.choices[0].message.content != base.choices[0].message.content
    # Interleaved requests to base and adapter give the same answers as alone (rows keep their adapters).
    again = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=12, temperature=0)
    assert again.choices[0].message.content == base.choices[0].message.content
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "smollm2" in ids and server.ft_model in ids
