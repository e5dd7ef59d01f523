#!/usr/bin/env bash
# Refreshes vendor/ from the versions pinned in package-lock.json. The binary embeds vendor/ at
# compile time, so building Offshoot never needs npm; only changing a library version does.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
cp node_modules/htm/preact/standalone.module.js vendor/preact-htm.js
cp node_modules/@highlightjs/cdn-assets/es/core.min.js vendor/highlight-core.js
cp node_modules/@highlightjs/cdn-assets/es/languages/sql.min.js vendor/highlight-sql.js
cp node_modules/@highlightjs/cdn-assets/es/languages/diff.min.js vendor/highlight-diff.js
{
  echo "Vendored front-end libraries (see package.json for versions)."
  for p in htm preact @highlightjs/cdn-assets; do
    echo; echo "== $p =="; cat "node_modules/$p/LICENSE"* 2>/dev/null || true
  done
} > vendor/LICENSES.txt
rm -rf node_modules
