-- SPDX-License-Identifier: AGPL-3.0-only
-- Compatible with binaries from before it: they do not read the table.

-- App passwords of the users in `users` (`pop3d app-password`): the
-- password itself is never stored, only an HMAC-SHA256 of it under the
-- row's own random key. Last use is written in batches.
CREATE TABLE app_passwords (
    login           text NOT NULL,
    id              text NOT NULL,
    label           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    -- Networks it works from, comma-separated; NULL: anywhere.
    allow_nets      text,
    key             bytea NOT NULL,
    mac             bytea NOT NULL,
    last_used_at    timestamptz,
    last_used_from  text,
    PRIMARY KEY (login, id),
    UNIQUE (login, label)
);
