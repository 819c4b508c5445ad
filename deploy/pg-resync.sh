#!/bin/sh
# pg-resync.sh: makes a PostgreSQL instance a streaming replica of the current primary again,
# for Strata's `health.resync_command` hook (docs/operations.md, "Replica resync hook").
#
# Usage:
#   pg-resync.sh --data DIR [--bin DIR] [--log FILE] [--user USER] [--no-sync]
#                [--name NAME] [--port PORT] [--primary-conninfo CONNINFO]
#
#   --data DIR       the instance's data directory (required), e.g. /srv/pg/{name}
#   --bin DIR        PostgreSQL's programs (default /usr/lib/postgresql/15/bin, else
#                    `pg_config --bindir`)
#   --log FILE       server log for `pg_ctl start` (default DIR.log, next to the data directory)
#   --user USER      when run as root, run PostgreSQL's programs as USER through `runuser -u`
#                    (default postgres); ignored otherwise
#   --no-sync        pass --no-sync to pg_rewind and pg_basebackup: no fsync of the copied
#                    files (for test clusters running with fsync = off; never in production)
#   --name NAME, --port PORT, --primary-conninfo CONNINFO
#                    override STRATA_INSTANCE, STRATA_INSTANCE_PORT, STRATA_PRIMARY_CONNINFO
#                    (e.g. when run through sudo or ssh, which do not pass the environment on)
#
# Strata runs the command through `sh -c` with these variables set (and the same values in the
# placeholders {name} {host} {port} {primary_name} {primary_host} {primary_port}):
#   STRATA_INSTANCE, STRATA_INSTANCE_HOST, STRATA_INSTANCE_PORT   the instance to resync
#   STRATA_PRIMARY_NAME, STRATA_PRIMARY_HOST, STRATA_PRIMARY_PORT the current primary
#   STRATA_PRIMARY_CONNINFO   the primary_conninfo the instance should use (keyword=value form),
#                             e.g. "host=10.0.0.5 port=5432 user=postgres application_name=pg1"
#
# It runs on the instance's host (wrap it in ssh otherwise) and:
#   1. checks that the primary answers and is not in recovery (else exits 1, nothing touched);
#   2. stops the instance if it runs (pg_ctl stop -m fast, then -m immediate);
#   3. CHECKPOINT on the primary (so its control file shows a recent promotion's timeline), then
#      pg_rewind --target-pgdata DIR --source-server "CONNINFO dbname=postgres";
#   4. if pg_rewind fails: empties DIR and clones the primary with
#      pg_basebackup -R -X stream -c fast (not when DIR holds files but no PG_VERSION, nor when
#      the primary stopped answering);
#   5. restores the instance's own port and cluster_name (the copied postgresql.conf carries the
#      primary's), writes standby.signal and primary_conninfo = CONNINFO (postgresql.auto.conf);
#   6. pg_ctl -w start -l LOG.
# It prints "resync: pg_rewind ok" or "resync: pg_rewind failed, pg_basebackup ok", and exits 0
# once the instance accepts connections as a standby; any failure exits non-zero with a
# "resync: error: ..." line on stderr.
#
# pg_rewind needs `wal_log_hints = on` (or data checksums) on the instance, and a role on the
# primary that may run it and CHECKPOINT (a superuser, or pg_checkpoint plus the grants listed
# in pg_rewind's documentation); pg_basebackup needs a REPLICATION role and a free WAL sender.
set -u

say() { printf 'resync: %s\n' "$*"; }
die() {
  printf 'resync: error: %s\n' "$*" >&2
  exit 1
}
usage() {
  [ $# -gt 0 ] && printf 'resync: error: %s\n' "$*" >&2
  sed -n '5,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
# Prints captured program output, indented, to stdout (Strata logs it).
show() { [ -s "$1" ] && sed 's/^/    /' "$1"; }

DATA=
BIN=
LOG=
RUN_AS=postgres
NO_SYNC=
NAME=${STRATA_INSTANCE:-}
PORT=${STRATA_INSTANCE_PORT:-}
CONNINFO=${STRATA_PRIMARY_CONNINFO:-}

while [ $# -gt 0 ]; do
  case $1 in
    --data | --bin | --log | --user | --name | --port | --primary-conninfo)
      [ $# -ge 2 ] || usage "$1 needs a value"
      opt=$1 val=$2
      shift 2
      ;;
    --*=*)
      opt=${1%%=*} val=${1#*=}
      shift
      ;;
    --no-sync)
      NO_SYNC=--no-sync
      shift
      continue
      ;;
    -h | --help) usage ;;
    *) usage "unknown argument: $1" ;;
  esac
  case $opt in
    --data) DATA=$val ;;
    --bin) BIN=$val ;;
    --log) LOG=$val ;;
    --user) RUN_AS=$val ;;
    --name) NAME=$val ;;
    --port) PORT=$val ;;
    --primary-conninfo) CONNINFO=$val ;;
    *) usage "unknown option: $opt" ;;
  esac
