//! The gRPC `revokd.v1.TokenService`: decode the request, call the
//! [`TokenAuthority`], encode the reply. No business logic lives here.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::authority::{RevokeTarget, SessionParams, SessionTarget, SessionTokens, TokenAuthority};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::proto::v1::token_service_server::TokenService;
use crate::proto::v1::{
    GetJwksRequest, GetJwksResponse, IssueSessionRequest, IssueSessionResponse, IssueTokenRequest, IssueTokenResponse,
    JsonWebKey, RefreshSessionRequest, RefreshSessionResponse, RevokeSessionRequest, RevokeSessionResponse,
    RevokeSubjectRequest, RevokeSubjectResponse, RevokeTokenRequest, RevokeTokenResponse, VerifyTokenRequest,
    VerifyTokenResponse, revoke_session_request, revoke_token_request,
};
use crate::proto::{self, json_to_struct, struct_to_json, timestamp};
use crate::tokens::{IssueParams, Verdict};

/// The gRPC service over a shared [`TokenAuthority`].
#[derive(Clone)]
pub struct TokenGrpcService {
    authority: Arc<TokenAuthority>,
    metrics: Metrics,
}

impl TokenGrpcService {
    /// Serves `authority`.
    pub fn new(authority: Arc<TokenAuthority>, metrics: Metrics) -> Self {
        TokenGrpcService { authority, metrics }
    }

    /// Counts the call by method and status code; errors become statuses here.
    fn reply<T>(&self, method: &'static str, result: Result<T, Error>) -> Result<Response<T>, Status> {
        let result = result.map(Response::new).map_err(Status::from);
        let code = result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.grpc(method, code);
        Span::current().record("code", crate::metrics::code_name(code));
        result
    }
}

/// The span of one call: method, status code, and what it concerned (jti,
/// session, verdict), never a token. INFO, so each call but VerifyToken leaves
/// one access-log line when it closes; VerifyToken's is DEBUG, as it is the hot path.
fn rpc_span(method: &'static str) -> Span {
    tracing::info_span!("rpc", method, code = Empty, jti = Empty, session_id = Empty)
}

fn verify_span() -> Span {
    tracing::debug_span!(
        "rpc",
        method = "VerifyToken",
        code = Empty,
        verdict = Empty,
        jti = Empty,
        session_id = Empty
    )
}

/// The proto enum value of a verdict.
pub fn verdict_to_proto(v: Verdict) -> proto::v1::Verdict {
    use proto::v1::Verdict as P;
    match v {
        Verdict::Valid => P::Valid,
        Verdict::Revoked => P::Revoked,
        Verdict::Expired => P::Expired,
        Verdict::NotYetValid => P::NotYetValid,
        Verdict::BadSignature => P::BadSignature,
        Verdict::Malformed => P::Malformed,
        Verdict::WrongAudience => P::WrongAudience,
        Verdict::WrongIssuer => P::WrongIssuer,
        Verdict::UnknownKey => P::UnknownKey,
        Verdict::WrongTokenType => P::WrongTokenType,
    }
}

fn duration_from_proto(field: &'static str, d: Option<prost_types::Duration>) -> Result<Option<Duration>, Error> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) => {
            Err(Error::invalid(field, "must be positive"))
        }
        Some(d) => Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

fn claims_from_proto(s: Option<prost_types::Struct>) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    match s {
        Some(s) => struct_to_json(s).map_err(|e| Error::invalid("claims", e)),
        None => Ok(Default::default()),
    }
}

#[tonic::async_trait]
impl TokenService for TokenGrpcService {
    async fn issue_token(&self, request: Request<IssueTokenRequest>) -> Result<Response<IssueTokenResponse>, Status> {
        let span = rpc_span("IssueToken");
        let _entered = span.enter();
        self.reply("IssueToken", self.issue(request.into_inner()))
    }

    async fn verify_token(
        &self,
        request: Request<VerifyTokenRequest>,
    ) -> Result<Response<VerifyTokenResponse>, Status> {
        async {
            let result = self.verify(request.get_ref()).await;
            self.reply("VerifyToken", result)
        }
        .instrument(verify_span())
        .await
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        async {
            let result = self.revoke(request.into_inner()).await;
            self.reply("RevokeToken", result)
        }
        .instrument(rpc_span("RevokeToken"))
        .await
    }

    async fn issue_session(
        &self,
        request: Request<IssueSessionRequest>,
    ) -> Result<Response<IssueSessionResponse>, Status> {
        async {
            let result = self.issue_session(request.into_inner()).await;
            self.reply("IssueSession", result)
        }
        .instrument(rpc_span("IssueSession"))
        .await
    }

    async fn refresh_session(
        &self,
        request: Request<RefreshSessionRequest>,
    ) -> Result<Response<RefreshSessionResponse>, Status> {
        async {
            let result = self.authority.refresh_session(&request.get_ref().refresh_token).await;
            if let Ok(t) = &result {
                Span::current().record("session_id", t.session_id.as_str());
            }
            self.reply("RefreshSession", result.map(refresh_response))
        }
        .instrument(rpc_span("RefreshSession"))
        .await
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        async {
            let result = self.revoke_session(request.into_inner()).await;
            self.reply("RevokeSession", result)
        }
        .instrument(rpc_span("RevokeSession"))
        .await
    }

