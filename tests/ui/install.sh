#!/usr/bin/env bash
# Installs the browser tests' npm packages (package.json, pinned by package-lock.json) into
# DIR/node_modules: a folder of the build tree, never the source tree. Does nothing when DIR
# already has this lock file's packages. ctest runs it as the fixture of the browser tests
# (tests/integration/CMakeLists.txt).   tests/ui/install.sh DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir=${1:?usage: tests/ui/install.sh DIR}
mkdir -p "$dir"
if [ -f "$dir/node_modules/.package-lock.json" ] && cmp -s "$here/package-lock.json" "$dir/package-lock.json"; then
  exit 0
fi
cp "$here/package.json" "$here/package-lock.json" "$dir/"
cd "$dir"
npm ci --no-audit --no-fund --loglevel=error
