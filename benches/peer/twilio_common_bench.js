'use strict';
// Peer benchmark: the JS AccessManager of twilio-common 0.1.7, which the
// access-manager crate replaces. Run with:
//   node --expose-gc twilio_common_bench.js
// Env: N (managers, default 100000), OUT (JSON path, default ./peer_results.json),
//      TTL_SECS (token lifetime, default 86400), UPDATE_ITERS, READ_ITERS, REPS.
// See README.md for what is measured and how.

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { AccessManager } = require('twilio-common');

if (typeof global.gc !== 'function') {
  console.error('run with: node --expose-gc twilio_common_bench.js');
  process.exit(2);
}

const N = parseInt(process.env.N || '100000', 10);
const OUT = process.env.OUT || path.join(process.cwd(), 'peer_results.json');
// Twilio caps access tokens at 24 h. NOTE: the peer arms setTimeout(exp - now);
// a lifetime over 2^31-1 ms (~24.8 days) overflows Node's timer and fires after
// 1 ms, flipping isExpired to true, so keep the default inside that range.
const TTL_SECS = parseInt(process.env.TTL_SECS || '86400', 10);
const UPDATE_ITERS = parseInt(process.env.UPDATE_ITERS || '500000', 10);
const READ_ITERS = parseInt(process.env.READ_ITERS || '100000000', 10);
const REPS = parseInt(process.env.REPS || '5', 10); // in-process repetitions; medians are reported
const UPDATE_POOL = 1024; // distinct tokens cycled through by the update bench

// ---------------------------------------------------------------- tokens ----
const SECRET = 'peer-bench-signing-secret';
const ACCOUNT_SID = 'AC' + 'a1'.repeat(16);
const KEY_SID = 'SK' + 'b2'.repeat(16);
const CHAT_SID = 'IS' + 'c3'.repeat(16);
const SYNC_SID = 'IS' + 'd4'.repeat(16);
const APP_SID = 'AP' + 'e5'.repeat(16);

