//! Fine-tuning jobs: validation of a create request, the queue (one job at a time by default, in the
//! order they were created), the run on a blocking thread through `berth-train`, checkpoints that
//! become deployable models, cancellation, and recovery after a restart (a job that was running
//! resumes from its last checkpoint).

use crate::clock::unix_now;
use crate::error::Result;
use crate::files::file_not_found;
use crate::ids::new_hex_id;
use crate::{Control, ControlError};
use berth_store::{
    AccountKey, BaseModelRow, FileRow, FineTuningCheckpointRow, FineTuningEventRow, FineTuningJobRow,
    FineTuningMetricRow, JobEnd, ModelRow,
};
use berth_train::{
    parse_jsonl, parse_preference_jsonl, train, FileKind, Hyperparameters, LoraSettings, Observer, Preference,
    TrainError, TrainEvent, TrainSpec,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A create request, parsed from the wire; `None` means `auto`.
#[derive(Debug, Clone, Default)]
pub struct JobCreateInput {
    pub model: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub n_epochs: Option<i64>,
    pub batch_size: Option<i64>,
    pub learning_rate_multiplier: Option<f64>,
    pub suffix: Option<String>,
    pub seed: Option<i64>,
    /// `supervised` (the default) or `dpo`.
    pub method: Option<String>,
    /// DPO's beta (default 0.1).
    pub beta: Option<f64>,
}

/// Shared state of the job runners.
#[derive(Default)]
pub(crate) struct FineTuningState {
    /// Wakes background loops (job runners, the idle sweeper).
    pub(crate) wake: tokio::sync::Notify,
    /// Set at shutdown: background loops end.
    pub(crate) stopping: AtomicBool,
    /// Cancel flags of running jobs.
    cancel: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl FineTuningState {
    /// The jobs this replica runs now, with their stop flags.
    pub(crate) fn running(&self) -> Vec<(String, Arc<AtomicBool>)> {
        self.cancel.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }
}

const TERMINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];
/// Epoch checkpoints a job keeps, newest first (Azure keeps the last ones besides the final model).
const KEPT_CHECKPOINTS: usize = 2;

fn job_not_found(id: &str) -> ControlError {
    ControlError::NotFound {
        code: "jobNotFound",
        message: format!("The fine-tuning job '{id}' does not exist in this account."),
    }
}

impl Control {
    /// Checks a create request against the account's files and the base models, and queues the job.
    pub fn create_job(&self, account: &AccountKey, input: JobCreateInput) -> Result<FineTuningJobRow> {
        let account = self.account(account)?.key;
        self.starting_point(&account, &input.model)?;
        let check_file = |id: &str, param: &'static str| -> Result<FileRow> {
            let f = self.store.file(&account, id)?.ok_or_else(|| {
                ControlError::invalid("invalidFile", format!("The file '{id}' does not exist in this account."), param)
            })?;
            if f.purpose != "fine-tune" {
                return Err(ControlError::invalid(
                    "invalidFile",
                    format!("The file '{id}' has purpose '{}', not 'fine-tune'.", f.purpose),
                    param,
                ));
            }
            Ok(f)
        };
        let method = input.method.clone().unwrap_or_else(|| "supervised".into());
        let wanted = match method.as_str() {
            "supervised" => FileKind::Chat,
            "dpo" => FileKind::Preference,
            other => {
                return Err(ControlError::invalid(
                    "invalidMethod",
                    format!("The method '{other}' is not supported; use 'supervised' or 'dpo'."),
                    "method.type",
                ))
            }
        };
        let beta = match (method.as_str(), input.beta) {
            ("dpo", None) => Some(0.1),
            ("dpo", Some(b)) if b > 0.0 && b <= 2.0 => Some(b),
            ("dpo", Some(b)) => {
                return Err(ControlError::invalid(
                    "invalidHyperparameters",
                    format!("beta must be greater than 0 and at most 2, not {b}."),
                    "method.dpo.hyperparameters.beta",
                ))
            }
            (_, Some(_)) => {
                return Err(ControlError::invalid(
                    "invalidHyperparameters",
                    "beta applies to the 'dpo' method only.",
                    "method.supervised.hyperparameters.beta",
                ))
            }
            (_, None) => None,
        };
        // A file's kind must be the method's: chat examples for supervised, preference pairs for DPO.
        let check_kind = |f: &FileRow, param: &'static str| -> Result<()> {
            let bytes =
                std::fs::read(&f.path).map_err(|e| ControlError::Internal(format!("cannot read {}: {e}", f.id)))?;
            if FileKind::of(&bytes) != wanted {
                let (has, needs) = match wanted {
                    FileKind::Chat => ("preference pairs", "chat examples ({\"messages\": [...]})"),
                    FileKind::Preference => (
                        "chat examples",
                        "preference pairs ({\"input\": {\"messages\": [...]}, \"preferred_output\": [...], \"non_preferred_output\": [...]})",
                    ),
                };
                return Err(ControlError::invalid(
                    "invalidFile",
                    format!("The file '{}' holds {has}; a '{method}' job needs {needs}.", f.id),
                    param,
                ));
            }
            Ok(())
        };
        let training = check_file(&input.training_file, "training_file")?;
        check_kind(&training, "training_file")?;
        if let Some(v) = &input.validation_file {
            check_kind(&check_file(v, "validation_file")?, "validation_file")?;
        }
        let n_epochs = input.n_epochs.unwrap_or(3);
        if !(1..=50).contains(&n_epochs) {
            return Err(ControlError::invalid(
                "invalidHyperparameters",
                format!("n_epochs must be between 1 and 50, not {n_epochs}."),
                "hyperparameters.n_epochs",
            ));
        }
        let batch_size = input.batch_size.unwrap_or_else(|| (training.examples / 10).clamp(1, 8));
        if !(1..=256).contains(&batch_size) {
            return Err(ControlError::invalid(
                "invalidHyperparameters",
                format!("batch_size must be between 1 and 256, not {batch_size}."),
                "hyperparameters.batch_size",
            ));
        }
        let lr = input.learning_rate_multiplier.unwrap_or(1.0);
        if !(lr > 0.0 && lr <= 10.0) {
            return Err(ControlError::invalid(
                "invalidHyperparameters",
                format!("learning_rate_multiplier must be greater than 0 and at most 10, not {lr}."),
                "hyperparameters.learning_rate_multiplier",
            ));
        }
        if let Some(s) = &input.suffix {
            if s.is_empty() || s.len() > 40 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(ControlError::invalid(
                    "invalidSuffix",
                    "The suffix must be 1 to 40 letters, digits, '-' or '_'.",
                    "suffix",
                ));
            }
        }
        let seed = match input.seed {
            Some(s) if !(0..=i32::MAX as i64).contains(&s) => {
                return Err(ControlError::invalid(
                    "invalidSeed",
                    format!("The seed must be between 0 and {}, not {s}.", i32::MAX),
                    "seed",
                ));
            }
            Some(s) => s,
            None => (rand::random::<u32>() >> 1) as i64,
        };
        let job = FineTuningJobRow {
            id: format!("ftjob-{}", new_hex_id()),
            account,
            model: input.model,
            training_file: input.training_file,
            validation_file: input.validation_file,
            n_epochs,
            batch_size,
            learning_rate_multiplier: lr,
            suffix: input.suffix,
            seed,
            status: "pending".into(),
            fine_tuned_model: None,
            error_code: None,
            error_message: None,
            error_param: None,
            trained_tokens: None,
            result_files: vec![],
            created_at: unix_now(),
            finished_at: None,
            estimated_finish: None,
            method,
            beta,
        };
        self.store.insert_job(
            &job,
            &format!("Job created; it will run {n_epochs} epochs over {} examples.", training.examples),
        )?;
        self.fine_tuning.wake.notify_waiters();
        Ok(job)
    }

    pub fn jobs(&self, account: &AccountKey, after: Option<&str>, limit: usize) -> Result<Vec<FineTuningJobRow>> {
        let account = self.account(account)?.key;
        Ok(self.store.jobs(&account, after, limit)?)
    }

    pub fn job(&self, account: &AccountKey, id: &str) -> Result<FineTuningJobRow> {
        let account = self.account(account)?.key;
        self.store.job(&account, id)?.ok_or_else(|| job_not_found(id))
    }

    /// Cancels a pending or running job; a finished job cannot be cancelled.
    pub fn cancel_job(&self, account: &AccountKey, id: &str) -> Result<FineTuningJobRow> {
        let job = self.job(account, id)?;
        if TERMINAL.contains(&job.status.as_str()) {
            return Err(ControlError::invalid(
                "jobNotCancellable",
                format!("The job '{id}' has already {} and cannot be cancelled.", job.status),
                "",
            ));
        }
        if let Some(flag) = self.fine_tuning.cancel.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            flag.store(true, Ordering::Release);
        }
        self.store.transition_job(id, &["pending", "running", "paused"], "cancelled", unix_now(), "Job cancelled.")?;
        self.job(account, id)
    }

    /// Pauses a queued or running job, as Azure's `.../pause` does: a running one stops at its next
    /// pass and keeps its checkpoints; [`Control::resume_job`] continues it from the last of them.
    pub fn pause_job(&self, account: &AccountKey, id: &str) -> Result<FineTuningJobRow> {
        let job = self.job(account, id)?;
        if !matches!(job.status.as_str(), "pending" | "running") {
            return Err(ControlError::invalid(
                "jobNotPausable",
                format!("The job '{id}' is {} and cannot be paused; only queued or running jobs can.", job.status),
                "",
            ));
        }
        // The status first: the runner, seeing its flag, then leaves the job as it finds it.
        self.store.transition_job(id, &["pending", "running"], "paused", unix_now(), "Job paused.")?;
        if let Some(flag) = self.fine_tuning.cancel.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            flag.store(true, Ordering::Release);
        }
        self.job(account, id)
    }

    /// Queues a paused job again; it resumes from its last checkpoint.
    pub fn resume_job(&self, account: &AccountKey, id: &str) -> Result<FineTuningJobRow> {
        let job = self.job(account, id)?;
        if job.status != "paused" {
            return Err(ControlError::invalid(
                "jobNotPaused",
                format!("The job '{id}' is {} and cannot be resumed; only a paused job can.", job.status),
                "",
            ));
        }
        self.store.transition_job(
            id,
            &["paused"],
            "pending",
            unix_now(),
            "Job resumed; it continues from its last checkpoint.",
        )?;
        self.fine_tuning.wake.notify_waiters();
        self.job(account, id)
    }

    pub fn job_events(
        &self,
        account: &AccountKey,
        id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FineTuningEventRow>> {
        self.job(account, id)?;
        Ok(self.store.job_events(id, after, limit)?)
    }

    pub fn job_checkpoints(&self, account: &AccountKey, id: &str) -> Result<Vec<FineTuningCheckpointRow>> {
        self.job(account, id)?;
        Ok(self.store.job_checkpoints(id)?)
    }

    pub fn job_metrics(&self, account: &AccountKey, id: &str) -> Result<Vec<FineTuningMetricRow>> {
        self.job(account, id)?;
        Ok(self.store.job_metrics(id)?)
    }

    /// Puts jobs a stop or crash interrupted back in the queue (they resume from their last
    /// checkpoint) and starts the runners.
    pub(crate) fn start_fine_tuning(self: &Arc<Self>) -> Result<()> {
        // Jobs this replica ran before it restarted, and those of replicas that are gone; a job another
        // live replica runs keeps running there.
        self.requeue_orphaned_jobs(true)?;
        for _ in 0..self.config.fine_tuning_slots.max(1) {
            let control = self.clone();
            self.spawn(async move { control.run_jobs().await });
        }
        Ok(())
    }

    async fn run_jobs(self: Arc<Self>) {
        loop {
            if self.fine_tuning.stopping.load(Ordering::Acquire) {
                return;
            }
            let wake = self.fine_tuning.wake.notified();
            let next = match self.store.jobs_with_status(&["pending"]) {
                Ok(jobs) => jobs.into_iter().next(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the fine-tuning queue");
                    None
                }
            };
            // The lease first, then the claim: a job is never `running` without a holder.
            let claimed = match &next {
                Some(job) => {
                    self.hold(&crate::fleet::job_lease(&job.id))
                        && self
                            .store
                            .transition_job(&job.id, &["pending"], "running", unix_now(), "Fine-tuning started.")
                            .unwrap_or(false)
                }
                None => false,
            };
            match next {
                Some(job) if claimed => {
                    let flag = Arc::new(AtomicBool::new(false));
                    self.fine_tuning
                        .cancel
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(job.id.clone(), flag.clone());
                    let control = self.clone();
                    let id = job.id.clone();
                    let outcome = tokio::task::spawn_blocking(move || control.run_job(job, flag)).await;
                    if let Err(e) = outcome {
                        tracing::error!(job = %id, error = %e, "fine-tuning crashed");
                        let end = failed("internal_error", format!("The job crashed: {e}"));
                        let _ = self.store.finish_job(&id, &end, "The job failed.");
                    }
                    self.fine_tuning.cancel.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    let _ = self.store.release_lease(&crate::fleet::job_lease(&id), self.replica());
                }
                Some(job) => {
                    let _ = self.store.release_lease(&crate::fleet::job_lease(&job.id), self.replica());
                }
                None => {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), wake).await;
                }
            }
        }
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.config.store_dir.join("fine_tuning").join(id)
    }

    /// Runs one claimed job to its end (blocking).
    fn run_job(self: &Arc<Self>, job: FineTuningJobRow, cancel: Arc<AtomicBool>) {
        let started = std::time::Instant::now();
        let result = self.train_job(&job, &cancel);
        let end = match result {
            Ok(end) => end,
            Err(TrainError::Cancelled)
                if (!cancel.load(Ordering::Acquire) || self.fine_tuning.stopping.load(Ordering::Acquire))
                    // A job cancelled or paused just before the stop stays as it was left.
                    && matches!(self.store.job_by_id(&job.id), Ok(Some(j)) if j.status == "running") =>
            {
                // Stopped by a shutdown: on one machine the job stays `running` and resumes at the next
                // start; in a fleet it goes back to the queue for another replica.
                tracing::info!(job = %job.id, "fine-tuning interrupted by shutdown");
                if self.store.is_postgres() {
                    let _ = self.store.transition_job(
                        &job.id,
                        &["running"],
                        "pending",
                        unix_now(),
                        "The replica running the job stopped; the job resumes from its last checkpoint.",
                    );
                    return;
                }
                let _ = self.store.add_job_event(
                    &job.id,
                    unix_now(),
                    "info",
                    "The server is stopping; the job will resume from its last checkpoint.",
                    "message",
                    None,
                );
                return;
            }
            Err(TrainError::Cancelled) => return, // already recorded by cancel_job or pause_job
            Err(e) => {
                let code = match e {
                    TrainError::Data(_) => "invalid_training_file",
                    TrainError::Hyperparameters(_) => "invalid_hyperparameters",
                    TrainError::Diverged { .. } => "training_diverged",
                    _ => "internal_error",
                };
                failed(code, format!("The job failed: {e}"))
            }
        };
        let event = match end.status.as_str() {
            "succeeded" => format!(
                "The job has succeeded. New model created: {}",
                end.fine_tuned_model.as_ref().map(|m| m.id.as_str()).unwrap_or("")
            ),
            _ => end.error.as_ref().map(|e| e.1.clone()).unwrap_or_default(),
        };
        match self.store.finish_job(&job.id, &end, &event) {
            Ok(true) => {
                tracing::info!(job = %job.id, status = %end.status, seconds = started.elapsed().as_secs(), "fine-tuning finished");
                if end.status == "succeeded" {
                    let _ = std::fs::remove_dir_all(self.job_dir(&job.id));
                }
            }
            Ok(false) => {
                // Cancelled meanwhile: the model was not recorded, so its files go.
                if let Some(m) = &end.fine_tuned_model {
                    let _ = std::fs::remove_dir_all(&m.path);
                }
                if let Some(f) = &end.result_file {
                    let _ = std::fs::remove_file(&f.path);
                }
            }
            Err(e) => tracing::error!(job = %job.id, error = %e, "cannot record the end of a fine-tuning job"),
        }
    }

    fn read_examples(&self, account: &AccountKey, id: &str) -> Result<Vec<berth_train::Example>, TrainError> {
        let bytes = self.read_file(account, id)?;
        parse_jsonl(&bytes).map_err(|p| TrainError::Data(format!("the file '{id}' cannot be used: {p}")))
    }

    fn read_pairs(&self, account: &AccountKey, id: &str) -> Result<Vec<berth_train::PreferenceExample>, TrainError> {
        let bytes = self.read_file(account, id)?;
        parse_preference_jsonl(&bytes).map_err(|p| TrainError::Data(format!("the file '{id}' cannot be used: {p}")))
    }

    fn read_file(&self, account: &AccountKey, id: &str) -> Result<Vec<u8>, TrainError> {
        let row = self
            .store
            .file(account, id)
            .map_err(|e| TrainError::Data(e.to_string()))?
            .ok_or_else(|| TrainError::Data(file_not_found(id).to_string()))?;
        std::fs::read(&row.path).map_err(|e| TrainError::Data(format!("cannot read the file '{id}': {e}")))
    }

    /// What a job's `model` starts from: a base model, or (continuous fine-tuning) an adapter
    /// fine-tune or checkpoint of one in the account, whose adapter the new one continues.
    fn starting_point(&self, account: &AccountKey, model: &str) -> Result<(BaseModelRow, Option<ModelRow>)> {
        let invalid = |message: String| ControlError::invalid("invalidModel", message, "model");
        if let Some(base) = self.store.base_model(model)? {
            return Ok((base, None));
        }
        let Some(tuned) = self.store.model(account, model)? else {
            let known: Vec<String> = self.store.base_models()?.into_iter().map(|b| b.name).collect();
            return Err(invalid(format!(
                "The model '{model}' cannot be fine-tuned here; the base models are: {}, and the account's fine-tuned models and checkpoints continue too.",
                known.join(", ")
            )));
        };
        if tuned.kind != "adapter" {
            return Err(invalid(format!(
                "The model '{model}' is a full-weights fine-tune; continuing is for LoRA fine-tunes and checkpoints. Fine-tune its base model '{}' instead.",
                tuned.base_model
            )));
        }
        berth_train::check_starting_adapter(std::path::Path::new(&tuned.path), &LoraSettings::default())
            .map_err(|e| invalid(format!("The model '{model}' cannot be continued: {e}.")))?;
        let base = self.store.base_model(&tuned.base_model)?.ok_or_else(|| {
            invalid(format!("The base model '{}' of '{model}' is no longer registered.", tuned.base_model))
        })?;
        Ok((base, Some(tuned)))
    }

    fn train_job(self: &Arc<Self>, job: &FineTuningJobRow, cancel: &Arc<AtomicBool>) -> Result<JobEnd, TrainError> {
        let (base, start) =
            self.starting_point(&job.account, &job.model).map_err(|e| TrainError::Data(e.to_string()))?;
        let dpo = job.method == "dpo";
        let preference = if dpo {
            Some(Preference {
                beta: job.beta.unwrap_or(0.1),
                train: self.read_pairs(&job.account, &job.training_file)?,
                validation: match &job.validation_file {
                    Some(v) => self.read_pairs(&job.account, v)?,
                    None => vec![],
                },
            })
        } else {
            None
        };
        let spec = TrainSpec {
            base: PathBuf::from(&base.path),
            base_name: base.name.clone(),
            train: if dpo { vec![] } else { self.read_examples(&job.account, &job.training_file)? },
            validation: match &job.validation_file {
                Some(v) if !dpo => self.read_examples(&job.account, v)?,
                _ => vec![],
            },
            preference,
            hyper: Hyperparameters {
                n_epochs: job.n_epochs as usize,
                batch_size: job.batch_size as usize,
                learning_rate: Hyperparameters::BASE_LEARNING_RATE * job.learning_rate_multiplier,
                seed: job.seed as u64,
                lora: LoraSettings::default(),
                max_tokens: (base.context_length as usize).clamp(16, 2048),
                max_grad_norm: 1.0,
            },
            work_dir: self.job_dir(&job.id),
            start_from: start.as_ref().map(|m| PathBuf::from(&m.path)),
        };
        let mut observer = JobObserver {
            control: self.clone(),
            job: job.clone(),
            base: base.name.clone(),
            cancel: cancel.clone(),
            started: std::time::Instant::now(),
            first_step: None,
            epoch_tokens: 0,
        };
        let outcome = train(&spec, &mut observer)?;
        let hex = job.id.strip_prefix("ftjob-").unwrap_or(&job.id);
        let model_id = match &job.suffix {
            Some(s) => format!("{}.ft-{hex}-{s}", base.name),
            None => format!("{}.ft-{hex}", base.name),
        };
        let model_dir = self.config.store_dir.join("models").join(&model_id);
        copy_adapter(&outcome.adapter_dir, &model_dir)
            .map_err(|e| TrainError::Io { path: model_dir.display().to_string(), reason: e.to_string() })?;
        let csv = results_csv(&self.store.job_metrics(&job.id).map_err(|e| TrainError::Data(e.to_string()))?);
        let file_id = format!("file-{}", new_hex_id());
        let path = self
            .write_file_atomically(&format!("{file_id}.csv"), csv.as_bytes())
            .map_err(|e| TrainError::Data(e.to_string()))?;
        let now = unix_now();
        Ok(JobEnd {
            status: "succeeded".into(),
            error: None,
            fine_tuned_model: Some(ModelRow {
                account: job.account.clone(),
                id: model_id,
                base_model: base.name.clone(),
                kind: "adapter".into(),
                path: model_dir.display().to_string(),
                created_at: crate::now_rfc3339(),
            }),
            result_file: Some(FileRow {
                id: file_id,
                account: job.account.clone(),
                filename: "results.csv".into(),
                purpose: "fine-tune-results".into(),
                bytes: csv.len() as i64,
                examples: 0,
                path: path.display().to_string(),
                status: "processed".into(),
                created_at: now,
            }),
            // Billed as Azure bills: the training file's tokens times the epochs.
            trained_tokens: Some((observer.epoch_tokens * job.n_epochs as usize) as i64),
            finished_at: now,
        })
    }
}

