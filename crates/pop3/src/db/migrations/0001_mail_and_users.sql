-- SPDX-License-Identifier: AGPL-3.0-only
-- Mailboxes, messages with their bodies in slices, the maildrop lease and
-- pop3d's own users. Never edited once shipped: later changes are new files.

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    -- Lower-cased, as the passwd file's names are matched.
    login       text NOT NULL UNIQUE CHECK (login = lower(login) AND login <> ''),
    -- "{SCHEME}secret", the same strings as in a passwd file.
    secret      text NOT NULL,
    disabled    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Keyed by login, not by users.id: users may come from a passwd file or an
-- existing table (password_query) as well as from `users`.
CREATE TABLE mailboxes (
    id            bigserial PRIMARY KEY,
    login         text NOT NULL UNIQUE,
    uid_validity  bigint NOT NULL DEFAULT extract(epoch FROM now())::bigint,
    next_uid      bigint NOT NULL DEFAULT 1 CHECK (next_uid >= 1),
    msg_count     bigint NOT NULL DEFAULT 0 CHECK (msg_count >= 0),
    -- POP3 octets of all messages.
    octets        bigint NOT NULL DEFAULT 0 CHECK (octets >= 0)
) WITH (fillfactor = 50);  -- room for HOT updates of the counters

CREATE SEQUENCE message_ids;

CREATE TABLE messages (
    id           bigint PRIMARY KEY,
    mailbox_id   bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid          bigint NOT NULL,
    uidl         text NOT NULL,
    -- What RETR sends before the final ".": CRLF line ends, no stuffing.
    size         bigint NOT NULL CHECK (size >= 0),
    -- Rows in bodies.
    parts        integer NOT NULL CHECK (parts >= 1),
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mailbox_id, uid),
    UNIQUE (mailbox_id, uidl)
);

-- The message as delivered, in parts of at most 8000 octets stored in the
-- row itself: no TOAST (reading a TOASTed megabyte costs PostgreSQL about
-- seven times as much as reading it from plain rows), any size (past
-- bytea's 1 GB), and a slice of parts read with one index range scan.
-- Written before the message row, in the same transaction.
CREATE TABLE bodies (
    message_id  bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE
                DEFERRABLE INITIALLY DEFERRED,
    part        integer NOT NULL,
    data        bytea NOT NULL CHECK (octet_length(data) <= 8000),
    PRIMARY KEY (message_id, part)
);
ALTER TABLE bodies ALTER COLUMN data SET STORAGE PLAIN;

-- The RFC 1939 exclusive lock across nodes. A free lease keeps its row
-- (expires_at = -infinity) so that epochs only ever grow.
CREATE TABLE maildrop_lease (
    mailbox_id  bigint PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    node        text NOT NULL,
    boot        text NOT NULL,
    session     bigint NOT NULL,
    epoch       bigint NOT NULL,
    expires_at  timestamptz NOT NULL
) WITH (fillfactor = 50);  -- every login and QUIT updates its row in place
CREATE INDEX maildrop_lease_holder ON maildrop_lease (node, boot);
