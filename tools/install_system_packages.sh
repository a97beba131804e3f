#!/usr/bin/env bash
# Install the Debian packages listed in tools/system-packages.txt that are not installed yet.
# Needs root (CI and these machines run as root); elsewhere it prints what to install and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=tools/system-packages.txt

missing=()
suites=()
while read -r line; do
  line=${line%%#*}; line=$(echo "$line" | xargs)
  [ -n "$line" ] || continue
  name=${line%@*}
  suite=""
  [ "$line" != "$name" ] && suite=${line#*@}
  if ! dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$name"); suites+=("$suite")
  fi
done < "$LIST"
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "Error: the tests need these Debian packages: ${missing[*]} (install them as root: apt-get install ...)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
# A suite named in the list (bookworm-backports) must be known to apt before it is used.
for s in "${suites[@]}"; do
  if [ -n "$s" ] && ! grep -rqs "$s" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$s" > "/etc/apt/sources.list.d/edgecls-$s.sources"
  fi
done
"${APT[@]}" update >/dev/null
for i in "${!missing[@]}"; do
  if [ -n "${suites[$i]}" ]; then
    "${APT[@]}" install --no-install-recommends -t "${suites[$i]}" "${missing[$i]}" >/dev/null
  else
    "${APT[@]}" install --no-install-recommends "${missing[$i]}" >/dev/null
  fi
done
echo "Installed Debian packages: ${missing[*]}"
