#!/usr/bin/env node
// Mints, with twilio-node's AccessToken, the token for each entry's `inputs` in a file written by
// `cargo run --example mint_interop -- mint`, with Date.now pinned to the entry's `now`.
// usage: NODE_PATH=.../node_modules node mint_reference.js OURS.json OUT.json
"use strict";
const fs = require("fs");
const AccessToken = require("twilio").jwt.AccessToken;

const [oursFile, outFile] = process.argv.slice(2);
if (!oursFile || !outFile) {
  console.error("usage: mint_reference.js OURS.json OUT.json");
  process.exit(2);
}
const ours = JSON.parse(fs.readFileSync(oursFile, "utf8"));
const classes = {
  chat: AccessToken.ChatGrant,
  sync: AccessToken.SyncGrant,
  voice: AccessToken.VoiceGrant,
  video: AccessToken.VideoGrant,
  task_router: AccessToken.TaskRouterGrant,
  playback: AccessToken.PlaybackGrant,
};
const realNow = Date.now;
const valid = ours.valid.map((v) => {
  const i = v.inputs;
  const options = { identity: i.identity };
  if (i.ttl !== null) options.ttl = i.ttl;
  if (i.nbf !== null) options.nbf = i.nbf;
  if (i.region !== null) options.region = i.region;
  const token = new AccessToken(i.account_sid, i.api_key_sid, v.secret, options);
  for (const g of i.grants) {
    const Grant = classes[g.kind];
    if (!Grant) throw new Error(`${v.name}: unknown grant kind ${g.kind}`);
    token.addGrant(new Grant(g.options));
  }
  Date.now = () => v.now * 1000;
  try {
    return { name: v.name, generator: "twilio-node", now: v.now, secret: v.secret, token: token.toJwt() };
  } finally {
    Date.now = realNow;
  }
});
fs.writeFileSync(outFile, JSON.stringify({ valid, invalid: [] }, null, 2) + "\n");
console.log(`twilio-node ${require("twilio/package.json").version}: minted ${valid.length} reference tokens -> ${outFile}`);
