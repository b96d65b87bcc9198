//! Chat completions' tools (and the legacy `functions`) and `response_format`: what a request asks
//! for, turned into the tools rendered into the prompt and the grammar its answer is held to; and an
//! answer's text turned back into `tool_calls`, whole or as stream deltas.

use crate::OpenAiApiError;
use berth_api::openai::ChatCompletionRequest;
use berth_text::{parse_tool_calls, tool_call_grammar, with_compact_layout, Grammar, ToolCall};
use serde_json::{json, Value};

/// OpenAI's limit on the tools of one request.
const MAX_TOOLS: usize = 128;

/// What a chat request asks of tools and output format.
#[derive(Debug, Clone, Default)]
pub struct ToolPlan {
    /// Tool objects (`{"type": "function", "function": {...}}`) for the prompt; empty when none are offered.
    pub tools: Vec<Value>,
    /// Function names the answer may call; calls are parsed out of answers only when non-empty.
    pub names: Vec<String>,
    /// The grammar the answer must follow, if any.
    pub grammar: Option<Grammar>,
    /// The request used `functions`/`function_call`: answer with `function_call`, one call at most.
    pub legacy: bool,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn bad(param: &str, message: impl Into<String>) -> OpenAiApiError {
    OpenAiApiError::invalid(param, "invalid_value", message)
}

/// One function definition (`{"name", "description"?, "parameters"?, "strict"?}`) checked.
fn function(param: &str, f: &Value) -> Result<(String, Value), OpenAiApiError> {
    let Some(obj) = f.as_object() else {
        return Err(bad(param, format!("'{param}' must be an object with a 'name'.")));
    };
    let name = match obj.get("name") {
        Some(Value::String(n)) if valid_name(n) => n.clone(),
        Some(Value::String(n)) => {
            return Err(bad(
                &format!("{param}.name"),
                format!("'{n}' is not a valid function name: use 1 to 64 of a-z, A-Z, 0-9, '_' and '-'."),
            ))
        }
        _ => return Err(bad(&format!("{param}.name"), format!("Missing required parameter: '{param}.name'."))),
    };
    let parameters = match obj.get("parameters") {
        None => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(bad(&format!("{param}.parameters"), "'parameters' must be a JSON Schema object.")),
    };
    Ok((name, parameters))
}

/// Reads `tools`, `tool_choice`, `parallel_tool_calls`, `functions`, `function_call` and `response_format`.
pub fn plan(req: &ChatCompletionRequest) -> Result<ToolPlan, OpenAiApiError> {
    let legacy_functions = req.unknown.get("functions");
    let legacy_choice = req.unknown.get("function_call");
    if legacy_choice.is_some() && legacy_functions.is_none() {
        return Err(bad("function_call", "'function_call' is only allowed when 'functions' are specified."));
    }
    if legacy_functions.is_some() && req.tools.is_some() {
        return Err(bad("functions", "Use either 'tools' or the deprecated 'functions', not both."));
    }
    let mut functions: Vec<(String, Value)> = Vec::new();
    let mut tools: Vec<Value> = Vec::new();
    let legacy = legacy_functions.is_some();
    if let Some(list) = legacy_functions {
        let Some(list) = list.as_array() else { return Err(bad("functions", "'functions' must be an array.")) };
        for (i, f) in list.iter().enumerate() {
            functions.push(function(&format!("functions[{i}]"), f)?);
            tools.push(json!({"type": "function", "function": f}));
        }
    }
    for (i, t) in req.tools.iter().flatten().enumerate() {
        let param = format!("tools[{i}]");
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(bad(
                    &format!("{param}.type"),
                    format!("Tools of type '{other}' are not supported by this model; only 'function' tools are."),
                ))
            }
            None => return Err(bad(&format!("{param}.type"), format!("Missing required parameter: '{param}.type'."))),
        }
        let f = t.get("function").ok_or_else(|| {
            bad(&format!("{param}.function"), format!("Missing required parameter: '{param}.function'."))
        })?;
        functions.push(function(&format!("{param}.function"), f)?);
        tools.push(t.clone());
    }
    let list_param = if legacy { "functions" } else { "tools" };
    if functions.len() > MAX_TOOLS {
        return Err(OpenAiApiError::invalid(
            list_param,
            "array_above_max_length",
            format!("'{list_param}' has {} entries; at most {MAX_TOOLS} are allowed.", functions.len()),
        ));
    }
    for (i, (name, _)) in functions.iter().enumerate() {
        if functions[..i].iter().any(|(n, _)| n == name) {
            return Err(bad(list_param, format!("The function name '{name}' is used twice.")));
        }
    }
    let (choice_param, choice) =
        if legacy { ("function_call", legacy_choice) } else { ("tool_choice", req.tool_choice.as_ref()) };
    if choice.is_some() && functions.is_empty() {
        return Err(bad(choice_param, format!("'{choice_param}' is only allowed when '{list_param}' are specified.")));
    }
    // Which functions the answer must call: none (free answer), all, or one by name.
    let required: Option<Vec<(String, Value)>> = match choice {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => {
                // Offered but never called: the prompt keeps them (the conversation may mention them).
                let response = response_format(req)?;
                return Ok(ToolPlan { tools, names: Vec::new(), grammar: response, legacy });
            }
            "auto" => None,
            "required" if !legacy => Some(functions.clone()),
            other => {
                let allowed = if legacy {
                    "'none', 'auto' or {\"name\": ...}"
                } else {
                    "'none', 'auto', 'required' or a named function"
                };
                return Err(bad(
                    choice_param,
                    format!("'{other}' is not a valid value for '{choice_param}': use {allowed}."),
                ));
            }
        },
        Some(v) => {
            let name = if legacy {
                v.get("name").and_then(Value::as_str)
            } else {
                v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str)
            };
            let Some(name) = name else {
                return Err(bad(choice_param, format!("'{choice_param}' must name a function.")));
            };
            let Some(f) = functions.iter().find(|(n, _)| n == name) else {
                return Err(bad(
                    choice_param,
                    format!("'{name}' in '{choice_param}' is not one of the functions offered."),
                ));
            };
            Some(vec![f.clone()])
        }
    };
    if req.parallel_tool_calls.is_some() && functions.is_empty() {
        return Err(bad("parallel_tool_calls", "'parallel_tool_calls' is only allowed when 'tools' are specified."));
    }
    let parallel = !legacy && req.parallel_tool_calls != Some(false);
    let names: Vec<String> = functions.iter().map(|(n, _)| n.clone()).collect();
    let response = response_format(req)?;
    let grammar = match (required, response) {
        (Some(fs), _) => Some(tool_call_grammar(&fs, parallel && choice_is_required(choice))),
        // Free to call a tool or answer, but an answer must match the format: either.
        (None, Some(Grammar::JsonSchema(schema))) if !names.is_empty() => {
            let Grammar::Lark(calls) = tool_call_grammar(&functions, parallel) else { unreachable!() };
            let calls = calls.replacen("start:", "calls:", 1);
            Some(Grammar::Lark(format!(
                "start: answer | calls\nanswer: %json {}\n{calls}",
                with_compact_layout(&schema)
            )))
        }
        (None, response) => response,
    };
    Ok(ToolPlan { tools, names, grammar, legacy })
}

