//! `berth file ...` and `berth fine-tuning job ...`: clients of the data plane's authoring API, with a
//! progress bar for a running job.

use crate::args::*;
use crate::client::{Client, OPENAI_API_VERSION};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

fn print(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `/accounts/{a}/openai{rest}?api-version=...` (`rest` may carry its own query).
fn data_path(c: &Client, a: &DataAccount, rest: &str) -> String {
    let account = a.account.clone().or_else(|| c.credentials.as_ref().map(|c| c.account.clone()));
    let prefix = account.map(|a| format!("/accounts/{a}")).unwrap_or_default();
    let sep = if rest.contains('?') { '&' } else { '?' };
    format!("{prefix}/openai{rest}{sep}api-version={OPENAI_API_VERSION}")
}

fn upload(c: &Client, a: &DataAccount, path: &std::path::Path, purpose: &str) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "upload.jsonl".into());
    c.upload(&data_path(c, a, "/files"), &[("purpose", purpose)], &name, &bytes)
}

pub fn file(c: &Client, command: FileCommand) -> Result<()> {
    match command {
        FileCommand::Upload { path, purpose, account } => print(&upload(c, &account, &path, &purpose)?),
        FileCommand::List(a) => print(&c.get(&data_path(c, &a, "/files"))?),
        FileCommand::Show { id, account } => print(&c.get(&data_path(c, &account, &format!("/files/{id}")))?),
        FileCommand::Content { id, account } => {
            print!("{}", c.get_text(&data_path(c, &account, &format!("/files/{id}/content")))?);
            Ok(())
        }
        FileCommand::Delete { id, account } => {
            print(&c.send("DELETE", &data_path(c, &account, &format!("/files/{id}")), None)?.1)
        }
    }
}

/// A file id, or a local path that is uploaded first.
fn file_id(c: &Client, a: &DataAccount, value: &str) -> Result<String> {
    let path = std::path::Path::new(value);
    if value.starts_with("file-") || !path.exists() {
        return Ok(value.to_owned());
    }
    let uploaded = upload(c, a, path, "fine-tune")?;
    let id = uploaded.get("id").and_then(Value::as_str).context("the upload returned no id")?.to_owned();
    eprintln!("uploaded {} as {id}", path.display());
    Ok(id)
}

pub fn fine_tuning(c: &Client, command: FineTuningCommand) -> Result<()> {
    let FineTuningCommand::Job { command } = command;
    match command {
        JobCommand::Create(j) => {
            let training = file_id(c, &j.account, &j.training_file)?;
            let validation = j.validation_file.as_deref().map(|v| file_id(c, &j.account, v)).transpose()?;
            let mut hyper = json!({});
            if let Some(v) = j.n_epochs {
                hyper["n_epochs"] = json!(v);
            }
            if let Some(v) = j.batch_size {
                hyper["batch_size"] = json!(v);
            }
            if let Some(v) = j.learning_rate_multiplier {
                hyper["learning_rate_multiplier"] = json!(v);
            }
            if let Some(v) = j.beta {
                hyper["beta"] = json!(v);
            }
            let mut body = json!({
                "model": j.model,
                "training_file": training,
                "method": { "type": j.method, (j.method.as_str()): { "hyperparameters": hyper } },
            });
            if let Some(v) = validation {
                body["validation_file"] = json!(v);
            }
            if let Some(v) = &j.suffix {
                body["suffix"] = json!(v);
            }
            if let Some(v) = j.seed {
                body["seed"] = json!(v);
            }
            let (_, job, _) = c.send("POST", &data_path(c, &j.account, "/fine_tuning/jobs"), Some(&body))?;
            if !j.wait {
                return print(&job);
            }
            let id = job.get("id").and_then(Value::as_str).context("the server returned no job id")?.to_owned();
            wait(c, &j.account, &id)
        }
        JobCommand::List { limit, account } => {
            print(&c.get(&data_path(c, &account, &format!("/fine_tuning/jobs?limit={limit}")))?)
        }
        JobCommand::Show { id, account } => {
            print(&c.get(&data_path(c, &account, &format!("/fine_tuning/jobs/{id}")))?)
        }
        JobCommand::Cancel { id, account } => {
            print(&c.send("POST", &data_path(c, &account, &format!("/fine_tuning/jobs/{id}/cancel")), None)?.1)
        }
        JobCommand::Pause { id, account } => {
            print(&c.send("POST", &data_path(c, &account, &format!("/fine_tuning/jobs/{id}/pause")), None)?.1)
        }
        JobCommand::Resume { id, account } => {
            print(&c.send("POST", &data_path(c, &account, &format!("/fine_tuning/jobs/{id}/resume")), None)?.1)
        }
        JobCommand::Events { id, limit, account } => {
            let mut page = c.get(&data_path(c, &account, &format!("/fine_tuning/jobs/{id}/events?limit={limit}")))?;
            if let Some(data) = page.get_mut("data").and_then(Value::as_array_mut) {
                data.reverse();
            }
            print(&page)
        }
        JobCommand::Checkpoints { id, account } => {
            print(&c.get(&data_path(c, &account, &format!("/fine_tuning/jobs/{id}/checkpoints")))?)
        }
        JobCommand::Wait { id, account } => wait(c, &account, &id),
    }
}

