// SPDX-License-Identifier: AGPL-3.0-only
//! The schema, as numbered SQL files embedded in the binary. `pop3d db
//! migrate` applies those not yet recorded in `pop3d_schema`, each in its
//! own transaction under an advisory lock (two nodes migrating at once
//! apply each file once); a shipped file is never edited, a change is a
//! new file.
//!
//! Each migration says whether binaries from before it may keep running on
//! the schema it makes, and the database records that: a node of an older
//! release that finds a newer schema keeps serving when every migration it
//! does not know is marked compatible (a rolling upgrade), and otherwise
//! says that the binary is older than the database and which schema it
//! must know. CHANGELOG.md lists every migration with its mark.

use tokio_postgres::GenericClient;

use super::DbError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
    /// Binaries from before it keep working on the schema it makes.
    pub compatible: bool,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "mail and users",
        sql: include_str!("migrations/0001_mail_and_users.sql"),
        compatible: false,
    },
    Migration {
        version: 2,
        name: "retention and quota",
        sql: include_str!("migrations/0002_retention_and_quota.sql"),
        compatible: false,
    },
    Migration {
        version: 3,
        name: "nodes and compatibility",
        sql: include_str!("migrations/0003_nodes_and_compatibility.sql"),
        compatible: true,
    },
    Migration {
        version: 4,
        name: "allowed networks",
        sql: include_str!("migrations/0004_allowed_networks.sql"),
        compatible: true,
    },
    Migration {
        version: 5,
        name: "app passwords",
        sql: include_str!("migrations/0005_app_passwords.sql"),
        compatible: true,
    },
];

/// From this version on `pop3d_schema` records compatibility.
const COMPATIBLE_COLUMN: i32 = 3;

/// The schema version this pop3d needs.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Any fixed number: the lock that serialises migrators.
const LOCK_KEY: i64 = 0x0070_6f70_336d_6967;

/// One migration the database has applied.
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: i32,
    pub name: String,
    pub at: String,
    /// Binaries from before it may run on it (false where not recorded).
    pub compatible: bool,
}

/// What the database has applied.
#[derive(Debug, Clone, Default)]
pub struct SchemaState {
    pub applied: Vec<Applied>,
}

/// How the database's schema fits this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// The schema this binary knows.
    Current,
    /// Newer, but every migration past this binary's is compatible: it
    /// keeps working; the text says so.
    NewerCompatible(String),
}

impl SchemaState {
    pub fn current(&self) -> i32 {
        self.applied.iter().map(|a| a.version).max().unwrap_or(0)
    }

    /// Embedded migrations not applied yet.
    pub fn pending(&self) -> Vec<Migration> {
        MIGRATIONS
            .iter()
            .filter(|m| !self.applied.iter().any(|a| a.version == m.version))
            .copied()
            .collect()
    }

    /// Applied migrations this binary does not know (from a newer release).
    pub fn unknown(&self) -> Vec<&Applied> {
        self.applied
            .iter()
            .filter(|a| a.version > latest())
            .collect()
    }

    /// Whether this binary may run on the schema, and if not why.
    pub fn fit(&self) -> Result<Fit, DbError> {
        let have = self.current();
        if have < latest() {
            return Err(DbError::Schema {
                have,
                need: latest(),
            });
        }
        let unknown = self.unknown();
        match unknown.iter().find(|a| !a.compatible) {
            None if unknown.is_empty() => Ok(Fit::Current),
            None => Ok(Fit::NewerCompatible(format!(
                "database schema {have} is newer than this pop3d ({}); migrations {} are marked compatible, so it keeps working: upgrade pop3d when convenient",
                latest(),
                unknown
                    .iter()
                    .map(|a| a.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Some(first) => Err(DbError::BinaryTooOld {
                have,
                known: latest(),
                blocking: first.version,
                name: first.name.clone(),
            }),
        }
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
    // The compatibility mark through to_jsonb, which reads it where the
    // column exists and gives NULL (false) before migration 3.
    let rows = client
        .query(
            "SELECT version, name, to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS TZ'), \
                    coalesce((to_jsonb(s) ->> 'compatible')::boolean, false) \
             FROM pop3d_schema s ORDER BY version",
            &[],
        )
        .await?;
    Ok(SchemaState {
        applied: rows
            .iter()
            .map(|r| Applied {
                version: r.get(0),
                name: r.get(1),
                at: r.get(2),
                compatible: r.get(3),
            })
            .collect(),
    })
}

/// The whole schema as one SQL script, for a fresh database (tests make
/// a template from it; operators may read what `migrate` would do).
pub fn script() -> String {
    let mut sql = format!("{CREATE_TABLE};\n");
    for m in MIGRATIONS {
        sql.push_str(m.sql);
        let name = m.name.replace('\'', "''");
        sql.push_str(&if m.version >= COMPATIBLE_COLUMN {
            format!(
                "\nINSERT INTO pop3d_schema (version, name, compatible) VALUES ({}, '{name}', {});\n",
                m.version, m.compatible
            )
        } else {
            format!(
                "\nINSERT INTO pop3d_schema (version, name) VALUES ({}, '{name}');\n",
                m.version
            )
        });
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
        if m.version >= COMPATIBLE_COLUMN {
            tx.execute(record(m), &[&m.version, &m.name, &m.compatible])
                .await?;
        } else {
            tx.execute(record(m), &[&m.version, &m.name]).await?;
        }
        tx.commit().await?;
        applied.push(*m);
    }
    Ok(applied)
}

/// The statement that records `m` as applied.
fn record(m: &Migration) -> &'static str {
    if m.version >= COMPATIBLE_COLUMN {
        "INSERT INTO pop3d_schema (version, name, compatible) VALUES ($1, $2, $3)"
    } else {
        "INSERT INTO pop3d_schema (version, name) VALUES ($1, $2)"
    }
}

/// Refuse a schema this pop3d cannot run on: older (migrate), or newer
/// with a migration not marked compatible (upgrade this binary).
pub async fn check(client: &impl GenericClient) -> Result<Fit, DbError> {
    state(client).await?.fit()
}

/// One connection outside any pool, for the admin commands and the
/// schema check at start.
pub async fn connect(
    config: &crate::config::Pop3Config,
) -> Result<tokio_postgres::Client, DbError> {
    let pg = super::connection_config(config).map_err(|e| DbError::Unavailable(e.to_string()))?;
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
pub async fn connect_and_check(config: &crate::config::Pop3Config) -> Result<Fit, DbError> {
    let client = connect(config).await?;
    check(&client).await
}
