//! Training files: JSONL chat examples (`{"messages": [{"role", "content"}, ...]}` a line, optionally
//! with `tools`, assistant `tool_calls` and `tool` results), checked line by line, and turned into token
//! ids with a mask of the tokens the loss is taken on (the assistant's turns, calls included, as the
//! model's own chat template renders them for inference).

use crate::error::Result;
use crate::TrainError;
use berth_text::{ChatMessage, TextModel, ToolCall};
use serde_json::Value;

/// Longest example a file may hold, in characters of message content. Token limits depend on the
/// model and are checked when a job starts ([`tokenize`]).
pub const MAX_EXAMPLE_CHARS: usize = 32_768;
/// At most this many problems are listed for one file.
const MAX_PROBLEMS: usize = 20;

/// One conversation of a training file.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// 1-based line of the file.
    pub line: usize,
    pub messages: Vec<ChatMessage>,
    /// Per message: is it trained on (assistant turns whose `weight` is not 0).
    pub trained: Vec<bool>,
    /// The tools offered in the conversation (OpenAI's tool objects), rendered into its prompt.
    pub tools: Vec<Value>,
}

/// A problem with one line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub line: usize,
    pub message: String,
}

/// What was wrong with a file: the first problems by line, and how many there were in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblems {
    pub problems: Vec<LineProblem>,
    pub total: usize,
}

impl std::fmt::Display for FileProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.total == 1 {
            write!(f, "The file has 1 problem: ")?;
        } else {
            write!(f, "The file has {} problems: ", self.total)?;
        }
        let parts: Vec<String> = self
            .problems
            .iter()
            .map(|p| if p.line == 0 { p.message.clone() } else { format!("line {}: {}", p.line, p.message) })
            .collect();
        write!(f, "{}", parts.join("; "))?;
        if self.total > self.problems.len() {
            write!(f, "; and {} more", self.total - self.problems.len())?;
        }
        Ok(())
    }
}

/// Parses and checks a training or validation file. Blank lines are skipped.
pub fn parse_jsonl(bytes: &[u8]) -> Result<Vec<Example>, FileProblems> {
    parse_lines(bytes, parse_line)
}

/// One preference pair of a DPO file: a conversation, and two answers to it, the preferred first.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceExample {
    pub line: usize,
    /// The conversation and the preferred answer; only that answer is trained on.
    pub preferred: Example,
    /// The conversation and the other answer.
    pub non_preferred: Example,
}

/// The two kinds of fine-tuning file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `{"messages": [...]}` lines, for supervised fine-tuning.
    Chat,
    /// `{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}` lines, for DPO.
    Preference,
}

impl FileKind {
    /// What a file holds, judged by its first line (its other lines must then be of the same kind).
    pub fn of(bytes: &[u8]) -> FileKind {
        let first = bytes.split(|b| *b == b'\n').find(|l| !l.iter().all(u8::is_ascii_whitespace));
        match first.and_then(|l| serde_json::from_slice::<Value>(l).ok()) {
            Some(v) if v.get("input").is_some() && v.get("messages").is_none() => FileKind::Preference,
            _ => FileKind::Chat,
        }
    }

    /// Checks a file of this kind and counts its examples.
    pub fn check(self, bytes: &[u8]) -> Result<usize, FileProblems> {
        match self {
            FileKind::Chat => parse_jsonl(bytes).map(|e| e.len()),
            FileKind::Preference => parse_preference_jsonl(bytes).map(|e| e.len()),
        }
    }
}

/// Parses and checks a DPO file (OpenAI's preference format). Blank lines are skipped.
pub fn parse_preference_jsonl(bytes: &[u8]) -> Result<Vec<PreferenceExample>, FileProblems> {
    parse_lines(bytes, parse_preference_line)
}

