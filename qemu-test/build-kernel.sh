#!/usr/bin/env bash
# Builds (once) the CONFIG_RUST test kernel and prints its tree's path on stdout.
# Cached outside the repo, keyed by kernel source, config fragments and toolchain versions.
# KERNEL_FLAVOR=debug adds KASAN, lockdep, atomic-sleep checks and kmemleak.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
flavor=${KERNEL_FLAVOR:-default}
tarball=/usr/src/linux-source-6.12.tar.xz
fragments=("$here/kernel.config")
case "$flavor" in
  default) ;;
  debug) fragments+=("$here/kernel-debug.config") ;;
  *) echo "build-kernel: unknown KERNEL_FLAVOR '$flavor' (default|debug)" >&2; exit 2 ;;
esac

key=$( {
  dpkg-query -W -f='${Version}\n' linux-source-6.12
  cat "${fragments[@]}"
  rustc --version; bindgen --version; clang --version | head -1; ld.lld --version
} | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/prism-sock
kdir=$cache/kernel-$flavor-$key
if [[ -f $kdir/.prism-built ]]; then
  echo "$kdir"
  exit 0
fi

log=$cache/kernel-$flavor-$key.log
mkdir -p "$cache"
# Trees of older keys of this flavor are a few GiB each and never used again.
for old in "$cache/kernel-$flavor-"*; do
  [[ $old == "$kdir" || $old == "$log" ]] || rm -rf "$old"
done
echo "build-kernel: building $flavor kernel into $kdir (log: $log)" >&2
rm -rf "$kdir" && mkdir -p "$kdir"
tar -xf "$tarball" -C "$kdir" --strip-components=1
start=$SECONDS
(
  cd "$kdir"
  make LLVM=1 tinyconfig
  scripts/kconfig/merge_config.sh -m .config "${fragments[@]}"
  make LLVM=1 olddefconfig
  make LLVM=1 rustavailable
  make LLVM=1 -j"$(nproc)" bzImage modules
  make LLVM=1 -j"$(nproc)" modules_prepare
) >"$log" 2>&1 || { tail -40 "$log" >&2; echo "build-kernel: FAILED, see $log" >&2; exit 1; }

# A fragment option that olddefconfig dropped means a missing dependency: fail loudly.
missing=0
for f in "${fragments[@]}"; do
  while IFS= read -r line; do
    [[ $line =~ ^(CONFIG_[A-Z0-9_]+)=(y|m)$ ]] || continue
    grep -qx "${BASH_REMATCH[1]}=[ym]" "$kdir/.config" || { echo "build-kernel: ${BASH_REMATCH[1]} not set" >&2; missing=1; }
  done <"$f"
done
((missing == 0)) || { echo "build-kernel: config fragment not fully applied" >&2; exit 1; }
touch "$kdir/.prism-built"
echo "build-kernel: done in $((SECONDS - start)) s" >&2
echo "$kdir"
