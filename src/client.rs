//! `revokd token issue|verify|revoke`: a small client for operators and demos.
//! Prints one JSON object per call on stdout.

use serde_json::json;

use crate::config::{TokenAction, TokenArgs};
use crate::proto::v1::token_service_client::TokenServiceClient;
use crate::proto::v1::{IssueTokenRequest, RevokeTokenRequest, Verdict, VerifyTokenRequest, revoke_token_request};

fn rfc3339(ts: Option<prost_types::Timestamp>) -> serde_json::Value {
    ts.map(|t| {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.seconds.max(0) as u64);
        humantime::format_rfc3339_seconds(when).to_string().into()
    })
    .unwrap_or(serde_json::Value::Null)
}

/// Runs one client action against `args.addr`.
pub async fn run(args: TokenArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = TokenServiceClient::connect(args.addr.clone()).await?;
    let out = match args.action {
        TokenAction::Issue { subject, ttl, audience } => {
            let r = client
                .issue_token(IssueTokenRequest {
                    subject,
                    ttl: ttl.map(|d| prost_types::Duration {
                        seconds: d.as_secs() as i64,
                        nanos: d.subsec_nanos() as i32,
                    }),
                    audience,
                    claims: None,
                })
                .await?
                .into_inner();
            json!({"token": r.token, "jti": r.jti, "expires_at": rfc3339(r.expires_at), "key_id": r.key_id})
        }
        TokenAction::Verify { token, audience } => {
            let r = client
                .verify_token(VerifyTokenRequest {
                    token,
                    audience: audience.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let verdict = Verdict::try_from(r.verdict)
                .map(|v| v.as_str_name())
                .unwrap_or("UNKNOWN");
            json!({
                "verdict": verdict, "subject": r.subject, "jti": r.jti,
                "issued_at": rfc3339(r.issued_at), "expires_at": rfc3339(r.expires_at),
                "audience": r.audience, "key_id": r.key_id,
            })
        }
        TokenAction::Revoke { token, jti, reason } => {
            let target = match (token, jti) {
                (Some(t), _) => revoke_token_request::Target::Token(t),
                (None, Some(j)) => revoke_token_request::Target::Jti(j),
                (None, None) => return Err("give a token or --jti".into()),
            };
            let r = client
                .revoke_token(RevokeTokenRequest {
                    target: Some(target),
                    reason,
                })
                .await?
                .into_inner();
            json!({"jti": r.jti, "newly_revoked": r.newly_revoked, "expires_at": rfc3339(r.expires_at)})
        }
    };
    println!("{out}");
    Ok(())
}
