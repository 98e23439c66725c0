#!/usr/bin/env bash
# Rebuild web/vendor/spark_three.js from the pinned npm packages (needs npm and the registry once).
# The ComfyUI frontend imports every .js under web/ as-is, with no import map, so Spark and three.js
# are bundled into one self-contained ES module; their licence files are copied next to it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../web/vendor"
cd "$here"
npm install --no-audit --no-fund --ignore-scripts
node_modules/.bin/esbuild entry.mjs --bundle --format=esm --minify --legal-comments=eof --outfile="$out/spark_three.js"
cp node_modules/@sparkjsdev/spark/LICENSE "$out/LICENSE.spark"
cp node_modules/three/LICENSE "$out/LICENSE.three"
cp node_modules/fflate/LICENSE "$out/LICENSE.fflate"
echo "spark $(node -p 'require("./node_modules/@sparkjsdev/spark/package.json").version'), three $(node -p 'require("./node_modules/three/package.json").version'), fflate $(node -p 'require("./node_modules/fflate/package.json").version')" > "$out/VERSIONS"
ls -l "$out"
