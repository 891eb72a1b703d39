#!/usr/bin/env bash
# Puts a codeb binary where the next step can run it, and prints its path as the step
# output `path`:
#   1. the binary on PATH, if there is one (the self-hosted runner has them installed);
#   2. otherwise the release binary for this runner's OS and architecture, downloaded and
#      checked against its published sha256 before it is unpacked or run.
# Environment: CODEB_BIN (binary name, required), CODEB_VERSION (release tag or `latest`),
# CODEB_RELEASE_URL (releases base URL, default https://github.com/codeb/codeb/releases).
set -euo pipefail

bin="${CODEB_BIN:?CODEB_BIN must name the binary to install}"
fail() {
  echo "::error title=codeb: cannot install ${bin}::$1"
  exit 1
}

if path="$(command -v "$bin")"; then
  echo "Using ${path}"
  echo "path=${path}" >>"${GITHUB_OUTPUT:-/dev/null}"
  exit 0
fi

case "$(uname -s)" in
  Linux) os=unknown-linux-gnu ;;
  *) fail "no release build for $(uname -s); install ${bin} on the runner's PATH" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) fail "no release build for $(uname -m); install ${bin} on the runner's PATH" ;;
esac

version="${CODEB_VERSION:-latest}"
base="${CODEB_RELEASE_URL:-https://github.com/codeb/codeb/releases}"
base="${base%/}"
if [ "$version" = latest ]; then
  url="${base}/latest/download"
else
  url="${base}/download/${version}"
fi
asset="${bin}-${arch}-${os}.tar.gz"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "Downloading ${url}/${asset}"
curl -fsSL --retry 3 --connect-timeout 10 -o "${tmp}/${asset}" "${url}/${asset}" ||
  fail "download of ${url}/${asset} failed"
curl -fsSL --retry 3 --connect-timeout 10 -o "${tmp}/${asset}.sha256" "${url}/${asset}.sha256" ||
  fail "download of ${url}/${asset}.sha256 failed"

expected="$(awk 'NR == 1 { print tolower($1) }' "${tmp}/${asset}.sha256")"
[[ "$expected" =~ ^[0-9a-f]{64}$ ]] || fail "${asset}.sha256 does not hold a sha256 digest"
actual="$(sha256sum "${tmp}/${asset}" | awk '{ print $1 }')"
if [ "$expected" != "$actual" ]; then
  fail "checksum mismatch for ${asset}: expected ${expected}, got ${actual}; the download was discarded"
fi

dest="${RUNNER_TOOL_CACHE:-${RUNNER_TEMP:-/tmp}}/codeb/${version}/${arch}"
mkdir -p "$dest"
tar -xzf "${tmp}/${asset}" -C "$tmp" "$bin" || fail "${asset} does not contain ${bin}"
install -m 0755 "${tmp}/${bin}" "${dest}/${bin}"
echo "Installed ${dest}/${bin} (sha256 ${actual})"
echo "path=${dest}/${bin}" >>"${GITHUB_OUTPUT:-/dev/null}"