fn failed(code: &str, message: String) -> JobEnd {
    JobEnd {
        status: "failed".into(),
        error: Some((code.into(), message)),
        fine_tuned_model: None,
        result_file: None,
        trained_tokens: None,
        finished_at: unix_now(),
    }
}

/// Azure's results file: one row per step.
fn results_csv(metrics: &[FineTuningMetricRow]) -> String {
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.5}")).unwrap_or_default();
    let mut out = String::from("step,train_loss,train_mean_token_accuracy,valid_loss,validation_mean_token_accuracy,full_valid_loss,full_valid_mean_token_accuracy\n");
    for m in metrics {
        out.push_str(&format!(
            "{},{:.5},{:.5},{},{},{},{}\n",
            m.step,
            m.train_loss,
            m.train_mean_token_accuracy,
            opt(m.valid_loss),
            opt(m.valid_mean_token_accuracy),
            opt(m.full_valid_loss),
            opt(m.full_valid_mean_token_accuracy)
        ));
    }
    out
}

/// Copies a PEFT adapter's two files into `dest`, through a temporary directory renamed at the end.
fn copy_adapter(src: &Path, dest: &Path) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.partial", dest.display()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for name in [berth_train::CONFIG_FILE, berth_train::WEIGHTS_FILE] {
        std::fs::copy(src.join(name), tmp.join(name))?;
    }
    berth_durable::sync_tree(&tmp)?;
    let _ = std::fs::remove_dir_all(dest);
    berth_durable::publish(&tmp, dest)
}

