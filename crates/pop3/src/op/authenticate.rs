// SPDX-License-Identifier: AGPL-3.0-only
//! USER, PASS, APOP (RFC 1939 §7) and AUTH (RFC 5034): checking credentials
//! and entering the TRANSACTION state. Every bad-credential failure answers
//! `-ERR [AUTH]` (RFC 3206) with one text, whether the user exists or not.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::{Connection, Outcome, SessionStats, State, Transaction, store_error_reply};
use crate::auth::UserRecord;
use crate::auth::sasl::SaslError;
use crate::protocol::{Reply, RespCode, compute_apop_digest};
use crate::security::LoginGate;
use crate::services::Services;
use crate::store::StoreError;

const AUTH_FAILED: &str = "Authentication failed.";
const BLOCKED: &str = "Too many failures from your address, try again later";
const RATIONED: &str = "Too many login attempts for this user right now, try again later";
pub(super) const PLAINTEXT_REFUSED: &str =
    "Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";

/// USER: remember the name. The reply never says whether it exists.
pub fn user(state: &mut State, conn: &Connection, services: &Services, name: String) -> Reply {
    if !conn.plaintext_allowed(services) {
        return Reply::err_code(RespCode::Auth, PLAINTEXT_REFUSED);
    }
    if let Err(reply) = utf8_allowed(name.as_bytes(), services) {
        return reply;
    }
    // A name that could escape the mail root names nobody, and saying so
    // tells nothing about who exists.
    if let Err(why) = crate::auth::check_name(&name) {
        return Reply::err(format!("Invalid user name: {why}"));
    }
    if let State::Authorization { user, .. } = state {
        *user = Some(name);
    }
    Reply::ok("")
}

/// PASS: check the password for the name given by USER.
pub async fn pass(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    stats: &mut SessionStats,
    password: Vec<u8>,
) -> Outcome {
    let password = zeroize::Zeroizing::new(password);
    let State::Authorization { user, .. } = state else {
        return Reply::err("PASS is not valid after login").into();
    };
    let Some(name) = user.take() else {
        return Reply::err("USER first").into();
    };
    if !conn.plaintext_allowed(services) {
        return Reply::err_code(RespCode::Auth, PLAINTEXT_REFUSED).into();
    }
    if let Err(reply) = utf8_allowed(&password, services) {
        return reply.into();
    }
    check_password(state, conn, services, stats, "USER", &name, &password, None).await
}

/// RFC 6856 §2: UTF-8 user names and passwords in USER, PASS and APOP
/// only where CAPA says `UTF8 USER`, and then only well-formed UTF-8.
fn utf8_allowed(arg: &[u8], services: &Services) -> Result<(), Reply> {
    if arg.is_ascii() {
        return Ok(());
    }
    if !services.config.server.enable_utf8 {
        return Err(Reply::err(
            "Non-ASCII user names and passwords are not accepted",
        ));
    }
    if std::str::from_utf8(arg).is_err() {
        return Err(Reply::err("User names and passwords must be UTF-8"));
    }
    Ok(())
}

/// APOP: digest of the greeting's timestamp and the plaintext secret.
pub async fn apop(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    stats: &mut SessionStats,
    name: &str,
    digest: &str,
) -> Outcome {
    let Some(timestamp) = conn.apop_timestamp.as_deref() else {
        return Reply::err("APOP is not enabled").into();
    };
    if let Err(reply) = utf8_allowed(name.as_bytes(), services) {
        return reply.into();
    }
    if !conn.plaintext_allowed(services) {
        return Reply::err_code(RespCode::Auth, PLAINTEXT_REFUSED).into();
    }
    if let Err(outcome) = gate(conn, services, name).await {
        return outcome;
    }
    let record = match lookup(services, name).await {
        Ok(r) => r,
        Err(reply) => return reply.into(),
    };
    let given = digest.to_ascii_lowercase();
    let verified = record
        .as_ref()
        .and_then(|r| r.secret.as_ref())
        .and_then(|s| s.plaintext())
        .is_some_and(|secret| {
            let want = compute_apop_digest(timestamp, secret);
            bool::from(want.as_bytes().ct_eq(given.as_bytes()))
        });
    match record {
        Some(record) if verified => {
            login(state, conn, services, stats, record, "APOP", false).await
        }
        _ => denied(state, conn, services, Some(name), "APOP", "bad credentials").await,
    }
}

