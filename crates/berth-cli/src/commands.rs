//! The client commands. Each prints the server's JSON on stdout; progress goes to stderr.

use crate::args::*;
use crate::client::{Client, ARM_API_VERSION, OPENAI_API_VERSION};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

pub fn run(cli: Cli) -> Result<()> {
    let client = || Client::new(cli.data_dir.clone(), cli.endpoint.clone(), cli.token.clone(), cli.ca_bundle.clone());
    match cli.command {
        Command::Serve(args) => crate::serve::serve(args, cli.data_dir.clone()),
        Command::Debug { command: DebugCommand::Logits { model, adapter, tokens, text } } => {
            crate::debug::logits(&model, adapter.as_deref(), tokens.as_deref(), text.as_deref())
        }
        Command::Debug { command: DebugCommand::Tokenize { model, inp } } => crate::debug::tokenize(&model, &inp),
        Command::Account { command } => account(&client()?, command),
        Command::Token { tenant, principal, raw } => {
            let body =
                (tenant.is_some() || principal.is_some()).then(|| json!({ "tenant": tenant, "principal": principal }));
            let token = client()?.send("POST", "/berth/v1/token", body.as_ref())?.1;
            match token.get("accessToken").and_then(Value::as_str) {
                // What the portal's sign-in and `curl -H "Authorization: Bearer ..."` want, as
                // `az account get-access-token --query accessToken -o tsv` prints it.
                Some(t) if raw => {
                    println!("{t}");
                    Ok(())
                }
                _ => print(&token),
            }
        }
        Command::BaseModel { command } => base_model(&client()?, command),
        Command::EnginePool { command } => engine_pool(&client()?, command),
        Command::Model { command } => model(&client()?, command),
        Command::Deployment { command } => deployment(&client()?, command),
        Command::Chat(args) => chat(&client()?, args),
        Command::Usage { command: UsageCommand::List { location, subscription } } => {
            let c = client()?;
            let sub = subscription
                .or_else(|| c.credentials.as_ref().map(|c| c.subscription_id.clone()))
                .context("say which subscription with --subscription")?;
            print_list(&c.get(&format!("/subscriptions/{sub}/providers/Microsoft.CognitiveServices/locations/{location}/usages?api-version={ARM_API_VERSION}"))?)
        }
        Command::Cost {
            command: CostCommand::Show { from, to, resource_group, account, deployment, subscription },
        } => {
            let c = client()?;
            let sub = subscription
                .or_else(|| c.credentials.as_ref().map(|c| c.subscription_id.clone()))
                .context("say which subscription with --subscription")?;
            let mut query: Vec<(&str, String)> = vec![("api-version", ARM_API_VERSION.to_owned())];
            for (k, v) in [
                ("from", from),
                ("to", to),
                ("resourceGroup", resource_group),
                ("account", account),
                ("deployment", deployment),
            ] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let qs: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
            print(&c.get(&format!("/subscriptions/{sub}/providers/Microsoft.CognitiveServices/costs?{qs}"))?)
        }
        Command::Catalog { command: CatalogCommand::Show } => {
            print!("{}", berth_control::DEFAULT_CATALOG);
            Ok(())
        }
        Command::Db { command: DbCommand::MigrateTo { url } } => crate::serve::migrate_to(cli.data_dir.clone(), &url),
        Command::File { command } => crate::fine_tuning::file(&client()?, command),
        Command::FineTuning { command } => crate::fine_tuning::fine_tuning(&client()?, command),
    }
}

