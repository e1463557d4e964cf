#!/usr/bin/env bash
# Builds the Debian package with Debian's own tooling (dpkg-buildpackage,
# debhelper; debian/ in this tree) from a copy of the tree, in Release with
# Debian's hardening flags, then runs lintian on it. The result:
# build/package/mailkms_<version>_<arch>.deb (its path printed last).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

out=$PWD/build/package
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
source_dir=$out/mailkms-$version
rm -rf "$source_dir" "$out"/mailkms_* "$out"/mailkms-dbgsym_*
mkdir -p "$source_dir"
# Everything but build trees: dpkg-buildpackage writes beside the source.
tar --exclude=./build --exclude=./.git -cf - . | tar -C "$source_dir" -xf -
# No -dbgsym package: 100 MB that nobody here installs.
(cd "$source_dir" && DEB_BUILD_OPTIONS=noautodbgsym dpkg-buildpackage -b -us -uc -j"$(nproc)" > "$out/build.log" 2>&1) ||
  { tail -n 40 "$out/build.log" >&2; echo "package.sh: dpkg-buildpackage failed; the whole log: $out/build.log" >&2; exit 1; }
deb=$(ls "$out"/mailkms_"$version"_*.deb)
# Clean, or each tag justified in debian/*.lintian-overrides.
if ! lintian --fail-on warning,error --tag-display-limit 0 "$deb" > "$out/lintian.log" 2>&1; then
  grep -v 'running with root privileges' "$out/lintian.log" >&2
  echo "package.sh: lintian finds fault with $deb" >&2
  exit 1
fi
echo "$deb"
