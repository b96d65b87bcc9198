use crate::*;
use std::collections::BTreeMap;

/// Every database the store runs on here: SQLite, and PostgreSQL (a fresh database) when
/// `BERTH_TEST_POSTGRES` names a server (an admin URL; `scripts/test.sh` starts one).
fn backends() -> Vec<Store> {
    let mut stores = vec![Store::open_in_memory().unwrap()];
    if let Ok(admin) = std::env::var("BERTH_TEST_POSTGRES") {
        let name = format!(
            "berth_store_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        stores.push(Store::open_postgres(&crate::create_database(&admin, &name).unwrap()).unwrap());
    }
    stores
}

static NEXT_DB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn seeded() -> Vec<(Store, AccountKey)> {
    backends().into_iter().map(seed).collect()
}

fn seed(s: Store) -> (Store, AccountKey) {
    let key = AccountKey { subscription_id: "sub".into(), resource_group: "rg".into(), account: "acct".into() };
    s.bootstrap(
        &TenantRow { id: "t".into(), display_name: "T".into(), created_at: "2026-01-01T00:00:00Z".into() },
        &SubscriptionRow {
            id: "sub".into(),
            tenant_id: "t".into(),
            display_name: "S".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        },
        &ResourceGroupRow {
            subscription_id: "sub".into(),
            name: "rg".into(),
            location: "local".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        },
        &AccountRow {
            key: key.clone(),
            location: "local".into(),
            kind: "OpenAI".into(),
            sku: "S0".into(),
            key1: stored("k1"),
            key2: stored("k2"),
            created_at: "2026-01-01T00:00:00Z".into(),
        },
    )
    .unwrap();
    (s, key)
}

fn stored(key: &str) -> StoredKey {
    StoredKey { digest: format!("digest-of-{key}"), sealed: format!("sealed-{key}") }
}

fn deployment(key: &AccountKey, op: &str) -> (DeploymentRow, OperationRow) {
    (
        DeploymentRow {
            account: key.clone(),
            name: "d".into(),
            sku_name: "Standard".into(),
            sku_capacity: 1,
            model_format: "OpenAI".into(),
            model_name: "m".into(),
            model_version: "1".into(),
            provisioning_state: "Creating".into(),
            error_code: None,
            error_message: None,
            etag: "\"e\"".into(),
            tags: BTreeMap::new(),
            created_by: "u".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            modified_by: "u".into(),
            modified_at: "2026-01-01T00:00:00Z".into(),
            operation_id: op.into(),
        },
        OperationRow {
            id: op.into(),
            subscription_id: "sub".into(),
            location: "local".into(),
            resource_id: "/x".into(),
            status: "InProgress".into(),
            start_time: "2026-01-01T00:00:00Z".into(),
            end_time: None,
            error_code: None,
            error_message: None,
        },
    )
}

#[test]
fn names_are_case_insensitive_and_keys_find_accounts() {
    for (s, key) in seeded() {
        let upper = AccountKey { subscription_id: "sub".into(), resource_group: "RG".into(), account: "ACCT".into() };
        assert!(s.account(&upper).unwrap().is_some());
        assert_eq!(s.account_by_key_digest("digest-of-k2").unwrap().unwrap().key, key);
        assert!(s.account_by_key_digest("k2").unwrap().is_none());
        s.set_account_key(&key, 2, &stored("k3")).unwrap();
        assert!(s.account_by_key_digest("digest-of-k2").unwrap().is_none());
        let a = s.account_by_key_digest("digest-of-k3").unwrap().unwrap();
        assert_eq!((a.key1, a.key2), (stored("k1"), stored("k3")));
    }
}

#[test]
fn plaintext_keys_of_an_older_database_are_carried_over_marked() {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    for (i, sql) in crate::migrations::MIGRATIONS.iter().take(4).enumerate() {
        let tx = conn.transaction().unwrap();
        tx.execute_batch(sql).unwrap();
        tx.pragma_update(None, "user_version", (i + 1) as i64).unwrap();
        tx.commit().unwrap();
    }
    conn.execute_batch(
        "INSERT INTO tenants VALUES ('t', 'T', 'x');
         INSERT INTO subscriptions VALUES ('sub', 't', 'S', 'x');
         INSERT INTO resource_groups VALUES ('sub', 'rg', 'local', 'x');
         INSERT INTO accounts VALUES ('sub', 'rg', 'acct', 'local', 'OpenAI', 'S0', 'old1', 'old2', 'x');",
    )
    .unwrap();
    let s = Store::migrate_sqlite(conn).unwrap();
    let a = s.all_accounts().unwrap().remove(0);
    assert_eq!(a.key1, StoredKey { digest: "plain:old1".into(), sealed: "plain:old1".into() });
    assert_eq!(a.key2.digest, "plain:old2");
}

#[test]
fn a_later_operation_wins_over_a_stale_provisioning_result() {
    for (s, key) in seeded() {
        let (d1, op1) = deployment(&key, "op1");
        s.put_deployment(&d1, &op1).unwrap();
        let (d2, op2) = deployment(&key, "op2");
        s.put_deployment(&d2, &op2).unwrap();
        assert!(!s.finish_provisioning(&key, "d", "op1", "Succeeded", None, "t").unwrap());
        assert_eq!(s.deployment(&key, "d").unwrap().unwrap().provisioning_state, "Creating");
        assert!(s.finish_provisioning(&key, "d", "op2", "Failed", Some(("Code", "why")), "t").unwrap());
        let d = s.deployment(&key, "d").unwrap().unwrap();
        assert_eq!((d.provisioning_state.as_str(), d.error_code.as_deref()), ("Failed", Some("Code")));
        assert_eq!(s.operation("op2").unwrap().unwrap().status, "Failed");
        assert_eq!(s.delete_deployment(&key, "D", "2026-01-01T00:00:00Z", None).unwrap().unwrap().name, "d");
        assert!(s.deployments(&key).unwrap().is_empty());
    }
}

#[test]
fn reopening_a_file_keeps_state_and_does_not_rerun_migrations() {
    let dir = std::env::temp_dir().join(format!("berth-store-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("berth.db");
    let _ = std::fs::remove_file(&path);
    {
        let s = Store::open(&path).unwrap();
        s.upsert_base_model(&BaseModelRow {
            name: "b".into(),
            path: "/m.gguf".into(),
            format: "gguf".into(),
            architecture: "llama".into(),
            context_length: 8192,
            created_at: "t".into(),
            engine_pool: None,
            served_model: None,
        })
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.base_models().unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_replica_holds_a_lease_until_it_expires_or_is_released() {
    for s in backends() {
        assert!(s.hold_lease("sweeper", "a", 30.0).unwrap());
        assert!(!s.hold_lease("sweeper", "b", 30.0).unwrap());
        assert!(s.hold_lease("sweeper", "a", 30.0).unwrap(), "the holder renews");
        assert_eq!(s.lease_holder("sweeper").unwrap().as_deref(), Some("a"));
        s.release_lease("sweeper", "a").unwrap();
        assert!(s.hold_lease("sweeper", "b", -1.0).unwrap(), "released: another takes it");
        // b's lease expired at once (ttl -1): a takes it over.
        assert!(s.hold_lease("sweeper", "a", 30.0).unwrap());
        assert_eq!(s.lease_holder("sweeper").unwrap().as_deref(), Some("a"));
    }
}

#[test]
fn fleet_settings_keep_the_first_value() {
    for s in backends() {
        assert_eq!(s.agree_on("signing_key", "x").unwrap(), "x");
        assert_eq!(s.agree_on("signing_key", "y").unwrap(), "x");
        s.set_fleet_setting("signing_key", "y").unwrap();
        assert_eq!(s.agree_on("signing_key", "z").unwrap(), "y");
    }
}

#[test]
fn admission_state_is_read_and_written_in_turns() {
    for s in backends() {
        let s = std::sync::Arc::new(s);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        s.with_admission("k", |state, _now| {
                            let n: u64 = state.parse().unwrap_or(0);
                            ((n + 1).to_string(), ())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.with_admission("k", |state, _| (state.to_owned(), state.to_owned())).unwrap(), "100");
    }
}

#[test]
fn jobs_list_newest_first_within_one_second_by_creation_order() {
    for (s, key) in seeded() {
        for id in ["ftjob-b", "ftjob-a", "ftjob-c"] {
            s.insert_job(&job(&key, id), "created").unwrap();
        }
        let ids: Vec<String> = s.jobs(&key, None, 10).unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(ids, ["ftjob-c", "ftjob-a", "ftjob-b"]);
        let after: Vec<String> = s.jobs(&key, Some("ftjob-a"), 10).unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(after, ["ftjob-b"]);
        let queued: Vec<String> = s.jobs_with_status(&["pending"]).unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(queued, ["ftjob-b", "ftjob-a", "ftjob-c"]);
    }
}

fn job(key: &AccountKey, id: &str) -> FineTuningJobRow {
    FineTuningJobRow {
        account: key.clone(),
        id: id.into(),
        model: "m".into(),
        training_file: "file-1".into(),
        validation_file: None,
        n_epochs: 1,
        batch_size: 1,
        learning_rate_multiplier: 1.0,
        suffix: None,
        seed: 1,
        status: "pending".into(),
        fine_tuned_model: None,
        error_code: None,
        error_message: None,
        error_param: None,
        trained_tokens: None,
        result_files: vec![],
        created_at: 1_700_000_000,
        finished_at: None,
        estimated_finish: None,
        method: "supervised".into(),
        beta: None,
    }
}

#[test]
fn a_sqlite_database_is_copied_into_postgres_row_for_row() {
    let Ok(admin) = std::env::var("BERTH_TEST_POSTGRES") else { return };
    let (s, key) = seed(Store::open_in_memory().unwrap());
    let (d, op) = deployment(&key, "op1");
    s.put_deployment(&d, &op).unwrap();
    s.insert_job(&job(&key, "ftjob-a"), "created").unwrap();
    s.add_usage(&UsageRow {
        account: key.clone(),
        deployment: "d".into(),
        hour: 3600,
        model: "m".into(),
        base_model: "m".into(),
        requests: 2,
        input_tokens: 30,
        cached_tokens: 5,
        output_tokens: 7,
    })
    .unwrap();
    let name = format!("berth_store_copy_{}", std::process::id());
    let pg = Store::open_postgres(&crate::create_database(&admin, &name).unwrap()).unwrap();
    let counts = s.copy_into(&pg).unwrap();
    assert!(counts.contains(&("deployments".to_owned(), 1)) && counts.contains(&("hosting".to_owned(), 1)));
    assert_eq!(pg.deployment(&key, "D").unwrap().unwrap(), s.deployment(&key, "d").unwrap().unwrap());
    assert_eq!(pg.job(&key, "ftjob-a").unwrap().unwrap(), s.job(&key, "ftjob-a").unwrap().unwrap());
    assert_eq!(pg.job_events("ftjob-a", None, 10).unwrap(), s.job_events("ftjob-a", None, 10).unwrap());
    assert_eq!(pg.usage("sub", 0, 7200).unwrap(), s.usage("sub", 0, 7200).unwrap());
    assert_eq!(pg.hosting("sub", "2000", "3000").unwrap(), s.hosting("sub", "2000", "3000").unwrap());
    // A second copy is refused: the target is no longer empty.
    assert!(s.copy_into(&pg).unwrap_err().to_string().contains("not empty"));
    // New hosting rows continue after the copied ids.
    s.delete_deployment(&key, "d", "2026-01-02T00:00:00Z", None).unwrap();
    let (d2, op2) = deployment(&key, "op2");
    pg.put_deployment(&DeploymentRow { model_name: "other".into(), ..d2 }, &op2).unwrap();
    assert_eq!(pg.hosting("sub", "2000", "3000").unwrap().len(), 2);
}

#[test]
fn minutes_add_up_across_calls_and_give_ttft_quantiles() {
    for (s, key) in seeded() {
        s.add_minute(&key, "d", 60, MinuteSample { requests: 1, tokens: 30, rate_limited: 0, ttft_ms: Some(80.0) })
            .unwrap();
        s.add_minute(&key, "D", 60, MinuteSample { requests: 1, tokens: 20, rate_limited: 0, ttft_ms: Some(400.0) })
            .unwrap();
        s.add_minute(&key, "d", 60, MinuteSample { requests: 0, tokens: 0, rate_limited: 1, ttft_ms: None }).unwrap();
        s.add_minute(&key, "d", 120, MinuteSample { requests: 1, tokens: 5, rate_limited: 0, ttft_ms: Some(9000.0) })
            .unwrap();
        let m = s.minutes(&key, "d", 0).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].minute, m[0].requests, m[0].tokens, m[0].rate_limited), (60, 2, 50, 1));
        assert_eq!((m[0].ttft_quantile_ms(0.5), m[0].ttft_quantile_ms(0.95)), (Some(100.0), Some(500.0)));
        assert_eq!(m[1].ttft_quantile_ms(0.5), Some(5000.0), "the open bucket reads as its lower bound");
        assert_eq!(s.purge_minutes(120).unwrap(), 1);
        assert_eq!(s.minutes(&key, "d", 0).unwrap().len(), 1);
    }
}
