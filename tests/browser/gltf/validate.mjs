// Run the Khronos glTF-Validator (npm gltf-validator) on .glb files; print one JSON line:
// {file: {errors, warnings, infos, codes: {"SEVERITY:CODE": count}, extensionsUsed, triangles}} (severity 0 error,
// 1 warning, 2 info, 3 hint; triangles: the validator's totalTriangleCount).
//
//   node validate.mjs a.glb b.glb
import { readFileSync } from "node:fs";
import validator from "gltf-validator";

const out = {};
for (const file of process.argv.slice(2)) {
  const report = await validator.validateBytes(new Uint8Array(readFileSync(file)), { maxIssues: 0 });
  const codes = {};
  for (const m of report.issues.messages) codes[`${m.severity}:${m.code}`] = (codes[`${m.severity}:${m.code}`] || 0) + 1;
  out[file] = { errors: report.issues.numErrors, warnings: report.issues.numWarnings, infos: report.issues.numInfos,
                validator: report.validatorVersion, codes,
                extensionsUsed: report.info?.extensionsUsed ?? [], triangles: report.info?.totalTriangleCount ?? 0 };
}
process.stdout.write(JSON.stringify(out) + "\n");
