#!/usr/bin/env bash
# Fetches Debian packages from trixie-backports and unpacks each into DIR/PACKAGE,
# without touching the host's apt configuration: a private sources list and package
# lists under DIR, `apt-get download`, `dpkg-deb -x`. Packages already unpacked are
# skipped. Prints nothing but errors on success.
# Usage: debian-fetch.sh DIR PACKAGE...
set -euo pipefail
dir=${1:?usage: debian-fetch.sh DIR PACKAGE...}
shift
mkdir -p "$dir/apt/lists/partial" "$dir/apt/archives/partial" "$dir/debs"
cat >"$dir/apt/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
LIST
opts=(-o "Dir::Etc::SourceList=$dir/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache::Archives=$dir/apt/archives"
  -o Dir::State::Status=/dev/null -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root -qq)
todo=()
for p in "$@"; do [[ -f $dir/$p/.unpacked ]] || todo+=("$p"); done
((${#todo[@]})) || exit 0
if [[ ! -f $dir/apt/.updated ]] || [[ -n $(find "$dir/apt/.updated" -mmin +1440) ]]; then
  apt-get "${opts[@]}" update && touch "$dir/apt/.updated"
fi
for p in "${todo[@]}"; do
  (cd "$dir/debs" && apt-get "${opts[@]}" download "$p")
  deb=$(ls -t "$dir/debs/${p}_"*.deb | head -1)
  rm -rf "${dir:?}/$p" && mkdir -p "$dir/$p"
  dpkg-deb -x "$deb" "$dir/$p"
  touch "$dir/$p/.unpacked"
done
