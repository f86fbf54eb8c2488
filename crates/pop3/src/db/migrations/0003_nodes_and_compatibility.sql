-- SPDX-License-Identifier: AGPL-3.0-only
-- Compatible with binaries from before it: they read neither.

-- Whether binaries from before a migration may keep running on it (a
-- rolling upgrade), as the binary that applied it declared.
ALTER TABLE pop3d_schema
    ADD COLUMN IF NOT EXISTS compatible boolean NOT NULL DEFAULT false;

-- Which run of pop3d holds each node name, and its last sign of life: a
-- second process under a name that another still renews refuses to start
-- rather than free that run's leases.
-- `pop3d user disable --no-mail`: deliveries refused too (a disabled user
-- otherwise keeps receiving mail).
ALTER TABLE users ADD COLUMN refuse_mail boolean NOT NULL DEFAULT false;

-- When the holder took a lease (`pop3d lease list` shows the session's
-- age); NULL where an older binary took it.
ALTER TABLE maildrop_lease ADD COLUMN acquired_at timestamptz;

CREATE TABLE pop3d_nodes (
    name        text PRIMARY KEY,
    run         text NOT NULL,
    host        text NOT NULL,
    heartbeat   timestamptz NOT NULL
);
