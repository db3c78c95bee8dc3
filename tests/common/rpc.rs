//! The TokenService calls the tests make over and over, as one-liners. Each
//! unwraps the RPC unless it says it returns the status code; tests that look
//! at more of a response, or send something unusual, call the client directly.

use std::time::Duration;

use revokd::proto::v1::token_service_client::TokenServiceClient;
use revokd::proto::v1::{
    IssueSessionRequest, IssueSessionResponse, IssueTokenRequest, IssueTokenResponse, RefreshSessionRequest,
    RevokeTokenRequest, RevokeTokenResponse, Verdict, VerifyTokenRequest, revoke_token_request,
};
use tonic::Code;
use tonic::transport::Channel;

pub type Client = TokenServiceClient<Channel>;

/// IssueToken for `subject`, everything else default: the whole response.
pub async fn issue(c: &mut Client, subject: &str) -> IssueTokenResponse {
    c.issue_token(IssueTokenRequest {
        subject: subject.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// IssueToken for `subject`, everything else default: just the token.
pub async fn issue_token(c: &mut Client, subject: &str) -> String {
    issue(c, subject).await.token
}

/// A VerifyToken request for `token` with no audience.
pub fn verify_req(token: &str) -> VerifyTokenRequest {
    VerifyTokenRequest {
        token: token.into(),
        audience: String::new(),
    }
}

/// The verdict on `token` (no audience), or the RPC's status code (UNAVAILABLE
/// when revocation cannot be checked).
pub async fn verify(c: &mut Client, token: &str) -> Result<Verdict, Code> {
    c.verify_token(verify_req(token))
        .await
        .map(|r| Verdict::try_from(r.into_inner().verdict).unwrap())
        .map_err(|s| s.code())
}

/// Polls [`verify`] (on a clone of `c`) until it answers `want` or `deadline` passes.
pub async fn eventually_verify(deadline: Duration, what: &str, c: &Client, token: &str, want: Result<Verdict, Code>) {
    super::eventually(deadline, what, || {
        let mut c = c.clone();
        async move { verify(&mut c, token).await == want }
    })
    .await;
}

/// The verdict on `token` (no audience); an RPC error fails the test.
pub async fn verdict(c: &mut Client, token: &str) -> Verdict {
    verdict_for(c, token, "").await
}

/// The verdict on `token` for `audience`; an RPC error fails the test.
pub async fn verdict_for(c: &mut Client, token: &str, audience: &str) -> Verdict {
    let r = c
        .verify_token(VerifyTokenRequest {
            token: token.into(),
            audience: audience.into(),
        })
        .await
        .expect("verify is not an RPC error")
        .into_inner();
    Verdict::try_from(r.verdict).unwrap()
}

/// A RevokeToken request for `token` (reason `test`).
pub fn by_token(token: &str) -> RevokeTokenRequest {
    RevokeTokenRequest {
        target: Some(revoke_token_request::Target::Token(token.into())),
        reason: "test".into(),
    }
}

/// RevokeToken for `token`; returns once acknowledged.
pub async fn revoke(c: &mut Client, token: &str) -> RevokeTokenResponse {
    c.revoke_token(by_token(token)).await.unwrap().into_inner()
}

/// IssueSession (a login) for `subject`.
pub async fn login(c: &mut Client, subject: &str) -> IssueSessionResponse {
    c.issue_session(IssueSessionRequest {
        subject: subject.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// RefreshSession: the new (access, refresh) pair, or the status code.
pub async fn refresh(c: &mut Client, refresh_token: &str) -> Result<(String, String), Code> {
    c.refresh_session(RefreshSessionRequest {
        refresh_token: refresh_token.into(),
    })
    .await
    .map(|r| {
        let r = r.into_inner();
        (r.access_token, r.refresh_token)
    })
    .map_err(|s| s.code())
}
