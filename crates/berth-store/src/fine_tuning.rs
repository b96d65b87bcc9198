//! Files, fine-tuning jobs, their events, metrics and checkpoints.

use crate::error::Result;
use crate::rows::*;
use crate::store::{account_key, insert_model};
use crate::Store;
use rusqlite::{params, OptionalExtension, Row};

const FILE_SELECT: &str =
    "SELECT subscription_id, resource_group, account, id, filename, purpose, bytes, examples, path, status, created_at FROM files";
const JOB_SELECT: &str = "SELECT subscription_id, resource_group, account, id, model, training_file, validation_file, n_epochs,
    batch_size, learning_rate_multiplier, suffix, seed, status, fine_tuned_model, error_code, error_message, error_param,
    trained_tokens, result_files, created_at, finished_at, estimated_finish FROM fine_tuning_jobs";
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
        insert_file(&self.conn(), f)
    }

    pub fn file(&self, account: &AccountKey, id: &str) -> Result<Option<FileRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "{FILE_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND id = ?4"
                ),
                params![account.subscription_id, account.resource_group, account.account, id],
                file_from_row,
            )
            .optional()?)
    }

    pub fn files(&self, account: &AccountKey) -> Result<Vec<FileRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "{FILE_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 ORDER BY created_at, id"
        ))?;
        let rows =
            st.query_map(params![account.subscription_id, account.resource_group, account.account], file_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a file unless a job that has not finished uses it; returns the row, or `Err(job id)` naming the job.
    pub fn delete_file(&self, account: &AccountKey, id: &str) -> Result<Option<Result<FileRow, String>>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row = tx
            .query_row(
                &format!(
                    "{FILE_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND id = ?4"
                ),
                params![account.subscription_id, account.resource_group, account.account, id],
                file_from_row,
            )
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        let user: Option<String> = tx
            .query_row(
                "SELECT id FROM fine_tuning_jobs WHERE (training_file = ?1 OR validation_file = ?1) AND status IN ('pending', 'running', 'paused') LIMIT 1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(job) = user {
            return Ok(Some(Err(job)));
        }
        tx.execute("DELETE FROM files WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(Some(Ok(row)))
    }

    /// Writes a new job and its first event together.
    pub fn insert_job(&self, j: &FineTuningJobRow, first_event: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO fine_tuning_jobs (subscription_id, resource_group, account, id, model, training_file, validation_file,
                 n_epochs, batch_size, learning_rate_multiplier, suffix, seed, status, fine_tuned_model, error_code,
                 error_message, error_param, trained_tokens, result_files, created_at, finished_at, estimated_finish)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            params![
                j.account.subscription_id, j.account.resource_group, j.account.account, j.id, j.model, j.training_file,
                j.validation_file, j.n_epochs, j.batch_size, j.learning_rate_multiplier, j.suffix, j.seed, j.status,
                j.fine_tuned_model, j.error_code, j.error_message, j.error_param, j.trained_tokens,
                serde_json::to_string(&j.result_files)?, j.created_at, j.finished_at, j.estimated_finish
            ],
        )?;
        insert_event(&tx, &j.id, j.created_at, "info", first_event, "message", None)?;
        tx.commit()?;
        Ok(())
    }

    pub fn job(&self, account: &AccountKey, id: &str) -> Result<Option<FineTuningJobRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "{JOB_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND id = ?4"
                ),
                params![account.subscription_id, account.resource_group, account.account, id],
                job_from_row,
            )
            .optional()?)
    }

    pub fn job_by_id(&self, id: &str) -> Result<Option<FineTuningJobRow>> {
        Ok(self.conn().query_row(&format!("{JOB_SELECT} WHERE id = ?1"), params![id], job_from_row).optional()?)
    }

    /// The account's jobs, newest first (creation order within a second), after the job `after`
    /// (exclusive) when given.
    pub fn jobs(&self, account: &AccountKey, after: Option<&str>, limit: usize) -> Result<Vec<FineTuningJobRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "{JOB_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3
               AND (?4 IS NULL OR (created_at, rowid) < (SELECT created_at, rowid FROM fine_tuning_jobs WHERE id = ?4))
             ORDER BY created_at DESC, rowid DESC LIMIT ?5"
        ))?;
        let rows = st.query_map(
            params![account.subscription_id, account.resource_group, account.account, after, limit as i64],
            job_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Jobs in one of `statuses`, oldest first.
    pub fn jobs_with_status(&self, statuses: &[&str]) -> Result<Vec<FineTuningJobRow>> {
        let conn = self.conn();
        let marks = vec!["?"; statuses.len()].join(", ");
        let mut st = conn.prepare(&format!("{JOB_SELECT} WHERE status IN ({marks}) ORDER BY created_at, rowid"))?;
        let rows = st.query_map(rusqlite::params_from_iter(statuses), job_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many jobs are in each status.
    pub fn job_status_counts(&self) -> Result<Vec<(String, i64)>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT status, COUNT(*) FROM fine_tuning_jobs GROUP BY status")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves a job to `to` if it is in one of `from`, with an event; returns whether it moved.
    pub fn transition_job(&self, id: &str, from: &[&str], to: &str, now: i64, event: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let status: Option<String> =
            tx.query_row("SELECT status FROM fine_tuning_jobs WHERE id = ?1", params![id], |r| r.get(0)).optional()?;
        if !status.is_some_and(|s| from.contains(&s.as_str())) {
            return Ok(false);
        }
        let finished = matches!(to, "succeeded" | "failed" | "cancelled").then_some(now);
        tx.execute(
            "UPDATE fine_tuning_jobs SET status = ?2, finished_at = COALESCE(?3, finished_at) WHERE id = ?1",
            params![id, to, finished],
        )?;
        insert_event(&tx, id, now, "info", event, "message", None)?;
        tx.commit()?;
        Ok(true)
    }

    pub fn set_job_estimate(&self, id: &str, estimated_finish: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE fine_tuning_jobs SET estimated_finish = ?2 WHERE id = ?1",
            params![id, estimated_finish],
        )?;
        Ok(())
    }

    /// Ends a running job (unless it was cancelled meanwhile): status, error, and for a success the
    /// fine-tuned model and results file, in one transaction. Returns whether it applied.
    pub fn finish_job(&self, id: &str, end: &JobEnd, event: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let status: Option<String> =
            tx.query_row("SELECT status FROM fine_tuning_jobs WHERE id = ?1", params![id], |r| r.get(0)).optional()?;
        if status.as_deref() != Some("running") {
            return Ok(false);
        }
        if let Some(m) = &end.fine_tuned_model {
            insert_model(&tx, m)?;
        }
        let mut result_files: Vec<String> = Vec::new();
        if let Some(f) = &end.result_file {
            insert_file(&tx, f)?;
            result_files.push(f.id.clone());
        }
        tx.execute(
            "UPDATE fine_tuning_jobs SET status = ?2, error_code = ?3, error_message = ?4, fine_tuned_model = ?5,
                 result_files = ?6, trained_tokens = ?7, finished_at = ?8, estimated_finish = NULL WHERE id = ?1",
            params![
                id,
                end.status,
                end.error.as_ref().map(|e| e.0.clone()),
                end.error.as_ref().map(|e| e.1.clone()),
                end.fine_tuned_model.as_ref().map(|m| m.id.clone()),
                serde_json::to_string(&result_files)?,
                end.trained_tokens,
                end.finished_at
            ],
        )?;
        let level = if end.status == "failed" { "error" } else { "info" };
        insert_event(&tx, id, end.finished_at, level, event, "message", None)?;
        tx.commit()?;
        Ok(true)
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_event(&tx, job_id, now, level, message, kind, data)?;
        tx.commit()?;
        Ok(())
    }

    /// Events newest first, before the event `after` (exclusive) when given.
    pub fn job_events(&self, job_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<FineTuningEventRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "{EVENT_SELECT} WHERE job_id = ?1 AND (?2 IS NULL OR seq < (SELECT seq FROM fine_tuning_events WHERE id = ?2))
             ORDER BY seq DESC LIMIT ?3"
        ))?;
        let rows = st.query_map(params![job_id, after, limit as i64], event_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records one step's metrics and its event together.
    pub fn record_metric(&self, m: &FineTuningMetricRow, now: i64, message: &str, data: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO fine_tuning_metrics (job_id, step, train_loss, train_mean_token_accuracy, valid_loss,
                 valid_mean_token_accuracy, full_valid_loss, full_valid_mean_token_accuracy)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                m.job_id, m.step, m.train_loss, m.train_mean_token_accuracy, m.valid_loss, m.valid_mean_token_accuracy,
                m.full_valid_loss, m.full_valid_mean_token_accuracy
            ],
        )?;
        insert_event(&tx, &m.job_id, now, "info", message, "metrics", Some(data))?;
        tx.commit()?;
        Ok(())
    }

    /// Adds the epoch's full validation figures to the metrics of its last step.
    pub fn set_full_validation(&self, job_id: &str, step: i64, loss: Option<f64>, accuracy: Option<f64>) -> Result<()> {
        self.conn().execute(
            "UPDATE fine_tuning_metrics SET full_valid_loss = ?3, full_valid_mean_token_accuracy = ?4 WHERE job_id = ?1 AND step = ?2",
            params![job_id, step, loss, accuracy],
        )?;
        Ok(())
    }

    pub fn job_metrics(&self, job_id: &str) -> Result<Vec<FineTuningMetricRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT job_id, step, train_loss, train_mean_token_accuracy, valid_loss, valid_mean_token_accuracy,
                 full_valid_loss, full_valid_mean_token_accuracy FROM fine_tuning_metrics WHERE job_id = ?1 ORDER BY step",
        )?;
        let rows = st.query_map(params![job_id], |r| {
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
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets metrics past `step` (a resumed job recomputes them).
    pub fn truncate_metrics(&self, job_id: &str, step: i64) -> Result<()> {
        self.conn()
            .execute("DELETE FROM fine_tuning_metrics WHERE job_id = ?1 AND step > ?2", params![job_id, step])?;
        Ok(())
    }

    /// Records a checkpoint and the deployable model it is, together.
    pub fn insert_checkpoint(&self, c: &FineTuningCheckpointRow, model: &ModelRow) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_model(&tx, model)?;
        tx.execute(
            "INSERT INTO fine_tuning_checkpoints (id, job_id, created_at, step_number, epoch, metrics, fine_tuned_model_checkpoint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![c.id, c.job_id, c.created_at, c.step_number, c.epoch, c.metrics, c.fine_tuned_model_checkpoint],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a checkpoint and the account model it was deployable as, in one transaction.
    pub fn delete_checkpoint(&self, account: &AccountKey, id: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM fine_tuning_checkpoints WHERE id = ?1", params![id])?;
        tx.execute(
            "DELETE FROM models WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND id = ?4",
            params![account.subscription_id, account.resource_group, account.account, id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Checkpoints newest first.
    pub fn job_checkpoints(&self, job_id: &str) -> Result<Vec<FineTuningCheckpointRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("{CHECKPOINT_SELECT} WHERE job_id = ?1 ORDER BY step_number DESC"))?;
        let rows = st.query_map(params![job_id], |r| {
            Ok(FineTuningCheckpointRow {
                id: r.get(0)?,
                job_id: r.get(1)?,
                created_at: r.get(2)?,
                step_number: r.get(3)?,
                epoch: r.get(4)?,
                metrics: r.get(5)?,
                fine_tuned_model_checkpoint: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn insert_file(conn: &rusqlite::Connection, f: &FileRow) -> Result<()> {
    conn.execute(
        "INSERT INTO files (subscription_id, resource_group, account, id, filename, purpose, bytes, examples, path, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            f.account.subscription_id, f.account.resource_group, f.account.account, f.id, f.filename, f.purpose, f.bytes,
            f.examples, f.path, f.status, f.created_at
        ],
    )?;
    Ok(())
}

fn insert_event(
    conn: &rusqlite::Connection,
    job_id: &str,
    now: i64,
    level: &str,
    message: &str,
    kind: &str,
    data: Option<&str>,
) -> Result<()> {
    let seq: i64 = conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM fine_tuning_events WHERE job_id = ?1",
        params![job_id],
        |r| r.get(0),
    )?;
    let hex = job_id.strip_prefix("ftjob-").unwrap_or(job_id);
    let id = format!("ftevent-{hex}-{seq}");
    conn.execute(
        "INSERT INTO fine_tuning_events (job_id, seq, id, created_at, level, message, type, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![job_id, seq, id, now, level, message, kind, data],
    )?;
    Ok(())
}

fn file_from_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
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

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<FineTuningJobRow> {
    let files: String = r.get(18)?;
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
        result_files: serde_json::from_str(&files)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(18, rusqlite::types::Type::Text, Box::new(e)))?,
        created_at: r.get(19)?,
        finished_at: r.get(20)?,
        estimated_finish: r.get(21)?,
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<FineTuningEventRow> {
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