/// Finish a SASL exchange that produced an identity and a password.
#[allow(clippy::too_many_arguments)]
pub async fn sasl_password(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    stats: &mut SessionStats,
    mechanism: &'static str,
    authzid: Option<String>,
    authcid: String,
    password: &[u8],
) -> Outcome {
    if authzid.is_some() && !is_master(services, &authcid) {
        return refuse_authzid(state, conn, services, mechanism, &authcid).await;
    }
    let target = authzid.as_deref();
    check_password(
        state, conn, services, stats, mechanism, &authcid, password, target,
    )
    .await
}

/// Master users are matched as user names are looked up: without regard
/// to case.
fn is_master(services: &Services, user: &str) -> bool {
    services
        .config
        .auth
        .master_users
        .iter()
        .any(|m| m.eq_ignore_ascii_case(user))
}

/// A client asked to act as another user without being a master user.
async fn refuse_authzid(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    mechanism: &'static str,
    authcid: &str,
) -> Outcome {
    denied(
        state,
        conn,
        services,
        Some(authcid),
        mechanism,
        "authorization identity refused",
    )
    .await
}

/// Look a user up for a mechanism that needs the secret, after the same
/// gate as a password login. `Err` is the outcome to end the exchange with.
pub async fn sasl_lookup(
    conn: &Connection,
    services: &Services,
    authcid: &str,
) -> Result<Option<Arc<UserRecord>>, Outcome> {
    gate(conn, services, authcid).await?;
    lookup(services, authcid).await.map_err(Outcome::from)
}

/// Finish a SASL exchange in which the mechanism proved `authcid`
/// (`record` is what [`sasl_lookup`] found for that name, if it was asked).
#[allow(clippy::too_many_arguments)]
pub async fn sasl_verified(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    stats: &mut SessionStats,
    mechanism: &'static str,
    authzid: Option<String>,
    authcid: String,
    record: Option<Arc<UserRecord>>,
) -> Outcome {
    if authzid.is_some() && !is_master(services, &authcid) {
        return refuse_authzid(state, conn, services, mechanism, &authcid).await;
    }
    // Identities proved outside the user database (a token, a certificate,
    // a ticket) must still name a user it knows.
    let record = match record {
        Some(r) => Some(r),
        None => match sasl_lookup(conn, services, &authcid).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        },
    };
    let Some(record) = record else {
        return denied(
            state,
            conn,
            services,
            Some(&authcid),
            mechanism,
            "no such user",
        )
        .await;
    };
    login_as(state, conn, services, stats, mechanism, record, authzid).await
}

/// Log `record`'s owner in, or, when a master user named `acting_as`, the
/// user it names.
pub(super) async fn login_as(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    stats: &mut SessionStats,
    mechanism: &'static str,
    record: Arc<UserRecord>,
    acting_as: Option<String>,
) -> Outcome {
    let authcid = &record.name;
    let record = match acting_as {
        None => record,
        Some(target) => match lookup(services, &target).await {
            Ok(Some(t)) => {
                tracing::info!(master = %authcid, user = %target, mechanism, "master user login");
                t
            }
            Ok(None) => {
                return denied(
                    state,
                    conn,
                    services,
                    Some(authcid),
                    mechanism,
                    "no such authorization identity",
                )
                .await;
            }
            Err(reply) => return reply.into(),
        },
    };
    login(state, conn, services, stats, record, mechanism, false).await
}

/// A SASL exchange that ended without a login.
pub async fn sasl_failed(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    mechanism: &'static str,
    user: Option<&str>,
    e: &SaslError,
) -> Outcome {
    let reply = match e {
        SaslError::Credentials => bad_credentials(),
        e => Reply::err(format!("AUTH {mechanism}: {e}")),
    };
    failed(
        state,
        conn,
        services,
        user,
        mechanism,
        &e.to_string(),
        reply,
    )
    .await
}

