#!/usr/bin/env bash
# Debian's stock 7.3 kernel, unmodified: fetches its image, modules and base packages
# and the matching linux-source-7.3 from trixie-backports (scripts/debian-fetch.sh,
# the host's apt configuration untouched), prepares the kernel crate that the headers
# package lacks with Debian's own .config and toolchain (a trixie build root made with
# debootstrap: its rustc 1.85.1 is the one the kernel was built with, which Rust symbol
# names depend on, and gcc-14), and builds prism_sock.ko against it there with DKMS.
# Prints KEY=VALUE lines: the prepared source tree, the kernel image and the module.
# Usage: stock-kernel.sh REPO
set -euo pipefail
repo=${1:?usage: stock-kernel.sh REPO}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/prism-sock
release=7.3.4+deb13-amd64
debs=$cache/debian
root=$cache/trixie-root
log=$cache/stock-$release.log
say() { echo "stock-kernel: $*" >&2; }

"$repo/scripts/debian-fetch.sh" "$debs" linux-source-7.3 "linux-binary-$release" \
  "linux-modules-$release" "linux-base-$release" "linux-headers-$release" >&2
# One tree as virtme-ng expects an installed kernel: image and modules side by side.
boot=$cache/stock-$release/usr/lib/modules/$release
if [[ ! -f $boot/vmlinuz ]]; then
  mkdir -p "$boot"
  for p in binary modules base; do
    cp -a "$debs/linux-$p-$release/usr/lib/modules/$release/." "$boot/"
  done
fi

if [[ ! -f $root/.prism-ready ]]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap >&2
  say "creating the trixie build root $root (debootstrap, a few minutes)"
  rm -rf "$root"
  debootstrap --variant=minbase --include=rustc,rust-src,libstd-rust-dev,bindgen,gcc-14,gcc,make,bc,flex,bison,libelf-dev,libssl-dev,python3,kmod,cpio,dwarves,xz-utils,libclang-dev,clang,dkms \
    trixie "$root" http://deb.debian.org/debian >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  touch "$root/.prism-ready"
fi

# Runs a command in the build root, with /proc (objtool reads its own limits there).
in_root() {
  mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
  chroot "$root" "$@"
}
trap 'mountpoint -q "$root/proc" && umount "$root/proc"' EXIT

# Debian built the kernel with gcc-14 (CONFIG_CC_VERSION_TEXT): the tree is prepared
# and the module built with the same compiler and release name.
config=$debs/linux-base-$release/usr/lib/modules/$release/config
tree=/build/linux-$release
kflags=(-C "$tree" "KERNELRELEASE=$release" CROSS_COMPILE=x86_64-linux-gnu- CC=x86_64-linux-gnu-gcc-14)
if [[ ! -f $root$tree/.prism-prepared ]]; then
  say "preparing $release's kernel crate with Debian's config and rustc (a few minutes)"
  rm -rf "$root$tree" && mkdir -p "$root$tree"
  tar -xf "$debs/linux-source-7.3/usr/src/linux-source-7.3.tar.xz" -C "$root$tree" --strip-components=1
  cp "$config" "$root$tree/.config"
  in_root make "${kflags[@]}" olddefconfig >>"$log" 2>&1
  # olddefconfig must change nothing but what Debian's packaging blanks out (signing
  # keys, build salt) or derives from the build host's OpenSSL: the same compilers, so
  # the same configuration.
  packaging='^CONFIG_(MODULE_SIG_(ALL|KEY)|SYSTEM_(TRUSTED|REVOCATION)_KEYS|BUILD_SALT|OPENSSL_SUPPORTS_[A-Z_]+)='
  if ! diff <(grep -v '^#' "$config" | grep -Ev "$packaging" | sort) \
      <(grep -v '^#' "$root$tree/.config" | grep -Ev "$packaging" | sort) >"$log.configdiff"; then
    say "Debian's config changed under olddefconfig:"; head -20 "$log.configdiff" >&2; exit 1
  fi
  in_root make "${kflags[@]}" -j"$(nproc)" modules_prepare >>"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }
  # The symbols (and their namespaces) the stock kernel exports, for modpost.
  cp "$debs/linux-headers-$release/usr/src/linux-headers-$release/Module.symvers" "$root$tree/"
  touch "$root$tree/.prism-prepared"
fi

# The module, built by DKMS as on a Debian 13 host: `make dkms-build` against the
# prepared tree, whose .prism-make-flags names Debian's compiler and release.
echo "KERNELRELEASE=$release CROSS_COMPILE=x86_64-linux-gnu- CC=x86_64-linux-gnu-gcc-14" >"$root$tree/.prism-make-flags"
in_root sh -c 'command -v dkms >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dkms' >>"$log" 2>&1
src=/build/prism-sock-dkms
# The Makefile's own list of what DKMS builds from (dkms-src), and the Makefile.
make -s -C "$repo" dkms-src DEST="$root$src" >&2
cp "$repo/Makefile" "$root$src/"
in_root make -C "$src" dkms-build DKMS_KERNEL="$release" DKMS_KERNEL_SOURCE="$tree" >>"$log" 2>&1 ||
  { grep -E "error|warning" -A6 "$log" | tail -40 >&2; cat "$root"/var/lib/dkms/prism-sock/*/build/make.log 2>/dev/null | tail -30 >&2; exit 1; }
built=$(find "$root/var/lib/dkms/prism-sock" -path "*$release*" -name 'prism_sock.ko*' | head -1)
[[ -n $built ]] || { say "DKMS built no module"; exit 1; }
# insmod takes the module uncompressed.
case $built in
  *.xz) xz -dc "$built" >"$root$src/prism_sock.ko" ;;
  *.zst) zstd -qdc "$built" >"$root$src/prism_sock.ko" ;;
  *) cp "$built" "$root$src/prism_sock.ko" ;;
esac
echo "KDIR=$root$tree"
echo "KIMG=$boot/vmlinuz"
echo "MODULE=$root$src/prism_sock.ko"
