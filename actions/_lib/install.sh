#!/usr/bin/env bash
# Puts a codeb binary where the next step can run it, and prints its path as the step
# output `path`:
#   1. the binary on PATH, if there is one (the self-hosted runner has them installed);
#   2. otherwise the release binary of THIS action release, for the runner's OS and
#      architecture, checked before it is unpacked or run against the sha256 committed into
#      the released action (`checksums.txt` beside this script, written by codeb's release
#      workflow together with `VERSION`). The release's own `.sha256` files are not trusted:
#      they come from the same place as the binary, so they prove nothing about it.
# The version is the one this action release was made for (no `latest`). Downloads go to a
# private directory under $RUNNER_TEMP (or the runner's tool cache), never /tmp.
# Environment: CODEB_BIN (binary name, required), CODEB_RELEASE_URL (releases base URL, for
# mirrors; default https://github.com/codeb/codeb/releases; the checksum still comes from
# this action).
set -euo pipefail

bin="${CODEB_BIN:?CODEB_BIN must name the binary to install}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() {
  echo "::error title=codeb: cannot install ${bin}::$1"
  exit 1
}

if path="$(command -v "$bin")"; then
  echo "Using ${path}"
  echo "path=${path}" >>"${GITHUB_OUTPUT:-/dev/null}"
  exit 0
fi

[[ "$bin" =~ ^codeb-[a-z0-9-]+$ ]] || fail "CODEB_BIN '${bin}' is not a codeb binary name"
if [ ! -f "${here}/checksums.txt" ] || [ ! -f "${here}/VERSION" ]; then
  fail "${bin} is not on PATH, and this copy of the action has no checksums.txt/VERSION (only a released action carries them): use a released action pinned by commit (see codeb's templates/workflows/pins.toml), or install ${bin} on the runner's PATH"
fi
version="$(head -n 1 "${here}/VERSION" | tr -d '[:space:]')"
[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-.+][0-9A-Za-z.-]+)?$ ]] ||
  fail "${here}/VERSION holds '${version}', not a release tag such as v1.2.3"

case "$(uname -s)" in
  Linux) os=unknown-linux-gnu ;;
  *) fail "no release build for $(uname -s); install ${bin} on the runner's PATH" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) fail "no release build for $(uname -m); install ${bin} on the runner's PATH" ;;
esac
asset="${bin}-${arch}-${os}.tar.gz"
expected="$(awk -v a="$asset" '$2 == a || $2 == "*" a { print tolower($1); exit }' "${here}/checksums.txt")"
[[ "$expected" =~ ^[0-9a-f]{64}$ ]] ||
  fail "${here}/checksums.txt has no sha256 for ${asset} (release ${version})"

# A private directory (mode 0700) under the runner's own temp or tool cache: never the
# world-writable /tmp, where another user could swap the file between check and use.
parent="${RUNNER_TEMP:-}"
if [ -z "$parent" ] && [ -n "${RUNNER_TOOL_CACHE:-}" ]; then
  parent="${RUNNER_TOOL_CACHE}/codeb"
  mkdir -p "$parent"
fi
[ -n "$parent" ] && [ -d "$parent" ] ||
  fail "neither RUNNER_TEMP nor RUNNER_TOOL_CACHE names a directory (this script runs in a GitHub Actions step)"
work="$(umask 077 && mktemp -d "${parent%/}/codeb-${bin#codeb-}.XXXXXXXX")"
chmod 0700 "$work"
trap 'rm -rf "${work}/download"' EXIT
mkdir -m 0700 "${work}/download" "${work}/bin"

base="${CODEB_RELEASE_URL:-https://github.com/codeb/codeb/releases}"
base="${base%/}"
url="${base}/download/${version}/${asset}"
echo "Downloading ${url}"
curl -fsSL --proto '=https,http' --retry 3 --connect-timeout 10 --max-time 300 \
  -o "${work}/download/${asset}" "$url" || fail "download of ${url} failed"

actual="$(sha256sum "${work}/download/${asset}" | awk '{ print $1 }')"
if [ "$expected" != "$actual" ]; then
  fail "checksum mismatch for ${asset}: this action release (${version}) expects ${expected}, the download has ${actual}; it was discarded and not run"
fi

tar -xzf "${work}/download/${asset}" -C "${work}/download" "$bin" || fail "${asset} does not contain ${bin}"
install -m 0755 "${work}/download/${bin}" "${work}/bin/${bin}"
echo "Installed ${work}/bin/${bin} (${version}, sha256 ${actual})"
echo "path=${work}/bin/${bin}" >>"${GITHUB_OUTPUT:-/dev/null}"
