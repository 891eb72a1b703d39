#!/usr/bin/env bash
# Runs a codeb step that needs root (a deploy writes units into /etc/containers/systemd and
# runs systemctl and rootful podman) the way the job can:
#   - as root (act, a runner that runs as root): the binary itself;
#   - otherwise through `sudo -n`, which codeb-install's rule /etc/sudoers.d/codeb-runner
#     allows for exactly `/usr/local/bin/codeb-quadlet-update deploy` and `rollback` (the
#     action's INPUT_* variables are kept; codeb-quadlet-update checks them when it runs
#     through sudo). Anything else is refused before it runs, with an annotation naming the
#     rule.
# Usage: as-root.sh EXE ARGS...
set -euo pipefail

exe="${1:?usage: as-root.sh EXE ARGS...}"
shift
if [ "$(id -u)" = 0 ]; then
  exec "$exe" "$@"
fi

sudoers=/etc/sudoers.d/codeb-runner
me="$(id -un 2>/dev/null || id -u)"
title="codeb: ${exe##*/} needs root"
if ! command -v sudo >/dev/null 2>&1; then
  echo "::error title=${title}::this job runs as ${me} and sudo is not installed: set up the app server with codeb-install (it installs sudo's rule ${sudoers} for the runner), or run the runner as root"
  exit 2
fi
# `sudo -l CMD` says whether the rule allows exactly this command line, without running it.
if ! sudo -n -l "$exe" "$@" >/dev/null 2>&1; then
  echo "::error title=${title}::sudo -n refused \`${exe} $*\` for ${me}: the rule ${sudoers} (written by codeb-install --runner-...) lets the runner's user run exactly /usr/local/bin/codeb-quadlet-update deploy and rollback as root, without a password. Set up the app server with codeb-install (runner included) so that the job uses the binary it installed in /usr/local/bin"
  exit 2
fi
exec sudo -n "$exe" "$@"
