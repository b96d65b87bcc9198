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
