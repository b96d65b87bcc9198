use berth_engine::EngineError;
use berth_store::StoreError;

/// What the control plane can refuse or fail with. The HTTP surfaces map each to their own shape.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A client mistake in a field: `code` is the ARM code (`InvalidResourceProperties`, ...).
    #[error("{message}")]
    Invalid { code: &'static str, message: String, target: Option<String> },
    /// The named resource does not exist.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// No or bad credential.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// A valid principal without rights on the scope.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{0}")]
    Conflict(String),
    /// A conflict with its own ARM code (`RoleAssignmentExists`, ...).
    #[error("{message}")]
    ConflictCode { code: &'static str, message: String },
    #[error("the engine is overloaded: {0}")]
    Busy(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            // Text the database cannot hold reached it from a client: the client's mistake.
            StoreError::Nul => ControlError::invalid(
                "InvalidRequestContent",
                "A value of the request contains a NUL character, which Berth does not store.",
                None,
            ),
            e => ControlError::Store(e),
        }
    }
}

impl ControlError {
    pub(crate) fn invalid(
        code: &'static str,
        message: impl Into<String>,
        target: impl Into<Option<&'static str>>,
    ) -> Self {
        ControlError::Invalid { code, message: message.into(), target: target.into().map(str::to_owned) }
    }
}

pub type Result<T, E = ControlError> = std::result::Result<T, E>;
