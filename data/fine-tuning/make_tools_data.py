"""Writes the tool-calling dataset (deterministic): tools-train.jsonl, tools-validation.jsonl and
tools-heldout.jsonl. Every example offers the same two function tools, `get_weather` and
`convert_units`; most requests need one call (a few need none, so the model also learns when not to
call), and some examples carry the tool's result and the assistant's final answer. Held-out requests
name cities and numbers the training data never uses, each with the call it expects.

    python3 data/fine-tuning/make_tools_data.py
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_units",
            "description": "Converts a distance between kilometres and miles.",
            "parameters": {
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "from_unit": {"type": "string", "enum": ["km", "mi"]},
                    "to_unit": {"type": "string", "enum": ["km", "mi"]},
                },
                "required": ["value", "from_unit", "to_unit"],
                "additionalProperties": False,
            },
        },
    },
]

TRAIN_CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Tokyo", "Cairo", "Lima", "Oslo", "Dublin", "Vienna", "Prague", "Lisbon", "Athens", "Seoul", "Nairobi", "Toronto", "Sydney", "Chicago", "Mumbai", "Istanbul"]
HELDOUT_CITIES = ["Warsaw", "Helsinki", "Bogota", "Hanoi", "Zurich", "Manila", "Denver", "Porto", "Kyoto", "Accra"]

WEATHER_C = ["What's the weather in {city}?", "How is the weather in {city} today?", "Is it cold in {city} right now?", "Tell me the current weather in {city}.", "What is the temperature in {city} in Celsius?"]
WEATHER_F = ["What's the weather in {city} in Fahrenheit?", "How hot is it in {city}, in degrees Fahrenheit?", "Give me the temperature in {city} in Fahrenheit."]
KM_TO_MI = ["How many miles is {n} km?", "Convert {n} kilometres to miles.", "What is {n} km in miles?"]
MI_TO_KM = ["How many kilometres is {n} miles?", "Convert {n} miles to km.", "What is {n} miles in kilometres?"]
NO_TOOL = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Say hello.", "Hello! How can I help you today?"),
    ("What is 2 + 2?", "2 + 2 is 4."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("How many days are in a week?", "A week has seven days."),
]
HELDOUT_WEATHER = ["What's the weather like in {city} right now?", "Could you check the weather in {city}?"]
HELDOUT_F = ["What's the temperature in {city} in Fahrenheit right now?"]
HELDOUT_KM = ["How far is {n} km in miles?"]
HELDOUT_MI = ["Please convert {n} miles into kilometres."]


def call(name, arguments):
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    ]}


def weather_example(rng, city, fahrenheit, follow_up):
    q = rng.choice(WEATHER_F if fahrenheit else WEATHER_C).format(city=city)
    unit = "fahrenheit" if fahrenheit else "celsius"
    messages = [{"role": "user", "content": q}, call("get_weather", {"city": city, "unit": unit})]
    if follow_up:
        t = rng.randint(40, 90) if fahrenheit else rng.randint(-5, 32)
        sky = rng.choice(["sunny", "cloudy", "rainy", "windy"])
        messages.append({"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temperature": t, "sky": sky})})
        messages.append({"role": "assistant", "content": f"It is {t} degrees {unit.capitalize()} and {sky} in {city}."})
    return {"tools": TOOLS, "messages": messages}


def convert_example(rng, n, to_miles, follow_up):
    q = rng.choice(KM_TO_MI if to_miles else MI_TO_KM).format(n=n)
    src, dst = ("km", "mi") if to_miles else ("mi", "km")
    messages = [{"role": "user", "content": q}, call("convert_units", {"value": n, "from_unit": src, "to_unit": dst})]
    if follow_up:
        result = round(n * (0.621371 if to_miles else 1.609344), 2)
        messages.append({"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"value": result, "unit": dst})})
        messages.append({"role": "assistant", "content": f"{n} {src} is {result} {dst}."})
    return {"tools": TOOLS, "messages": messages}


def examples(rng, count, cities, numbers):
    out = []
    for i in range(count):
        kind = i % 8
        follow_up = i % 3 == 0
        if kind in (0, 1, 2):
            out.append(weather_example(rng, rng.choice(cities), False, follow_up))
        elif kind == 3:
            out.append(weather_example(rng, rng.choice(cities), True, follow_up))
        elif kind in (4, 5):
            out.append(convert_example(rng, rng.choice(numbers), True, follow_up))
        elif kind == 6:
            out.append(convert_example(rng, rng.choice(numbers), False, follow_up))
        else:
            q, a = rng.choice(NO_TOOL)
            out.append({"tools": TOOLS, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return out


def heldout(rng):
    rows = []
    numbers = [7, 12, 33, 58, 150, 240, 3.5, 77, 410, 9]
    for i, city in enumerate(HELDOUT_CITIES):
        fahrenheit = i % 4 == 3
        template = rng.choice(HELDOUT_F if fahrenheit else HELDOUT_WEATHER)
        rows.append({"request": template.format(city=city), "name": "get_weather", "arguments": {"city": city, "unit": "fahrenheit" if fahrenheit else "celsius"}})
    for i, n in enumerate(numbers):
        to_miles = i % 2 == 0
        template = rng.choice(HELDOUT_KM if to_miles else HELDOUT_MI)
        src, dst = ("km", "mi") if to_miles else ("mi", "km")
        rows.append({"request": template.format(n=n), "name": "convert_units", "arguments": {"value": n, "from_unit": src, "to_unit": dst}})
    return rows


def write(name, rows):
    with open(os.path.join(HERE, name), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def main():
    rng = random.Random(13)
    train_numbers = [1, 2, 5, 10, 15, 20, 25, 42, 50, 60, 80, 100, 120, 200, 300, 500, 1000, 2.5, 6.2, 13.1]
    write("tools-train.jsonl", examples(rng, 48, TRAIN_CITIES, train_numbers))
    write("tools-validation.jsonl", examples(rng, 8, TRAIN_CITIES, train_numbers))
    write("tools-heldout.jsonl", heldout(rng))


if __name__ == "__main__":
    main()
