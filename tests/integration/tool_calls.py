"""Scoring tool calls against the held-out requests of data/fine-tuning/tools-heldout.jsonl (shared by
the fine-tuning test and bench/tool_calling.py)."""
import json

from conftest import ROOT

DATA = ROOT / "data" / "fine-tuning"


def tools():
    """The two function tools every example of the tool-calling dataset offers."""
    with open(DATA / "tools-train.jsonl") as f:
        return json.loads(f.readline())["tools"]


def heldout():
    return [json.loads(line) for line in (DATA / "tools-heldout.jsonl").read_text().splitlines() if line.strip()]


def correct(message, expected):
    """Whether an answer made exactly the expected call: the function, and arguments that parse and
    equal the expected values (strings compared without case)."""
    calls = message.tool_calls or []
    if len(calls) != 1 or calls[0].function.name != expected["name"]:
        return False
    try:
        args = json.loads(calls[0].function.arguments)
    except ValueError:
        return False
    want = expected["arguments"]
    if set(args) != set(want):
        return False
    for k, v in want.items():
        got = args[k]
        if isinstance(v, str) and (not isinstance(got, str) or got.strip().lower() != v.lower()):
            return False
        if isinstance(v, (int, float)) and (not isinstance(got, (int, float)) or abs(got - v) > 1e-9):
            return False
    return True


def ask(client, deployment, rows):
    """Each held-out request with the tools offered (tool_choice auto, greedy): whether it called right,
    and what it said."""
    answers = []
    for r in rows:
        m = client.chat.completions.create(
            model=deployment, messages=[{"role": "user", "content": r["request"]}], tools=tools(), temperature=0, max_tokens=80
        ).choices[0].message
        said = [f"{c.function.name}({c.function.arguments})" for c in m.tool_calls or []] or [repr((m.content or "")[:80])]
        answers.append({"ok": correct(m, r), "said": "; ".join(said)})
    return answers
