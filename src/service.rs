//! The gRPC `revokd.v1.TokenService`: decode the request, call the
//! [`TokenAuthority`], encode the reply. No business logic lives here.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::authority::{RevokeTarget, TokenAuthority};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::proto::v1::token_service_server::TokenService;
use crate::proto::v1::{
    IssueTokenRequest, IssueTokenResponse, RevokeTokenRequest, RevokeTokenResponse,
    VerifyTokenRequest, VerifyTokenResponse, revoke_token_request,
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
    fn reply<T>(
        &self,
        method: &'static str,
        result: Result<T, Error>,
    ) -> Result<Response<T>, Status> {
        let result = result.map(Response::new).map_err(Status::from);
        self.metrics.grpc(
            method,
            result
                .as_ref()
                .map_or_else(Status::code, |_| tonic::Code::Ok),
        );
        result
    }
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
    }
}

fn ttl_from_proto(d: prost_types::Duration) -> Result<Duration, Error> {
    if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) {
        return Err(Error::invalid("ttl", "must be positive"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

#[tonic::async_trait]
impl TokenService for TokenGrpcService {
    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        self.reply("IssueToken", self.issue(request.into_inner()))
    }

    async fn verify_token(
        &self,
        request: Request<VerifyTokenRequest>,
    ) -> Result<Response<VerifyTokenResponse>, Status> {
        let result = self.verify(request.get_ref()).await;
        self.reply("VerifyToken", result)
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let result = self.revoke(request.into_inner()).await;
        self.reply("RevokeToken", result)
    }
}

impl TokenGrpcService {
    fn issue(&self, req: IssueTokenRequest) -> Result<IssueTokenResponse, Error> {
        let params = IssueParams {
            subject: req.subject,
            ttl: req.ttl.map(ttl_from_proto).transpose()?,
            audience: req.audience,
            extra: match req.claims {
                Some(s) => struct_to_json(s).map_err(|e| Error::invalid("claims", e))?,
                None => Default::default(),
            },
        };
        let issued = self.authority.issue(params)?;
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
        Ok(RevokeTokenResponse {
            newly_revoked: outcome.newly_revoked,
            expires_at: Some(timestamp(outcome.until)),
            jti: outcome.jti,
        })
    }
}
