// Validates .glb files with the Khronos glTF validator; prints one JSON report per file
// ({"path", "errors", "warnings", "messages"}) on its own line; exit status 1 when any has errors.
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

let failed = false;
for (const path of process.argv.slice(2)) {
  const data = new Uint8Array(await readFile(path));
  const report = await validator.validateBytes(data, {
    uri: path,
    maxIssues: 50,
    externalResourceFunction: () => Promise.reject(new Error("external resources are not used")),
  });
  const found = report.issues;
  failed ||= found.numErrors > 0;
  console.log(JSON.stringify({
    path,
    errors: found.numErrors,
    warnings: found.numWarnings,
    messages: found.messages.filter((m) => m.severity <= 1).map((m) => `${m.code} ${m.pointer ?? ""} ${m.message}`),
  }));
}
process.exit(failed ? 1 : 0);
