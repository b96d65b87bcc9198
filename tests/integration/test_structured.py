"""Structured outputs and tool calling through the real `openai` SDK on a SmolLM2 deployment: a model
far too small to follow format instructions, so every valid answer here is the constrained decoder's
doing. Each answer is checked with `jsonschema` against the schema the SDK sent."""
import concurrent.futures
import datetime
import enum
import json
from typing import Annotated, List, Literal, Optional, Union

import jsonschema
import openai
import pytest
import requests_shim as http
from openai import AzureOpenAI
from pydantic import BaseModel, Field
from conftest import SHARED_SERVER_RETRIES

VERSION = "2024-10-21"


@pytest.fixture(scope="module")
def client(server):
    return AzureOpenAI(azure_endpoint=server.url, api_key=server.keys()["key1"], api_version=VERSION, max_retries=SHARED_SERVER_RETRIES)


Short = Field(max_length=24)


class Person(BaseModel):
    name: str = Short
    age: int = Field(ge=0, le=120)


class Address(BaseModel):
    street: str = Short
    city: str = Short
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Colour(BaseModel):
    colour: Literal["red", "green", "blue"]


class Item(BaseModel):
    name: str = Short
    qty: int = Field(ge=1, le=10)


class Order(BaseModel):
    id: int = Field(ge=1, le=99999)
    items: List[Item] = Field(min_length=1, max_length=3)


class Profile(BaseModel):
    name: str = Short
    nickname: Optional[str] = Field(max_length=16)


class Measurement(BaseModel):
    value: float = Field(ge=0, le=100)
    unit: Literal["cm", "m", "km"]


class Verdict(BaseModel):
    correct: bool
    reason: str = Field(max_length=40)


class Tags(BaseModel):
    tags: List[str] = Field(min_length=1, max_length=3)


class Priority(str, enum.Enum):
    low = "low"
    medium = "medium"
    high = "high"


class Task(BaseModel):
    title: str = Short
    priority: Priority


class City(BaseModel):
    name: str = Short
    country: str = Short


class Trip(BaseModel):
    origin: City
    destination: City
    days: int = Field(ge=1, le=30)


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    breed: str = Short


class Pet(BaseModel):
    pet: Union[Cat, Dog]


class Scores(BaseModel):
    scores: List[Annotated[int, Field(ge=0, le=100)]] = Field(min_length=2, max_length=4)


class Book(BaseModel):
    title: str = Short
    author: str = Short
    year: int = Field(ge=1000, le=2100)


class Company(BaseModel):
    name: str = Short
    ceo: Person
    address: Address


class Dice(BaseModel):
    roll: Literal[1, 2, 3, 4, 5, 6]


class Event(BaseModel):
    name: str = Short
    day: datetime.date