const b64url = (buf) => buf.toString('base64url');
const HEADER = b64url(Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT', cty: 'twilio-fpa;v=1' })));
const NOW = Math.floor(Date.now() / 1000);

function mintToken(i, tag) {
  const iat = NOW;
  const claims = {
    jti: `${KEY_SID}-${iat}-${tag}${i}`,
    grants: {
      identity: `user-${tag}${i}`,
      chat: { service_sid: CHAT_SID },
      data_sync: { service_sid: SYNC_SID },
      voice: { incoming: { allow: true }, outgoing: { application_sid: APP_SID } },
      video: { room: `room-${tag}${i}` },
    },
    iat,
    exp: iat + TTL_SECS,
    iss: KEY_SID,
    sub: ACCOUNT_SID,
  };
  const signingInput = HEADER + '.' + b64url(Buffer.from(JSON.stringify(claims)));
  const sig = crypto.createHmac('sha256', SECRET).update(signingInput).digest();
  return signingInput + '.' + b64url(sig);
}

// Silence the one-off DEP0005 (`new Buffer`) warning the peer triggers, but keep others.
const origEmitWarning = process.emitWarning;
process.emitWarning = function (w, ...rest) {
  const code = (rest[0] && rest[0].code) || rest[1] || (w && w.code);
  if (code === 'DEP0005') return;
  return origEmitWarning.call(process, w, ...rest);
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };

async function main() {
  // Tokens are minted BEFORE any measurement and retained for the whole run.
  const tokens = new Array(N);
  for (let i = 0; i < N; i++) tokens[i] = mintToken(i, 'm');
  const updTokens = new Array(UPDATE_POOL);
  for (let i = 0; i < UPDATE_POOL; i++) updTokens[i] = mintToken(i, 'u');
  const tokenBytes = Buffer.byteLength(tokens[0]);

  // Warm the constructor/updateToken code paths on throw-away managers so that
  // compiled code and lazily created runtime structures are not billed to (a).
  {
    const warm = [];
    for (let i = 0; i < 2000; i++) warm.push(new AccessManager(updTokens[i % UPDATE_POOL]));
    await sleep(20);
    // Their 24 h timers keep them reachable; clear them so they can be collected.
    for (const am of warm) { clearTimeout(am._tokenWillExpireTimer); clearTimeout(am._tokenExpiredTimer); }
  }
  await sleep(20);

  // ------------------------------------------------ (a) heap per manager ----
  gc(); gc();
  const before = process.memoryUsage().heapUsed;
  const managers = new Array(N); // pre-sized so the array itself is in `before`
  for (let i = 0; i < N; i++) managers[i] = new AccessManager(tokens[i]);
  gc(); gc();
  const afterSync = process.memoryUsage().heapUsed;
  // Let the 1 ms 'tokenUpdated' timer of every manager fire (steady state: a
  // manager that simply holds its token, with its two expiry timers armed).
  await sleep(100);
  gc(); gc();
  const afterSettled = process.memoryUsage().heapUsed;
  const heapPerMgr = (afterSettled - before) / N;
  const heapPerMgrSync = (afterSync - before) / N;
  const sane = managers.every((am, i) => am.token === tokens[i] && !am.isExpired && am.identity === `user-m${i}`);
  if (!sane) throw new Error('peer did not take the tokens as valid (isExpired flipped?' +
    ' a TTL over ~24.8 days overflows its setTimeout and expires the token after 1 ms)');

  // ------------------------------------------- (b) awaited updateToken ----
  // The peer does not short-circuit identical tokens (every call re-parses and
  // re-arms timers); we still give it a different token every time, cycling
  // through UPDATE_POOL distinct pre-minted tokens.
  async function benchUpdate(pick, iters) {
    for (let i = 0; i < Math.min(iters, 50000); i++) { const [am, t] = pick(i); await am.updateToken(t); }
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) { const [am, t] = pick(i); await am.updateToken(t); }
    return Number(process.hrtime.bigint() - t0) / iters;
  }
  const one = managers[0];
  const pickPool = (i) => [one, updTokens[i & (UPDATE_POOL - 1)]];
  const pickTwo = (i) => [one, updTokens[i & 1]];
  const pickMany = (i) => [managers[i % N], updTokens[i & (UPDATE_POOL - 1)]];
  const upd = { pool: [], two: [], many: [] };
  for (let r = 0; r < REPS; r++) {
    upd.pool.push(await benchUpdate(pickPool, UPDATE_ITERS));
    upd.two.push(await benchUpdate(pickTwo, UPDATE_ITERS));
    upd.many.push(await benchUpdate(pickMany, UPDATE_ITERS));
  }
  await sleep(20); // let pending tokenUpdated timers fire

  // ------------------------------------------------ (c) `token` getter ----
  let sink = 0;
  function readMany(iters) { // round-robin over all N managers
    let s = 0, j = 0;
    for (let i = 0; i < iters; i++) { s += managers[j].token.length; if (++j === N) j = 0; }
    return s;
  }
  function readOne(am, iters) { // same manager over and over
    let s = 0;
    for (let i = 0; i < iters; i++) s += am.token.length;
    return s;
  }
  const plain = managers.map((am) => ({ token: am.token })); // baseline: a plain data property
  function readPlain(iters) {
    let s = 0, j = 0;
    for (let i = 0; i < iters; i++) { s += plain[j].token.length; if (++j === N) j = 0; }
    return s;
  }
  function timeRead(fn) {
    sink += fn(Math.min(READ_ITERS, 5000000)); // warm-up / optimise
    const t0 = process.hrtime.bigint();
    sink += fn(READ_ITERS);
    return Number(process.hrtime.bigint() - t0) / READ_ITERS;
  }
  const rd = { many: [], one: [], plain: [] };
  for (let r = 0; r < REPS; r++) {
    rd.many.push(timeRead(readMany));
    rd.one.push(timeRead((k) => readOne(one, k)));
    rd.plain.push(timeRead(readPlain));
  }

  const res = {
    peer: 'twilio-common@0.1.7 AccessManager',
    node: process.version,
    v8: process.versions.v8,
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0] && os.cpus()[0].model,
    n_managers: N,
    token_bytes: tokenBytes,
    token_ttl_secs: TTL_SECS,
    heap_bytes_per_manager: Math.round(heapPerMgr),
    heap_bytes_per_manager_before_first_tick: Math.round(heapPerMgrSync),
    update_token_ns: median(upd.pool),
    update_token_ns_two_token_alternation: median(upd.two),
    update_token_ns_round_robin_managers: median(upd.many),
    update_iters: UPDATE_ITERS,
    token_read_ns: median(rd.one),
    token_read_ns_round_robin_managers: median(rd.many),
    plain_property_read_ns_baseline: median(rd.plain),
    read_iters: READ_ITERS,
    runs: { update: upd, read: rd },
  };

  const rows = [
    ['live heap per manager holding a token', `${res.heap_bytes_per_manager} B`],
    ['  (same, before the first event-loop tick)', `${res.heap_bytes_per_manager_before_first_tick} B`],
    ['awaited updateToken (1 manager, new token each call)', `${res.update_token_ns.toFixed(0)} ns/op`],
    ['  (alternating two tokens)', `${res.update_token_ns_two_token_alternation.toFixed(0)} ns/op`],
    ['  (round-robin over all N managers)', `${res.update_token_ns_round_robin_managers.toFixed(0)} ns/op`],
    ['`token` read (same manager, tight loop)', `${res.token_read_ns.toFixed(2)} ns/op`],
    ['  (round-robin over all N managers)', `${res.token_read_ns_round_robin_managers.toFixed(2)} ns/op`],
    ['  baseline: plain-object property, round-robin', `${res.plain_property_read_ns_baseline.toFixed(2)} ns/op`],
  ];
  console.log(`twilio-common 0.1.7 AccessManager — node ${process.version}, ${res.cpus} cpus, N=${N}, token ${tokenBytes} B`);
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) console.log(k.padEnd(w + 2) + v.padStart(14));
  fs.writeFileSync(OUT, JSON.stringify(res, null, 2) + '\n');
  console.log(`wrote ${OUT}` + (sink === 42 ? ' ' : ''));

  // Every manager holds two refed 24 h timers, so the process would otherwise
  // stay alive until the tokens expire.
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
