#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Audit pop3d's TLS with testssl.sh (Debian package testssl.sh): starts the
# bundled example on loopback ports 31110 (STLS) and 31995 (implicit TLS),
# checks protocols, cipher categories, forward secrecy and the known
# vulnerabilities on both, and prints the reports. Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v testssl >/dev/null || { echo "install testssl.sh: apt-get install testssl.sh" >&2; exit 2; }
cargo build -q -p pop3d
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r examples/. "$work/"
sed -i 's/127.0.0.1:1110/127.0.0.1:31110/; s/127.0.0.1:1995/127.0.0.1:31995/' "$work/pop3d.toml"
./target/debug/pop3d serve --config "$work/pop3d.toml" 2>"$work/pop3d.log" &
pid=$!
sleep 1
echo "== STLS (127.0.0.1:31110)"
testssl --quiet --color 0 --warnings off -p -s -f -U -t pop3 127.0.0.1:31110
echo "== implicit TLS (127.0.0.1:31995)"
testssl --quiet --color 0 --warnings off -p -s -f -U 127.0.0.1:31995
