//! The gRPC `revokd.v1.TokenService`: decode the request (`TryFrom`, in
//! [`crate::proto`]), one call into the [`TokenAuthority`], encode the answer
//! (`From`). [`TokenGrpcService::call`] wraps every RPC the same way: its
//! span, its error mapping, its count by method and code, so the method name
//! appears once per RPC and span and metric cannot disagree.

use std::future::Future;
use std::sync::Arc;

use tonic::Extensions;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::authority::{AUDIT_TARGET, TokenAuthority};
use crate::callers::{Caller, CallerPolicy, Permission};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::proto::v1::token_service_server::TokenService;
use crate::proto::v1::{
    GetJwksRequest, GetJwksResponse, IssueSessionRequest, IssueSessionResponse, IssueTokenRequest, IssueTokenResponse,
    JsonWebKey, RefreshSessionRequest, RefreshSessionResponse, RevokeSessionRequest, RevokeSessionResponse,
    RevokeSubjectRequest, RevokeSubjectResponse, RevokeTokenRequest, RevokeTokenResponse, VerifyTokenRequest,
    VerifyTokenResponse, WatchRevocationsRequest,
};
use crate::watch::{WatchStream, Watches};

/// The gRPC service over a shared [`TokenAuthority`].
#[derive(Clone)]
pub(crate) struct TokenGrpcService {
    authority: Arc<TokenAuthority>,
    metrics: Metrics,
    callers: CallerPolicy,
    watches: Watches,
}

impl std::fmt::Debug for TokenGrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrpcService").finish_non_exhaustive()
    }
}

/// The one RPC whose span is DEBUG: it is the hot path.
const HOT_METHOD: &str = "VerifyToken";

/// The span of one call: method, status code, and what it concerned (jti,
/// session, verdict), never a token. INFO, so each call but VerifyToken leaves
/// one access-log line when it closes; VerifyToken's is DEBUG.
fn rpc_span(method: &'static str) -> Span {
    if method == HOT_METHOD {
        tracing::debug_span!(
            "rpc",
            method,
            code = Empty,
            client_id = Empty,
            verdict = Empty,
            jti = Empty,
            session_id = Empty
        )
    } else {
        tracing::info_span!(
            "rpc",
            method,
            code = Empty,
            client_id = Empty,
            jti = Empty,
            session_id = Empty
        )
    }
}

/// Records what the call concerned on its span.
fn record(field: &'static str, value: &str) {
    Span::current().record(field, value);
}

/// What a registered client needs to call `method` (GetJwks: none, the keys are public).
fn permission(method: &str) -> Option<Permission> {
    match method {
        // Watching the revocation set is verifying in-process.
        "VerifyToken" | "WatchRevocations" => Some(Permission::Verify),
        "IssueToken" | "IssueSession" | "RefreshSession" => Some(Permission::Issue),
        "RevokeToken" | "RevokeSession" => Some(Permission::Revoke),
        "RevokeSubject" => Some(Permission::RevokeSubject),
        _ => None,
    }
}

impl TokenGrpcService {
    /// Serves `authority` to the callers `callers` admits.
    pub(crate) fn new(
        authority: Arc<TokenAuthority>,
        metrics: Metrics,
        callers: CallerPolicy,
        watches: Watches,
    ) -> Self {
        TokenGrpcService {
            authority,
            metrics,
            callers,
            watches,
        }
    }

    /// Runs one RPC inside its span, for the caller its `authorization`
    /// metadata names (refused calls are audit-logged with the client id,
    /// never the secret); errors become statuses here, and the call is
    /// counted by method and status code.
    async fn call<T, Fut>(
        &self,
        method: &'static str,
        (metadata, extensions): (&MetadataMap, &Extensions),
        work: impl FnOnce(Caller) -> Fut,
    ) -> Result<Response<T>, Status>
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        async {
            let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
            // A client certificate the TLS layer verified against --tls-client-ca.
            let certificate = extensions
                .get::<crate::tls::TlsConnectInfo>()
                .and_then(|info| info.peer_certificate.clone());
            let result = match self
                .callers
                .authorize_call(authorization, certificate, permission(method))
                .await
            {
                Ok(caller) => {
                    if let Some(id) = caller.id() {
                        record("client_id", id);
                    }
                    work(caller).await.map(Response::new).map_err(Status::from)
                }
                Err(denied) => {
                    tracing::warn!(target: AUDIT_TARGET, method, reason = %denied, "call refused");
                    Err(Status::from(denied))
                }
            };
            let code = result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
            self.metrics.grpc(method, code);
            record("code", crate::metrics::code_name(code));
            result
        }
        .instrument(rpc_span(method))
        .await
    }
}