    async fn revoke_subject(
        &self,
        request: Request<RevokeSubjectRequest>,
    ) -> Result<Response<RevokeSubjectResponse>, Status> {
        async {
            let req = request.into_inner();
            let result =
                self.authority
                    .revoke_subject(&req.subject, &req.reason)
                    .await
                    .map(|r| RevokeSubjectResponse {
                        revoked_before: Some(prost_types::Timestamp {
                            seconds: r.revoked_before_us.div_euclid(1_000_000),
                            nanos: (r.revoked_before_us.rem_euclid(1_000_000) * 1000) as i32,
                        }),
                        expires_at: Some(timestamp(r.until)),
                    });
            self.reply("RevokeSubject", result)
        }
        .instrument(rpc_span("RevokeSubject"))
        .await
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        let span = rpc_span("GetJwks");
        let _entered = span.enter();
        self.reply("GetJwks", self.jwks())
    }
}

fn refresh_response(t: SessionTokens) -> RefreshSessionResponse {
    RefreshSessionResponse {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        session_id: t.session_id,
        access_expires_at: Some(timestamp(t.access_expires_at)),
        refresh_expires_at: Some(timestamp(t.refresh_expires_at)),
        key_id: t.key_id,
    }
}

impl TokenGrpcService {
    fn issue(&self, req: IssueTokenRequest) -> Result<IssueTokenResponse, Error> {
        let params = IssueParams {
            subject: req.subject,
            ttl: duration_from_proto("ttl", req.ttl)?,
            audience: req.audience,
            extra: claims_from_proto(req.claims)?,
            session: None,
        };
        let issued = self.authority.issue(params)?;
        Span::current().record("jti", issued.jti.as_str());
        Ok(IssueTokenResponse {
            token: issued.token,
            jti: issued.jti,
            expires_at: Some(timestamp(issued.expires_at)),
            key_id: issued.kid,
        })
    }

    async fn verify(&self, req: &VerifyTokenRequest) -> Result<VerifyTokenResponse, Error> {
        let audience = (!req.audience.is_empty()).then_some(req.audience.as_str());
        let outcome = self.authority.verify(&req.token, audience).await?;
        let span = Span::current();
        span.record("verdict", outcome.verdict.as_str());
        if let Some(t) = &outcome.token {
            span.record("jti", t.claims.jti.as_str());
            if let Some(sid) = &t.claims.session_id {
                span.record("session_id", sid.as_str());
            }
        }
        let mut resp = VerifyTokenResponse {
            verdict: verdict_to_proto(outcome.verdict) as i32,
            ..Default::default()
        };
        if let Some(token) = outcome.token {
            let c = &token.claims;
            resp.subject = c.subject.clone();
            resp.jti = c.jti.clone();
            resp.issued_at = c.issued_at.map(timestamp);
            resp.expires_at = Some(timestamp(c.expires_at));
            resp.audience = c.audience.clone();
            resp.key_id = token.kid.clone();
            resp.session_id = c.session_id.clone().unwrap_or_default();
            if !c.extra.is_empty() {
                resp.claims = Some(json_to_struct(&c.extra));
            }
        }
        Ok(resp)
    }

    async fn revoke(&self, req: RevokeTokenRequest) -> Result<RevokeTokenResponse, Error> {
        let target = match req.target {
            Some(revoke_token_request::Target::Token(t)) => RevokeTarget::Token(t),
            Some(revoke_token_request::Target::Jti(j)) => RevokeTarget::Jti(j),
            None => return Err(Error::invalid("target", "set either token or jti")),
        };
        let outcome = self.authority.revoke(target, &req.reason).await?;
        Span::current().record("jti", outcome.jti.as_str());
        Ok(RevokeTokenResponse {
            newly_revoked: outcome.newly_revoked,
            expires_at: Some(timestamp(outcome.until)),
            jti: outcome.jti,
        })
    }

    async fn issue_session(&self, req: IssueSessionRequest) -> Result<IssueSessionResponse, Error> {
        let params = SessionParams {
            subject: req.subject,
            audience: req.audience,
            extra: claims_from_proto(req.claims)?,
            access_ttl: duration_from_proto("access_ttl", req.access_ttl)?,
            refresh_ttl: duration_from_proto("refresh_ttl", req.refresh_ttl)?,
        };
        let t = self.authority.issue_session(params).await?;
        Span::current().record("session_id", t.session_id.as_str());
        Ok(IssueSessionResponse {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            session_id: t.session_id,
            access_expires_at: Some(timestamp(t.access_expires_at)),
            refresh_expires_at: Some(timestamp(t.refresh_expires_at)),
            key_id: t.key_id,
        })
    }

    async fn revoke_session(&self, req: RevokeSessionRequest) -> Result<RevokeSessionResponse, Error> {
        let target = match req.target {
            Some(revoke_session_request::Target::SessionId(s)) => SessionTarget::SessionId(s),
            Some(revoke_session_request::Target::Token(t)) => SessionTarget::Token(t),
            None => return Err(Error::invalid("target", "set either session_id or token")),
        };
        let outcome = self.authority.revoke_session(target, &req.reason).await?;
        Span::current().record("session_id", outcome.jti.as_str());
        Ok(RevokeSessionResponse {
            session_id: outcome.jti,
            newly_revoked: outcome.newly_revoked,
            expires_at: Some(timestamp(outcome.until)),
        })
    }

    fn jwks(&self) -> Result<GetJwksResponse, Error> {
        let jwks_json = self.authority.jwks_json();
        let doc: serde_json::Value = serde_json::from_str(&jwks_json).map_err(|e| Error::Internal(e.to_string()))?;
        let field = |k: &serde_json::Value, name: &str| k[name].as_str().unwrap_or_default().to_owned();
        let keys = doc["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .map(|k| JsonWebKey {
                        kty: field(k, "kty"),
                        kid: field(k, "kid"),
                        alg: field(k, "alg"),
                        r#use: field(k, "use"),
                        crv: field(k, "crv"),
                        x: field(k, "x"),
                        y: field(k, "y"),
                        n: field(k, "n"),
                        e: field(k, "e"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(GetJwksResponse { jwks_json, keys })
    }
}
