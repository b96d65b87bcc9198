//! `berth serve`: configuration, start-up, and an orderly shutdown on Ctrl-C or SIGTERM.

use crate::args::ServeArgs;
use crate::client::default_data_dir;
use anyhow::{Context, Result};
use berth_control::{Control, ControlConfig};
use berth_engine::EngineOptions;
use std::path::PathBuf;

pub fn serve(args: ServeArgs, data_dir: Option<PathBuf>) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a log file (the demo's server.log) stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let data_dir = data_dir.unwrap_or_else(default_data_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("berth-http").build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = listener.local_addr()?;
        let tls = tls_config(&args, &data_dir, local)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = args.public_url.clone().unwrap_or_else(|| format!("{scheme}://{local}"));
        let mut config = ControlConfig::new(data_dir.clone(), public_url.clone());
        config.engine = EngineOptions {
            name: "berth-engine".into(),
            max_batch: args.max_batch,
            max_batch_tokens: args.max_batch_tokens,
            queue_depth: args.queue_depth,
            kv_cache_bytes: args.kv_cache_mib << 20,
            prefix_cache: !args.no_prefix_cache,
            adapter_cache_bytes: args.adapter_cache_mib << 20,
            reserved_batch: args.reserved_batch.min(args.max_batch.saturating_sub(1)),
        };
        config.engine_memory_bytes = match args.engine_memory_mib {
            Some(0) => None,
            Some(mib) => Some(mib.saturating_mul(1 << 20)),
            None => machine_memory_bytes().map(|total| total / 5 * 4),
        };
        config.fine_tuning_slots = args.fine_tuning_slots.max(1);
        config.location = berth_control::normalize_region(&args.location);
        config.retention = berth_control::Retention { idle_days: args.idle_days, developer_hours: args.developer_hours, sweep_seconds: args.idle_sweep_seconds };
        config.test_clock = args.test_clock;
        config.database_url = args.database_url.clone();
        if let Some(dir) = &args.model_store {
            config.store_dir = dir.clone();
        }
        if let Some(path) = &args.signing_key {
            config.signing_key_path = path.clone();
        }
        if let Some(name) = &args.replica {
            config.replica = name.clone();
        }
        if let Some(path) = &args.catalog {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading the catalog {}", path.display()))?;
            config.catalog = std::sync::Arc::new(berth_control::Catalog::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
        }
        if config.catalog.region(&config.location).is_none() {
            anyhow::bail!("the location '{}' is not a region of the catalog (see `berth catalog show`)", config.location);
        }
        let control = tokio::task::spawn_blocking(move || Control::open(config)).await??;
        // `kill $(cat DATA_DIR/server.pid)` stops this server; the file goes when it stops.
        let pid_file = PidFile::write(&data_dir)?;
        tracing::info!(data_dir = %data_dir.display(), endpoint = %public_url, "berth is listening; loading deployments");
        let restoring = {
            let control = control.clone();
            tokio::spawn(async move {
                if let Err(e) = control.restore().await {
                    tracing::error!(error = %e, "restoring deployments failed");
                }
                tracing::info!("ready");
            })
        };
        match tls {
            Some(tls) => berth_server::serve_tls(listener, tls, control.clone(), shutdown_signal()).await?,
            None => berth_server::serve(listener, control.clone(), shutdown_signal()).await?,
        }
        tracing::info!("shutting down");
        restoring.abort();
        control.shutdown().await;
        drop(pid_file);
        Ok(())
    })
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), where Linux says it.
fn machine_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// `DATA_DIR/server.pid` while the server runs. A file left by a server that was killed is replaced.
struct PidFile(PathBuf);

impl PidFile {
    fn write(data_dir: &std::path::Path) -> Result<PidFile> {
        let path = data_dir.join("server.pid");
        berth_durable::write_file(&path, format!("{}\n", std::process::id()).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: another server may have taken the directory over since.
        let ours = std::fs::read_to_string(&self.0).is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The TLS identity asked for: given files, or a self-signed certificate kept under DATA_DIR/tls.
fn tls_config(
    args: &ServeArgs,
    data_dir: &std::path::Path,
    local: std::net::SocketAddr,
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
    let (cert, key) = match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
        (Some(c), Some(k), _) => (c.clone(), k.clone()),
        (_, _, true) => {
            let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string(), local.ip().to_string()];
            if let Some(host) =
                args.public_url.as_deref().and_then(|u| u.split("://").nth(1)).and_then(|r| r.split(['/', ':']).next())
            {
                hosts.push(host.to_string());
            }
            hosts.sort();
            hosts.dedup();
            berth_server::tls::self_signed(&data_dir.join("tls"), &hosts).map_err(anyhow::Error::msg)?
        }
        _ => return Ok(None),
    };
    Ok(Some(berth_server::tls::server_config(&cert, &key).map_err(anyhow::Error::msg)?))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `berth db migrate-to URL`: the data directory's SQLite database copied into PostgreSQL.
pub fn migrate_to(data_dir: Option<PathBuf>, url: &str) -> Result<()> {
    let data_dir = data_dir.unwrap_or_else(default_data_dir);
    let path = data_dir.join("berth.db");
    if !path.exists() {
        anyhow::bail!("{} does not exist: nothing to migrate", path.display());
    }
    if let Some(pid) = running_server(&data_dir) {
        anyhow::bail!(
            "a server (pid {pid}) is running on {}: stop it first, so that no write is missed",
            data_dir.display()
        );
    }
    let source = berth_store::Store::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let target = berth_store::Store::open_postgres(url).context("opening the PostgreSQL database")?;
    let counts = source.copy_into(&target).context("copying")?;
    let rows: serde_json::Map<String, serde_json::Value> = counts.into_iter().map(|(t, n)| (t, n.into())).collect();
    println!(
        "{}",
        serde_json::to_string_pretty(
            &serde_json::json!({ "copied": rows, "next": format!("berth serve --database <URL> --data-dir {}", data_dir.display()) })
        )?
    );
    Ok(())
}

/// The pid in DATA_DIR/server.pid when that process still runs.
fn running_server(data_dir: &std::path::Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(data_dir.join("server.pid")).ok()?.trim().parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}