#[tonic::async_trait]
impl TokenService for TokenGrpcService {
    async fn issue_token(&self, request: Request<IssueTokenRequest>) -> Result<Response<IssueTokenResponse>, Status> {
        let (metadata, extensions, request) = request.into_parts();
        self.call("IssueToken", (&metadata, &extensions), |caller| async move {
            let mut params: crate::tokens::IssueParams = request.try_into()?;
            caller.check_audiences(&params.audience)?;
            params.client_id = caller.id().map(str::to_owned);
            let issued = self.authority.issue(params)?;
            record("jti", &issued.jti);
            Ok(issued.into())
        })
        .await
    }

    async fn verify_token(
        &self,
        request: Request<VerifyTokenRequest>,
    ) -> Result<Response<VerifyTokenResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        self.call(HOT_METHOD, (&metadata, &extensions), |_| async move {
            let audience = (!req.audience.is_empty()).then_some(req.audience.as_str());
            let outcome = self.authority.verify(&req.token, audience).await?;
            record("verdict", outcome.verdict.as_str());
            if let Some(t) = &outcome.token {
                record("jti", &t.claims.jti);
                if let Some(sid) = &t.claims.session_id {
                    record("session_id", sid);
                }
            }
            Ok(outcome.into())
        })
        .await
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        self.call("RevokeToken", (&metadata, &extensions), |_| async move {
            let outcome = self.authority.revoke(req.target.try_into()?, &req.reason).await?;
            record("jti", &outcome.jti);
            Ok(outcome.into())
        })
        .await
    }

    async fn issue_session(
        &self,
        request: Request<IssueSessionRequest>,
    ) -> Result<Response<IssueSessionResponse>, Status> {
        let (metadata, extensions, request) = request.into_parts();
        self.call("IssueSession", (&metadata, &extensions), |caller| async move {
            let mut params: crate::sessions::SessionParams = request.try_into()?;
            caller.check_audiences(&params.audience)?;
            params.client_id = caller.id().map(str::to_owned);
            let tokens = self.authority.issue_session(params).await?;
            record("session_id", &tokens.session_id);
            Ok(tokens.into())
        })
        .await
    }

    async fn refresh_session(
        &self,
        request: Request<RefreshSessionRequest>,
    ) -> Result<Response<RefreshSessionResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        self.call("RefreshSession", (&metadata, &extensions), |caller| async move {
            let tokens = self.authority.refresh_session(&req.refresh_token, caller.id()).await?;
            record("session_id", &tokens.session_id);
            Ok(tokens.into())
        })
        .await
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        self.call("RevokeSession", (&metadata, &extensions), |_| async move {
            let outcome = self
                .authority
                .revoke_session(req.target.try_into()?, &req.reason)
                .await?;
            record("session_id", &outcome.jti);
            Ok(outcome.into())
        })
        .await
    }

    async fn revoke_subject(
        &self,
        request: Request<RevokeSubjectRequest>,
    ) -> Result<Response<RevokeSubjectResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        self.call("RevokeSubject", (&metadata, &extensions), |_| async move {
            Ok(self.authority.revoke_subject(&req.subject, &req.reason).await?.into())
        })
        .await
    }

    async fn get_jwks(&self, request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        self.call("GetJwks", (request.metadata(), request.extensions()), |_| async {
            self.jwks()
        })
        .await
    }

    type WatchRevocationsStream = WatchStream;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.call(
            "WatchRevocations",
            (request.metadata(), request.extensions()),
            |_| async { self.watches.start() },
        )
        .await
    }
}

impl TokenGrpcService {
    fn jwks(&self) -> Result<GetJwksResponse, Error> {
        // One load of the ring, so the document and the keys are the same key set.
        let ring = self.authority.verifier.keys();
        Ok(GetJwksResponse {
            jwks_json: ring.jwks_json().to_owned(),
            keys: ring.jwks().keys.iter().map(JsonWebKey::from).collect(),
        })
    }
}
