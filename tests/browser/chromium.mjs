// How every browser test starts headless Debian Chromium: software WebGL (ANGLE on SwiftShader, the only GL
// a GPU-less CI machine has) and no background network traffic. Takes playwright-core's `chromium` from the
// caller, so this file imports nothing and serves scripts with their own node_modules (gltf/).
export const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--use-gl=angle", "--use-angle=swiftshader",
  "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
];

export function launchChromium(chromium, executablePath, extraArgs = []) {
  return chromium.launch({ executablePath: executablePath || "/usr/bin/chromium", headless: true, args: [...CHROMIUM_ARGS, ...extraArgs] });
}