/// Parallel calls make sense when any function may be called; a named one is called once.
fn choice_is_required(choice: Option<&Value>) -> bool {
    choice.and_then(Value::as_str) == Some("required")
}

/// `response_format`: `text`, `json_object` (any JSON object) or `json_schema`.
fn response_format(req: &ChatCompletionRequest) -> Result<Option<Grammar>, OpenAiApiError> {
    let Some(format) = &req.response_format else { return Ok(None) };
    let kind = format.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Grammar::JsonSchema(json!({"type": "object"})))),
        Some("json_schema") => {
            let Some(spec) = format.get("json_schema").and_then(Value::as_object) else {
                return Err(bad("response_format.json_schema", "Missing required parameter: 'response_format.json_schema'."));
            };
            match spec.get("name") {
                Some(Value::String(n)) if valid_name(n) => {}
                Some(Value::String(n)) => {
                    return Err(bad(
                        "response_format.json_schema.name",
                        format!("'{n}' is not a valid name: use 1 to 64 of a-z, A-Z, 0-9, '_' and '-'."),
                    ))
                }
                _ => {
                    return Err(bad(
                        "response_format.json_schema.name",
                        "Missing required parameter: 'response_format.json_schema.name'.",
                    ))
                }
            }
            match spec.get("schema") {
                None => Ok(Some(Grammar::JsonSchema(json!({"type": "object"})))),
                Some(s @ Value::Object(_)) => Ok(Some(Grammar::JsonSchema(s.clone()))),
                Some(_) => Err(bad("response_format.json_schema.schema", "'schema' must be a JSON Schema object.")),
            }
        }
        Some(other) => Err(bad(
            "response_format.type",
            format!("'{other}' is not a valid value for 'response_format.type': use 'text', 'json_object' or 'json_schema'."),
        )),
        None => Err(bad("response_format.type", "Missing required parameter: 'response_format.type'.")),
    }
}