/// ANONYMOUS: log the trace and open the configured mailbox read-only.
pub async fn anonymous(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    stats: &mut SessionStats,
    trace: &str,
) -> Outcome {
    let Some(name) = services.config.auth.anonymous_user.as_deref() else {
        return Reply::err("Unsupported authentication mechanism").into();
    };
    tracing::info!(peer = %conn.peer.ip(), trace = %trace.escape_debug(), mailbox = name, "anonymous login");
    match lookup(services, name).await {
        Ok(Some(record)) => login(state, conn, services, stats, record, "ANONYMOUS", true).await,
        Ok(None) => {
            tracing::error!("auth.anonymous_user {name:?} is not in the user database");
            Reply::err_code(RespCode::SysPerm, "Anonymous access is not available").into()
        }
        Err(reply) => reply.into(),
    }
}

/// Refuse at once if the address is blocked; slow down, or ask to come
/// back later, if the user is being sprayed.
async fn gate(conn: &Connection, services: &Services, user: &str) -> Result<(), Outcome> {
    match services.guard.login_gate(conn.peer.ip(), user).await {
        LoginGate::Open => Ok(()),
        LoginGate::Blocked => Err(Outcome::Close(Reply::err_code(RespCode::SysTemp, BLOCKED))),
        LoginGate::Rationed => Err(Reply::err_code(RespCode::SysTemp, RATIONED).into()),
    }
}

/// Look the user up and verify the password. An unknown user, or one
/// without a password, costs the same verification as a wrong password.
/// `acting_as`: a master user's target.
#[allow(clippy::too_many_arguments)]
async fn check_password(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    stats: &mut SessionStats,
    mechanism: &'static str,
    name: &str,
    password: &[u8],
    acting_as: Option<&str>,
) -> Outcome {
    if let Err(outcome) = gate(conn, services, name).await {
        return outcome;
    }
    let record = match lookup(services, name).await {
        Ok(r) => r,
        Err(reply) => return reply.into(),
    };
    // Where only app passwords open the mailbox, the account password is
    // not even checked.
    let app_only = record
        .as_ref()
        .is_some_and(|u| super::app_password::required(services, u));
    let verified = !app_only
        && match account_password(services, name, record.as_deref(), password).await {
            Ok(verified) => verified,
            Err(reply) => return reply.into(),
        };
    match record {
        Some(record) if verified => {
            if let Some(refused) =
                super::breached::check(state, conn, services, mechanism, &record.name, password)
                    .await
            {
                return refused;
            }
            let acting_as = acting_as.map(str::to_owned);
            return login_as(state, conn, services, stats, mechanism, record, acting_as).await;
        }
        // Not the account password: perhaps an app password (asked only
        // now, so a mailbox polled with the account password costs no
        // look at the app passwords).
        Some(record) => {
            let app = super::app_password::check(
                state, conn, services, stats, mechanism, &record, password, acting_as, app_only,
            )
            .await;
            if let Some(outcome) = app {
                return outcome;
            }
        }
        None => {}
    }
    denied(
        state,
        conn,
        services,
        Some(name),
        mechanism,
        "bad credentials",
    )
    .await
}

/// Whether `password` is `user`'s account password: from the auth cache
/// while fresh, else checked by the database itself (LDAP's auth_bind) or
/// against the stored secret. An unknown user, or one without a password,
/// costs the same check as a wrong password.
async fn account_password(
    services: &Services,
    name: &str,
    user: Option<&UserRecord>,
    password: &[u8],
) -> Result<bool, Reply> {
    let cache = services.auth_cache.as_deref();
    let secret = user.and_then(|r| r.secret.as_ref());
    if let Some(remembered) = cache.and_then(|c| c.verified(name, secret, password)) {
        return Ok(remembered);
    }
    let generation = cache.map(|c| c.generation());
    let verified = match (services.users.check_password(user, password).await, secret) {
        (Some(Ok(verified)), _) => verified,
        (Some(Err(e)), _) => return Err(userdb_unavailable(services, e)),
        (None, Some(secret)) => services.verifier.verify(secret, password).await,
        (None, None) => {
            if let Some(decoy) = services.users.decoy() {
                let _ = services.verifier.verify(&decoy, password).await;
            }
            false
        }
    };
    if let (Some(c), Some(g)) = (cache, generation) {
        c.remember_verified(name, secret, password, verified, g);
    }
    Ok(verified)
}

