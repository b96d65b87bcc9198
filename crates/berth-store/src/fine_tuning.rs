//! Files, fine-tuning jobs, their events, metrics and checkpoints.

use crate::error::Result;
use crate::p;
use crate::rows::*;
use crate::sql::{Db, SqlRow};
use crate::store::{account_key, insert_model};
use crate::Store;

const FILE_SELECT: &str =
    "SELECT subscription_id, resource_group, account, id, filename, purpose, bytes, examples, path, status, created_at FROM files";
const JOB_SELECT: &str = "SELECT subscription_id, resource_group, account, id, model, training_file, validation_file, n_epochs,
    batch_size, learning_rate_multiplier, suffix, seed, status, fine_tuned_model, error_code, error_message, error_param,
    trained_tokens, result_files, created_at, finished_at, estimated_finish, method, beta FROM fine_tuning_jobs";
const EVENT_SELECT: &str = "SELECT job_id, seq, id, created_at, level, message, type, data FROM fine_tuning_events";
const CHECKPOINT_SELECT: &str =
    "SELECT id, job_id, created_at, step_number, epoch, metrics, fine_tuned_model_checkpoint FROM fine_tuning_checkpoints";

/// What ends a job: its status and, for a success, the model and the results file written with it.
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub status: String,
    pub error: Option<(String, String)>,
    pub fine_tuned_model: Option<ModelRow>,
    pub result_file: Option<FileRow>,
    pub trained_tokens: Option<i64>,
    pub finished_at: i64,
}

impl Store {
    pub fn insert_file(&self, f: &FileRow) -> Result<()> {
        self.db(|c| insert_file(c, f))
    }

    pub fn file(&self, account: &AccountKey, id: &str) -> Result<Option<FileRow>> {
        self.db(|c| file_in(c, account, id))
    }

    pub fn files(&self, account: &AccountKey) -> Result<Vec<FileRow>> {
        self.db(|c| {
            c.query(
                &format!("{FILE_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 ORDER BY created_at, id"),
                p![account.subscription_id, account.resource_group, account.account],
                file_from_row,
            )
        })
    }

    /// Deletes a file unless a job that has not finished uses it; returns the row, or `Err(job id)` naming the job.
    pub fn delete_file(&self, account: &AccountKey, id: &str) -> Result<Option<Result<FileRow, String>>> {
        self.tx(|c| {
            let Some(row) = file_in(c, account, id)? else { return Ok(None) };
            let user: Option<String> = c.query_opt(
                "SELECT id FROM fine_tuning_jobs WHERE (training_file = ?1 OR validation_file = ?1) AND status IN ('pending', 'running', 'paused') LIMIT 1",
                p![id],
                |r| r.get(0),
            )?;
            if let Some(job) = user {
                return Ok(Some(Err(job)));
            }
            c.execute("DELETE FROM files WHERE id = ?1", p![id])?;
            Ok(Some(Ok(row)))
        })
    }