/// The assistant's earlier calls in a request's history (`tool_calls`, or the legacy `function_call`).
pub fn history_calls(
    param: &str,
    tool_calls: Option<&Value>,
    function_call: Option<&Value>,
) -> Result<Vec<ToolCall>, OpenAiApiError> {
    let mut out = Vec::new();
    if let Some(calls) = tool_calls {
        let Some(calls) = calls.as_array() else {
            return Err(bad(&format!("{param}.tool_calls"), "'tool_calls' must be an array."));
        };
        for (j, c) in calls.iter().enumerate() {
            let p = format!("{param}.tool_calls[{j}]");
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("{p}.id"), format!("Missing required parameter: '{p}.id'.")))?;
            let f = c
                .get("function")
                .ok_or_else(|| bad(&format!("{p}.function"), format!("Missing required parameter: '{p}.function'.")))?;
            out.push(call_of(&format!("{p}.function"), id, f)?);
        }
    }
    if let Some(f) = function_call {
        out.push(call_of(&format!("{param}.function_call"), "call_0", f)?);
    }
    Ok(out)
}

fn call_of(param: &str, id: &str, f: &Value) -> Result<ToolCall, OpenAiApiError> {
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("{param}.name"), format!("Missing required parameter: '{param}.name'.")))?;
    let arguments = match f.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Object(_)) => v.to_string(),
        None => "{}".to_owned(),
        Some(_) => return Err(bad(&format!("{param}.arguments"), "'arguments' must be a string of JSON.")),
    };
    Ok(ToolCall { id: id.to_owned(), name: name.to_owned(), arguments })
}

/// An answer as a message: its text, or its calls (`tool_calls`, or `function_call` for legacy requests).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub content: Option<String>,
    pub tool_calls: Option<Vec<Value>>,
    pub function_call: Option<Value>,
    /// `tool_calls` / `function_call` when the answer called, else the engine's reason.
    pub finish_reason: Option<&'static str>,
}

/// Splits an answer into text and calls when the request offered tools.
pub fn answer(plan: &ToolPlan, text: String) -> Answer {
    let names: Vec<&str> = plan.names.iter().map(String::as_str).collect();
    let parsed = if names.is_empty() { None } else { parse_tool_calls(&text, &names) };
    match parsed {
        Some(p) if plan.legacy => {
            let first = &p.calls[0];
            Answer {
                content: None,
                tool_calls: None,
                function_call: Some(json!({"name": first.name, "arguments": first.arguments})),
                finish_reason: Some("function_call"),
            }
        }
        Some(p) => Answer {
            content: (!p.content.is_empty()).then_some(p.content),
            tool_calls: Some(
                p.calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": format!("call_{}", berth_control::new_hex_id()),
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        })
                    })
                    .collect(),
            ),
            function_call: None,
            finish_reason: Some("tool_calls"),
        },
        None => Answer { content: Some(text), tool_calls: None, function_call: None, finish_reason: None },
    }
}

/// How much of a streamed text can be sent as content now: all of it, except a tail that could still
/// become the start of a `<tool_call>` block; nothing more once a block has started.
pub fn releasable(text: &str) -> usize {
    const OPEN: &str = berth_text::TOOL_CALL_OPEN;
    if let Some(at) = text.find(OPEN) {
        return at;
    }
    (1..OPEN.len())
        .rev()
        .find(|&k| {
            text.len() >= k && text.is_char_boundary(text.len() - k) && OPEN.starts_with(&text[text.len() - k..])
        })
        .map_or(text.len(), |k| text.len() - k)
}
