#!/usr/bin/env bash
# Rebuild web/vendor/spark_three.js from the pinned npm packages (needs npm and the registry once).
# The ComfyUI frontend imports every .js under web/ as-is, with no import map, so Spark and three.js
# are bundled into one self-contained ES module; their licence files are copied next to it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../web/vendor"
cd "$here"
npm install --no-audit --no-fund --ignore-scripts
# three.js registers itself as window.__THREE__ and warns "Multiple instances of Three.js being imported" when it
# finds one; the ComfyUI frontend loads its own three.js, so one of the two always warned. Our copy is private to
# the viewer: the banner sets aside whatever the page registered before the bundle runs, the footer puts it back
# (or removes ours), so the page's three.js never sees ours and ours never sees the page's.
banner='const __vist3aPageThree = typeof window === "undefined" ? undefined : window.__THREE__; if (__vist3aPageThree !== undefined) delete window.__THREE__;'
footer='if (typeof window !== "undefined") { if (__vist3aPageThree === undefined) delete window.__THREE__; else window.__THREE__ = __vist3aPageThree; }'
node_modules/.bin/esbuild entry.mjs --bundle --format=esm --minify --legal-comments=eof \
  --banner:js="$banner" --footer:js="$footer" --outfile="$out/spark_three.js"
# the registration must run while the bundle loads (top level), between the banner and the footer
node -e '
const s = require("fs").readFileSync(process.argv[1], "utf8");
const reg = s.indexOf("Multiple instances of Three.js"), foot = s.lastIndexOf("__vist3aPageThree");
if (!s.startsWith("const __vist3aPageThree") || reg < 0 || foot < reg) { console.error("spark_three.js: three.js registration not wrapped"); process.exit(1); }
' "$out/spark_three.js"
cp node_modules/@sparkjsdev/spark/LICENSE "$out/LICENSE.spark"
cp node_modules/three/LICENSE "$out/LICENSE.three"
cp node_modules/fflate/LICENSE "$out/LICENSE.fflate"
echo "spark $(node -p 'require("./node_modules/@sparkjsdev/spark/package.json").version'), three $(node -p 'require("./node_modules/three/package.json").version'), fflate $(node -p 'require("./node_modules/fflate/package.json").version')" > "$out/VERSIONS"
ls -l "$out"