/// Records a job's progress as the trainer reports it.
struct JobObserver {
    control: Arc<Control>,
    job: FineTuningJobRow,
    /// The base model the job's adapters are for (the job's model, or the base of the fine-tune it continues).
    base: String,
    cancel: Arc<AtomicBool>,
    started: std::time::Instant,
    first_step: Option<usize>,
    /// Tokens of one pass over the training file.
    epoch_tokens: usize,
}

impl JobObserver {
    fn store_err(e: impl std::fmt::Display) -> TrainError {
        TrainError::Io { path: "berth.db".into(), reason: e.to_string() }
    }

    /// Keeps the job's checkpoints as Azure does: those of the last two epochs (the final one is also
    /// the fine-tuned model). An older one goes, files and all, unless a deployment serves it.
    fn keep_last_checkpoints(&self) -> Result<(), TrainError> {
        let store = &self.control.store;
        let checkpoints = store.job_checkpoints(&self.job.id).map_err(Self::store_err)?;
        let deployed: Vec<String> =
            store.deployments(&self.job.account).map_err(Self::store_err)?.into_iter().map(|d| d.model_name).collect();
        for old in checkpoints.iter().skip(KEPT_CHECKPOINTS) {
            if deployed.contains(&old.id) {
                continue;
            }
            store.delete_checkpoint(&self.job.account, &old.id).map_err(Self::store_err)?;
            let _ = std::fs::remove_dir_all(self.control.config.store_dir.join("models").join(&old.id));
        }
        Ok(())
    }

