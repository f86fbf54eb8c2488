// SPDX-License-Identifier: AGPL-3.0-only
//! The schema, as numbered SQL files embedded in the binary. `pop3d db
//! migrate` applies those not yet recorded in `pop3d_schema`, each in its
//! own transaction under an advisory lock (two nodes migrating at once
//! apply each file once); a shipped file is never edited, a change is a
//! new file.

use tokio_postgres::GenericClient;

use super::DbError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "mail and users",
        sql: include_str!("migrations/0001_mail_and_users.sql"),
    },
    Migration {
        version: 2,
        name: "retention and quota",
        sql: include_str!("migrations/0002_retention_and_quota.sql"),
    },
];

/// The schema version this pop3d needs.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Any fixed number: the lock that serialises migrators.
const LOCK_KEY: i64 = 0x0070_6f70_336d_6967;

/// What the database has applied.
#[derive(Debug, Clone, Default)]
pub struct SchemaState {
    /// (version, name, applied at) per applied migration.
    pub applied: Vec<(i32, String, String)>,
}

impl SchemaState {
    pub fn current(&self) -> i32 {
        self.applied.iter().map(|a| a.0).max().unwrap_or(0)
    }

    /// Embedded migrations not applied yet.
    pub fn pending(&self) -> Vec<Migration> {
        MIGRATIONS
            .iter()
            .filter(|m| !self.applied.iter().any(|a| a.0 == m.version))
            .copied()
            .collect()
    }
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS pop3d_schema (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now())";

/// The applied migrations; none when the table does not exist yet.
pub async fn state(client: &impl GenericClient) -> Result<SchemaState, DbError> {
    let exists = client
        .query_one("SELECT to_regclass('pop3d_schema') IS NOT NULL", &[])
        .await?;
    if !exists.get::<_, bool>(0) {
        return Ok(SchemaState::default());
    }
    let rows = client
        .query(
            "SELECT version, name, to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS TZ') \
             FROM pop3d_schema ORDER BY version",
            &[],
        )
        .await?;
    Ok(SchemaState {
        applied: rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
    })
}

/// The whole schema as one SQL script, for a fresh database (tests make
/// a template from it; operators may read what `migrate` would do).
pub fn script() -> String {
    let mut sql = format!("{CREATE_TABLE};\n");
    for m in MIGRATIONS {
        sql.push_str(m.sql);
        sql.push_str(&format!(
            "\nINSERT INTO pop3d_schema (version, name) VALUES ({}, '{}');\n",
            m.version,
            m.name.replace('\'', "''")
        ));
    }
    sql
}

/// Apply every pending migration; returns those applied.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<Migration>, DbError> {
    client.batch_execute(CREATE_TABLE).await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM pop3d_schema WHERE version = $1",
                &[&m.version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(m.sql).await.map_err(|e| {
            DbError::Query(format!(
                "migration {} ({}): {}",
                m.version,
                m.name,
                super::plain(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO pop3d_schema (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        tx.commit().await?;
        applied.push(*m);
    }
    Ok(applied)
}

/// Refuse a schema other than this pop3d's.
pub async fn check(client: &impl GenericClient) -> Result<(), DbError> {
    let have = state(client).await?.current();
    if have == latest() {
        Ok(())
    } else {
        Err(DbError::Schema {
            have,
            need: latest(),
        })
    }
}

/// One connection outside any pool, for the admin commands and the
/// schema check at start.
pub async fn connect(
    config: &crate::config::Pop3Config,
) -> Result<tokio_postgres::Client, DbError> {
    let pg = super::connection_config(config)
        .map_err(|(k, r)| DbError::Unavailable(format!("{k}: {r}")))?;
    let tls = super::tls::connector(&config.storage).map_err(DbError::Unavailable)?;
    let (client, connection) = pg.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("database connection ended: {e}");
        }
    });
    Ok(client)
}

/// Connect once and check the schema (what `serve` and `check-config` do
/// before anything else).
pub async fn connect_and_check(config: &crate::config::Pop3Config) -> Result<(), DbError> {
    let client = connect(config).await?;
    check(&client).await
}
