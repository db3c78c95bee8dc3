//! The command line client against the real binary: every command, its JSON
//! answer, and the exit statuses scripts rely on (0 yes, 1 a "no" answer,
//! 64 usage, 69 unreachable), with errors printed in full.

mod common;

use std::process::{Command, Output};

use common::RevokdProcess;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_revokd");

fn revokd(addr: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("REVOKD_ADDR", addr)
        .output()
        .unwrap()
}

/// Runs `args`, expects exit `code`, returns the JSON it printed.
fn json(addr: &str, args: &[&str], code: i32) -> Value {
    let out = revokd(addr, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stderr}"))
}

#[test]
fn usage_errors_print_in_full_and_exit_64() {
    let out = revokd("127.0.0.1:1", &["token", "revoke"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in [
        "required arguments were not provided",
        "<TOKEN>",
        "Usage: revokd token revoke",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from {stderr}");
    }
    for addr in ["https://h:1", "unix:/run/revokd.sock", "grpc://h:1"] {
        let out = revokd(addr, &["jwks"]);
        assert_eq!(out.status.code(), Some(64), "{addr}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("HOST:PORT"), "{addr}");
    }
}

#[test]
fn an_unreachable_revokd_says_where_and_why_and_exits_69() {
    let out = revokd("127.0.0.1:1", &["token", "verify", "x"]);
    assert_eq!(out.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach revokd at http://127.0.0.1:1"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "the cause, in full: {stderr}");
}

#[test]
fn version_names_the_commit_reported_by_build_info() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let version = String::from_utf8(out.stdout).unwrap();
    let want = format!("revokd {} (", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&want), "{version}");
    let sha = version.trim_end().trim_start_matches(&want).trim_end_matches(')');
    assert!(!sha.is_empty(), "{version}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let p = RevokdProcess::spawn(&[]);
    let metrics = runtime.block_on(p.metrics());
    assert!(metrics.contains(&format!("git_sha=\"{sha}\"")), "{sha}: {metrics}");
}

#[test]
fn every_command_answers_with_json_and_an_exit_status() {
    let p = RevokdProcess::spawn(&[]);
    let bare = p.grpc_addr.to_string();
    let url = format!("http://{}", p.grpc_addr);

    // Both address forms.
    let issued = json(&bare, &["token", "issue", "--subject", "alice"], 0);
    let token = issued["token"].as_str().unwrap();
    let verified = json(&url, &["token", "verify", token], 0);
    assert_eq!(verified["verdict"], "VALID");
    assert_eq!(verified["subject"], "alice");

    // Any verdict but VALID exits 1, still printing the verdict.
    assert_eq!(
        json(&bare, &["token", "verify", "not-a-token"], 1)["verdict"],
        "MALFORMED"
    );
    let revoked = json(&bare, &["token", "revoke", token, "--reason", "cli test"], 0);
    assert_eq!(revoked["newly_revoked"], true);
    assert_eq!(json(&bare, &["token", "verify", token], 1)["verdict"], "REVOKED");

    // INVALID_ARGUMENT exits 64 and names the field.
    let out = revokd(&bare, &["token", "issue", "--subject", ""]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("subject"));

    // Sessions: login, refresh, logout.
    let login = json(&bare, &["session", "login", "--subject", "bob"], 0);
    let refreshed = json(
        &bare,
        &["session", "refresh", login["refresh_token"].as_str().unwrap()],
        0,
    );
    assert_eq!(refreshed["session_id"], login["session_id"]);
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(json(&bare, &["token", "verify", access], 0)["verdict"], "VALID");
    let out = json(&bare, &["session", "logout", access], 0);
    assert_eq!(out["session_id"], login["session_id"]);
    assert_eq!(json(&bare, &["token", "verify", access], 1)["verdict"], "REVOKED");
    // Spent refresh tokens no longer work: an error answer, not a crash.
    let out = revokd(&bare, &["session", "refresh", login["refresh_token"].as_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));

    // Logout everywhere.
    let carol = json(&bare, &["token", "issue", "--subject", "carol"], 0);
    let cut = json(&bare, &["token", "revoke-subject", "carol"], 0);
    assert!(cut["revoked_before"].is_string());
    assert_eq!(
        json(&bare, &["token", "verify", carol["token"].as_str().unwrap()], 1)["verdict"],
        "REVOKED"
    );

    // Keys and status.
    let jwks = json(&bare, &["jwks"], 0);
    assert_eq!(jwks["keys"][0]["kid"], issued["key_id"]);
    let admin = p.admin_addr.to_string();
    let status = json(&bare, &["status", "--admin", &admin], 0);
    assert_eq!(status["ready"], true);
    assert_eq!(status["keys"][0]["kid"], issued["key_id"]);
    assert!(status["build"].as_str().unwrap().contains("version="), "{status}");
}
