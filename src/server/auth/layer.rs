//! The access check as a tower layer in front of every gRPC service: it reads the bearer
//! token, finds the method's role, refuses with UNAUTHENTICATED or PERMISSION_DENIED, and
//! hands the [`Caller`] to the handlers in the request's extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::body::Body;
use tonic::codegen::http::{header, Request, Response};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use super::{access_for, Access, Caller, Role, Tokens};
use crate::server::metrics::Metrics;
use crate::server::telemetry;

/// Wraps services in [`AuthService`]. With no tokens it lets every call through and attaches
/// no caller (access control off).
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Arc<Tokens>,
    metrics: Metrics,
}

impl AuthLayer {
    /// A layer checking calls against `tokens`, counting refusals in `metrics`.
    pub fn new(tokens: Arc<Tokens>, metrics: Metrics) -> Self {
        Self { tokens, metrics }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            tokens: Arc::clone(&self.tokens),
            metrics: self.metrics.clone(),
        }
    }
}

/// The access check around one service (see [`AuthLayer`]).
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    tokens: Arc<Tokens>,
    metrics: Metrics,
}

/// Why a call was refused.
struct Refusal {
    method: &'static str,
    caller: Option<String>,
    status: Status,
}

impl<S> AuthService<S> {
    /// Checks `request`: on success puts the caller into its extensions and drops the
    /// `authorization` header, so nothing after this point can see the token.
    fn check(&self, request: &mut Request<Body>) -> Result<(), Refusal> {
        let (method, access) = access_for(request.uri().path());
        if self.tokens.is_empty() || access == Access::Open {
            return Ok(());
        }
        let refuse = |caller: Option<&Caller>, status| Refusal {
            method,
            caller: caller.map(|c| c.name.clone()),
            status,
        };
        let header = request.headers_mut().remove(header::AUTHORIZATION);
        let Some(value) = header else {
            return Err(refuse(
                None,
                Status::unauthenticated(
                    "missing `authorization: Bearer <token>` metadata: this server requires an API token",
                ),
            ));
        };
        let token = value.to_str().ok().and_then(bearer_token).ok_or_else(|| {
            refuse(
                None,
                Status::unauthenticated(
                    "malformed authorization metadata: expected `Bearer <token>`",
                ),
            )
        })?;
        let Some(caller) = self.tokens.authenticate(token) else {
            return Err(refuse(None, Status::unauthenticated("unknown API token")));
        };
        match access {
            Access::Open | Access::Authenticated => {}
            Access::AnyOf(roles) if caller.has_any(roles) => {}
            Access::AnyOf(roles) => {
                return Err(refuse(
                    Some(caller),
                    Status::permission_denied(format!(
                        "{method} needs the role {}; the token '{}' has {}",
                        role_list(roles, " or "),
                        caller.name,
                        role_list(&caller.roles, ", ")
                    )),
                ))
            }
            Access::Undefined => {
                return Err(refuse(
                    Some(caller),
                    Status::permission_denied("no role grants access to this method"),
                ))
            }
        }
        request.extensions_mut().insert(caller.clone());
        Ok(())
    }

    /// Logs and counts a refusal and turns it into the gRPC response, with a request id.
    fn refused(
        &self,
        request: &Request<Body>,
        refusal: Refusal,
        started: Instant,
    ) -> Response<Body> {
        let metadata = MetadataMap::from_headers(request.headers().clone());
        let request_id = telemetry::request_id_from(&metadata);
        let Refusal {
            method,
            caller,
            mut status,
        } = refusal;
        self.metrics
            .record_request(method, status.code(), started.elapsed());
        tracing::info!(
            request_id = %request_id,
            method,
            code = ?status.code(),
            caller = caller.as_deref().unwrap_or("-"),
            reason = status.message(),
            "access refused"
        );
        if let Ok(id) = MetadataValue::try_from(request_id.as_str()) {
            status.metadata_mut().insert(telemetry::REQUEST_ID_KEY, id);
        }
        status.into_http()
    }
}

/// The token of an `authorization` value `Bearer <token>` (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

fn role_list(roles: &[Role], separator: &str) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(separator)
}

impl<S> Service<Request<Body>> for AuthService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        match self.check(&mut request) {
            Ok(()) => {
                // The inner service was made ready for this call; keep a fresh clone for the next.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(refusal) => {
                let response = self.refused(&request, refusal, started);
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_are_read_strictly() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer a b"), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
