#!/usr/bin/env bash
# Builds (once) the CONFIG_RUST test kernel and prints its tree's path on stdout.
# Cached outside the repo, keyed by kernel source, config fragments and toolchain versions.
# KERNEL=6.12 (default: Debian's linux-source-6.12) or KERNEL=7.3 (Debian's
# linux-source-7.3 from trixie-backports, fetched into the cache; LLVM 19 and bindgen
# 0.71.1, its minimum versions). The tree's `.prism-make-flags` holds the make variables
# a module build against it needs (the Makefile reads them).
# KERNEL_FLAVOR=debug adds KASAN, lockdep, atomic-sleep checks and kmemleak.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
flavor=${KERNEL_FLAVOR:-default}
version=${KERNEL:-6.12}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/prism-sock
fragments=("$here/kernel.config")
case "$flavor" in
  default) ;;
  debug) fragments+=("$here/kernel-debug.config") ;;
  *) echo "build-kernel: unknown KERNEL_FLAVOR '$flavor' (default|debug)" >&2; exit 2 ;;
esac
case "$version" in
  6.12)
    tarball=/usr/src/linux-source-6.12.tar.xz
    source_version=$(dpkg-query -W -f='${Version}' linux-source-6.12)
    # bindgen loads the libclang of LIBCLANG_PATH: the one of the compiler, not the
    # newest one installed (which refuses flags of the older compiler).
    flags=(LLVM=1 "LIBCLANG_PATH=$(llvm-config --libdir)")
    name=kernel-$flavor
    ;;
  7.3)
    "$here/../scripts/debian-fetch.sh" "$cache/debian" linux-source-7.3 >&2
    tarball=$cache/debian/linux-source-7.3/usr/src/linux-source-7.3.tar.xz
    source_version=$(sha256sum <"$tarball" | cut -c1-16)
    flags=(LLVM=-19 "BINDGEN=$cache/bindgen-0.71.1/bin/bindgen" LIBCLANG_PATH=/usr/lib/llvm-19/lib)
    name=kernel-7.3-$flavor
    ;;
  *) echo "build-kernel: unknown KERNEL '$version' (6.12|7.3)" >&2; exit 2 ;;
esac
key=$( {
  echo "$source_version"
  cat "${fragments[@]}"
  if [[ $version == 6.12 ]]; then
    rustc --version; bindgen --version; clang --version | head -1; ld.lld --version
  else
    rustc --version; echo "${flags[*]}"; clang-19 --version | head -1
  fi
} | sha256sum | cut -c1-16)
kdir=$cache/$name-$key
if [[ -f $kdir/.prism-built ]]; then
  echo "$kdir"
  exit 0
fi

log=$cache/$name-$key.log
mkdir -p "$cache"
# Trees of older keys of this flavor are a few GiB each and never used again.
for old in "$cache/$name-"*; do
  [[ $old == "$kdir" || $old == "$log" ]] || rm -rf "$old"
done
echo "build-kernel: building $flavor kernel into $kdir (log: $log)" >&2
rm -rf "$kdir" && mkdir -p "$kdir"
tar -xf "$tarball" -C "$kdir" --strip-components=1
start=$SECONDS
(
  cd "$kdir"
  make "${flags[@]}" tinyconfig
  scripts/kconfig/merge_config.sh -m .config "${fragments[@]}"
  make "${flags[@]}" olddefconfig
  make "${flags[@]}" rustavailable
  make "${flags[@]}" -j"$(nproc)" bzImage modules
  make "${flags[@]}" -j"$(nproc)" modules_prepare
) >"$log" 2>&1 || { tail -40 "$log" >&2; echo "build-kernel: FAILED, see $log" >&2; exit 1; }

# A fragment option that olddefconfig dropped means a missing dependency: fail loudly.
missing=0
for f in "${fragments[@]}"; do
  while IFS= read -r line; do
    [[ $line =~ ^(CONFIG_[A-Z0-9_]+)=(y|m)$ ]] || continue
    sym=${BASH_REMATCH[1]}
    grep -qx "$sym=[ym]" "$kdir/.config" && continue
    # An option this series no longer has (7.x folded PROC_SYSCTL into SYSCTL).
    if ! grep -rqsx --include='Kconfig*' "config ${sym#CONFIG_}" "$kdir"; then
      echo "build-kernel: $sym does not exist in this kernel (skipped)" >&2
      continue
    fi
    echo "build-kernel: $sym not set" >&2
    missing=1
  done <"$f"
done
((missing == 0)) || { echo "build-kernel: config fragment not fully applied" >&2; exit 1; }
echo "${flags[*]}" >"$kdir/.prism-make-flags"
touch "$kdir/.prism-built"
echo "build-kernel: done in $((SECONDS - start)) s" >&2
echo "$kdir"
