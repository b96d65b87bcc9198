//! `admission`: the latency one rate-limit decision (check and charge, and for an admitted call the
//! settle that corrects it to what it used) adds to a call, kept in this process (one machine, SQLite) and in PostgreSQL (a fleet), from
//! `--clients` threads at once against one deployment. Prints one JSON line per store.
//!
//! `cargo run --release -p berth-bench --bin admission -- --postgres postgres://...`

use anyhow::Result;
use berth_control::{AccountKey, DeploymentKey, Limits, RateLimiter};
use berth_store::Store;
use clap::Parser;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// An empty PostgreSQL database (its tables are made); without it only the in-process store is timed.
    #[arg(long)]
    postgres: Option<String>,
    /// Threads admitting at once.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Admissions per thread.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// The deployment's Standard capacity (capacity requests per 10 s, capacity x 1,000 tokens per
    /// minute); calls past it are refused, which is timed the same way.
    #[arg(long, default_value_t = 300)]
    capacity: i64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut limiters = vec![("in-process (SQLite deployments)", Arc::new(RateLimiter::default()))];
    if let Some(url) = &args.postgres {
        limiters.push(("PostgreSQL (fleet)", Arc::new(RateLimiter::shared(Arc::new(Store::open_postgres(url)?)))));
    }
    let account = AccountKey { subscription_id: "s".into(), resource_group: "g".into(), account: "a".into() };
    let limits = Limits::standard(args.capacity);
    for (store, limiter) in limiters {
        let key = DeploymentKey::new(&account, &format!("bench-{}", std::process::id()));
        let started = Instant::now();
        let threads: Vec<_> = (0..args.clients)
            .map(|_| {
                let (limiter, key) = (limiter.clone(), key.clone());
                let calls = args.calls;
                std::thread::spawn(move || -> Result<(Vec<f64>, usize)> {
                    let mut micros = Vec::with_capacity(calls);
                    let mut admitted = 0;
                    for _ in 0..calls {
                        let t = Instant::now();
                        let decision = limiter.admit(&key, limits, 100, t)?;
                        let mut spent = t.elapsed();
                        if let Ok(ticket) = decision {
                            admitted += 1;
                            let s = Instant::now();
                            ticket.settle(60, s);
                            spent += s.elapsed();
                        }
                        micros.push(spent.as_secs_f64() * 1e6);
                    }
                    Ok((micros, admitted))
                })
            })
            .collect();
        let (mut all, mut admitted) = (Vec::new(), 0);
        for t in threads {
            let (micros, n) = t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
            all.extend(micros);
            admitted += n;
        }
        let wall = started.elapsed().as_secs_f64();
        limiter.forget(&key);
        all.sort_by(f64::total_cmp);
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        println!(
            "{}",
            json!({
                "store": store,
                "clients": args.clients,
                "capacity": args.capacity,
                "decisions": all.len(),
                "admitted": admitted,
                "p50_us": (pct(0.50) * 10.0).round() / 10.0,
                "p99_us": (pct(0.99) * 10.0).round() / 10.0,
                "decisions_per_s": (all.len() as f64 / wall).round(),
            })
        );
    }
    Ok(())
}
