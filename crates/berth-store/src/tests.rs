use crate::*;
use std::collections::BTreeMap;

fn seeded() -> (Store, AccountKey) {
    let s = Store::open_in_memory().unwrap();
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
    let (s, key) = seeded();
    let upper = AccountKey { subscription_id: "sub".into(), resource_group: "RG".into(), account: "ACCT".into() };
    assert!(s.account(&upper).unwrap().is_some());
    assert_eq!(s.account_by_key_digest("digest-of-k2").unwrap().unwrap().key, key);
    assert!(s.account_by_key_digest("k2").unwrap().is_none());
    s.set_account_key(&key, 2, &stored("k3")).unwrap();
    assert!(s.account_by_key_digest("digest-of-k2").unwrap().is_none());
    let a = s.account_by_key_digest("digest-of-k3").unwrap().unwrap();
    assert_eq!((a.key1, a.key2), (stored("k1"), stored("k3")));
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
    let s = Store::migrate(conn).unwrap();
    let a = s.all_accounts().unwrap().remove(0);
    assert_eq!(a.key1, StoredKey { digest: "plain:old1".into(), sealed: "plain:old1".into() });
    assert_eq!(a.key2.digest, "plain:old2");
}

#[test]
fn a_later_operation_wins_over_a_stale_provisioning_result() {
    let (s, key) = seeded();
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
        })
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.base_models().unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
