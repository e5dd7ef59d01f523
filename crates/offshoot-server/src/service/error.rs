//! The service layer's one error type: what went wrong, in the domain's words, with the stable
//! machine code the API sends. It knows nothing of HTTP: the HTTP layer maps each `Kind` to a
//! status (`http::error`), background workers log the message once.

use offshoot_store::StoreError;
use offshoot_warehouse::WarehouseError;

/// What kind of failure this is; the HTTP layer maps each to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or names something impossible (400).
    Invalid,
    /// What the request names does not exist (404).
    NotFound,
    /// The request is well-formed but the state forbids it now (409).
    Conflict,
    /// The request is well-formed but cannot be carried out on these inputs (422).
    Unprocessable,
    /// A remote the server depends on failed (502).
    Upstream,
    /// A server-side failure; the detail is for the log, never for clients (500).
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub kind: Kind,
    /// Stable machine-readable code (the table is `http::error::ERROR_CODES`).
    pub code: &'static str,
    /// For people. For `Internal`, the detail to log; clients get a generic message.
    pub message: String,
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError { kind, code, message: message.into() }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::Invalid, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::NotFound, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::Conflict, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::Unprocessable, code, message)
    }

    pub fn upstream(code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::Upstream, code, message)
    }

    /// A failure of the server itself. Not logged here: whoever ends the operation logs it once.
    pub fn internal(detail: impl std::fmt::Display) -> ServiceError {
        ServiceError::new(Kind::Internal, "internal_error", detail.to_string())
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> ServiceError {
        match error {
            StoreError::NotFound(what) => {
                ServiceError::not_found("not_found", format!("{what} not found"))
            }
            StoreError::Conflict(what) => ServiceError::conflict("conflict", what),
            StoreError::Backend(detail) => ServiceError::internal(detail),
        }
    }
}

impl From<WarehouseError> for ServiceError {
    fn from(error: WarehouseError) -> ServiceError {
        match error {
            WarehouseError::Query(message) => {
                ServiceError::unprocessable("data_diff_failed", message)
            }
            WarehouseError::Refused(message) => {
                ServiceError::invalid("not_a_branch_deployment", message)
            }
            WarehouseError::Backend(detail) => ServiceError::internal(detail),
        }
    }
}
