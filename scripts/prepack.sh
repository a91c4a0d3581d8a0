#!/usr/bin/env bash
# npm's prepack: what goes into the main tarball besides the JavaScript.
#   default            builds this machine's addon (crates/node/cortex-nn.<platform>.node) and
#                      packs it, so `npm pack` in a checkout gives a tarball that works on its
#                      own: `npm install ./cortex-nn-*.tgz`, then import or require;
#   CORTEX_RELEASE=1   the registry release: no binary in the main package (the npm/<platform>
#                      packages carry them, `napi pre-publish` links them as optionalDependencies);
#                      refuses if a locally built addon would be packed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${CORTEX_RELEASE:-0}" = 1 ]; then
  if ls crates/node/*.node >/dev/null 2>&1; then
    echo "prepack: CORTEX_RELEASE=1 packs no binary, but crates/node holds $(ls crates/node/*.node | xargs -n1 basename | tr '\n' ' ')- remove them" >&2
    exit 1
  fi
else
  npm run build
fi
npm run build:ts
