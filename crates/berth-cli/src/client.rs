//! HTTP client of the server, with the endpoint and credential taken from flags, the environment or
//! the data directory's `credentials.json`.

use anyhow::{anyhow, bail, Context, Result};
use berth_control::Credentials;
use serde_json::Value;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use ureq::tls::{parse_pem, Certificate, PemItem, RootCerts, TlsConfig};
use ureq::Agent;

/// The certificates of a PEM file.
fn read_certificates(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read the CA bundle {}", path.display()))?;
    let mut certs = Vec::new();
    for item in parse_pem(&pem) {
        if let PemItem::Certificate(c) = item.with_context(|| format!("{} is not valid PEM", path.display()))? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

pub const ARM_API_VERSION: &str = "2024-10-01";
pub const OPENAI_API_VERSION: &str = "2024-10-21";

pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".berth")
}

pub struct Client {
    agent: Agent,
    pub endpoint: String,
    token: Option<String>,
    pub credentials: Option<Credentials>,
}

impl Client {
    pub fn new(
        data_dir: Option<PathBuf>,
        endpoint: Option<String>,
        token: Option<String>,
        ca_bundle: Option<PathBuf>,
    ) -> Result<Self> {
        let data_dir = data_dir.unwrap_or_else(default_data_dir);
        let credentials = Credentials::read(&data_dir).ok();
        let endpoint = endpoint
            .or_else(|| credentials.as_ref().map(|c| c.endpoint.clone()))
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
            .trim_end_matches('/')
            .to_owned();
        let token = token.or_else(|| credentials.as_ref().map(|c| c.admin_token.clone()));
        let self_signed = data_dir.join("tls").join("cert.pem");
        let roots = match ca_bundle.or_else(|| self_signed.exists().then_some(self_signed)) {
            Some(path) => RootCerts::Specific(Arc::new(read_certificates(&path)?)),
            None => RootCerts::WebPki,
        };
        let tls = TlsConfig::builder().root_certs(roots).build();
        let agent: Agent = Agent::config_builder().http_status_as_error(false).tls_config(tls).build().into();
        Ok(Client { agent, endpoint, token, credentials })
    }

    fn auth(&self) -> Result<String> {
        self.token
            .as_ref()
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| anyhow!("no credential: set BERTH_TOKEN, or BERTH_DATA_DIR to the server's data directory"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    fn finish(&self, what: &str, resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<(u16, Value)> {
        let mut resp = resp.with_context(|| format!("cannot reach Berth at {} ({what})", self.endpoint))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            let msg = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| body.to_string());
            let code = body.pointer("/error/code").and_then(Value::as_str).unwrap_or("");
            bail!("{what} failed: HTTP {status} {code}: {msg}");
        }
        Ok((status, body))
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        let resp = self.agent.get(&self.url(path)).header("Authorization", &self.auth()?).call();
        Ok(self.finish(&format!("GET {path}"), resp)?.1)
    }

    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value, Option<String>)> {
        let url = self.url(path);
        let auth = self.auth()?;
        let resp = match (method, body) {
            ("PUT", Some(b)) => self.agent.put(&url).header("Authorization", &auth).send_json(b),
            ("PATCH", Some(b)) => self.agent.patch(&url).header("Authorization", &auth).send_json(b),
            ("POST", Some(b)) => self.agent.post(&url).header("Authorization", &auth).send_json(b),
            ("POST", None) => self.agent.post(&url).header("Authorization", &auth).send_empty(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            _ => bail!("unsupported method {method}"),
        };
        let async_op = resp
            .as_ref()
            .ok()
            .and_then(|r| r.headers().get("azure-asyncoperation"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, body) = self.finish(&format!("{method} {path}"), resp)?;
        Ok((status, body, async_op))
    }

    /// Text of a GET (file contents).
    pub fn get_text(&self, path: &str) -> Result<String> {
        let resp = self.agent.get(&self.url(path)).header("Authorization", &self.auth()?).call();
        let mut resp = resp.with_context(|| format!("cannot reach Berth at {}", self.endpoint))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let msg =
                v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| v.to_string());
            bail!("GET {path} failed: HTTP {status}: {msg}");
        }
        Ok(text)
    }

    /// POSTs `multipart/form-data` with text fields and one file.
    pub fn upload(&self, path: &str, fields: &[(&str, &str)], file_name: &str, bytes: &[u8]) -> Result<Value> {
        let boundary = format!("berth-{}", berth_control::new_hex_id());
        let mut body = Vec::with_capacity(bytes.len() + 512);
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        let safe_name = file_name.replace(['"', '\r', '\n'], "_");
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let resp = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.auth()?)
            .header("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
            .send(&body[..]);
        Ok(self.finish(&format!("POST {path}"), resp)?.1)
    }

    /// POSTs `multipart/form-data` with text fields and the given files as `file` parts, streamed from
    /// disk (model weights can be gigabytes).
    pub fn upload_files(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(String, std::path::PathBuf)],
    ) -> Result<Value> {
        use std::io::{Cursor, Read};
        let boundary = format!("berth-{}", berth_control::new_hex_id());
        let mut head = String::new();
        for (name, value) in fields {
            head.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        let mut body: Box<dyn Read> = Box::new(Cursor::new(head.into_bytes()));
        for (name, file) in files {
            let safe = name.replace(['"', '\r', '\n'], "_");
            let part = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe}\"\r\nContent-Type: application/octet-stream\r\n\r\n");
            let opened = std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
            body =
                Box::new(body.chain(Cursor::new(part.into_bytes())).chain(opened).chain(Cursor::new(b"\r\n".to_vec())));
        }
        let body = body.chain(Cursor::new(format!("--{boundary}--\r\n").into_bytes()));
        let resp = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.auth()?)
            .header("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
            .send(ureq::SendBody::from_owned_reader(body));
        Ok(self.finish(&format!("POST {path}"), resp)?.1)
    }

    /// Streams a POST's body (server-sent events) line by line.
    /// A streamed POST: the body as a reader, or the error status and body the server answered.
    pub fn stream(&self, path: &str, body: &Value) -> Result<std::result::Result<impl std::io::BufRead, (u16, Value)>> {
        let resp = self.agent.post(&self.url(path)).header("Authorization", &self.auth()?).send_json(body);
        let resp = resp.with_context(|| format!("cannot reach Berth at {}", self.endpoint))?;
        if resp.status().as_u16() >= 400 {
            let status = resp.status().as_u16();
            let text = resp.into_body().read_to_string().unwrap_or_default();
            return Ok(Err((status, serde_json::from_str(&text).unwrap_or(Value::String(text)))));
        }
        Ok(Ok(std::io::BufReader::new(resp.into_body().into_reader())))
    }
}
