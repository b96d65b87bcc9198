//! Schema migrations, applied in order inside one transaction each; SQLite's `PRAGMA user_version`
//! (PostgreSQL's `berth_schema` table) records how many have run. Never edit a released migration: add
//! one. They are written for SQLite in the SQL both databases accept; PostgreSQL gets them with its
//! own type names (`sql::migration_to_postgres`).

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the walking skeleton.
    r#"
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        display_name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE resource_groups (
        subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
        name TEXT NOT NULL COLLATE NOCASE,
        location TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (subscription_id, name)
    );
    CREATE TABLE accounts (
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        name TEXT NOT NULL COLLATE NOCASE,
        location TEXT NOT NULL,
        kind TEXT NOT NULL,
        sku TEXT NOT NULL,
        key1 TEXT NOT NULL UNIQUE,
        key2 TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        PRIMARY KEY (subscription_id, resource_group, name),
        FOREIGN KEY (subscription_id, resource_group) REFERENCES resource_groups(subscription_id, name)
    );
    CREATE TABLE access_tokens (
        token TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        principal TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE base_models (
        name TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        format TEXT NOT NULL,
        architecture TEXT NOT NULL,
        context_length INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE models (
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        account TEXT NOT NULL COLLATE NOCASE,
        id TEXT NOT NULL,
        base_model TEXT NOT NULL REFERENCES base_models(name),
        kind TEXT NOT NULL,
        path TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (subscription_id, resource_group, account, id)
    );
    CREATE TABLE deployments (
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        account TEXT NOT NULL COLLATE NOCASE,
        name TEXT NOT NULL COLLATE NOCASE,
        sku_name TEXT NOT NULL,
        sku_capacity INTEGER NOT NULL,
        model_format TEXT NOT NULL,
        model_name TEXT NOT NULL,
        model_version TEXT NOT NULL,
        provisioning_state TEXT NOT NULL,
        error_code TEXT,
        error_message TEXT,
        etag TEXT NOT NULL,
        tags TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        modified_by TEXT NOT NULL,
        modified_at TEXT NOT NULL,
        operation_id TEXT NOT NULL,
        PRIMARY KEY (subscription_id, resource_group, account, name)
    );
    CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        subscription_id TEXT NOT NULL,
        location TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        status TEXT NOT NULL,
        start_time TEXT NOT NULL,
        end_time TEXT,
        error_code TEXT,
        error_message TEXT
    );
    "#,
    // 2: files and fine-tuning jobs (issue 4). Times are unix seconds, as the OpenAI API shows them.
    r#"
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        account TEXT NOT NULL COLLATE NOCASE,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        examples INTEGER NOT NULL,
        path TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE fine_tuning_jobs (
        id TEXT PRIMARY KEY,
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        account TEXT NOT NULL COLLATE NOCASE,
        model TEXT NOT NULL,
        training_file TEXT NOT NULL,
        validation_file TEXT,
        n_epochs INTEGER NOT NULL,
        batch_size INTEGER NOT NULL,
        learning_rate_multiplier REAL NOT NULL,
        suffix TEXT,
        seed INTEGER NOT NULL,
        status TEXT NOT NULL,
        fine_tuned_model TEXT,
        error_code TEXT,
        error_message TEXT,
        error_param TEXT,
        trained_tokens INTEGER,
        result_files TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        finished_at INTEGER,
        estimated_finish INTEGER
    );
    CREATE TABLE fine_tuning_events (
        job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT,
        PRIMARY KEY (job_id, seq)
    );
    CREATE TABLE fine_tuning_checkpoints (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
        created_at INTEGER NOT NULL,
        step_number INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        metrics TEXT NOT NULL,
        fine_tuned_model_checkpoint TEXT NOT NULL
    );
    CREATE TABLE fine_tuning_metrics (
        job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
        step INTEGER NOT NULL,
        train_loss REAL NOT NULL,
        train_mean_token_accuracy REAL NOT NULL,
        valid_loss REAL,
        valid_mean_token_accuracy REAL,
        full_valid_loss REAL,
        full_valid_mean_token_accuracy REAL,
        PRIMARY KEY (job_id, step)
    );
    "#,
    // 3: metering (issue 5): hosting intervals of deployments, hourly token usage, idle deletions.
    // Times of intervals and deletions are RFC 3339 like the deployments'; usage hours are unix seconds.
    r#"
    CREATE TABLE hosting (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        account TEXT NOT NULL COLLATE NOCASE,
        deployment TEXT NOT NULL COLLATE NOCASE,
        model TEXT NOT NULL,
        base_model TEXT NOT NULL,
        fine_tuned INTEGER NOT NULL,
        sku TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT
    );
    CREATE INDEX hosting_open ON hosting (subscription_id, resource_group, account, deployment) WHERE ended_at IS NULL;
    CREATE TABLE usage_hourly (
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        account TEXT NOT NULL COLLATE NOCASE,
        deployment TEXT NOT NULL COLLATE NOCASE,
        hour INTEGER NOT NULL,
        model TEXT NOT NULL,
        base_model TEXT NOT NULL,
        requests INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        PRIMARY KEY (subscription_id, resource_group, account, deployment, hour, model)
    );
    CREATE TABLE deployment_deletions (
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        account TEXT NOT NULL COLLATE NOCASE,
        deployment TEXT NOT NULL,
        model TEXT NOT NULL,
        reason TEXT NOT NULL,
        deleted_at TEXT NOT NULL
    );
    "#,
    // 4: identity (issue 6): principals of tenants and role assignments at ARM scopes ("/" is every
    // subscription of the principal's tenant).
    r#"
    CREATE TABLE principals (
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        object_id TEXT NOT NULL,
        display_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, object_id)
    );
    CREATE TABLE role_assignments (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        principal TEXT NOT NULL,
        role TEXT NOT NULL,
        scope TEXT NOT NULL COLLATE NOCASE,
        created_at TEXT NOT NULL
    );
    CREATE INDEX role_assignments_principal ON role_assignments (tenant_id, principal);
    "#,
    // 5: API keys kept as a digest and a sealed copy (issue 6). Keys of older databases are carried
    // over marked `plain:`; the control plane digests and seals them on its next start.
    r#"
    CREATE TABLE accounts_v5 (
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        name TEXT NOT NULL COLLATE NOCASE,
        location TEXT NOT NULL,
        kind TEXT NOT NULL,
        sku TEXT NOT NULL,
        key1_digest TEXT NOT NULL UNIQUE,
        key1_sealed TEXT NOT NULL,
        key2_digest TEXT NOT NULL UNIQUE,
        key2_sealed TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (subscription_id, resource_group, name),
        FOREIGN KEY (subscription_id, resource_group) REFERENCES resource_groups(subscription_id, name)
    );
    INSERT INTO accounts_v5
        SELECT subscription_id, resource_group, name, location, kind, sku,
               'plain:' || key1, 'plain:' || key1, 'plain:' || key2, 'plain:' || key2, created_at
        FROM accounts;
    DROP TABLE accounts;
    ALTER TABLE accounts_v5 RENAME TO accounts;
    -- Managed identities: the digest of the secret a workload sends as X-IDENTITY-HEADER.
    CREATE TABLE identity_secrets (
        digest TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        principal TEXT NOT NULL,
        created_at TEXT NOT NULL,
        FOREIGN KEY (tenant_id, principal) REFERENCES principals(tenant_id, object_id)
    );
    "#,
    // 6: jobs keep their creation order in a column of their own (SQLite's rowid has no PostgreSQL
    // equivalent). Older jobs are numbered by creation time, then id.
    r#"
    ALTER TABLE fine_tuning_jobs ADD COLUMN ordinal INTEGER NOT NULL DEFAULT 0;
    UPDATE fine_tuning_jobs SET ordinal = (
        SELECT COUNT(*) FROM fine_tuning_jobs AS o
        WHERE o.created_at < fine_tuning_jobs.created_at
           OR (o.created_at = fine_tuning_jobs.created_at AND o.id <= fine_tuning_jobs.id));
    "#,
    // 7: what replicas of a fleet share (issue 14): settings that must agree (the signing key's
    // fingerprint), leases of the work that runs once across the fleet, and admission state.
    r#"
    CREATE TABLE fleet_settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE admission_state (
        key TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    "#,
    // 8: each deployment's last hour by minute, for the portal's charts (issue 14): calls, tokens,
    // rate-limit refusals and time to first token counted in 12 fixed buckets (`ttft_i`,
    // upper bounds in `minutes::TTFT_BUCKETS_MS`), so that replicas add to one row and quantiles come from the sum.
    r#"
    CREATE TABLE deployment_minutes (
        subscription_id TEXT NOT NULL,
        resource_group TEXT NOT NULL COLLATE NOCASE,
        account TEXT NOT NULL COLLATE NOCASE,
        deployment TEXT NOT NULL COLLATE NOCASE,
        minute INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        tokens INTEGER NOT NULL,
        rate_limited INTEGER NOT NULL,
        ttft_0 INTEGER NOT NULL DEFAULT 0,
        ttft_1 INTEGER NOT NULL DEFAULT 0,
        ttft_2 INTEGER NOT NULL DEFAULT 0,
        ttft_3 INTEGER NOT NULL DEFAULT 0,
        ttft_4 INTEGER NOT NULL DEFAULT 0,
        ttft_5 INTEGER NOT NULL DEFAULT 0,
        ttft_6 INTEGER NOT NULL DEFAULT 0,
        ttft_7 INTEGER NOT NULL DEFAULT 0,
        ttft_8 INTEGER NOT NULL DEFAULT 0,
        ttft_9 INTEGER NOT NULL DEFAULT 0,
        ttft_10 INTEGER NOT NULL DEFAULT 0,
        ttft_11 INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (subscription_id, resource_group, account, deployment, minute)
    );
    "#,
    // 9: engine pools (issue 15): vLLM servers a base model, and every fine-tune of it, is served
    // on. A base model names its pool and the model name the servers give it.
    r#"
    CREATE TABLE engine_pools (
        name TEXT PRIMARY KEY COLLATE NOCASE,
        kind TEXT NOT NULL,
        endpoints TEXT NOT NULL,
        api_key_digest TEXT,
        api_key_sealed TEXT,
        store_path TEXT,
        created_at TEXT NOT NULL
    );
    ALTER TABLE base_models ADD COLUMN engine_pool TEXT;
    ALTER TABLE base_models ADD COLUMN served_model TEXT;
    "#,
    // 10: a fine-tuning job's method (issue 13): `supervised` or `dpo`, with DPO's beta.
    r#"
    ALTER TABLE fine_tuning_jobs ADD COLUMN method TEXT NOT NULL DEFAULT 'supervised';
    ALTER TABLE fine_tuning_jobs ADD COLUMN beta REAL;
    "#,
];