fn parse_preference_line(line: usize, raw: &str) -> std::result::Result<PreferenceExample, String> {
    let value: Value = serde_json::from_str(raw).map_err(|e| format!("not valid JSON ({e})"))?;
    let input = value
        .get("input")
        .and_then(Value::as_object)
        .ok_or("a preference line needs an \"input\" object with \"messages\"")?;
    let answer = |key: &str| -> std::result::Result<Value, String> {
        match value.get(key).and_then(Value::as_array).map(Vec::as_slice) {
            Some([m]) if m.get("role").and_then(Value::as_str) == Some("assistant") => Ok(m.clone()),
            _ => Err(format!("\"{key}\" must be a list of exactly one assistant message")),
        }
    };
    let (preferred, non_preferred) = (answer("preferred_output")?, answer("non_preferred_output")?);
    if preferred == non_preferred {
        return Err("the preferred and non-preferred outputs are the same".into());
    }
    let example = |out: Value| -> std::result::Result<Example, String> {
        let mut conversation = serde_json::Map::new();
        let mut messages =
            input.get("messages").and_then(Value::as_array).cloned().ok_or("\"input\" has no \"messages\" array")?;
        if messages.last().and_then(|m| m.get("role")).and_then(Value::as_str) == Some("assistant") {
            return Err("the input's last message must not be the assistant's: the outputs answer it".into());
        }
        messages.push(out);
        conversation.insert("messages".into(), Value::Array(messages));
        if let Some(tools) = input.get("tools") {
            conversation.insert("tools".into(), tools.clone());
        }
        let mut e = parse_line(line, &Value::Object(conversation).to_string())?;
        // Only the answer is compared; earlier assistant turns are context.
        let last = e.trained.len() - 1;
        for (i, t) in e.trained.iter_mut().enumerate() {
            *t = i == last;
        }
        Ok(e)
    };
    Ok(PreferenceExample { line, preferred: example(preferred)?, non_preferred: example(non_preferred)? })
}

fn parse_lines<T>(
    bytes: &[u8],
    parse: impl Fn(usize, &str) -> std::result::Result<T, String>,
) -> Result<Vec<T>, FileProblems> {
    let mut problems = Vec::new();
    let mut examples = Vec::new();
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
            return Err(FileProblems {
                problems: vec![LineProblem { line, message: "the file is not UTF-8 text".into() }],
                total: 1,
            });
        }
    };
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match parse(i + 1, raw) {
            Ok(example) => examples.push(example),
            Err(message) => problems.push(LineProblem { line: i + 1, message }),
        }
    }
    if examples.is_empty() && problems.is_empty() {
        problems.push(LineProblem {
            line: 0,
            message: "the file is empty: it needs at least one line with a chat example".into(),
        });
    }
    if problems.is_empty() {
        Ok(examples)
    } else {
        let total = problems.len();
        problems.truncate(MAX_PROBLEMS);
        Err(FileProblems { problems, total })
    }
}

