use crate::args::Cli;
use crate::commands::path_and_query;
use clap::Parser;

#[test]
fn operation_urls_are_followed_by_path() {
    assert_eq!(
        path_and_query("http://127.0.0.1:8080/subscriptions/s/providers/Microsoft.CognitiveServices/locations/local/operationResults/x?api-version=2024-10-01"),
        "/subscriptions/s/providers/Microsoft.CognitiveServices/locations/local/operationResults/x?api-version=2024-10-01"
    );
    assert_eq!(path_and_query("https://host"), "/");
}

#[test]
fn the_issue_commands_parse() {
    for line in [
        "berth serve --listen 127.0.0.1:8080 --data-dir /tmp/d",
        "berth account show",
        "berth account keys list",
        "berth token",
        "berth base-model add smollm2 --path /m.gguf",
        "berth base-model list",
        "berth base-model add smollm2-gpu --path /hf --engine-pool gpus --served-model smollm2",
        "berth engine-pool add gpus --kind vllm --endpoint http://10.0.0.5:8000 --endpoint http://10.0.0.6:8000",
        "berth engine-pool list",
        "berth engine-pool show gpus",
        "berth engine-pool remove gpus",
        "berth model import --base smollm2 --adapter /a -g rg -n acct",
        "berth model import --base smollm2 --weights /w -g rg -n acct",
        "berth model list -g rg -n acct",
        "berth deployment create -g rg -n acct --deployment-name d --model-name m --model-version 1 --model-format OpenAI --sku-name Standard --sku-capacity 1 --no-wait",
        "berth deployment show -g rg -n acct --deployment-name d",
        "berth deployment delete -g rg -n acct --deployment-name d",
        "berth deployment list -g rg -n acct",
        "berth chat --deployment d hello",
    ] {
        Cli::try_parse_from(line.split_whitespace()).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    assert!(Cli::try_parse_from("berth model import --base b --adapter /a --weights /w".split_whitespace()).is_err());
    assert!(Cli::try_parse_from("berth engine-pool add gpus".split_whitespace()).is_err(), "an endpoint is required");
    assert!(Cli::try_parse_from("berth base-model add m --path /p --served-model x".split_whitespace()).is_err());
}
