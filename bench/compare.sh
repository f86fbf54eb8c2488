#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Side-by-side benchmark on this machine: pop3d, Debian's Dovecot and a
# do-nothing responder (the ceiling), the same loads against each, in
# alternation, on loopback. Needs root (Dovecot runs as root here) and the
# package dovecot-pop3d. Usage: bench/compare.sh [--reps N] [--duration S] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dovecot >/dev/null 2>&1 || [ ! -e /usr/lib/dovecot/pop3 ]; then
  echo "installing dovecot-pop3d" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-pop3d >/dev/null
fi
cargo build --release -q -p pop3d -p pop3-bench
exec python3 bench/compare.py "$@"