fn parse_line(line: usize, raw: &str) -> std::result::Result<Example, String> {
    let value: Value = serde_json::from_str(raw).map_err(|e| format!("not valid JSON ({e})"))?;
    let obj = value.as_object().ok_or("a line must be a JSON object with a \"messages\" array")?;
    let messages = obj
        .get("messages")
        .ok_or("the \"messages\" field is missing")?
        .as_array()
        .ok_or("\"messages\" must be an array of messages")?;
    if messages.is_empty() {
        return Err("\"messages\" is empty".into());
    }
    let tools = match obj.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => {
            for (k, t) in tools.iter().enumerate() {
                let named = t.get("type").and_then(Value::as_str) == Some("function")
                    && t.get("function")
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        .is_some_and(|n| !n.is_empty());
                if !named {
                    return Err(format!(
                        "tool {k} must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    ));
                }
            }
            tools.clone()
        }
        Some(_) => return Err("\"tools\" must be an array of tools".into()),
    };
    if obj.get("parallel_tool_calls").is_some_and(|p| !p.is_boolean()) {
        return Err("\"parallel_tool_calls\" must be true or false".into());
    }
    let mut out = Vec::with_capacity(messages.len());
    let mut trained = Vec::with_capacity(messages.len());
    let mut chars = 0;
    for (j, m) in messages.iter().enumerate() {
        let m = m.as_object().ok_or_else(|| format!("message {j} is not an object"))?;
        let role = match m.get("role") {
            None => return Err(format!("message {j} has no \"role\"")),
            Some(Value::String(r)) if ["system", "user", "assistant", "tool"].contains(&r.as_str()) => r.clone(),
            Some(r) => {
                return Err(format!("message {j} has role {r}; use \"system\", \"user\", \"assistant\" or \"tool\""))
            }
        };
        let calls = tool_calls(j, m.get("tool_calls"))?;
        if !calls.is_empty() && role != "assistant" {
            return Err(format!("message {j} ({role}) has \"tool_calls\"; only assistant messages make calls"));
        }
        if !calls.is_empty() && tools.is_empty() {
            return Err(format!("message {j} calls tools, but the example offers none in \"tools\""));
        }
        for c in &calls {
            if !tools.iter().any(|t| t["function"]["name"].as_str() == Some(c.name.as_str())) {
                return Err(format!("message {j} calls \"{}\", which is not one of the example's tools", c.name));
            }
        }
        let content = match m.get("content") {
            None | Some(Value::Null) if !calls.is_empty() => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => text_parts(parts)
                .ok_or_else(|| format!("message {j}: content parts must be {{\"type\": \"text\", \"text\": ...}}"))?,
            None | Some(Value::Null) => return Err(format!("message {j} ({role}) has no \"content\"")),
            Some(_) => return Err(format!("message {j} ({role}): \"content\" must be a string")),
        };
        if content.trim().is_empty() && role == "assistant" && calls.is_empty() {
            return Err(format!("message {j} (assistant) has empty content"));
        }
        let weight = match m.get("weight") {
            None => 1,
            Some(w) => match w.as_i64() {
                Some(w @ (0 | 1)) if role == "assistant" => w,
                _ => return Err(format!("message {j}: \"weight\" must be 0 or 1, and only on assistant messages")),
            },
        };
        chars += content.chars().count();
        trained.push(role == "assistant" && weight == 1);
        let mut message = ChatMessage::new(role, content);
        chars += calls.iter().map(|c| c.arguments.chars().count()).sum::<usize>();
        message.tool_calls = calls;
        if message.role == "tool" {
            message.tool_call_id = m.get("tool_call_id").and_then(Value::as_str).map(str::to_owned);
        }
        out.push(message);
    }
    if !out.iter().any(|m| m.role == "assistant") {
        return Err("the example has no assistant message to learn from".into());
    }
    if !trained.iter().any(|t| *t) {
        return Err("every assistant message has weight 0, so there is nothing to learn from".into());
    }
    if out.last().is_some_and(|m| m.role != "assistant") {
        return Err("the last message must be the assistant's".into());
    }
    if chars > MAX_EXAMPLE_CHARS {
        return Err(format!(
            "the example is too long: {chars} characters of content, the limit is {MAX_EXAMPLE_CHARS}"
        ));
    }
    Ok(Example { line, messages: out, trained, tools })
}

/// An assistant message's `tool_calls`: `[{"id", "type": "function", "function": {"name", "arguments"}}]`,
/// the arguments a JSON object (or a string holding one).
fn tool_calls(j: usize, calls: Option<&Value>) -> std::result::Result<Vec<ToolCall>, String> {
    let Some(calls) = calls.filter(|c| !c.is_null()) else { return Ok(Vec::new()) };
    let calls = calls.as_array().ok_or_else(|| format!("message {j}: \"tool_calls\" must be an array"))?;
    calls
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let bad = || format!("message {j}: tool call {k} must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}} with JSON object arguments");
            let f = c.get("function").ok_or_else(bad)?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(bad)?;
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) if serde_json::from_str::<Value>(s).is_ok_and(|a| a.is_object()) => s.clone(),
                Some(v @ Value::Object(_)) => v.to_string(),
                _ => return Err(bad()),
            };
            let id = c.get("id").and_then(Value::as_str).unwrap_or("call_0").to_owned();
            Ok(ToolCall { id, name: name.to_owned(), arguments })
        })
        .collect()
}

fn text_parts(parts: &[Value]) -> Option<String> {
    let mut text = String::new();
    for p in parts {
        if p.get("type")?.as_str()? != "text" {
            return None;
        }
        text.push_str(p.get("text")?.as_str()?);
    }
    Some(text)
}

/// An example as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    pub line: usize,
    pub tokens: Vec<u32>,
    /// `targets[i]`: the loss is taken on predicting `tokens[i]` (from position `i - 1`).
    pub targets: Vec<bool>,
}

impl TokenizedExample {
    pub fn target_count(&self) -> usize {
        self.targets.iter().filter(|t| **t).count()
    }
}

