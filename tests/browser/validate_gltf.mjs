// Khronos glTF-Validator on one .glb: prints its report as one JSON line (issues with codes, counts).
//
//   node validate_gltf.mjs path/to/file.glb
import { readFileSync } from "node:fs";
import validator from "gltf-validator";

const path = process.argv[2];
const report = await validator.validateBytes(new Uint8Array(readFileSync(path)), { maxIssues: 0 });
process.stdout.write(JSON.stringify(report) + "\n");