class Product(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-[0-9]{3}$")
    price: float = Field(gt=0, lt=10000)


class Ack(BaseModel):
    ok: bool


class Grid(BaseModel):
    rows: List[Annotated[List[int], Field(min_length=1, max_length=3)]] = Field(min_length=1, max_length=2)


CASES = [
    (Person, "Tell me about a person."),
    (Address, "Where does Alice live?"),
    (Colour, "What colour is the sky?"),
    (Order, "Place an order for two apples."),
    (Profile, "Describe a user profile."),
    (Measurement, "How tall is a door?"),
    (Verdict, "Is 2 + 2 = 5?"),
    (Tags, "Tag this post about cooking pasta."),
    (Task, "Create a task to buy milk."),
    (Trip, "Plan a trip from Paris to Rome."),
    (Pet, "Describe a pet."),
    (Scores, "Give three test scores."),
    (Book, "Recommend a book."),
    (Company, "Describe a company."),
    (Dice, "Roll a die."),
    (Event, "When is the next holiday?"),
    (Product, "Describe a product for sale."),
    (Ack, "Acknowledge this message."),
    (Grid, "Give a small grid of numbers."),
    (City, "Name a big city."),
]


def check(model, message):
    """The answer parses as JSON, validates against the model's schema, and the SDK parsed it."""
    data = json.loads(message.content)
    jsonschema.validate(data, openai.lib._pydantic.to_strict_json_schema(model))
    assert isinstance(message.parsed, model), message


def parse_one(client, model, question):
    answer = client.chat.completions.parse(
        model="smol", messages=[{"role": "user", "content": question}], response_format=model, max_tokens=200, temperature=0
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop", choice
    check(model, choice.message)
    return choice.message.content


def stream_one(client, model, question):
    with client.chat.completions.stream(
        model="smol", messages=[{"role": "user", "content": question}], response_format=model, max_tokens=200, temperature=0
    ) as stream:
        final = stream.get_final_completion()
    check(model, final.choices[0].message)
    return final.choices[0].message.content


def test_twenty_pydantic_schemas_parse_streamed_and_not(client):
    assert len(CASES) == 20 and len({m for m, _ in CASES}) == 20
    # Four at a time: constrained rows of different schemas share the engine's batches.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        whole = list(pool.map(lambda c: parse_one(client, *c), CASES))
        streamed = list(pool.map(lambda c: stream_one(client, *c), CASES))
    assert len(whole) == len(streamed) == 20


def test_json_object_mode_always_answers_an_object(client):
    answer = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Say hello."}],
        response_format={"type": "json_object"},
        max_tokens=120,
        temperature=0.8,
        seed=3,
        n=3,
    )
    for choice in answer.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict), choice


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CONVERT = {
    "type": "function",
    "function": {
        "name": "convert_units",
        "description": "Converts a distance between kilometres and miles.",
        "parameters": {
            "type": "object",
            "properties": {"value": {"type": "number"}, "from_unit": {"enum": ["km", "mi"]}, "to_unit": {"enum": ["km", "mi"]}},
            "required": ["value", "from_unit", "to_unit"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, CONVERT]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def valid_calls(calls):
    assert calls, "no tool calls"
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function", call
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return [(c.function.name, json.loads(c.function.arguments)) for c in calls]


def test_a_required_tool_call_round_trip_streamed_and_not(client):
    messages = [{"role": "user", "content": "What's the weather like in Paris today?"}]
    first = client.chat.completions.create(model="smol", messages=messages, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=150)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = valid_calls(choice.message.tool_calls)
    # The same calls, reassembled from the stream's deltas.
    stream = client.chat.completions.create(
        model="smol", messages=messages, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=150, stream=True
    )
    assembled, finish = {}, None
    for chunk in stream:
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for d in c.delta.tool_calls or []:
                entry = assembled.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = d.id or entry["id"]
                if d.function and d.function.name:
                    entry["name"] += d.function.name
                if d.function and d.function.arguments:
                    entry["arguments"] += d.function.arguments
    assert finish == "tool_calls"
    assert [(e["name"], json.loads(e["arguments"])) for _, e in sorted(assembled.items())] == calls
    assert all(e["id"].startswith("call_") for e in assembled.values())
    # The tool's result goes back; the model answers in words.
    messages.append(choice.message.model_dump(exclude_none=True))
    for call in choice.message.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "sunny"})})
    final = client.chat.completions.create(model="smol", messages=messages, tools=TOOLS, temperature=0, max_tokens=60)
    assert final.choices[0].message.content, final
    assert final.choices[0].finish_reason in ("stop", "length", "tool_calls"), final


def test_a_named_function_is_the_one_called(client):
    answer = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "How far is 10 miles in kilometres?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "convert_units"}},
        temperature=0,
        max_tokens=150,
    )
    calls = valid_calls(answer.choices[0].message.tool_calls)
    assert [name for name, _ in calls] == ["convert_units"]


def test_legacy_functions_answer_with_function_call(client):
    answer = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        functions=[WEATHER["function"]],
        function_call={"name": "get_weather"},
        temperature=0,
        max_tokens=150,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None, choice
    assert choice.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), SCHEMAS["get_weather"])


def test_store_false_is_accepted(client):
    """Not storing is what Berth does: `store: false` (which some clients always send) is served."""
    answer = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], store=False, max_tokens=2)
    assert answer.choices[0].message.content is not None


def test_tool_choice_none_and_auto_answer_in_words_or_valid_calls(client):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    none = client.chat.completions.create(model="smol", messages=messages, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=30)
    assert none.choices[0].message.content and none.choices[0].message.tool_calls is None
    auto = client.chat.completions.create(model="smol", messages=messages, tools=TOOLS, temperature=0, max_tokens=100)
    message = auto.choices[0].message
    if message.tool_calls:
        valid_calls(message.tool_calls)
    else:
        assert message.content


def test_refusals_name_the_parameter(server):
    url = f"{server.url}/openai/deployments/smol/chat/completions?api-version={VERSION}"
    key = {"api-key": server.keys()["key1"]}
    hi = [{"role": "user", "content": "hi"}]
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "if": {}, "then": {}}}}}, "response_format", "if"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}}, "response_format.json_schema.name", "name"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "xml"),
        ({"tool_choice": "required"}, "tool_choice", "tools"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "launch"}}}, "tool_choice", "launch"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type", "code_interpreter"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name", "bad name!"),
        ({"tools": [WEATHER, WEATHER]}, "tools", "twice"),
        ({"tools": TOOLS, "functions": [WEATHER["function"]]}, "functions", "not both"),
    ]
    for extra, param, word in cases:
        status, body, _ = http.request("POST", url, body={"messages": hi, **extra}, headers=key)
        assert status == 400 and body["error"]["param"] == param and word in body["error"]["message"], (extra, body)
    # A tool message must say which call it answers; only assistants carry calls.
    status, body, _ = http.request("POST", url, body={"messages": hi + [{"role": "tool", "content": "1"}]}, headers=key)
    assert (status, body["error"]["param"]) == (400, "messages[1].tool_call_id"), body
    status, body, _ = http.request("POST", url, body={"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, headers=key)
    assert (status, body["error"]["param"]) == (400, "messages[0].tool_calls"), body
