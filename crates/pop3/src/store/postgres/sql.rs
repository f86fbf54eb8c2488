// SPDX-License-Identifier: AGPL-3.0-only
//! The SQL of the PostgreSQL store, apart from the code that runs it:
//! each statement with what it does, its parameters numbered as the
//! callers bind them.

use crate::store::uidl::{Piece, UidlFormat, Var};

pub(super) const ACQUIRE: &str = "
WITH mb AS (SELECT id FROM mailboxes WHERE login = $1),
lease AS (
    INSERT INTO maildrop_lease AS l (mailbox_id, node, boot, session, epoch, expires_at, acquired_at)
    SELECT id, $2, $3, $4, 1, now() + make_interval(secs => $5), now() FROM mb
    ON CONFLICT (mailbox_id) DO UPDATE
       SET node = excluded.node, boot = excluded.boot, session = excluded.session,
           epoch = l.epoch + 1, expires_at = excluded.expires_at,
           acquired_at = excluded.acquired_at
     WHERE l.expires_at < now()
    RETURNING mailbox_id, epoch)
SELECT mb.id, lease.epoch,
       (SELECT x.session FROM maildrop_lease x
         WHERE x.mailbox_id = mb.id AND x.node = $2 AND x.boot = $3),
       m.id, m.uid, m.uidl, m.size, m.parts,
       coalesce(m.retrieved_at <= $6::timestamptz, false)
  FROM (SELECT 1) AS one
  LEFT JOIN mb ON true
  LEFT JOIN lease ON true
  LEFT JOIN messages m ON m.mailbox_id = lease.mailbox_id AND m.trashed_at IS NULL
 ORDER BY m.uid";

pub(super) const CREATE_MAILBOX: &str =
    "INSERT INTO mailboxes (login) VALUES ($1) ON CONFLICT DO NOTHING";

/// QUIT: free the lease if it is still this session's (`l`), remove the
/// messages `$6` ([`REMOVE`]), record the first retrieval of the messages
/// `$8` at `$7`.
pub(super) const COMMIT: &str = "
WITH l AS (
    UPDATE maildrop_lease SET expires_at = '-infinity'
     WHERE mailbox_id = $1 AND node = $2 AND boot = $3 AND session = $4 AND epoch = $5
       AND expires_at > now()
    RETURNING mailbox_id),
{remove},
r AS (
    UPDATE messages m SET retrieved_at = $7 FROM l
     WHERE m.mailbox_id = l.mailbox_id AND m.id = ANY($8) AND m.retrieved_at IS NULL)
SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM d)";

/// At login, under the lease (checked, kept): remove the messages `$6`
/// past their retention period ([`REMOVE`]).
pub(super) const EXPIRE: &str = "
WITH l AS (
    SELECT mailbox_id FROM maildrop_lease
     WHERE mailbox_id = $1 AND node = $2 AND boot = $3 AND session = $4 AND epoch = $5
       AND expires_at > now()),
{remove}
SELECT count(*) FROM d";

/// Remove the messages `$6` of the mailbox in `l` (`{how}`: [`EXPUNGE`]
/// or [`TRASH`], which stamps them `$7`) and take them off its counters.
pub(super) const REMOVE: &str = "d AS ({how}),
u AS (
    UPDATE mailboxes b
       SET msg_count = b.msg_count - (SELECT count(*) FROM d),
           octets = b.octets - (SELECT coalesce(sum(size), 0) FROM d)::bigint
      FROM l WHERE b.id = l.mailbox_id AND EXISTS (SELECT 1 FROM d)
    RETURNING 1)";

/// `delete = "expunge"`: the rows go (bodies with them).
pub(super) const EXPUNGE: &str = "DELETE FROM messages m USING l \
     WHERE m.mailbox_id = l.mailbox_id AND m.id = ANY($6) AND m.trashed_at IS NULL \
    RETURNING m.size";

/// `delete = "trash"`: the rows stay, stamped `$7`, out of the listing and
/// the counters.
pub(super) const TRASH: &str = "UPDATE messages m SET trashed_at = $7 FROM l \
     WHERE m.mailbox_id = l.mailbox_id AND m.id = ANY($6) AND m.trashed_at IS NULL \
    RETURNING m.size";

/// `pop3d restore`: trashed messages (at or after `$2`) back, counted again.
pub(super) const RESTORE: &str = "
WITH back AS (
    UPDATE messages m SET trashed_at = NULL FROM mailboxes b
     WHERE b.login = $1 AND m.mailbox_id = b.id AND m.trashed_at >= $2
    RETURNING m.mailbox_id, m.size)
UPDATE mailboxes b
   SET msg_count = b.msg_count + (SELECT count(*) FROM back),
       octets = b.octets + (SELECT coalesce(sum(size), 0) FROM back)::bigint
 WHERE b.login = $1
