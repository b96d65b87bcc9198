use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "Deploy fine-tuned language models behind the Azure OpenAI API")]
pub struct Cli {
    /// Data directory of the server (database, credentials, imported models).
    #[arg(long, env = "BERTH_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Server to talk to [default: the endpoint in the data directory's credentials, else http://127.0.0.1:8080].
    #[arg(long, env = "BERTH_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// Bearer token [default: the admin token in the data directory's credentials].
    #[arg(long, env = "BERTH_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Certificates (PEM) to trust for an https endpoint [default: the data directory's self-signed
    /// tls/cert.pem when there is one, else the Mozilla roots].
    #[arg(long, env = "BERTH_CA_BUNDLE", global = true)]
    pub ca_bundle: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// The account: show it, list its keys.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Print a fresh signed access token (like `az account get-access-token`): yours, or, for the
    /// operator, another principal's.
    Token {
        /// The principal's tenant [default: the caller's].
        #[arg(long)]
        tenant: Option<String>,
        /// The principal's object id [default: the caller].
        #[arg(long)]
        principal: Option<String>,
        /// Print the bare token alone (for the portal's sign-in, or `Authorization: Bearer`).
        #[arg(long, alias = "tsv")]
        raw: bool,
    },
    /// Base models, registered by path.
    #[command(name = "base-model")]
    BaseModel {
        #[command(subcommand)]
        command: BaseModelCommand,
    },
    /// Engine pools: vLLM servers that base models, and their fine-tunes, are served on (operator only).
    #[command(name = "engine-pool")]
    EnginePool {
        #[command(subcommand)]
        command: EnginePoolCommand,
    },
    /// Fine-tuned models of an account.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Deployments of an account (like `az cognitiveservices account deployment`).
    Deployment {
        #[command(subcommand)]
        command: DeploymentCommand,
    },
    /// Chat with a deployment; the answer streams to the terminal.
    Chat(ChatArgs),
    /// Files for fine-tuning: upload, list, show, delete.
    File {
        #[command(subcommand)]
        command: FileCommand,
    },
    /// Costs per deployment over a period: hosting hours and tokens, priced by the catalog.
    Cost {
        #[command(subcommand)]
        command: CostCommand,
    },
    /// Quotas of a subscription in a region (like `az cognitiveservices usage list`).
    Usage {
        #[command(subcommand)]
        command: UsageCommand,
    },
    /// The built-in catalog (regions, deployment types per model family, capacity rules, quotas).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Fine-tuning jobs.
    #[command(name = "fine-tuning")]
    FineTuning {
        #[command(subcommand)]
        command: FineTuningCommand,
    },
    /// The database: move a SQLite data directory into PostgreSQL.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Developer tools.
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "BERTH_LISTEN")]
    pub listen: String,
    /// URL clients use to reach this server [default: http://LISTEN].
    #[arg(long, env = "BERTH_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Sequences each engine steps together.
    #[arg(long, default_value_t = 16, env = "BERTH_MAX_BATCH")]
    pub max_batch: usize,
    /// Tokens one engine step computes at most; longer prompts are prefilled in chunks of this size.
    #[arg(long, default_value_t = 256, env = "BERTH_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: usize,
    /// Requests each engine queues before answering 429.
    #[arg(long, default_value_t = 64, env = "BERTH_QUEUE_DEPTH")]
    pub queue_depth: usize,
    /// Memory for each engine's paged KV cache, in MiB.
    #[arg(long, default_value_t = 512, env = "BERTH_KV_CACHE_MIB")]
    pub kv_cache_mib: usize,
    /// Memory for each engine's loaded LoRA adapters, in MiB (least recently used ones are dropped
    /// and reloaded on demand).
    #[arg(long, default_value_t = 1024, env = "BERTH_ADAPTER_CACHE_MIB")]
    pub adapter_cache_mib: usize,
    /// Memory all engines together may take (weights and KV caches), in MiB: a deployment that would
    /// load past it fails provisioning with the reason [default: 80 % of the machine's memory; 0: no limit].
    #[arg(long, env = "BERTH_ENGINE_MEMORY_MIB")]
    pub engine_memory_mib: Option<u64>,
    /// Batch slots each engine keeps for provisioned deployments' requests while they are active.
    #[arg(long, default_value_t = 4, env = "BERTH_RESERVED_BATCH")]
    pub reserved_batch: usize,
    /// Do not keep computed prompt prefixes for reuse.
    #[arg(long, env = "BERTH_NO_PREFIX_CACHE")]
    pub no_prefix_cache: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key", conflicts_with = "tls_self_signed")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate, made on first start under DATA_DIR/tls (trust
    /// DATA_DIR/tls/cert.pem in clients, e.g. REQUESTS_CA_BUNDLE for the Azure CLI).
    #[arg(long, env = "BERTH_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// Region of the first account (created on first start).
    #[arg(long, default_value = "local", env = "BERTH_LOCATION")]
    pub location: String,
    /// Catalog of regions, deployment types per model family, capacity rules and quotas (TOML)
    /// [default: the built-in one, printed by `berth catalog show`].
    #[arg(long, env = "BERTH_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// A deployment with no completions call for this many days (and deployed longer ago) is deleted.
    #[arg(long, default_value_t = 15, env = "BERTH_IDLE_DAYS")]
    pub idle_days: i64,
    /// Developer deployments are deleted this many hours after they are deployed.
    #[arg(long, default_value_t = 24, env = "BERTH_DEVELOPER_HOURS")]
    pub developer_hours: i64,
    /// How often the idle-deletion sweeper runs, in seconds.
    #[arg(long, default_value_t = 300, env = "BERTH_IDLE_SWEEP_SECONDS")]
    pub idle_sweep_seconds: u64,
    /// Let `POST /berth/v1/clock` move Berth's clock forward (for tests of day-long rules).
    #[arg(long, hide = true)]
    pub test_clock: bool,
    /// Fine-tuning jobs that run at once; the others wait in the queue.
    #[arg(long, default_value_t = 1, env = "BERTH_FINE_TUNING_SLOTS")]
    pub fine_tuning_slots: usize,
    /// Keep every table in this PostgreSQL database (postgres://user:password@host:port/db), shared by
    /// every replica that names it [default: SQLite in the data directory].
    #[arg(long = "database", env = "BERTH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where models, training files and fine-tuning work live: a directory every replica reads and
    /// writes (a shared volume) [default: the data directory].
    #[arg(long, env = "BERTH_MODEL_STORE")]
    pub model_store: Option<PathBuf>,
    /// The key that signs tokens and seals API keys (64 hex digits; made on first start if missing).
    /// Replicas on one database must share it [default: DATA_DIR/token-signing.key].
    #[arg(long, env = "BERTH_SIGNING_KEY_FILE")]
    pub signing_key: Option<PathBuf>,
    /// This replica's name, in the x-berth-replica header and leases [default: BERTH_REPLICA, else the host name].
    #[arg(long)]
    pub replica: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copies every row of DATA_DIR/berth.db into an empty PostgreSQL database (migrated first), in
    /// one transaction; then serve with `--database URL`. Stop the server first.
    #[command(name = "migrate-to")]
    MigrateTo {
        /// postgres://user:password@host:port/database
        url: String,
    },
}