fn print(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// An ARM list as the Azure CLI prints it: the bare array of its `value`.
fn print_list(page: &Value) -> Result<()> {
    print(page.get("value").unwrap_or(page))
}

/// The ARM path of an account; unspecified parts come from the bootstrap credentials.
fn account_path(c: &Client, a: &AccountRef) -> Result<String> {
    let creds = c.credentials.as_ref();
    let sub = a.subscription.clone().or_else(|| creds.map(|c| c.subscription_id.clone()));
    let rg = a.resource_group.clone().or_else(|| creds.map(|c| c.resource_group.clone()));
    let name = a.name.clone().or_else(|| creds.map(|c| c.account.clone()));
    match (sub, rg, name) {
        (Some(s), Some(g), Some(n)) => {
            Ok(format!("/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.CognitiveServices/accounts/{n}"))
        }
        _ => bail!("say which account with --subscription, -g and -n (no credentials.json to default from)"),
    }
}

fn account(c: &Client, command: AccountCommand) -> Result<()> {
    match command {
        AccountCommand::Show(a) => print(&c.get(&format!("{}?api-version={ARM_API_VERSION}", account_path(c, &a)?))?),
        AccountCommand::Keys { command: KeysCommand::List(a) } => {
            print(&c.send("POST", &format!("{}/listKeys?api-version={ARM_API_VERSION}", account_path(c, &a)?), None)?.1)
        }
    }
}

fn base_model(c: &Client, command: BaseModelCommand) -> Result<()> {
    match command {
        BaseModelCommand::Add { name, path, engine_pool, served_model } => {
            // The server reads the path: made absolute here when it exists here too.
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            let mut body = json!({"name": name, "path": path});
            if let Some(p) = engine_pool {
                body["engine_pool"] = json!(p);
            }
            if let Some(m) = served_model {
                body["served_model"] = json!(m);
            }
            print(&c.send("POST", "/berth/v1/base-models", Some(&body))?.1)
        }
        BaseModelCommand::List => print_list(&c.get("/berth/v1/base-models")?),
    }
}

fn engine_pool(c: &Client, command: EnginePoolCommand) -> Result<()> {
    let path = |name: &str| {
        format!("/berth/v1/engine-pools/{}", form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>())
    };
    match command {
        EnginePoolCommand::Add { name, kind, endpoints, api_key, store_path } => {
            let mut body = json!({"name": name, "kind": kind, "endpoints": endpoints});
            if let Some(k) = api_key {
                body["api_key"] = json!(k);
            }
            if let Some(p) = store_path {
                body["store_path"] = json!(p);
            }
            print(&c.send("POST", "/berth/v1/engine-pools", Some(&body))?.1)
        }
        EnginePoolCommand::List => print_list(&c.get("/berth/v1/engine-pools")?),
        EnginePoolCommand::Show { name } => print(&c.get(&path(&name))?),
        EnginePoolCommand::Remove { name } => {
            c.send("DELETE", &path(&name), None)?;
            Ok(())
        }
    }
}

fn model(c: &Client, command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Import { base, adapter, weights, account, server_path: false } => {
            let (kind, dir) = match (adapter, weights) {
                (Some(a), _) => ("adapter", a),
                (None, Some(w)) => ("weights", w),
                (None, None) => bail!("say what to import with --adapter DIR or --weights DIR"),
            };
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_file() && !name.starts_with('.') {
                    files.push((name, entry.path()));
                }
            }
            files.sort();
            if files.is_empty() {
                bail!("{} holds no files to upload", dir.display());
            }
            let path = format!("{}/models/upload?api-version={ARM_API_VERSION}", account_path(c, &account)?);
            print(&c.upload_files(&path, &[("base", base.as_str()), ("kind", kind)], &files)?)
        }
        ModelCommand::Import { base, adapter, weights, account, server_path: true } => {
            let abs = |p: Option<std::path::PathBuf>| -> Result<Option<String>> {
                p.map(|p| {
                    std::fs::canonicalize(&p)
                        .map(|p| p.display().to_string())
                        .with_context(|| format!("{}", p.display()))
                })
                .transpose()
            };
            let body = json!({"base": base, "adapter": abs(adapter)?, "weights": abs(weights)?});
            let path = format!("{}/models/import?api-version={ARM_API_VERSION}", account_path(c, &account)?);
            print(&c.send("POST", &path, Some(&body))?.1)
        }
        ModelCommand::List(a) => {
            print_list(&c.get(&format!("{}/models?api-version={ARM_API_VERSION}", account_path(c, &a)?))?)
        }
    }
}

fn deployment(c: &Client, command: DeploymentCommand) -> Result<()> {
    match command {
        DeploymentCommand::Create(d) => {
            let path = format!(
                "{}/deployments/{}?api-version={ARM_API_VERSION}",
                account_path(c, &d.account)?,
                d.deployment_name
            );
            let body = json!({
                "sku": {"name": d.sku_name, "capacity": d.sku_capacity},
                "properties": {"model": {"format": d.model_format, "name": d.model_name, "version": d.model_version}},
            });
            let started = Instant::now();
            let (_, created, async_op) = c.send("PUT", &path, Some(&body))?;
            if d.no_wait {
                return print(&created);
            }
            if let Some(url) = async_op {
                wait_for_operation(c, &url, started)?;
            }
            let result = c.get(&path)?;
            let state = result.pointer("/properties/provisioningState").and_then(Value::as_str).unwrap_or("");
            print(&result)?;
            if state != "Succeeded" {
                bail!("deployment ended {state}");
            }
            Ok(())
        }
        DeploymentCommand::ListSkus(d) => print_list(&c.get(&format!(
            "{}/deployments/{}/skus?api-version={ARM_API_VERSION}",
            account_path(c, &d.account)?,
            d.deployment_name
        ))?),
        DeploymentCommand::Show(d) => print(&c.get(&format!(
            "{}/deployments/{}?api-version={ARM_API_VERSION}",
            account_path(c, &d.account)?,
            d.deployment_name
        ))?),
        DeploymentCommand::Delete(d) => {
            let path = format!(
                "{}/deployments/{}?api-version={ARM_API_VERSION}",
                account_path(c, &d.account)?,
                d.deployment_name
            );
            let (status, _, _) = c.send("DELETE", &path, None)?;
            print(&json!({"deleted": status == 200, "name": d.deployment_name}))
        }
        DeploymentCommand::List(a) => {
            print_list(&c.get(&format!("{}/deployments?api-version={ARM_API_VERSION}", account_path(c, &a)?))?)
        }
    }
}