/// The user logging in (or named by a master user), as the user
/// database's login lookup finds them.
async fn lookup(services: &Services, name: &str) -> Result<Option<Arc<UserRecord>>, Reply> {
    services
        .users
        .lookup_login(name)
        .await
        .map_err(|e| userdb_unavailable(services, e))
}

/// The user database could not answer: `[SYS/TEMP]`, never "wrong
/// password", and counted.
pub(super) fn userdb_unavailable(services: &Services, e: crate::auth::UserDbError) -> Reply {
    services.metrics.userdb_errors.inc();
    tracing::error!("user database: {e}");
    Reply::err_code(RespCode::SysTemp, "Authentication service unavailable")
}

/// Bad credentials: always the same `-ERR [AUTH]` reply.
pub(super) fn bad_credentials() -> Reply {
    Reply::err_code(RespCode::Auth, AUTH_FAILED)
}

/// Bad credentials, answered and counted like every other.
pub(super) async fn denied(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    user: Option<&str>,
    mechanism: &'static str,
    reason: &str,
) -> Outcome {
    failed(
        state,
        conn,
        services,
        user,
        mechanism,
        reason,
        bad_credentials(),
    )
    .await
}

/// Count a failed login everywhere it counts: metrics, the guard (delay,
/// block), and the session's own limit.
pub(super) async fn failed(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    user: Option<&str>,
    mechanism: &'static str,
    reason: &str,
    reply: Reply,
) -> Outcome {
    services.metrics.login(mechanism, false);
    let verdict = services
        .guard
        .login_failed(conn.peer.ip(), user, mechanism, reason)
        .await;
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    if verdict.blocked {
        return Outcome::Close(Reply::err_code(RespCode::SysTemp, BLOCKED));
    }
    if let State::Authorization { failures, user } = state {
        *failures += 1;
        *user = None;
        if *failures >= services.config.security.max_auth_attempts {
            return Outcome::Close(Reply::err_code(
                RespCode::Auth,
                "Too many authentication failures",
            ));
        }
    }
    reply.into()
}

/// Credentials are good: lock and open the maildrop.
async fn login(
    state: &mut State,
    conn: &Connection,
    services: &Services,
    stats: &mut SessionStats,
    user: Arc<UserRecord>,
    mechanism: &'static str,
    read_only: bool,
) -> Outcome {
    // A disabled account, or an address outside the user's allow_nets:
    // refused as a wrong password is, whichever mechanism proved the
    // identity (a token, a certificate, a ticket), with the reason logged.
    let refusal = if !user.account.may_log_in() {
        Some("account disabled")
    } else if !user.settings.allows_login_from(conn.peer.ip()) {
        Some("address outside the user's allow_nets")
    } else {
        None
    };
    if let Some(reason) = refusal {
        return denied(state, conn, services, Some(&user.name), mechanism, reason).await;
    }
    services
        .guard
        .login_succeeded(conn.peer.ip(), &user.name)
        .await;
    let delay = user.settings.effective(&services.config.server).login_delay;
    if let Err(reply) = services.login_delay.check(&user.name, delay) {
        return reply.into();
    }
    match services.store.open(&user).await {
        Ok(maildrop) => {
            let infos = maildrop.messages();
            let count = infos.len();
            let octets: u64 = infos.iter().map(|m| m.size).sum();
            tracing::info!(user = %user.name, mechanism, messages = count, "logged in");
            services.login_delay.record(&user.name, delay);
            services.metrics.login(mechanism, true);
            let reply = Reply::ok(format!(
                "{}'s maildrop has {count} messages ({octets} octets)",
                user.name
            ));
            stats.user = Some(user.name.clone());
            *state = State::Transaction(Box::new(Transaction {
                user,
                maildrop,
                deleted: vec![false; count],
                retrieved: vec![false; count],
                read_only,
            }));
            reply.into()
        }
        Err(e) => {
            let counter = match e {
                StoreError::InUse => &services.metrics.lock_conflicts,
                _ => &services.metrics.store_errors,
            };
            counter.inc();
            tracing::warn!(user = %user.name, "cannot open maildrop: {e}");
            store_error_reply(&e).into()
        }
    }
}
