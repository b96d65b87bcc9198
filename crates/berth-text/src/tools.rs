//! Function calling in the Hermes format (the one Qwen2.5's and many fine-tunes' chat templates use):
//! the tools are listed in the system turn as JSON, and the model calls them with blocks of
//! `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`. Templates written for that format
//! render tools themselves; for any other template the tools and calls are folded into plain
//! messages here, so that every chat model can be given tools the same documented way.

use crate::{ChatMessage, Grammar};
use serde_json::{json, Value};

pub const TOOL_CALL_OPEN: &str = "<tool_call>";
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";

/// A function call made by the assistant: in a request's history, or parsed from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// The call as Hugging Face chat templates read it (`arguments` as an object when it parses).
    pub(crate) fn template_value(&self) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_value()},
        })
    }

    fn arguments_value(&self) -> Value {
        serde_json::from_str(&self.arguments).unwrap_or_else(|_| Value::String(self.arguments.clone()))
    }

    /// The call as the model writes it.
    pub fn block(&self) -> String {
        let body = json!({"name": self.name, "arguments": self.arguments_value()});
        format!("{TOOL_CALL_OPEN}\n{}\n{TOOL_CALL_CLOSE}", compact(&body))
    }
}

/// JSON with `", "` and `": "` separators, as the constrained grammar writes it.
fn compact(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let items: Vec<String> =
                map.iter().map(|(k, v)| format!("{}: {}", Value::String(k.clone()), compact(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(compact).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// The system text that introduces the tools when the chat template does not.
pub fn tools_preamble(tools: &[Value]) -> String {
    let listed: Vec<String> = tools.iter().map(compact).collect();
    format!(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{}\n</tools>\n\n\
         For each function call, return a json object with function name and arguments within \
         {TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} XML tags:\n{TOOL_CALL_OPEN}\n\
         {{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n{TOOL_CALL_CLOSE}",
        listed.join("\n")
    )
}

/// Folds tools, assistant calls and tool results into messages any chat template renders: the tools
/// into the system turn, calls into the assistant's text, results into user turns wrapped in
/// `<tool_response>` (consecutive results share one turn).
pub(crate) fn fold(messages: &[ChatMessage], tools: &[Value]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let preamble = tools_preamble(tools);
        match messages.first() {
            Some(first) if first.role == "system" => {
                out.push(ChatMessage::new("system", format!("{}\n\n{preamble}", first.content)));
            }
            _ => out.push(ChatMessage::new("system", preamble)),
        }
    }
    let skip = usize::from(!tools.is_empty() && messages.first().is_some_and(|m| m.role == "system"));
    for m in &messages[skip..] {
        match m.role.as_str() {
            "assistant" if !m.tool_calls.is_empty() => {
                let mut parts: Vec<String> = Vec::new();
                if !m.content.is_empty() {
                    parts.push(m.content.clone());
                }
                parts.extend(m.tool_calls.iter().map(ToolCall::block));
                out.push(ChatMessage::new("assistant", parts.join("\n")));
            }
            "tool" => {
                let response = format!("<tool_response>\n{}\n</tool_response>", m.content);
                match out.last_mut() {
                    Some(last) if last.role == "user" && last.content.ends_with("</tool_response>") => {
                        last.content = format!("{}\n{response}", last.content);
                    }
                    _ => out.push(ChatMessage::new("user", response)),
                }
            }
            _ => out.push(ChatMessage::new(m.role.clone(), m.content.clone())),
        }
    }
    out
}

/// An answer split into its text and its tool calls, if it made any that parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAnswer {
    /// Text before the first call (trimmed), empty when the answer is only calls.
    pub content: String,
    pub calls: Vec<ParsedCall>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    /// The arguments as compact JSON text.
    pub arguments: String,
}

/// Reads the `<tool_call>` blocks of an answer. Calls to functions not in `known`, or blocks that
/// are not a JSON object with a name and object arguments, make the whole answer plain text (`None`):
/// a half-understood call is worse than none.
pub fn parse_tool_calls(answer: &str, known: &[&str]) -> Option<ParsedAnswer> {
    let start = answer.find(TOOL_CALL_OPEN)?;
    let content = answer[..start].trim().to_owned();
    let mut calls = Vec::new();
    let mut rest = &answer[start..];
    while let Some(open) = rest.find(TOOL_CALL_OPEN) {
        if !rest[..open].trim().is_empty() {
            return None;
        }
        let body_start = open + TOOL_CALL_OPEN.len();
        let (body, after) = match rest[body_start..].find(TOOL_CALL_CLOSE) {
            Some(close) => (&rest[body_start..body_start + close], &rest[body_start + close + TOOL_CALL_CLOSE.len()..]),
            None => (&rest[body_start..], ""),
        };
        let v: Value = serde_json::from_str(body.trim()).ok()?;
        let name = v.get("name")?.as_str()?;
        if !known.contains(&name) {
            return None;
        }
        let arguments = match v.get("arguments") {
            Some(Value::Object(_)) => v["arguments"].to_string(),
            Some(Value::String(s)) if serde_json::from_str::<Value>(s).is_ok_and(|a| a.is_object()) => s.clone(),
            None => "{}".to_owned(),
            _ => return None,
        };
        calls.push(ParsedCall { name: name.to_owned(), arguments });
        rest = after;
    }
    if !rest.trim().is_empty() {
        return None;
    }
    Some(ParsedAnswer { content, calls })
}

/// The grammar of an answer that must call a tool: one call (or, with `parallel`, one or more) to a
/// function of `functions`, each `(name, parameters schema)`, with arguments valid for its schema.
pub fn tool_call_grammar(functions: &[(String, Value)], parallel: bool) -> Grammar {
    // Definitions move to the root, where the parameters' `#/$defs/...` references now point.
    let mut defs = serde_json::Map::new();
    let options: Vec<Value> = functions
        .iter()
        .map(|(name, parameters)| {
            let mut parameters = parameters.clone();
            if let Some(Value::Object(own)) = parameters.as_object_mut().and_then(|p| p.remove("$defs")) {
                defs.extend(own);
            }
            if parameters.as_object().is_none_or(|p| p.is_empty()) {
                parameters = json!({"type": "object"});
            }
            json!({
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut schema = json!({"anyOf": options});
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    let schema = crate::with_compact_layout(&schema);
    let repeat = if parallel { " (\"\\n\" call)*" } else { "" };
    Grammar::Lark(format!(
        "start: call{repeat}\ncall: \"{TOOL_CALL_OPEN}\\n\" body \"\\n{TOOL_CALL_CLOSE}\"\nbody: %json {schema}\n"
    ))
}
