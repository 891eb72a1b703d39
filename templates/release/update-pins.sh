#!/usr/bin/env bash
# Pins codeb's own actions in templates/workflows/pins.toml to the commits a release made:
# for each NAME, the `"codeb/NAME"` entry gets `sha` = SHA and `version` = TAG. The release
# workflow runs it with the commit every codeb/<name> repository got for the tag and opens a
# pull request with the result, so generated workflows reference codeb's actions by commit.
# Usage: update-pins.sh PINS TAG NAME=SHA [NAME=SHA ...]
set -euo pipefail

pins="${1:?usage: update-pins.sh PINS TAG NAME=SHA...}"
tag="${2:?usage: update-pins.sh PINS TAG NAME=SHA...}"
shift 2
fail() {
  echo "update-pins: $1" >&2
  exit 1
}
[ "$#" -gt 0 ] || fail "no NAME=SHA given"
[ -f "$pins" ] || fail "${pins} does not exist"
[[ "$tag" =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-.+][0-9A-Za-z.-]+)?$ ]] || fail "'${tag}' is not a release tag such as v1.2.3"
tmp="$(mktemp "${pins}.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cp "$pins" "$tmp"
for pair in "$@"; do
  name="${pair%%=*}"
  sha="${pair#*=}"
  [[ "$name" =~ ^[a-z0-9-]+$ ]] || fail "'${name}' is not an action name"
  [[ "$sha" =~ ^[0-9a-f]{40}$ ]] || fail "${name}: '${sha}' is not a full 40-character commit SHA"
  grep -q "^\"codeb/${name}\" = " "$tmp" || fail "${pins} has no \"codeb/${name}\" entry"
  sed -i "s|^\"codeb/${name}\" = .*|\"codeb/${name}\" = { sha = \"${sha}\", version = \"${tag}\" }|" "$tmp"
done
mv "$tmp" "$pins"
trap - EXIT
echo "update-pins: pinned $* at ${tag} in ${pins}"
