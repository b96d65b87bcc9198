use crate::arm::{DeploymentPut, Sku};
use crate::openai::{ChatCompletionRequest, Content, OneOrMany, Usage};

#[test]
fn sku_capacity_accepts_numbers_and_numeric_strings() {
    let put: DeploymentPut = serde_json::from_str(r#"{"sku":{"name":"standard","capacity":"10"}}"#).unwrap();
    assert_eq!(put.sku, Some(Sku { name: "standard".into(), capacity: Some(10) }));
    let put: DeploymentPut = serde_json::from_str(r#"{"sku":{"name":"Standard","capacity":3}}"#).unwrap();
    assert_eq!(put.sku.unwrap().capacity, Some(3));
    let err = serde_json::from_str::<DeploymentPut>(r#"{"sku":{"name":"Standard","capacity":"ten"}}"#).unwrap_err();
    insta::assert_snapshot!(err.to_string(), @r#"sku.capacity must be a whole number, got "ten" at line 1 column 43"#);
}

#[test]
fn chat_request_reads_string_and_part_contents_and_stop_forms() {
    let req: ChatCompletionRequest = serde_json::from_str(
        r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "stop":"END","max_tokens":5,"model":"d","stream_options":{"include_usage":true}}"#,
    )
    .unwrap();
    assert_eq!(req.messages[0].content, Some(Content::Text("s".into())));
    assert!(matches!(&req.messages[1].content, Some(Content::Parts(p)) if p[0].text.as_deref() == Some("hi")));
    assert_eq!(req.sampling.stop, Some(OneOrMany::One("END".into())));
    assert_eq!(req.sampling.max_tokens, Some(5));
    assert!(req.sampling.stream_options.unwrap().include_usage);
}

#[test]
fn usage_shape() {
    insta::assert_json_snapshot!(Usage::new(35, 12, 0), @r#"
    {
      "prompt_tokens": 35,
      "completion_tokens": 12,
      "total_tokens": 47,
      "prompt_tokens_details": {
        "cached_tokens": 0
      },
      "completion_tokens_details": {
        "reasoning_tokens": 0
      }
    }
    "#);
}