    /// Registers the checkpoint of `epoch` as a deployable `ftchkpt-` model (once).
    fn record_checkpoint(
        &self,
        epoch: usize,
        step: usize,
        dir: &Path,
        metrics: serde_json::Value,
    ) -> Result<(), TrainError> {
        let store = &self.control.store;
        if store.job_checkpoints(&self.job.id).map_err(Self::store_err)?.iter().any(|c| c.epoch == epoch as i64) {
            return Ok(());
        }
        let id = format!("ftchkpt-{}", new_hex_id());
        let model_dir = self.control.config.store_dir.join("models").join(&id);
        copy_adapter(dir, &model_dir)
            .map_err(|e| TrainError::Io { path: model_dir.display().to_string(), reason: e.to_string() })?;
        let hex = self.job.id.strip_prefix("ftjob-").unwrap_or(&self.job.id);
        let row = FineTuningCheckpointRow {
            id: id.clone(),
            job_id: self.job.id.clone(),
            created_at: unix_now(),
            step_number: step as i64,
            epoch: epoch as i64,
            metrics: metrics.to_string(),
            fine_tuned_model_checkpoint: format!("{}.ft-{hex}:ckpt-step-{step}", self.base),
        };
        let model = ModelRow {
            account: self.job.account.clone(),
            id: id.clone(),
            base_model: self.base.clone(),
            kind: "adapter".into(),
            path: model_dir.display().to_string(),
            created_at: crate::now_rfc3339(),
        };
        store.insert_checkpoint(&row, &model).map_err(Self::store_err)?;
        self.keep_last_checkpoints()?;
        store
            .add_job_event(
                &self.job.id,
                unix_now(),
                "info",
                &format!("Checkpoint created at step {step} (epoch {epoch}): {id}"),
                "message",
                None,
            )
            .map_err(Self::store_err)
    }
}

