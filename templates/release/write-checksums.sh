#!/usr/bin/env bash
# Writes what a released action carries to verify its binaries (actions/_lib/install.sh):
#   OUT/checksums.txt  `sha256sum` lines of every release asset (*.tar.gz in DIST)
#   OUT/VERSION        the release tag the action downloads
# The release workflow runs it on the assets it has just built and commits the two files into
# the released actions (the monorepo's release commit and every codeb/<name> repository), so
# the checksum a runner checks comes from the action it pinned by commit, not from the same
# download location as the binary.
# Usage: write-checksums.sh DIST TAG OUT
set -euo pipefail

dist="${1:?usage: write-checksums.sh DIST TAG OUT}"
tag="${2:?usage: write-checksums.sh DIST TAG OUT}"
out="${3:?usage: write-checksums.sh DIST TAG OUT}"
fail() {
  echo "write-checksums: $1" >&2
  exit 1
}

[[ "$tag" =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-.+][0-9A-Za-z.-]+)?$ ]] || fail "'${tag}' is not a release tag such as v1.2.3"
[ -d "$dist" ] || fail "${dist} is not a directory"
shopt -s nullglob
assets=("$dist"/*.tar.gz)
[ "${#assets[@]}" -gt 0 ] || fail "${dist} holds no *.tar.gz assets"
mkdir -p "$out"
(cd "$dist" && sha256sum -- *.tar.gz) >"${out}/checksums.txt.tmp"
mv "${out}/checksums.txt.tmp" "${out}/checksums.txt"
printf '%s\n' "$tag" >"${out}/VERSION"
echo "write-checksums: ${#assets[@]} assets of ${tag} -> ${out}/checksums.txt"