RETURNING (SELECT count(*) FROM back)";

/// The retention sweep of the trash.
pub(super) const PURGE: &str = "DELETE FROM messages WHERE trashed_at < $1";

/// What a delivery sees of the mailbox, for a quota.
/// Locked until the delivery commits, so that two deliveries cannot both
/// fit under the quota's last octets.
pub(super) const USAGE: &str =
    "SELECT octets, msg_count FROM mailboxes WHERE login = $1 FOR UPDATE";

/// QUIT with nothing to delete: free the lease if it is still this
/// session's (one row back), touching nothing else.
pub(super) const QUIT_UNCHANGED: &str = "UPDATE maildrop_lease SET expires_at = '-infinity' \
     WHERE mailbox_id = $1 AND node = $2 AND boot = $3 AND session = $4 AND epoch = $5 \
       AND expires_at > now()";

/// Free the lease of a session of this store that is over (it ended
/// without QUIT, or its release failed while the database was away).
pub(super) const RELEASE: &str = "UPDATE maildrop_lease SET expires_at = '-infinity' \
     WHERE mailbox_id = $1 AND node = $2 AND boot = $3 AND session = $4";

/// Delivery: the next UID from the mailbox row, the message row with a
/// UIDL made by `{uidl}` (see [`uidl_sql`]) unless `$5` gives one.
///
/// A UIDL already in the mailbox (imported mail, `%u` meeting numeric
/// UIDLs of an old server) stores no row, but the UID is used up all the
/// same, and the counters are put back by [`UNCOUNT`]: the caller tries
/// again under the next UID. Failing instead would roll back `next_uid`
/// too, so every retry would build the same UIDL and the mail would
/// bounce.
pub(super) const ADD_MESSAGE: &str = "
WITH header AS (SELECT $6::text AS md5),
mb AS (
    INSERT INTO mailboxes AS b (login, next_uid, msg_count, octets) VALUES ($1, 2, 1, $3)
    ON CONFLICT (login) DO UPDATE
       SET next_uid = b.next_uid + 1, msg_count = b.msg_count + 1,
           octets = b.octets + excluded.octets
    RETURNING id, next_uid - 1 AS uid, uid_validity)
INSERT INTO messages (id, mailbox_id, uid, uidl, size, parts)
SELECT $2, id, uid, coalesce($5, {uidl}), $3, $4
  FROM mb, header
ON CONFLICT (mailbox_id, uidl) DO NOTHING
RETURNING uid";

/// A new validity for every mailbox (the time, or one more than before)
/// and next UIDs `$1` ahead: see `MailStore::after_restore`.
pub(super) const AFTER_RESTORE: &str = "
UPDATE mailboxes
   SET uid_validity = greatest(uid_validity + 1, extract(epoch FROM now())::bigint),
       next_uid = next_uid + $1";

/// How far `after_restore` moves UIDs (and message ids) ahead: more than
/// a restored backup can be behind.
pub(super) const AFTER_RESTORE_GAP: i64 = 1_000_000;

/// A delivery whose UIDL was taken: the counters without it.
pub(super) const UNCOUNT: &str = "
UPDATE mailboxes SET msg_count = msg_count - 1, octets = octets - $2
 WHERE login = $1
RETURNING next_uid - 1";

/// How many UIDs a delivery tries before it gives up (each one taken by
/// an imported message): far more than any real mailbox has in a row.
pub(super) const UIDL_TRIES: usize = 1000;

/// `uidl_format` as an SQL expression over `uid`, `uid_validity`, the
/// message id `$2` (`%g`) and the header's MD5 in hex (`header.md5`, `%m`).
/// Literal text is quoted (the format holds printable ASCII only).
pub(super) fn uidl_sql(format: &UidlFormat) -> String {
    let parts: Vec<String> = format
        .pieces()
        .map(|piece| match piece {
            Piece::Text(t) => format!("'{}'", t.replace('\'', "''")),
            Piece::Var { var, width, hex } => {
                let value = match (var, hex) {
                    (Var::Uid, false) => "uid::text".to_owned(),
                    (Var::Uid, true) => "to_hex(uid)".to_owned(),
                    (Var::Validity, false) => "uid_validity::text".to_owned(),
                    (Var::Validity, true) => "to_hex(uid_validity)".to_owned(),
                    (Var::HeaderMd5, _) => "header.md5".to_owned(),
                    // A GUID: the message's id, 32 hex digits.
                    (Var::Guid, _) => "lpad(to_hex($2::bigint), 32, '0')".to_owned(),
                    // Refused by the configuration check.
                    (Var::File, _) => "''".to_owned(),
                };
                if *width == 0 {
                    value
                } else {
                    format!("lpad({value}, greatest({width}, length({value})), '0')")
                }
            }
        })
        .collect();
    format!("({})", parts.join(" || "))
}