impl Observer for JobObserver {
    fn event(&mut self, event: TrainEvent) -> Result<(), TrainError> {
        let store = &self.control.store;
        let now = unix_now();
        match event {
            TrainEvent::Prepared { examples, train_tokens, total_steps, resumed_after_epoch } => {
                self.epoch_tokens = train_tokens;
                let steps_per_epoch = total_steps / self.job.n_epochs.max(1) as usize;
                if let Some(epoch) = resumed_after_epoch {
                    let step = epoch * steps_per_epoch;
                    store.truncate_metrics(&self.job.id, step as i64).map_err(Self::store_err)?;
                    // A crash between writing a checkpoint and recording it leaves it unrecorded.
                    for e in 1..=epoch {
                        let dir = self.control.job_dir(&self.job.id).join(format!("epoch-{e}"));
                        self.record_checkpoint(
                            e,
                            e * steps_per_epoch,
                            &dir,
                            serde_json::json!({ "step": e * steps_per_epoch }),
                        )?;
                    }
                    self.first_step = Some(step);
                }
                let message = match resumed_after_epoch {
                    Some(e) => format!("Resumed after epoch {e}: {examples} examples, {train_tokens} tokens an epoch, {total_steps} steps in all."),
                    None => format!("Training on {examples} examples, {train_tokens} tokens an epoch: {total_steps} steps."),
                };
                store.add_job_event(&self.job.id, now, "info", &message, "message", None).map_err(Self::store_err)?;
            }
            TrainEvent::Step(m) => {
                let done_before = self.first_step.unwrap_or(0);
                let done = m.step.saturating_sub(done_before).max(1);
                let per_step = self.started.elapsed().as_secs_f64() / done as f64;
                let _ = store.set_job_estimate(&self.job.id, now + (per_step * (m.total_steps - m.step) as f64) as i64);
                let row = FineTuningMetricRow {
                    job_id: self.job.id.clone(),
                    step: m.step as i64,
                    train_loss: m.train_loss as f64,
                    train_mean_token_accuracy: m.train_mean_token_accuracy as f64,
                    valid_loss: m.valid_loss.map(f64::from),
                    valid_mean_token_accuracy: m.valid_mean_token_accuracy.map(f64::from),
                    full_valid_loss: None,
                    full_valid_mean_token_accuracy: None,
                };
                let data = serde_json::json!({
                    "step": m.step,
                    "total_steps": m.total_steps,
                    "epoch": m.epoch,
                    "train_loss": m.train_loss,
                    "train_mean_token_accuracy": m.train_mean_token_accuracy,
                    "valid_loss": m.valid_loss,
                    "valid_mean_token_accuracy": m.valid_mean_token_accuracy,
                    "learning_rate": m.learning_rate,
                    "tokens_per_second": m.tokens as f64 / m.elapsed_seconds.max(1e-9),
                });
                let message = format!("Step {}/{}: training loss={:.4}", m.step, m.total_steps, m.train_loss);
                store.record_metric(&row, now, &message, &data.to_string()).map_err(Self::store_err)?;
            }
            TrainEvent::Checkpoint(c) => {
                store
                    .set_full_validation(
                        &self.job.id,
                        c.step as i64,
                        c.full_valid_loss.map(f64::from),
                        c.full_valid_mean_token_accuracy.map(f64::from),
                    )
                    .map_err(Self::store_err)?;
                let last = store
                    .job_metrics(&self.job.id)
                    .map_err(Self::store_err)?
                    .into_iter()
                    .find(|m| m.step == c.step as i64);
                let metrics = serde_json::json!({
                    "step": c.step,
                    "train_loss": last.as_ref().map(|m| m.train_loss),
                    "train_mean_token_accuracy": last.as_ref().map(|m| m.train_mean_token_accuracy),
                    "valid_loss": last.as_ref().and_then(|m| m.valid_loss),
                    "valid_mean_token_accuracy": last.as_ref().and_then(|m| m.valid_mean_token_accuracy),
                    "full_valid_loss": c.full_valid_loss,
                    "full_valid_mean_token_accuracy": c.full_valid_mean_token_accuracy,
                    "epoch_train_loss": c.train_loss,
                });
                self.record_checkpoint(c.epoch, c.step, &c.dir, metrics)?;
            }
        }
        Ok(())
    }

    fn should_stop(&self) -> bool {
        self.cancel.load(Ordering::Acquire) || self.control.fine_tuning.stopping.load(Ordering::Acquire)
    }
}