    /// Writes a new job and its first event together.
    pub fn insert_job(&self, j: &FineTuningJobRow, first_event: &str) -> Result<()> {
        let result_files = serde_json::to_string(&j.result_files)?;
        self.tx(|c| {
            c.execute(
                "INSERT INTO fine_tuning_jobs (subscription_id, resource_group, account, id, model, training_file, validation_file,
                     n_epochs, batch_size, learning_rate_multiplier, suffix, seed, status, fine_tuned_model, error_code,
                     error_message, error_param, trained_tokens, result_files, created_at, finished_at, estimated_finish, ordinal,
                     method, beta)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22,
                     (SELECT COALESCE(MAX(ordinal), 0) + 1 FROM fine_tuning_jobs), ?23, ?24)",
                p![
                    j.account.subscription_id, j.account.resource_group, j.account.account, j.id, j.model, j.training_file,
                    j.validation_file, j.n_epochs, j.batch_size, j.learning_rate_multiplier, j.suffix, j.seed, j.status,
                    j.fine_tuned_model, j.error_code, j.error_message, j.error_param, j.trained_tokens,
                    result_files, j.created_at, j.finished_at, j.estimated_finish, j.method, j.beta
                ],
            )?;
            insert_event(c, &j.id, j.created_at, "info", first_event, "message", None)
        })
    }

    pub fn job(&self, account: &AccountKey, id: &str) -> Result<Option<FineTuningJobRow>> {
        self.db(|c| {
            c.query_opt(
                &format!(
                    "{JOB_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND id = ?4"
                ),
                p![account.subscription_id, account.resource_group, account.account, id],
                job_from_row,
            )
        })
    }

    pub fn job_by_id(&self, id: &str) -> Result<Option<FineTuningJobRow>> {
        self.db(|c| c.query_opt(&format!("{JOB_SELECT} WHERE id = ?1"), p![id], job_from_row))
    }

    /// The account's jobs, newest first (creation order within a second), after the job `after`
    /// (exclusive) when given.
    pub fn jobs(&self, account: &AccountKey, after: Option<&str>, limit: usize) -> Result<Vec<FineTuningJobRow>> {
        self.db(|c| {
            c.query(
                &format!(
                    "{JOB_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3
                       AND (CAST(?4 AS TEXT) IS NULL
                            OR (created_at, ordinal) < (SELECT created_at, ordinal FROM fine_tuning_jobs WHERE id = ?4))
                     ORDER BY created_at DESC, ordinal DESC LIMIT ?5"
                ),
                p![account.subscription_id, account.resource_group, account.account, after, limit as i64],
                job_from_row,
            )
        })
    }

    /// Jobs in one of `statuses`, oldest first.
    pub fn jobs_with_status(&self, statuses: &[&str]) -> Result<Vec<FineTuningJobRow>> {
        let marks = (1..=statuses.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let params: Vec<&dyn crate::sql::ToValue> = statuses.iter().map(|s| s as &dyn crate::sql::ToValue).collect();
        self.db(|c| {
            c.query(
                &format!("{JOB_SELECT} WHERE status IN ({marks}) ORDER BY created_at, ordinal"),
                &params,
                job_from_row,
            )
        })
    }

    /// How many jobs are in each status.
    pub fn job_status_counts(&self) -> Result<Vec<(String, i64)>> {
        self.db(|c| {
            c.query("SELECT status, COUNT(*) FROM fine_tuning_jobs GROUP BY status", p![], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
    }

    /// Moves a job to `to` if it is in one of `from`, with an event; returns whether it moved.
    pub fn transition_job(&self, id: &str, from: &[&str], to: &str, now: i64, event: &str) -> Result<bool> {
        let finished = matches!(to, "succeeded" | "failed" | "cancelled").then_some(now);
        self.tx(|c| {
            let status = job_status(c, id)?;
            if !status.is_some_and(|s| from.contains(&s.as_str())) {
                return Ok(false);
            }
            c.execute(
                "UPDATE fine_tuning_jobs SET status = ?2, finished_at = COALESCE(?3, finished_at) WHERE id = ?1",
                p![id, to, finished],
            )?;
            insert_event(c, id, now, "info", event, "message", None)?;
            Ok(true)
        })
    }

    pub fn set_job_estimate(&self, id: &str, estimated_finish: i64) -> Result<()> {
        self.db(|c| {
            c.execute("UPDATE fine_tuning_jobs SET estimated_finish = ?2 WHERE id = ?1", p![id, estimated_finish])
        })?;
        Ok(())
    }

    /// Ends a running job (unless it was cancelled meanwhile): status, error, and for a success the
    /// fine-tuned model and results file, in one transaction. Returns whether it applied.
    pub fn finish_job(&self, id: &str, end: &JobEnd, event: &str) -> Result<bool> {
        let result_files: Vec<String> = end.result_file.iter().map(|f| f.id.clone()).collect();
        let result_files = serde_json::to_string(&result_files)?;
        let level = if end.status == "failed" { "error" } else { "info" };
        self.tx(|c| {
            if job_status(c, id)?.as_deref() != Some("running") {
                return Ok(false);
            }
            if let Some(m) = &end.fine_tuned_model {
                insert_model(c, m)?;
            }
            if let Some(f) = &end.result_file {
                insert_file(c, f)?;
            }
            c.execute(
                "UPDATE fine_tuning_jobs SET status = ?2, error_code = ?3, error_message = ?4, fine_tuned_model = ?5,
                     result_files = ?6, trained_tokens = ?7, finished_at = ?8, estimated_finish = NULL WHERE id = ?1",
                p![
                    id,
                    end.status,
                    end.error.as_ref().map(|e| e.0.clone()),
                    end.error.as_ref().map(|e| e.1.clone()),
                    end.fine_tuned_model.as_ref().map(|m| m.id.clone()),
                    result_files,
                    end.trained_tokens,
                    end.finished_at
                ],
            )?;
            insert_event(c, id, end.finished_at, level, event, "message", None)?;
            Ok(true)
        })
    }

    pub fn add_job_event(
        &self,
        job_id: &str,
        now: i64,
        level: &str,
        message: &str,
        kind: &str,
        data: Option<&str>,
    ) -> Result<()> {
        self.tx(|c| insert_event(c, job_id, now, level, message, kind, data))
    }

    /// Events newest first, before the event `after` (exclusive) when given.
    pub fn job_events(&self, job_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<FineTuningEventRow>> {
        self.db(|c| {
            c.query(
                &format!(
                    "{EVENT_SELECT} WHERE job_id = ?1
                       AND (CAST(?2 AS TEXT) IS NULL OR seq < (SELECT seq FROM fine_tuning_events WHERE id = ?2))
                     ORDER BY seq DESC LIMIT ?3"
                ),
                p![job_id, after, limit as i64],
                event_from_row,
            )
        })
    }

    /// Records one step's metrics and its event together.
    pub fn record_metric(&self, m: &FineTuningMetricRow, now: i64, message: &str, data: &str) -> Result<()> {
        self.tx(|c| {
            c.execute(
                "INSERT INTO fine_tuning_metrics (job_id, step, train_loss, train_mean_token_accuracy, valid_loss,
                     valid_mean_token_accuracy, full_valid_loss, full_valid_mean_token_accuracy)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (job_id, step) DO UPDATE SET train_loss = excluded.train_loss,
                     train_mean_token_accuracy = excluded.train_mean_token_accuracy, valid_loss = excluded.valid_loss,
                     valid_mean_token_accuracy = excluded.valid_mean_token_accuracy,
                     full_valid_loss = excluded.full_valid_loss,
                     full_valid_mean_token_accuracy = excluded.full_valid_mean_token_accuracy",
                p![
                    m.job_id,
                    m.step,
                    m.train_loss,
                    m.train_mean_token_accuracy,
                    m.valid_loss,
                    m.valid_mean_token_accuracy,
                    m.full_valid_loss,
                    m.full_valid_mean_token_accuracy
                ],
            )?;
            insert_event(c, &m.job_id, now, "info", message, "metrics", Some(data))
        })
    }

    /// Adds the epoch's full validation figures to the metrics of its last step.
    pub fn set_full_validation(&self, job_id: &str, step: i64, loss: Option<f64>, accuracy: Option<f64>) -> Result<()> {
        self.db(|c| {
            c.execute(
                "UPDATE fine_tuning_metrics SET full_valid_loss = ?3, full_valid_mean_token_accuracy = ?4 WHERE job_id = ?1 AND step = ?2",
                p![job_id, step, loss, accuracy],
            )
        })?;
        Ok(())
    }

    pub fn job_metrics(&self, job_id: &str) -> Result<Vec<FineTuningMetricRow>> {
        self.db(|c| {
            c.query(
                "SELECT job_id, step, train_loss, train_mean_token_accuracy, valid_loss, valid_mean_token_accuracy,
                     full_valid_loss, full_valid_mean_token_accuracy FROM fine_tuning_metrics WHERE job_id = ?1 ORDER BY step",
                p![job_id],
                |r| {
                    Ok(FineTuningMetricRow {
                        job_id: r.get(0)?,
                        step: r.get(1)?,
                        train_loss: r.get(2)?,
                        train_mean_token_accuracy: r.get(3)?,
                        valid_loss: r.get(4)?,
                        valid_mean_token_accuracy: r.get(5)?,
                        full_valid_loss: r.get(6)?,
                        full_valid_mean_token_accuracy: r.get(7)?,
                    })
                },
            )
        })
    }

    /// Forgets metrics past `step` (a resumed job recomputes them).
    pub fn truncate_metrics(&self, job_id: &str, step: i64) -> Result<()> {
        self.db(|c| c.execute("DELETE FROM fine_tuning_metrics WHERE job_id = ?1 AND step > ?2", p![job_id, step]))?;
        Ok(())
    }

    /// Records a checkpoint and the deployable model it is, together.
    pub fn insert_checkpoint(&self, ck: &FineTuningCheckpointRow, model: &ModelRow) -> Result<()> {
        self.tx(|c| {
            insert_model(c, model)?;
            c.execute(
                "INSERT INTO fine_tuning_checkpoints (id, job_id, created_at, step_number, epoch, metrics, fine_tuned_model_checkpoint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                p![ck.id, ck.job_id, ck.created_at, ck.step_number, ck.epoch, ck.metrics, ck.fine_tuned_model_checkpoint],
            )?;
            Ok(())
        })
    }

    /// Removes a checkpoint and the account model it was deployable as, in one transaction.
    pub fn delete_checkpoint(&self, account: &AccountKey, id: &str) -> Result<()> {
        self.tx(|c| {
            c.execute("DELETE FROM fine_tuning_checkpoints WHERE id = ?1", p![id])?;
            c.execute(
                "DELETE FROM models WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND id = ?4",
                p![account.subscription_id, account.resource_group, account.account, id],
            )?;
            Ok(())
        })
    }

    /// Checkpoints newest first.
    pub fn job_checkpoints(&self, job_id: &str) -> Result<Vec<FineTuningCheckpointRow>> {
        self.db(|c| {
            c.query(&format!("{CHECKPOINT_SELECT} WHERE job_id = ?1 ORDER BY step_number DESC"), p![job_id], |r| {
                Ok(FineTuningCheckpointRow {
                    id: r.get(0)?,
                    job_id: r.get(1)?,
                    created_at: r.get(2)?,
                    step_number: r.get(3)?,
                    epoch: r.get(4)?,
                    metrics: r.get(5)?,
                    fine_tuned_model_checkpoint: r.get(6)?,
                })
            })
        })
    }
}

fn file_in(c: &mut dyn Db, account: &AccountKey, id: &str) -> Result<Option<FileRow>> {
    c.query_opt(
        &format!("{FILE_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND id = ?4"),
        p![account.subscription_id, account.resource_group, account.account, id],
        file_from_row,
    )
}

fn job_status(c: &mut dyn Db, id: &str) -> Result<Option<String>> {
    c.query_opt("SELECT status FROM fine_tuning_jobs WHERE id = ?1", p![id], |r| r.get(0))
}

fn insert_file(c: &mut dyn Db, f: &FileRow) -> Result<()> {
    c.execute(
        "INSERT INTO files (subscription_id, resource_group, account, id, filename, purpose, bytes, examples, path, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        p![
            f.account.subscription_id, f.account.resource_group, f.account.account, f.id, f.filename, f.purpose, f.bytes,
            f.examples, f.path, f.status, f.created_at
        ],
    )?;
    Ok(())
}

fn insert_event(
    c: &mut dyn Db,
    job_id: &str,
    now: i64,
    level: &str,
    message: &str,
    kind: &str,
    data: Option<&str>,
) -> Result<()> {
    let seq: i64 =
        c.query_one("SELECT COALESCE(MAX(seq), 0) + 1 FROM fine_tuning_events WHERE job_id = ?1", p![job_id], |r| {
            r.get(0)
        })?;
    let hex = job_id.strip_prefix("ftjob-").unwrap_or(job_id);
    let id = format!("ftevent-{hex}-{seq}");
    c.execute(
        "INSERT INTO fine_tuning_events (job_id, seq, id, created_at, level, message, type, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        p![job_id, seq, id, now, level, message, kind, data],
    )?;
    Ok(())
}

fn file_from_row(r: &SqlRow) -> Result<FileRow> {
    Ok(FileRow {
        account: account_key(r)?,
        id: r.get(3)?,
        filename: r.get(4)?,
        purpose: r.get(5)?,
        bytes: r.get(6)?,
        examples: r.get(7)?,
        path: r.get(8)?,
        status: r.get(9)?,
        created_at: r.get(10)?,
    })
}

fn job_from_row(r: &SqlRow) -> Result<FineTuningJobRow> {
    Ok(FineTuningJobRow {
        account: account_key(r)?,
        id: r.get(3)?,
        model: r.get(4)?,
        training_file: r.get(5)?,
        validation_file: r.get(6)?,
        n_epochs: r.get(7)?,
        batch_size: r.get(8)?,
        learning_rate_multiplier: r.get(9)?,
        suffix: r.get(10)?,
        seed: r.get(11)?,
        status: r.get(12)?,
        fine_tuned_model: r.get(13)?,
        error_code: r.get(14)?,
        error_message: r.get(15)?,
        error_param: r.get(16)?,
        trained_tokens: r.get(17)?,
        result_files: r.json(18)?,
        created_at: r.get(19)?,
        finished_at: r.get(20)?,
        estimated_finish: r.get(21)?,
        method: r.get(22)?,
        beta: r.get(23)?,
    })
}

fn event_from_row(r: &SqlRow) -> Result<FineTuningEventRow> {
    Ok(FineTuningEventRow {
        job_id: r.get(0)?,
        seq: r.get(1)?,
        id: r.get(2)?,
        created_at: r.get(3)?,
        level: r.get(4)?,
        message: r.get(5)?,
        kind: r.get(6)?,
        data: r.get(7)?,
    })
}
