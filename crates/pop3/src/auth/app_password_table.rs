// SPDX-License-Identifier: AGPL-3.0-only
//! App passwords in PostgreSQL (migration 0005), for users in pop3d's
//! database: the same entries as the file keeps, one row each, so every
//! node of a cluster sees a new or revoked app password at once. Last use
//! is written in batches, one statement per batch.

use std::net::IpAddr;

use tokio_postgres::GenericClient;

use super::app_passwords::{AppPassword, LastUse};
use crate::db::{Database, DbError};

const COLUMNS: &str = "login, id, label, extract(epoch FROM created_at)::bigint, \
     extract(epoch FROM expires_at)::bigint, allow_nets, key, mac";

fn entry(row: &tokio_postgres::Row) -> Option<AppPassword> {
    let networks = match row.get::<_, Option<String>>(5) {
        None => None,
        Some(text) => Some(crate::auth::settings::parse_allow_nets(&text).ok()?),
    };
    let key: Vec<u8> = row.get(6);
    let mac: Vec<u8> = row.get(7);
    Some(AppPassword {
        user: row.get(0),
        id: row.get(1),
        label: row.get(2),
        created: row.get::<_, i64>(3).max(0) as u64,
        expires: row.get::<_, Option<i64>>(4).map(|e| e.max(0) as u64),
        networks,
        key: key.try_into().ok()?,
        mac: mac.try_into().ok()?,
    })
}

/// `user`'s app passwords (one round trip, at a login that gave a
/// password).
pub async fn of_user(db: &Database, user: &str) -> Result<Vec<AppPassword>, DbError> {
    let rows = db
        .timed(async {
            let client = db.client().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM app_passwords WHERE login = $1"
                ))
                .await?;
            Ok(client.query(&stmt, &[&user]).await?)
        })
        .await?;
    Ok(rows.iter().filter_map(entry).collect())
}

/// Write the last uses noted since the last batch.
pub async fn record_use(db: &Database, uses: &LastUse) -> Result<(), DbError> {
    if uses.is_empty() {
        return Ok(());
    }
    let (mut users, mut ids, mut ats, mut ips) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((user, id), (at, ip)) in uses {
        users.push(user.clone());
        ids.push(id.clone());
        ats.push(*at as i64);
        ips.push(ip.to_string());
    }
    db.timed(async {
        let client = db.client().await?;
        client
            .execute(
                "UPDATE app_passwords a SET last_used_at = to_timestamp(u.at), \
                        last_used_from = u.ip \
                   FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) \
                        AS u(login, id, at, ip) \
                  WHERE a.login = u.login AND a.id = u.id",
                &[&users, &ids, &ats, &ips],
            )
            .await?;
        Ok(())
    })
    .await
}

/// Add an entry; false when the user already has one with its label.
pub async fn insert<C: GenericClient + Sync>(client: &C, e: &AppPassword) -> Result<bool, DbError> {
    let nets = e.networks.as_ref().map(|n| {
        n.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    });
    let n = client
        .execute(
            "INSERT INTO app_passwords (login, id, label, created_at, expires_at, allow_nets, key, mac) \
             VALUES ($1, $2, $3, to_timestamp($4), to_timestamp($5), $6, $7, $8) \
             ON CONFLICT DO NOTHING",
            &[
                &e.user,
                &e.id,
                &e.label,
                &(e.created as f64),
                &e.expires.map(|x| x as f64),
                &nets,
                &e.key.as_slice(),
                &e.mac.as_slice(),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Every entry (of `user`), with its last use.
pub async fn list<C: GenericClient + Sync>(
    client: &C,
    user: Option<&str>,
) -> Result<Vec<(AppPassword, Option<(u64, IpAddr)>)>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS}, extract(epoch FROM last_used_at)::bigint, last_used_from \
                   FROM app_passwords WHERE $1::text IS NULL OR login = $1 ORDER BY login, label"
            ),
            &[&user],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let used = match (r.get::<_, Option<i64>>(8), r.get::<_, Option<String>>(9)) {
                (Some(at), Some(ip)) => ip.parse().ok().map(|ip| (at.max(0) as u64, ip)),
                _ => None,
            };
            entry(r).map(|e| (e, used))
        })
        .collect())
}

/// Remove `user`'s entry with `label` or `id`; false when there is none.
pub async fn revoke<C: GenericClient + Sync>(
    client: &C,
    user: &str,
    label: Option<&str>,
    id: Option<&str>,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "DELETE FROM app_passwords WHERE login = $1 AND (label = $2 OR id = $3)",
            &[&user, &label, &id],
        )
        .await?;
    Ok(n > 0)
}
