-- SPDX-License-Identifier: AGPL-3.0-only
-- Compatible with binaries from before it: they do not read the column.

-- Dovecot's allow_nets: where the user may log in from, networks and
-- addresses separated by commas ("192.0.2.0/24,2001:db8::/32"); NULL:
-- anywhere. A value that cannot be read allows nowhere.
ALTER TABLE users ADD COLUMN allow_nets text;