/// `-g/--resource-group` and `-n/--name`, as in `az cognitiveservices`; default: the bootstrap account.
#[derive(Debug, Args, Clone)]
pub struct AccountRef {
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: Option<String>,
    #[arg(short = 'n', long = "name")]
    pub name: Option<String>,
    /// Subscription id [default: the bootstrap subscription].
    #[arg(long)]
    pub subscription: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    Show(AccountRef),
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    List(AccountRef),
}

#[derive(Debug, Subcommand)]
pub enum BaseModelCommand {
    /// Register a base model: a GGUF file or a Hugging Face directory.
    Add {
        name: String,
        #[arg(long)]
        path: PathBuf,
        /// Serve it, and its fine-tunes, on this engine pool (whose servers run the Hugging Face
        /// directory PATH) instead of Berth's engine.
        #[arg(long)]
        engine_pool: Option<String>,
        /// The pool's name for the model (vLLM's --served-model-name); default: NAME.
        #[arg(long, requires = "engine_pool")]
        served_model: Option<String>,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum EnginePoolCommand {
    /// Register a pool of vLLM servers (started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).
    Add {
        name: String,
        #[arg(long, default_value = "vllm")]
        kind: String,
        /// A server's base URL, e.g. http://10.0.0.5:8000; repeat for each server.
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        /// The servers' --api-key.
        #[arg(long, env = "BERTH_ENGINE_POOL_API_KEY")]
        api_key: Option<String>,
        /// Berth's model store as the servers mount it, when not at the same path.
        #[arg(long)]
        store_path: Option<String>,
    },
    List,
    /// A pool with each endpoint's health, loaded adapters and queue.
    Show {
        name: String,
    },
    /// Remove a pool no base model is placed on.
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Import a fine-tune: a PEFT LoRA adapter directory or a full-weights directory.
    Import {
        #[arg(long)]
        base: String,
        #[arg(long, conflicts_with = "weights", required_unless_present = "weights")]
        adapter: Option<PathBuf>,
        #[arg(long)]
        weights: Option<PathBuf>,
        /// The directory is on the server, not here: the server reads it (the operator only).
        /// Without this the directory's files are uploaded, so a remote server works too.
        #[arg(long)]
        server_path: bool,
        #[command(flatten)]
        account: AccountRef,
    },
    List(AccountRef),
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    List {
        #[arg(short = 'l', long)]
        location: String,
        /// Subscription id [default: the bootstrap subscription].
        #[arg(long)]
        subscription: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CostCommand {
    Show {
        /// Start of the period (RFC 3339) [default: 30 days ago].
        #[arg(long)]
        from: Option<String>,
        /// End of the period (RFC 3339) [default: now].
        #[arg(long)]
        to: Option<String>,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: Option<String>,
        #[arg(short = 'n', long = "name")]
        account: Option<String>,
        #[arg(long = "deployment-name")]
        deployment: Option<String>,
        /// Subscription id [default: the bootstrap subscription].
        #[arg(long)]
        subscription: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Print the built-in catalog, a starting point for `berth serve --catalog`.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    Create(DeploymentCreate),
    /// The deployment types a deployment can move to, with capacity ranges.
    ListSkus(DeploymentRef),
    Show(DeploymentRef),
    Delete(DeploymentRef),
    List(AccountRef),
}

#[derive(Debug, Args)]
pub struct DeploymentRef {
    #[command(flatten)]
    pub account: AccountRef,
    #[arg(long = "deployment-name")]
    pub deployment_name: String,
}

#[derive(Debug, Args)]
pub struct DeploymentCreate {
    #[command(flatten)]
    pub account: AccountRef,
    #[arg(long = "deployment-name")]
    pub deployment_name: String,
    #[arg(long = "model-name")]
    pub model_name: String,
    #[arg(long = "model-version", default_value = "1")]
    pub model_version: String,
    #[arg(long = "model-format", default_value = "OpenAI")]
    pub model_format: String,
    #[arg(long = "sku-name", alias = "sku", default_value = "Standard")]
    pub sku_name: String,
    #[arg(long = "sku-capacity", alias = "capacity", default_value_t = 1)]
    pub sku_capacity: i64,
    /// Return once accepted instead of waiting for provisioning.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[arg(long)]
    pub deployment: String,
    /// The user message.
    pub message: String,
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy. The CLI's default is 0.7: the API's own default (1.0, no
    /// top_p) lets small models wander.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Account to use [default: the bootstrap account].
    #[arg(short = 'n', long = "name")]
    pub account: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Tokenise (without BOS) each text of a llama.cpp tokenizer test file (`__ggml_vocab_test__`
    /// separated) with a GGUF's vocabulary; prints a JSON list of id lists.
    Tokenize {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        inp: PathBuf,
    },
    /// Print the engine's logits at every position of a token sequence, as JSON.
    Logits {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Comma-separated token ids; or use --text.
        #[arg(long)]
        tokens: Option<String>,
        #[arg(long)]
        text: Option<String>,
    },
}

/// The account of a data-plane call: `-n/--name` [default: the bootstrap account].
#[derive(Debug, Args, Clone)]
pub struct DataAccount {
    #[arg(short = 'n', long = "name")]
    pub account: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Upload a JSONL file of chat examples (checked line by line by the server).
    Upload {
        path: PathBuf,
        #[arg(long, default_value = "fine-tune")]
        purpose: String,
        #[command(flatten)]
        account: DataAccount,
    },
    List(DataAccount),
    Show {
        id: String,
        #[command(flatten)]
        account: DataAccount,
    },
    /// Print a file's content (training data, or a job's results.csv).
    Content {
        id: String,
        #[command(flatten)]
        account: DataAccount,
    },
    Delete {
        id: String,
        #[command(flatten)]
        account: DataAccount,
    },
}

#[derive(Debug, Subcommand)]
pub enum FineTuningCommand {
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Start a job; with --wait, follow it with a progress bar until it ends.
    Create(JobCreate),
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        account: DataAccount,
    },
    Show {
        id: String,
        #[command(flatten)]
        account: DataAccount,
    },
    Cancel {
        id: String,
        #[command(flatten)]
        account: DataAccount,
    },
    /// Pause a queued or running job (it keeps its checkpoints).
    Pause {
        id: String,
        #[command(flatten)]
        account: DataAccount,
    },
    /// Resume a paused job from its last checkpoint.
    Resume {
        id: String,
        #[command(flatten)]
        account: DataAccount,
    },
    /// The job's events, oldest first.
    Events {
        id: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        account: DataAccount,
    },
    Checkpoints {
        id: String,
        #[command(flatten)]
        account: DataAccount,
    },
    /// Follow a job with a progress bar until it ends.
    Wait {
        id: String,
        #[command(flatten)]
        account: DataAccount,
    },
}

#[derive(Debug, Args)]
pub struct JobCreate {
    /// The base model to fine-tune.
    #[arg(long)]
    pub model: String,
    /// A file id (`file-...`), or a local JSONL path to upload first.
    #[arg(long)]
    pub training_file: String,
    #[arg(long)]
    pub validation_file: Option<String>,
    #[arg(long)]
    pub n_epochs: Option<i64>,
    #[arg(long)]
    pub batch_size: Option<i64>,
    #[arg(long)]
    pub learning_rate_multiplier: Option<f64>,
    /// `supervised` (chat examples) or `dpo` (preference pairs).
    #[arg(long, default_value = "supervised")]
    pub method: String,
    /// DPO's beta (default 0.1).
    #[arg(long)]
    pub beta: Option<f64>,
    #[arg(long)]
    pub suffix: Option<String>,
    #[arg(long)]
    pub seed: Option<i64>,
    /// Follow the job until it ends.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub account: DataAccount,
}
