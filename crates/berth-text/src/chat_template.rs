//! Chat templates are Jinja programs shipped with the model; we run them in minijinja with the
//! Python-compatible string methods (`.strip()`, `.startswith()`, ...) that real templates call.

use crate::{TextError, ToolCall};
use minijinja::{Environment, ErrorKind};
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::Value;

/// One message handed to the template. `content` is already flattened to text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// The assistant's function calls (empty for other messages).
    pub tool_calls: Vec<ToolCall>,
    /// Which call a `tool` message answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }
}

/// As Hugging Face templates read a message: `tool_calls` and `tool_call_id` only where present.
impl Serialize for ChatMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("role", &self.role)?;
        map.serialize_entry("content", &self.content)?;
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self.tool_calls.iter().map(ToolCall::template_value).collect();
            map.serialize_entry("tool_calls", &calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        map.end()
    }
}

/// A compiled chat template and the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// The template lists tools and writes calls in the Hermes format itself.
    renders_tools: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TextError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| -> String {
            // Templates use it for a "today is" line; a fixed calendar keeps prompts reproducible.
            fmt.replace("%d", "01")
                .replace("%m", "01")
                .replace("%Y", "2025")
                .replace("%B", "January")
                .replace("%b", "Jan")
        });
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| TextError::Template(format!("cannot compile: {e}")))?;
        let renders_tools = source.contains("tools") && source.contains(crate::tools::TOOL_CALL_OPEN);
        Ok(ChatTemplate { env, bos_token: bos_token.to_owned(), eos_token: eos_token.to_owned(), renders_tools })
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, TextError> {
        self.render_with_tools(messages, &[], add_generation_prompt)
    }

    /// Renders a conversation that may offer tools, carry calls and their results. A template that
    /// does not write the Hermes format itself gets them folded into plain messages
    /// ([`crate::tools::tools_preamble`]).
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[Value],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        let uses_tools = !tools.is_empty() || messages.iter().any(|m| !m.tool_calls.is_empty() || m.role == "tool");
        let folded;
        let messages = if uses_tools && !self.renders_tools {
            folded = crate::tools::fold(messages, tools);
            &folded[..]
        } else {
            messages
        };
        let tools = (self.renders_tools && !tools.is_empty()).then_some(tools);
        let template = self.env.get_template("chat").map_err(|e| TextError::Template(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| TextError::Template(e.to_string()))
    }
}
