#!/usr/bin/env node
// Requires every token we minted to be accepted by twilio-node's verifier (hs256_only) and
// twilio-python's (twilio_from_jwt), and its decoded header and claims to equal twilio-node's for the
// same inputs. Exits 1 with a list of what differs otherwise.
// usage: node compare.js OURS.json REFERENCE.json NODE_RESULT.json PYTHON_RESULT.json
"use strict";
const fs = require("fs");
const { isDeepStrictEqual } = require("util");

const files = process.argv.slice(2);
if (files.length !== 4) {
  console.error("usage: compare.js OURS.json REFERENCE.json NODE_RESULT.json PYTHON_RESULT.json");
  process.exit(2);
}
const [ours, reference, nodeResult, pythonResult] = files.map((f) => JSON.parse(fs.readFileSync(f, "utf8")));
const decode = (jwt) => {
  const [h, p] = jwt.split(".");
  const json = (s) => JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
  return { header: json(h), claims: json(p) };
};
const refByName = new Map(reference.valid.map((v) => [v.name, v]));
const problems = [];
let identical = 0;
for (const v of ours.valid) {
  const node = (nodeResult[v.name] || {}).hs256_only;
  const py = (pythonResult[v.name] || {}).twilio_from_jwt;
  if (node !== "ok") problems.push(`${v.name}: twilio-node (jsonwebtoken, HS256) said ${node}`);
  if (py !== "ok") problems.push(`${v.name}: twilio-python Jwt.from_jwt said ${py}`);
  const ref = refByName.get(v.name);
  if (!ref) {
    problems.push(`${v.name}: no twilio-node reference token`);
    continue;
  }
  const a = decode(v.token);
  const b = decode(ref.token);
  for (const part of ["header", "claims"]) {
    if (!isDeepStrictEqual(a[part], b[part])) {
      problems.push(`${v.name}: ${part} differs\n    ours:        ${JSON.stringify(a[part])}\n    twilio-node: ${JSON.stringify(b[part])}`);
    }
  }
  if (v.token === ref.token) identical++;
}
if (ours.valid.length === 0) problems.push("no tokens were minted");
if (reference.valid.length !== ours.valid.length) {
  problems.push(`${ours.valid.length} tokens of ours, ${reference.valid.length} of twilio-node`);
}
const n = ours.valid.length;
if (problems.length) {
  console.error(`interop: FAILED, ${problems.length} problem(s) in ${n} tokens:`);
  for (const p of problems) console.error(`  - ${p}`);
  process.exit(1);
}
console.log(
  `interop: ${n} tokens ok in twilio-node and twilio-python; claims equal twilio-node's ` +
    `(${identical}/${n} byte-identical tokens)`
);
