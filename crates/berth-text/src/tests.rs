use crate::{ChatMessage, ChatTemplate, StopMatcher, StopOutcome};

#[test]
fn stop_matcher_holds_back_partial_stop() {
    let mut m = StopMatcher::new(vec!["END".into()]);
    assert_eq!(m.push("hello E"), StopOutcome::Continue("hello ".into()));
    assert_eq!(m.push("N"), StopOutcome::Continue("".into()));
    assert_eq!(m.push("Dx"), StopOutcome::Stopped("".into()));
}

#[test]
fn stop_matcher_releases_false_alarm() {
    let mut m = StopMatcher::new(vec!["END".into()]);
    assert_eq!(m.push("aE"), StopOutcome::Continue("a".into()));
    assert_eq!(m.push("x"), StopOutcome::Continue("Ex".into()));
    assert_eq!(m.finish(), "");
}

#[test]
fn stop_matcher_earliest_stop_wins() {
    let mut m = StopMatcher::new(vec!["c".into(), "ab".into()]);
    assert_eq!(m.push("xabc"), StopOutcome::Stopped("x".into()));
}

#[test]
fn chatml_template_renders_with_generation_prompt() {
    let src = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let out = t.render(&[ChatMessage::new("user", "Hi")], true).unwrap();
    assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn template_python_methods_and_raise_exception() {
    let t = ChatTemplate::new(
        "{{ messages[0]['content'].strip() }}{% if messages|length > 1 %}{{ raise_exception('too many') }}{% endif %}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(t.render(&[ChatMessage::new("user", "  x  ")], false).unwrap(), "x");
    let err = t.render(&[ChatMessage::new("user", "a"), ChatMessage::new("user", "b")], false).unwrap_err();
    assert!(err.to_string().contains("too many"), "{err}");
}

#[test]
fn tool_calls_parse_only_when_every_block_is_a_known_call() {
    use crate::parse_tool_calls;
    let answer = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Rome\\\"}\"}\n</tool_call>";
    let parsed = parse_tool_calls(answer, &["get_weather"]).unwrap();
    assert_eq!(parsed.content, "Let me check.");
    assert_eq!(parsed.calls.len(), 2);
    assert_eq!(parsed.calls[0].arguments, r#"{"city":"Paris"}"#);
    assert_eq!(parsed.calls[1].arguments, r#"{"city": "Rome"}"#);
    // An unknown function, arguments that are not an object, text after a call, broken JSON: plain text.
    assert!(parse_tool_calls(answer, &["other"]).is_none());
    assert!(parse_tool_calls("<tool_call>{\"name\": \"f\", \"arguments\": 3}</tool_call>", &["f"]).is_none());
    assert!(parse_tool_calls("<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call> and more", &["f"]).is_none());
    assert!(parse_tool_calls("<tool_call>{\"name\": \"f\", \"argu", &["f"]).is_none());
    assert!(parse_tool_calls("no calls here", &["f"]).is_none());
}

#[test]
fn tools_fold_into_plain_messages_for_templates_without_them() {
    use crate::ToolCall;
    let src = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let tools =
        vec![serde_json::json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}})];
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls = vec![ToolCall { id: "call_1".into(), name: "f".into(), arguments: r#"{"x":1}"#.into() }];
    let mut result = ChatMessage::new("tool", "42");
    result.tool_call_id = Some("call_1".into());
    let out = t
        .render_with_tools(
            &[ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi"), call, result],
            &tools,
            true,
        )
        .unwrap();
    assert!(out.starts_with("<|im_start|>system\nBe brief.\n\n# Tools"), "{out}");
    assert!(
        out.contains(r#"{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}"#),
        "{out}"
    );
    assert!(
        out.contains(
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call><|im_end|>"
        ),
        "{out}"
    );
    assert!(out.contains("<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>"), "{out}");
    // Without tools the rendering is the template's own.
    assert_eq!(
        t.render_with_tools(&[ChatMessage::new("user", "Hi")], &[], true).unwrap(),
        t.render(&[ChatMessage::new("user", "Hi")], true).unwrap()
    );
}

#[test]
fn templates_that_write_tool_calls_get_the_tools_themselves() {
    let src = "{% if tools %}{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% endif %}{% for m in messages %}{{ m.role }}:{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }}({{ c.function.arguments.x }})</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %};{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let tools = vec![serde_json::json!({"type": "function", "function": {"name": "f"}})];
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls = vec![crate::ToolCall { id: "c".into(), name: "f".into(), arguments: r#"{"x":7}"#.into() }];
    let out = t.render_with_tools(&[ChatMessage::new("user", "Hi"), call], &tools, false).unwrap();
    assert_eq!(out, "[f]user:Hi;assistant:<tool_call>f(7)</tool_call>;");
}
