#!/usr/bin/env bash
# Lays out actions/NAME of this repository as a standalone action repository in DEST, so that
# `uses: codeb/NAME@v1` works (GitHub resolves `owner/repo@ref` to the action.yml at the root
# of that repository):
#   DEST/action.yml        actions/NAME/action.yml, with ../_lib/ rewritten to _lib/
#   DEST/_lib/install.sh   actions/_lib/install.sh (finds or downloads the binary)
#   DEST/_lib/as-root.sh   actions/_lib/as-root.sh (runs a deploy as root: sudo -n unless root)
#   DEST/_lib/checksums.txt, DEST/_lib/VERSION
#                          with CHECKSUMS_DIR: the sha256 of every release asset and the
#                          release tag (write-checksums.sh), which install.sh checks the
#                          downloaded binary against; without it the split action only runs
#                          binaries from PATH (a development split, as the tests make)
#   DEST/README.md         where it comes from and both ways to reference it
# The release workflow (.github/workflows/release.yml) pushes DEST as codeb/NAME with the
# release tag and the moving major tag; the tests run the result with act.
# Usage: split-action.sh NAME DEST [CHECKSUMS_DIR]   (DEST must not exist or be empty)
set -euo pipefail

name="${1:?usage: split-action.sh NAME DEST}"
dest="${2:?usage: split-action.sh NAME DEST}"
checksums="${3:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="${root}/actions/${name}"
fail() {
  echo "split-action: $1" >&2
  exit 1
}

[[ "$name" =~ ^[a-z0-9-]+$ ]] || fail "action name '${name}' must be lower-case letters, digits and -"
[ -f "${src}/action.yml" ] || fail "${src}/action.yml does not exist"
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
  fail "${dest} is not empty"
fi
grep -q '${GITHUB_ACTION_PATH}/../_lib/install.sh' "${src}/action.yml" ||
  fail "${src}/action.yml does not run \${GITHUB_ACTION_PATH}/../_lib/install.sh; update this script"

mkdir -p "${dest}/_lib"
sed 's#${GITHUB_ACTION_PATH}/../_lib/#${GITHUB_ACTION_PATH}/_lib/#g' "${src}/action.yml" >"${dest}/action.yml"
if grep -q '\.\./' "${dest}/action.yml"; then
  fail "${dest}/action.yml still refers outside the action's directory"
fi
install -m 0755 "${root}/actions/_lib/install.sh" "${root}/actions/_lib/as-root.sh" "${dest}/_lib/"
if [ -n "$checksums" ]; then
  [ -s "${checksums}/checksums.txt" ] && [ -s "${checksums}/VERSION" ] ||
    fail "${checksums} must hold checksums.txt and VERSION (templates/release/write-checksums.sh)"
  install -m 0644 "${checksums}/checksums.txt" "${checksums}/VERSION" "${dest}/_lib/"
fi
for f in "${src}"/*; do
  case "$(basename "$f")" in
    action.yml) ;;
    *) cp -R "$f" "${dest}/" ;;
  esac
done

cat >"${dest}/README.md" <<README
# codeb ${name}

This repository is generated from [\`actions/${name}\`](https://github.com/codeb/codeb/tree/main/actions/${name})
of [codeb](https://github.com/codeb/codeb) by each codeb release; change it there. Tags: every
release (\`vX.Y.Z\`) and the moving major tag (\`v1\`).

\`\`\`yaml
- uses: codeb/${name}@v1                  # this repository
# - uses: codeb/codeb/actions/${name}@v1  # the same action, from codeb's own repository
\`\`\`

Inputs and outputs: see [action.yml](action.yml). The action runs \`codeb-${name}\` from the
runner's PATH, or downloads the binary of the release this action was made for
(\`_lib/VERSION\`) and checks it against the sha256 committed here (\`_lib/checksums.txt\`)
before it runs. Pin it by commit, as codeb-workflow-gen does.
README
echo "split-action: ${name} -> ${dest}"
