#!/usr/bin/env bash
# Installs the programs the tests, the demo and the runbook need, from Debian's packages.
# As root it runs apt-get; otherwise it names what to install and fails.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
pg_bin() { command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; }

have pg_dump && have pg_restore && pg_bin || need+=(postgresql postgresql-client)
have redis-server && have redis-check-rdb || need+=(redis-server)
have age || need+=(age)
have zstd || need+=(zstd)
have gpg || need+=(gnupg)
have sqlite3 || need+=(sqlite3)
have ssh-keygen || need+=(openssh-client)   # the runbook checks a manifest's signature with ssh-keygen -Y verify
have jq || need+=(jq)   # ... and the artifact's sha256 from the manifest
have promtool && have prometheus || need+=(prometheus)   # alert-rule tests and the scrape test
have prometheus-pushgateway || need+=(prometheus-pushgateway)   # the optional per-run push, tested
have pgbackrest || need+=(pgbackrest)   # point-in-time recovery (pitr:)
have runuser || need+=(util-linux)
have systemd-analyze || need+=(systemd)   # test_deploy verifies the units
have chromium || need+=(chromium)   # browser test of the Dagster UI (Playwright drives it; never `playwright install`)
have nginx || need+=(nginx)    # the authenticating proxy in front of the read-only UI, tested in a browser
have rsync || need+=(rsync)    # make bench: the original strategy's rsync --link-dest baseline
[ -x /usr/bin/time ] || need+=(time)   # make bench: peak RSS of the shell-script baseline

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
