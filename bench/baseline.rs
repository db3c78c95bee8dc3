//! The transport baseline for `bench/run.sh`: a bare tonic server that speaks
//! revokd's `TokenService` and answers every `VerifyToken` with a constant
//! `VERDICT_VALID`, doing no work at all. It measures what HTTP/2, gRPC framing
//! and protobuf decoding of the same request cost on this machine, so revokd's
//! throughput can be read as a ratio to it.
//!
//! Usage: `cargo run --release --example baseline -- PORT` (0 for any free
//! port). Prints the bound address on stdout once it accepts connections.

use std::net::SocketAddr;

use revokd::proto::v1::token_service_server::{TokenService, TokenServiceServer};
use revokd::proto::v1::{
    GetJwksRequest, GetJwksResponse, IssueSessionRequest, IssueSessionResponse, IssueTokenRequest, IssueTokenResponse,
    RefreshSessionRequest, RefreshSessionResponse, RevokeSessionRequest, RevokeSessionResponse, RevokeSubjectRequest,
    RevokeSubjectResponse, RevokeTokenRequest, RevokeTokenResponse, Verdict, VerifyTokenRequest, VerifyTokenResponse,
};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Answers VerifyToken with a constant verdict; the other RPCs are not served.
struct Baseline;

#[tonic::async_trait]
impl TokenService for Baseline {
    async fn issue_token(&self, _request: Request<IssueTokenRequest>) -> Result<Response<IssueTokenResponse>, Status> {
        Err(Status::unimplemented("baseline serves VerifyToken only"))
    }

    async fn verify_token(
        &self,
        _request: Request<VerifyTokenRequest>,
    ) -> Result<Response<VerifyTokenResponse>, Status> {
        Ok(Response::new(VerifyTokenResponse {
            verdict: Verdict::Valid as i32,
            ..Default::default()
        }))
    }

    async fn revoke_token(
        &self,
        _request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        Err(Status::unimplemented("baseline serves VerifyToken only"))
    }

    async fn issue_session(
        &self,
        _request: Request<IssueSessionRequest>,
    ) -> Result<Response<IssueSessionResponse>, Status> {
        Err(Status::unimplemented("baseline serves VerifyToken only"))
    }

    async fn refresh_session(
        &self,
        _request: Request<RefreshSessionRequest>,
    ) -> Result<Response<RefreshSessionResponse>, Status> {
        Err(Status::unimplemented("baseline serves VerifyToken only"))
    }

    async fn revoke_session(
        &self,
        _request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        Err(Status::unimplemented("baseline serves VerifyToken only"))
    }

    async fn revoke_subject(
        &self,
        _request: Request<RevokeSubjectRequest>,
    ) -> Result<Response<RevokeSubjectResponse>, Status> {
        Err(Status::unimplemented("baseline serves VerifyToken only"))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        Err(Status::unimplemented("baseline serves VerifyToken only"))
    }

    type WatchRevocationsStream = tokio_stream::Empty<Result<revokd::proto::v1::WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        _request: Request<revokd::proto::v1::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        Err(Status::unimplemented("baseline serves VerifyToken only"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|e| format!("port {p:?}: {e}"))?,
        None => 0,
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    // Printed only once the socket is bound, so a reader may connect right away.
    println!("{}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(TokenServiceServer::new(Baseline))
        // The same transport settings as revokd's gRPC listener (src/server.rs).
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
