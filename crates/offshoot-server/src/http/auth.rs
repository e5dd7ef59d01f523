//! Who may call the API: bearer tokens carry a role (`read` < `deploy` < `admin`, see
//! `config::Role`), and the extractors here turn a request into proof of one. Production is the
//! line a `deploy` token cannot cross: anything on a production deployment needs `admin`.
//! Webhooks do not come through here; they carry their own signatures (`hooks`).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use offshoot_core::DeploymentKind;
use offshoot_store::Deployment;

use crate::config::Role;
use crate::http::error::{ApiError, ApiResult};
use crate::state::{AppState, Metrics, SharedState};

/// What the request presented.
enum Presented {
    Nothing,
    Unknown,
    Token(Role),
}

fn presented(state: &AppState, headers: &HeaderMap) -> Presented {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Presented::Nothing;
    };
    let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim)
    else {
        return Presented::Unknown;
    };
    role_of(state, token)
}

fn role_of(state: &AppState, token: &str) -> Presented {
    // Every configured token is compared, so the time taken does not say which one matched.
    let matched = state.config.api_tokens.iter().fold(None, |found, known| {
        if known.secret.matches(token.as_bytes()) {
            Some(known.role)
        } else {
            found
        }
    });
    match matched {
        Some(role) => Presented::Token(role),
        None => Presented::Unknown,
    }
}

/// The header dagster-cloud sends its API token in.
pub const DAGSTER_CLOUD_TOKEN_HEADER: &str = "dagster-cloud-api-token";

/// The caller of the Dagster+ GraphQL API (`dagster_cloud`): the token in
/// `Dagster-Cloud-Api-Token` (what dagster-cloud sends), else a bearer token; the same tokens
/// and roles as the REST API. `Ok(None)` when no token came; an unknown token is a 401.
pub fn dagster_cloud_caller(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<Caller>> {
    let presented = match headers.get(DAGSTER_CLOUD_TOKEN_HEADER) {
        Some(value) => match value.to_str() {
            Ok(token) if !token.trim().is_empty() => role_of(state, token.trim()),
            Ok(_) => Presented::Nothing,
            Err(_) => Presented::Unknown,
        },
        None => presented(state, headers),
    };
    match presented {
        Presented::Token(role) => Ok(Some(Caller { role })),
        Presented::Nothing => Ok(None),
        Presented::Unknown => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API token is not one of the Offshoot server's API tokens: pass one from its configuration as dagster-cloud's --api-token (or DAGSTER_CLOUD_API_TOKEN)",
        )),
    }
}

/// The message of a 401 for a request that came with no token at all.
pub fn no_token(needed: Role) -> ApiError {
    unauthorized(needed, &Presented::Nothing)
}

fn unauthorized(needed: Role, presented: &Presented) -> ApiError {
    let what = match presented {
        Presented::Unknown => "the bearer token is not one of the server's API tokens",
        _ => "this needs an API token",
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{what}: send `Authorization: Bearer <token>` with a token whose role is `{needed}` or higher"),
    )
    .with_required_role(needed)
}

/// A caller whose token is known: its role.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub role: Role,
}

impl Caller {
    /// `Ok` when the role is at least `needed`; else a 403 naming what `action` needs.
    pub fn require(self, needed: Role, action: &str) -> ApiResult<()> {
        if self.role >= needed {
            return Ok(());
        }
        tracing::debug!(
            "refused {action}: the token's role is `{}`, it needs `{needed}`",
            self.role
        );
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{action} needs an API token with the `{needed}` role; this token's role is `{}`",
                self.role
            ),
        )
        .with_required_role(needed))
    }

    /// Writing to `deployment`: `deploy` for a branch deployment, `admin` for production.
    /// `action` reads on with the deployment: "closing", "launching a run in".
    pub fn require_for(self, deployment: &Deployment, action: &str) -> ApiResult<()> {
        let (needed, place) = match deployment.kind {
            DeploymentKind::Production => (Role::Admin, "the production deployment"),
            DeploymentKind::Branch => (Role::Deploy, "the branch deployment"),
        };
        self.require(needed, &format!("{action} {place} `{}`", deployment.name))
    }
}

fn caller(state: &AppState, parts: &Parts, needed: Role) -> ApiResult<Caller> {
    match presented(state, &parts.headers) {
        Presented::Token(role) => {
            tracing::debug!("{} {}: token with role `{role}`", parts.method, parts.uri.path());
            Ok(Caller { role })
        }
        other => {
            tracing::debug!("{} {}: no valid bearer token", parts.method, parts.uri.path());
            Err(unauthorized(needed, &other))
        }
    }
}

/// A request that wants to write, with a known token (else 401). Every write handler then
/// checks the role its action needs with [`Caller::require`] or [`Caller::require_for`], once
/// it knows the target: the role matrix test goes through each of them.
pub struct Writer(pub Caller);

impl FromRequestParts<SharedState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Metrics::increment(&state.metrics.http_requests);
        caller(state, parts, Role::Deploy).map(Writer)
    }
}

/// Proof that the request may read: any known token, or none when reads are public.
pub struct Reader;

impl FromRequestParts<SharedState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Metrics::increment(&state.metrics.http_requests);
        if state.config.public_reads {
            return Ok(Reader);
        }
        caller(state, parts, Role::Read).map(|_| Reader)
    }
}

/// `GET /api/v1/whoami`: the role of the presented token, so a client (the web UI) can offer
/// only what the role allows. Never a 401: an unknown token is `"token": "invalid"`.
pub async fn whoami(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    Metrics::increment(&state.metrics.http_requests);
    let (token, role) = match presented(&state, &headers) {
        Presented::Nothing => ("none", None),
        Presented::Unknown => ("invalid", None),
        Presented::Token(role) => ("valid", Some(role.as_str())),
    };
    Json(
        serde_json::json!({ "token": token, "role": role, "public_reads": state.config.public_reads }),
    )
}
