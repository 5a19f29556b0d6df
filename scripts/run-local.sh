#!/usr/bin/env bash
# `make run`: demo ERP + key + config under ./var, one backup of today's partition of every
# enabled asset through Dagster (so it shows in the UI's run history), then the UI on 127.0.0.1:$PORT (3000).
# ERP_BACKUP_VAR=DIR puts all of it under DIR instead of ./var (relative to the repository, or absolute):
# another demo installation, ./var untouched (the browser test of make run uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/.venv/bin
shown=${ERP_BACKUP_VAR:-var}   # as the user named it, in what this script prints
case $shown in
  /*) var=$shown ;;
  *) var=$root/$shown ;;
esac
export DAGSTER_HOME=$var/dagster_home
export PORT=${PORT:-3000}   # the UI, and the run links in alerts ($shown/erp-backup.yaml reads it)
export ERP_BACKUP_CONFIG=$var/erp-backup.yaml
module=erp_backup_pipeline.orchestration.definitions

init_args=(--var "$var")
if [ -n "${PGDATABASE:-}" ]; then init_args+=(--postgres); fi
"$bin/erp-backup" init "${init_args[@]}"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
"$bin/python" -m erp_backup_pipeline.orchestration.pools   # one run per source, from the first run on

today=$(TZ=Europe/Berlin date +%F)
names=$("$bin/python" -c 'import sys
from erp_backup_pipeline.core.sources import KINDS, enabled_sources
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.settings import load_settings
try:
    enabled = enabled_sources(load_settings())
except BackupError as exc:
    sys.exit(f"erp-backup: error: {exc}")
print(" ".join(KINDS)); print(" ".join(enabled))')
all=$(echo "$names" | sed -n 1p)
enabled=$(echo "$names" | sed -n 2p)
for asset in $all; do
  if [[ " $enabled " == *" $asset "* ]]; then
    echo "backing up $asset partition $today ..."
    "$bin/dagster" asset materialize -m "$module" --select "$asset" --partition "$today" >"$var/last-run.log" 2>&1 \
      || { echo "backup of $asset failed; see $shown/last-run.log" >&2; tail -5 "$var/last-run.log" >&2; exit 1; }
  elif [ "$asset" = postgres_dump ]; then
    echo "$asset: skipped (not configured; export PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE and run 'rm $shown/erp-backup.yaml; make run', or edit $shown/erp-backup.yaml)"
  else
    echo "$asset: skipped (not configured; add it under sources: in $shown/erp-backup.yaml, see docs/reference/configuration.md)"
  fi
done

cat <<INFO

Everything is under $var:
  demo ERP        $shown/demo-erp/ (SQLite database $shown/demo-erp/data/production.sqlite3)
  age key         $shown/keys/backup.key (private, 0600) and $shown/keys/backup.pub
  signing key     $shown/keys/signing.key (signs every manifest, 0600) and $shown/keys/signing.pub
  config          $shown/erp-backup.yaml (ERP_BACKUP_CONFIG)
  backups         $shown/backups/
  Dagster home    $shown/dagster_home/
Catalog:
INFO
"$bin/erp-backup" list
echo
echo "Dagster UI on http://127.0.0.1:$PORT (schedules running; Ctrl-C stops it)"
# `dg dev` (Dagster's dg CLI): webserver and daemon. Started in the background, a shell hands it ignored
# SIGINT/SIGTERM; restore the defaults so Ctrl-C and `kill PID` stop it. It runs in $DAGSTER_HOME: started beside the top-level dagster.yaml (the file
# copied there) it would warn that that one is not used.
cd "$DAGSTER_HOME"
exec "$bin/python" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGTERM, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])' "$bin/dg" dev --host 127.0.0.1 --port "$PORT" -m "$module"