/// `[#######.............] step 7/20 loss 1.781 eta 1m12s`
fn progress_line(step: u64, total: u64, loss: Option<f64>, eta: Option<i64>) -> String {
    let width = 24;
    let filled = (step * width).checked_div(total).unwrap_or(0).min(width) as usize;
    let mut line = format!("[{}{}] step {step}/{total}", "#".repeat(filled), ".".repeat(width as usize - filled));
    if let Some(l) = loss {
        line.push_str(&format!(" loss {l:.3}"));
    }
    if let Some(s) = eta.filter(|s| *s >= 0) {
        line.push_str(&format!(" eta {}m{:02}s", s / 60, s % 60));
    }
    line
}

/// Follows a job until it ends; prints the final job and fails unless it succeeded.
fn wait(c: &Client, a: &DataAccount, id: &str) -> Result<()> {
    let interactive = std::io::stderr().is_terminal();
    let started = Instant::now();
    // Without a terminal, a line is printed when the status or the step changes.
    let mut last_key = (String::new(), u64::MAX);
    loop {
        let job = c.get(&data_path(c, a, &format!("/fine_tuning/jobs/{id}")))?;
        let status = job.get("status").and_then(Value::as_str).unwrap_or("").to_owned();
        let events = c.get(&data_path(c, a, &format!("/fine_tuning/jobs/{id}/events?limit=10")))?;
        let metrics = events
            .get("data")
            .and_then(Value::as_array)
            .and_then(|d| d.iter().find(|e| e.get("type").and_then(Value::as_str) == Some("metrics")))
            .and_then(|e| e.get("data").cloned());
        let step = metrics.as_ref().and_then(|m| m.get("step")).and_then(Value::as_u64).unwrap_or(0);
        let line = match &metrics {
            Some(m) => {
                let eta = job.get("estimated_finish").and_then(Value::as_i64).map(|t| t - berth_control::unix_now());
                progress_line(
                    m.get("step").and_then(Value::as_u64).unwrap_or(0),
                    m.get("total_steps").and_then(Value::as_u64).unwrap_or(0),
                    m.get("train_loss").and_then(Value::as_f64),
                    eta,
                )
            }
            None => format!("{status} {:.0}s", started.elapsed().as_secs_f64()),
        };
        if interactive {
            eprint!("\r{line}\x1b[K");
        } else if last_key != (status.clone(), step) {
            eprintln!("{line}");
            last_key = (status.clone(), step);
        }
        if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
            if interactive {
                eprintln!();
            }
            print(&job)?;
            if status != "succeeded" {
                let msg = job.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
                bail!("the job {status}{}{msg}", if msg.is_empty() { "" } else { ": " });
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
}