/// Tokenises an example exactly as a chat completion would see it: each trained assistant turn is the
/// text the template adds between the prompt that opens the turn and the conversation that closes it
/// (its content and end-of-turn marker), and every prompt is tokenised the way the server tokenises one.
pub fn tokenize(example: &Example, text: &TextModel, max_tokens: usize) -> Result<TokenizedExample> {
    let mut tokens: Vec<u32> = Vec::new();
    let mut targets: Vec<bool> = Vec::new();
    let mut rendered = String::new();
    let data_err = |e: berth_text::TextError| {
        TrainError::Data(format!("line {}: cannot render the conversation: {e}", example.line))
    };
    for (i, m) in example.messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let prompt = text.render_prompt(&example.messages[..i], &example.tools, true).map_err(data_err)?;
        let full = text.render_prompt(&example.messages[..=i], &example.tools, false).map_err(data_err)?;
        let (Some(prompt_new), Some(answer)) =
            (prompt.strip_prefix(rendered.as_str()), full.strip_prefix(prompt.as_str()))
        else {
            return Err(TrainError::Data(format!(
                "line {}: the model's chat template does not render this conversation turn by turn, so its assistant turns cannot be located",
                example.line
            )));
        };
        let prompt_ids = if tokens.is_empty() { text.encode(prompt_new)? } else { text.encode_plain(prompt_new)? };
        targets.extend(std::iter::repeat_n(false, prompt_ids.len()));
        tokens.extend(prompt_ids);
        let answer_ids = text.encode_plain(answer)?;
        targets.extend(std::iter::repeat_n(example.trained[i], answer_ids.len()));
        tokens.extend(answer_ids);
        rendered = full;
    }
    if tokens.len() > max_tokens {
        return Err(TrainError::Data(format!(
            "line {}: the example is {} tokens long; the limit for this job is {max_tokens}",
            example.line,
            tokens.len()
        )));
    }
    // The first token is never predicted.
    if let Some(t) = targets.first_mut() {
        *t = false;
    }
    Ok(TokenizedExample { line: example.line, tokens, targets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_reported_with_their_lines() {
        let file = concat!(
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"Ahoy!\"}]}\n",
            "{not json\n",
            "\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
            "{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"x\"}]}\n",
            "{\"prompt\": \"old format\"}\n",
            "[1, 2]\n",
        );
        let err = parse_jsonl(file.as_bytes()).unwrap_err();
        let lines: Vec<usize> = err.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 4, 5, 6, 7]);
        let text = err.to_string();
        assert!(text.starts_with("The file has 5 problems: line 2: not valid JSON"), "{text}");
        assert!(text.contains("line 4: the example has no assistant message"), "{text}");
        assert!(text.contains("line 5: message 0 has role \"wizard\""), "{text}");
        assert!(text.contains("line 6: the \"messages\" field is missing"), "{text}");
    }

    #[test]
    fn empty_and_overlong_files_are_refused() {
        assert_eq!(
            parse_jsonl(b"\n \n").unwrap_err().to_string(),
            "The file has 1 problem: the file is empty: it needs at least one line with a chat example"
        );
        let long = "x".repeat(MAX_EXAMPLE_CHARS + 1);
        let line = format!("{{\"messages\": [{{\"role\": \"user\", \"content\": \"{long}\"}}, {{\"role\": \"assistant\", \"content\": \"y\"}}]}}");
        let err = parse_jsonl(line.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 1: the example is too long: 32770 characters"), "{err}");
    }

    #[test]
    fn weights_and_parts_are_read() {
        let line = r#"{"messages": [{"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}"#;
        let ex = parse_jsonl(line.as_bytes()).unwrap();
        assert_eq!(ex[0].messages[0].content, "Be brief.");
        assert_eq!(ex[0].trained, vec![false, false, false, false, true]);
        let bad =
            r#"{"messages": [{"role": "user", "content": "a", "weight": 1}, {"role": "assistant", "content": "b"}]}"#;
        assert!(parse_jsonl(bad.as_bytes()).unwrap_err().to_string().contains("\"weight\" must be 0 or 1"));
    }

    #[test]
    fn tool_calls_and_results_are_read_and_checked() {
        let tools =
            r#""tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]"#;
        let line = format!(
            r#"{{{tools}, "messages": [{{"role": "user", "content": "Oslo?"}}, {{"role": "assistant", "content": null, "tool_calls": [{{"id": "call_1", "type": "function", "function": {{"name": "get_weather", "arguments": "{{\"city\": \"Oslo\"}}"}}}}]}}, {{"role": "tool", "tool_call_id": "call_1", "content": "4 C"}}, {{"role": "assistant", "content": "4 degrees."}}]}}"#
        );
        let ex = parse_jsonl(line.as_bytes()).unwrap();
        assert_eq!(ex[0].tools.len(), 1);
        assert_eq!(ex[0].messages[1].tool_calls[0].name, "get_weather");
        assert_eq!(ex[0].messages[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(ex[0].trained, vec![false, true, false, true]);
        let unknown = line.replace(r#""name": "get_weather", "arguments""#, r#""name": "launch", "arguments""#);
        assert!(parse_jsonl(unknown.as_bytes()).unwrap_err().to_string().contains("\"launch\", which is not one of"));
        let no_tools = line.replace(tools, r#""tools": []"#);
        assert!(parse_jsonl(no_tools.as_bytes()).unwrap_err().to_string().contains("offers none"));
    }
}
