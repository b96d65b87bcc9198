//! Uploaded files: training and validation data, checked line by line on upload and kept under the
//! data directory; and the results files that jobs write.

use crate::clock::unix_now;
use crate::error::Result;
use crate::ids::new_hex_id;
use crate::{Control, ControlError};
use berth_store::{AccountKey, FileRow};
use berth_train::FileKind;
use std::path::Path;

/// Largest file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 512 << 20;

impl Control {
    /// Checks and stores an upload. Only `fine-tune` files are accepted, and only if every line is a
    /// usable chat example.
    pub fn upload_file(&self, account: &AccountKey, filename: &str, purpose: &str, bytes: &[u8]) -> Result<FileRow> {
        let account = self.account(account)?.key;
        if purpose != "fine-tune" {
            return Err(ControlError::invalid(
                "invalidPurpose",
                format!("The purpose '{purpose}' is not supported; upload training and validation data with purpose 'fine-tune'."),
                "purpose",
            ));
        }
        let filename = Path::new(filename).file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
        if filename.is_empty() || filename.len() > 255 || filename.chars().any(char::is_control) {
            return Err(ControlError::invalid(
                "invalidFileName",
                "The file needs a name of 1 to 255 characters, none of them a control character.",
                "file",
            ));
        }
        if bytes.len() > MAX_FILE_BYTES {
            return Err(ControlError::invalid(
                "fileTooLarge",
                format!("The file is {} bytes; the limit is {MAX_FILE_BYTES}.", bytes.len()),
                "file",
            ));
        }
        // Chat examples (supervised) or preference pairs (DPO), judged by the first line.
        let examples = FileKind::of(bytes)
            .check(bytes)
            .map_err(|p| ControlError::invalid("invalidPayload", p.to_string(), "file"))?;
        let id = format!("file-{}", new_hex_id());
        let path = self.write_file_atomically(&format!("{id}.jsonl"), bytes)?;
        let row = FileRow {
            id,
            account,
            filename,
            purpose: purpose.to_owned(),
            bytes: bytes.len() as i64,
            examples: examples as i64,
            path: path.display().to_string(),
            status: "processed".into(),
            created_at: unix_now(),
        };
        if let Err(e) = self.store.insert_file(&row) {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        Ok(row)
    }

    pub(crate) fn write_file_atomically(&self, name: &str, bytes: &[u8]) -> Result<std::path::PathBuf> {
        let dir = self.config.store_dir.join("files");
        let write = || -> std::io::Result<std::path::PathBuf> {
            berth_durable::create_private_dir_all(&dir)?;
            let dest = dir.join(name);
            berth_durable::write_file(&dest, bytes)?;
            Ok(dest)
        };
        write().map_err(|e| ControlError::Internal(format!("cannot write {name} under {}: {e}", dir.display())))
    }

    pub fn files(&self, account: &AccountKey) -> Result<Vec<FileRow>> {
        let account = self.account(account)?.key;
        Ok(self.store.files(&account)?)
    }

    pub fn file(&self, account: &AccountKey, id: &str) -> Result<FileRow> {
        let account = self.account(account)?.key;
        self.store.file(&account, id)?.ok_or_else(|| file_not_found(id))
    }

    pub fn file_content(&self, account: &AccountKey, id: &str) -> Result<(FileRow, Vec<u8>)> {
        let row = self.file(account, id)?;
        let bytes =
            std::fs::read(&row.path).map_err(|e| ControlError::Internal(format!("cannot read {}: {e}", row.path)))?;
        Ok((row, bytes))
    }

    /// Deletes a file that no unfinished job uses.
    pub fn delete_file(&self, account: &AccountKey, id: &str) -> Result<FileRow> {
        let account = self.account(account)?.key;
        match self.store.delete_file(&account, id)? {
            None => Err(file_not_found(id)),
            Some(Err(job)) => Err(ControlError::Conflict(format!(
                "The file '{id}' is used by the fine-tuning job '{job}', which has not finished."
            ))),
            Some(Ok(row)) => {
                let _ = std::fs::remove_file(&row.path);
                Ok(row)
            }
        }
    }
}

pub(crate) fn file_not_found(id: &str) -> ControlError {
    ControlError::NotFound { code: "fileNotFound", message: format!("The file '{id}' does not exist in this account.") }
}
