-- SPDX-License-Identifier: AGPL-3.0-only
-- Retention policy and quota: per-user settings beside the secret, when a
-- message was first retrieved (EXPIRE), and the trash of `delete = "trash"`.

-- NULL: the server's value. The same forms as a passwd file's userdb
-- fields: expire "never"|"0"|"30d", login_delay "5m", quota_rule
-- "*:storage=1G" or "*:messages=1000".
ALTER TABLE users
    ADD COLUMN expire       text,
    ADD COLUMN login_delay  text,
    ADD COLUMN quota_rule   text;

-- A trashed message keeps its row, UID and UIDL, out of POP3's sight and
-- out of the mailbox's counters (so out of quota), until a restore or the
-- retention sweep.
ALTER TABLE messages
    ADD COLUMN retrieved_at  timestamptz,
    ADD COLUMN trashed_at    timestamptz;

CREATE INDEX messages_trashed ON messages (trashed_at) WHERE trashed_at IS NOT NULL;
