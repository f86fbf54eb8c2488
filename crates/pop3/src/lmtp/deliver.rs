// SPDX-License-Identifier: AGPL-3.0-only
//! LMTP's side of a delivery: who a recipient is, storing the message for
//! one recipient, and the reply (RFC 3463 codes) and metric for each
//! outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::auth::{UserDbError, UserRecord};
use crate::services::Services;
use crate::store::StoreError;
use crate::telemetry::metrics::ResultLabels;

pub(super) fn count(services: &Services, result: &'static str) {
    services
        .metrics
        .lmtp_deliveries
        .get_or_create(&ResultLabels { result })
        .inc();
}

/// The user an address names: the address as written, else its local
/// part (passwd files often list bare names).
/// An account closed to mail (`pop3d user disable --no-mail`) is no
/// recipient; one whose logins are disabled still is.
pub(super) async fn recipient(
    services: &Services,
    to: &str,
) -> Result<Option<Arc<UserRecord>>, UserDbError> {
    let found = match services.users.lookup(to).await? {
        Some(user) => Some(user),
        None => match to.rsplit_once('@') {
            Some((local, _)) if !local.is_empty() => services.users.lookup(local).await?,
            _ => None,
        },
    };
    Ok(found.filter(|u| u.account.receives_mail()))
}

/// Store the message for one recipient, with `Return-Path` and
/// `Delivered-To` in front; the reply for that recipient.
pub(super) async fn deliver(
    services: &Services,
    from: &str,
    to: &str,
    user: &UserRecord,
    body: &[u8],
) -> String {
    let head = format!("Return-Path: <{from}>\r\nDelivered-To: <{to}>\r\n");
    let mut message = head.as_bytes().chain(body);
    let stored = tokio::time::timeout(
        Duration::from_secs(300),
        services.store.deliver(user, &mut message),
    )
    .await
    .unwrap_or_else(|_| Err(StoreError::Temporary("delivery took too long".into())));
    match stored {
        Ok(size) => {
            count(services, "delivered");
            tracing::info!(user = %user.name, size, "delivered over LMTP");
            format!("250 2.0.0 <{to}> delivered")
        }
        Err(StoreError::TooLarge(limit)) => {
            count(services, "too_large");
            format!("552 5.3.4 <{to}>: messages are limited to {limit} octets")
        }
        // RFC 3463 X.2.2: mailbox full.
        Err(StoreError::OverQuota) if services.config.storage.quota_full_tempfail => {
            count(services, "over_quota");
            format!("452 4.2.2 <{to}>: mailbox is over quota, try again later")
        }
        Err(StoreError::OverQuota) => {
            count(services, "over_quota");
            format!("552 5.2.2 <{to}>: mailbox is over quota")
        }
        // RFC 3463 X.3.1: mail system full; the MTA keeps the message.
        Err(e @ StoreError::Full(_)) => {
            count(services, "storage_full");
            tracing::warn!(user = %user.name, "LMTP delivery failed: {e}");
            format!("452 4.3.1 <{to}>: mail system full, try again later")
        }
        Err(e) => {
            count(services, "temp_failure");
            tracing::warn!(user = %user.name, "LMTP delivery failed: {e}");
            format!("451 4.3.0 <{to}>: cannot store the message now, try again later")
        }
    }
}