/// The path and query of an absolute URL: operation URLs name the server's public URL, which may not
/// be the address this client uses to reach it.
pub(crate) fn path_and_query(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

/// Polls an `Azure-AsyncOperation` URL until it ends, showing the elapsed time on stderr.
fn wait_for_operation(c: &Client, url: &str, started: Instant) -> Result<()> {
    let path = path_and_query(url);
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_print = Duration::ZERO;
    loop {
        let op = c.get(path)?;
        let status = op.get("status").and_then(Value::as_str).unwrap_or("InProgress").to_owned();
        let elapsed = started.elapsed();
        if status != "InProgress" {
            eprintln!(
                "{}provisioning {status} after {:.1}s",
                if interactive { "\r" } else { "" },
                elapsed.as_secs_f64()
            );
            if let Some(msg) = op.pointer("/error/message").and_then(Value::as_str) {
                eprintln!("{msg}");
            }
            return Ok(());
        }
        if interactive {
            eprint!("\rprovisioning... {:.0}s ", elapsed.as_secs_f64());
        } else if elapsed - last_print >= Duration::from_secs(5) {
            eprintln!("provisioning... {:.0}s", elapsed.as_secs_f64());
            last_print = elapsed;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn chat(c: &Client, args: ChatArgs) -> Result<()> {
    let account = args.account.clone().or_else(|| c.credentials.as_ref().map(|c| c.account.clone()));
    let prefix = account.map(|a| format!("/accounts/{a}")).unwrap_or_default();
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": args.message}));
    let mut body = json!({"messages": messages, "stream": true, "stream_options": {"include_usage": true}});
    if let Some(m) = args.max_tokens {
        body["max_tokens"] = json!(m);
    }
    body["temperature"] = json!(args.temperature);
    let path =
        format!("{prefix}/openai/deployments/{}/chat/completions?api-version={OPENAI_API_VERSION}", args.deployment);
    let started = Instant::now();
    let mut first_token = None;
    let reader = match c.stream(&path, &body)? {
        Ok(reader) => reader,
        Err((404, error)) if error.pointer("/error/code").and_then(Value::as_str) == Some("DeploymentNotFound") => {
            let a = AccountRef { resource_group: None, name: args.account.clone(), subscription: None };
            let listed =
                account_path(c, &a).and_then(|p| c.get(&format!("{p}/deployments?api-version={ARM_API_VERSION}")));
            let names: Vec<String> = listed
                .ok()
                .and_then(|l| l.get("value").and_then(Value::as_array).cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect();
            let existing =
                if names.is_empty() { "it has none".to_owned() } else { format!("it has {}", names.join(", ")) };
            bail!("there is no deployment '{}' in this account: {existing}", args.deployment);
        }
        Err((status, error)) => {
            let msg = error.pointer("/error/message").and_then(Value::as_str).map(str::to_owned);
            bail!("chat failed: HTTP {status}: {}", msg.unwrap_or_else(|| error.to_string()))
        }
    };
    let mut out = std::io::stdout().lock();
    let mut usage = Value::Null;
    for line in reader.lines() {
        let line = line.context("reading the stream")?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).context("malformed stream frame")?;
        if let Some(err) = chunk.get("error") {
            return Err(anyhow!(
                "the server failed mid-answer: {}",
                err.get("message").and_then(Value::as_str).unwrap_or("")
            ));
        }
        if let Some(text) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            if !text.is_empty() {
                first_token.get_or_insert_with(|| started.elapsed());
            }
            write!(out, "{text}")?;
            out.flush()?;
        }
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
    }
    writeln!(out)?;
    let total = started.elapsed().as_secs_f64();
    let completion = usage.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0);
    let ttft = first_token.map(|d| d.as_secs_f64()).unwrap_or(total);
    let rate = if total > ttft && completion > 1 { (completion - 1) as f64 / (total - ttft) } else { 0.0 };
    eprintln!(
        "[{} prompt + {completion} completion tokens; first token after {ttft:.2}s; {rate:.1} tokens/s]",
        usage.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0)
    );
    Ok(())
}
