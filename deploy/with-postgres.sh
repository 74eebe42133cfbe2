#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL server:
#   deploy/with-postgres.sh .venv/bin/pytest -q
# Starts a private server (fresh data directory, free loopback port), creates the
# database, exports DATABASE_URL for the command, and always stops and deletes the server
# afterwards, also when the command fails or is interrupted. Installs the Debian
# `postgresql` package first when running as root and it is missing.
set -euo pipefail

if [ $# -eq 0 ]; then
	echo "usage: $0 COMMAND [ARGS...]" >&2
	exit 2
fi

pg_bin() {
	ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

if [ -z "$(pg_bin)" ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "Installing postgresql"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
	else
		echo "PostgreSQL is not installed: sudo apt-get install -y postgresql" >&2
		exit 1
	fi
fi
BIN="$(pg_bin)"

# initdb refuses to run as root: as root, the server runs as the package's postgres user.
if [ "$(id -u)" = 0 ]; then
	as_owner() { runuser -u postgres -- "$@"; }
else
	as_owner() { "$@"; }
fi

PGTMP="$(mktemp -d /tmp/registry-browser-pg.XXXXXX)"
chmod 755 "$PGTMP"
[ "$(id -u)" = 0 ] && chown postgres: "$PGTMP"
PGDATA="$PGTMP/data"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

cleanup() {
	as_owner "$BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
	rm -rf "$PGTMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_owner "$BIN/initdb" -D "$PGDATA" --username=postgres --auth=trust --encoding=UTF8 --no-locale >"$PGTMP/initdb.log"
# Durability is pointless for a server deleted at exit; without it the suite runs faster.
as_owner "$BIN/pg_ctl" -D "$PGDATA" -l "$PGTMP/server.log" -w -t 30 start \
	-o "-h 127.0.0.1 -p $PORT -k $PGTMP -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null \
	|| { cat "$PGTMP/server.log" >&2; exit 1; }
"$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres registry_browser

export DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/registry_browser"
echo "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT"
"$@"
