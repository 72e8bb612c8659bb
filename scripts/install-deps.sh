#!/usr/bin/env bash
# Installs the Debian packages dbscope needs, as listed one a line in
# scripts/packages/<part>.txt. With part names as arguments, only those lists
# (core is always included). Installs only what is missing, so a second run
# costs nothing and needs no network. Needs root or sudo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
parts=(core "$@")
want=()
for part in "${parts[@]}"; do
  f="$here/packages/$part.txt"
  [ -f "$f" ] || { echo "install-deps: no package list $f" >&2; exit 2; }
  while read -r pkg _; do
    case "$pkg" in ''|'#'*) continue ;; esac
    want+=("$pkg")
  done < "$f"
done
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