done

[ -n "$DATA" ] || usage "--data is required"
case $DATA in
  /*) ;;
  *) DATA=$(pwd)/$DATA ;;
esac
DATA=${DATA%/}
[ -n "$DATA" ] || die "refusing to use / as the data directory"
[ -n "$LOG" ] || LOG=$DATA.log
case $LOG in
  /*) ;;
  *) LOG=$(pwd)/$LOG ;;
esac
if [ -z "$BIN" ]; then
  BIN=/usr/lib/postgresql/15/bin
  [ -x "$BIN/pg_ctl" ] || BIN=$(pg_config --bindir 2>/dev/null) || BIN=
fi
for prog in pg_ctl pg_rewind pg_basebackup psql; do
  [ -x "$BIN/$prog" ] || die "no $prog in '${BIN:-?}' (set --bin)"
done
[ -n "$NAME" ] || die "the instance's name is unknown (STRATA_INSTANCE or --name)"
case $PORT in
  '' | *[!0-9]*) die "the instance's port is unknown or invalid: '$PORT' (STRATA_INSTANCE_PORT or --port)" ;;
esac
if [ -z "$CONNINFO" ] && [ -n "${STRATA_PRIMARY_HOST:-}" ] && [ -n "${STRATA_PRIMARY_PORT:-}" ]; then
  CONNINFO="host=$STRATA_PRIMARY_HOST port=$STRATA_PRIMARY_PORT user=$RUN_AS application_name=$NAME"
fi
[ -n "$CONNINFO" ] || die "the primary is unknown (STRATA_PRIMARY_CONNINFO or --primary-conninfo)"
if [ -n "${STRATA_INSTANCE_HOST:-}" ] && [ "${STRATA_INSTANCE_HOST:-}" = "${STRATA_PRIMARY_HOST:-}" ] &&
  [ "$PORT" = "${STRATA_PRIMARY_PORT:-}" ]; then
  die "refusing to resync $NAME: it is the primary ($STRATA_PRIMARY_HOST:$PORT)"
fi

# PostgreSQL's programs refuse to run as root (and the files they write must belong to USER).
if [ "$(id -u)" -eq 0 ]; then
  PATH=$PATH:/usr/sbin:/sbin
  command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is missing"
  id "$RUN_AS" >/dev/null 2>&1 || die "no user '$RUN_AS' to run PostgreSQL as (--user)"
  as_pg() { runuser -u "$RUN_AS" -- "$@"; }
else
  as_pg() { "$@"; }
fi
# A directory every account can enter (PostgreSQL's programs resolve the current directory).
cd / || die "cannot cd /"
# Each program's output, shown when it matters.
OUT=$(mktemp "${TMPDIR:-/tmp}/pg-resync.XXXXXX") || die "mktemp failed"
trap 'rm -f "$OUT"' EXIT
# Connections of this script show as pg-resync on the primary (later keywords win in libpq).
SOURCE="$CONNINFO dbname=postgres application_name=pg-resync"
case $CONNINFO in
  *connect_timeout=*) ;;
  *) SOURCE="$SOURCE connect_timeout=10" ;;
esac

# 1. The primary must answer, as a primary, before anything is touched.
if ! as_pg "$BIN/psql" -X -w -q -A -t -d "$SOURCE" -c 'SELECT pg_is_in_recovery()' >"$OUT" 2>&1; then
  show "$OUT"
  die "primary unreachable ($CONNINFO): $NAME left as it was"
fi
[ "$(cat "$OUT")" = f ] || die "the primary ($CONNINFO) is in recovery, not a primary: $NAME left as it was"

# 2. Stop the instance (pg_ctl status: 0 running, 3 not running, 4 no data directory).
if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  if as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >"$OUT" 2>&1; then
    say "$NAME stopped (fast)"
  elif as_pg "$BIN/pg_ctl" -D "$DATA" -m immediate -w -t 60 stop >"$OUT" 2>&1; then
    say "$NAME stopped (immediate)"
  else
    show "$OUT"
    die "cannot stop $NAME ($DATA)"
  fi
fi

# 3. pg_rewind; 4. else a fresh copy. pg_rewind reads the source's timeline from its control
# file, which a just-promoted primary updates only at its next checkpoint: without one, it would
# find both on the same timeline and say "no rewind required" for diverged data.
if ! as_pg "$BIN/psql" -X -w -q -d "$SOURCE" -c 'CHECKPOINT' >"$OUT" 2>&1; then
  show "$OUT"
  say "warning: CHECKPOINT on the primary failed; pg_rewind may miss a recent promotion"
fi
if as_pg "$BIN/pg_rewind" $NO_SYNC --target-pgdata="$DATA" --source-server="$SOURCE" >"$OUT" 2>&1; then
  show "$OUT"
  say "pg_rewind ok"
else
  show "$OUT"
  if [ -e "$DATA" ] && [ ! -f "$DATA/PG_VERSION" ] && [ -n "$(ls -A "$DATA" 2>/dev/null)" ]; then
    die "pg_rewind failed and $DATA is not empty but holds no PG_VERSION: refusing to wipe it"
  fi
  # Not for a primary that went away meanwhile: the data would be lost for nothing.
  if ! as_pg "$BIN/psql" -X -w -q -d "$SOURCE" -c 'SELECT 1' >"$OUT" 2>&1; then
    show "$OUT"
    die "pg_rewind failed and the primary is unreachable ($CONNINFO): $NAME left stopped, $DATA kept"
  fi
  say "pg_rewind failed; emptying $DATA for pg_basebackup"
  if [ -d "$DATA" ]; then
    find "$DATA" -mindepth 1 -maxdepth 1 -exec rm -rf {} + || die "cannot empty $DATA"
  else
    as_pg mkdir -p -m 0700 "$DATA" || die "cannot create $DATA"
  fi
  if ! as_pg "$BIN/pg_basebackup" $NO_SYNC -D "$DATA" -d "$SOURCE" -R -X stream -c fast >"$OUT" 2>&1; then
    show "$OUT"
    die "pg_rewind failed, pg_basebackup failed: $NAME is down with an empty $DATA"
  fi
  show "$OUT"
  say "pg_rewind failed, pg_basebackup ok"
fi

# 5. This instance's identity, as a standby of the primary. Files are created as USER and then
# rewritten in place, so they keep their owner.
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }
as_pg touch "$DATA/standby.signal" "$DATA/postgresql.auto.conf" || die "cannot write to $DATA"
rm -f "$DATA/recovery.signal"
{
  printf '\n# pg-resync.sh: %s'\''s own settings (the copy from the primary carries its own)\n' "$NAME"
  printf 'port = %s\n' "$PORT"
  printf 'cluster_name = %s\n' "$(quote "$NAME")"
} >>"$DATA/postgresql.conf" || die "cannot write $DATA/postgresql.conf"
auto=$(grep -v -E '^[[:space:]]*primary_conninfo[[:space:]]*=' "$DATA/postgresql.auto.conf")
{
  [ -n "$auto" ] && printf '%s\n' "$auto"
  printf 'primary_conninfo = %s\n' "$(quote "$CONNINFO")"
} >"$DATA/postgresql.auto.conf" || die "cannot write $DATA/postgresql.auto.conf"

# 6. Start it; pg_ctl -w returns once it accepts connections (as a hot standby).
if [ "$(id -u)" -eq 0 ]; then
  [ -e "$LOG" ] || : >"$LOG" || die "cannot create $LOG"
  chown "$RUN_AS" "$LOG" || die "cannot chown $LOG to $RUN_AS"
fi
if ! as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 300 start >"$OUT" 2>&1; then
  show "$OUT"
  tail -n 20 "$LOG" 2>/dev/null | sed 's/^/    log: /'
  die "$NAME did not start ($DATA, log $LOG)"
fi
say "$NAME started as a standby of $CONNINFO"
