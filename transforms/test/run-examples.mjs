// Runs every example case through the artifacts in a dist directory and compares the outcome with
// transforms/examples/expected/<transform>/<example>.json.
//
//   node test/run-examples.mjs [DIST_DIR] [--update]
//
// --update rewrites the expected files from the current outcomes (review the diff!).
// `evil-loop` and `evil-memory` are not run here: without hookline's CPU and memory limits they
// would spin or allocate for a long time. The host's sandbox tests cover them.
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventFor, runTransform, pretty } from './run.mjs';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const args = process.argv.slice(2);
const update = args.includes('--update');
const dist = resolve(args.find((a) => !a.startsWith('--')) ?? join(ROOT, 'dist'));

// [artifact, example, expected-as] — the Python and JavaScript guests must match the Rust
// mask-pii exactly.
const CASES = [
  ['mask-pii', 'node-event'],
  ['mask-pii', 'transaction-event'],
  ['mask-pii-py', 'node-event', 'mask-pii'],
  ['mask-pii-py', 'transaction-event', 'mask-pii'],
  ['mask-pii-js', 'node-event', 'mask-pii'],
  ['mask-pii-js', 'transaction-event', 'mask-pii'],
  ['to-xml', 'node-event'],
  ['to-xml', 'transaction-event'],
  ['drop-by-rule', 'node-event'],
  ['drop-by-rule', 'node-event-fresh'],
  ['drop-by-rule', 'node-event-skip'],
  ['drop-by-rule', 'transaction-event'],
  ['evil-error', 'node-event'],
  ['evil-header', 'node-event-skip'],
  ['evil-output', 'node-event-skip'],
  ['evil-trap', 'node-event-skip'],
  ['evil-recursion', 'node-event-skip'],
];

// Trap messages are the JS engine's; only the fact that it trapped is compared.
const normalise = (r) => (r.trap !== undefined ? { trap: true } : r);

let passed = 0;
let failed = 0;
for (const [artifact, example, expectedAs = artifact] of CASES) {
  const label = `${artifact} ${example}`;
  const expectedFile = join(ROOT, 'examples', 'expected', expectedAs, `${example}.json`);
  let got;
  try {
    got = normalise(await runTransform(join(dist, `${artifact}.wasm`), eventFor(join(ROOT, 'examples', `${example}.json`))));
  } catch (e) {
    console.log(`FAIL ${label}: ${e.message}`);
    failed++;
    continue;
  }
  const text = pretty(got) + '\n';
  if (update && expectedAs === artifact) {
    mkdirSync(join(ROOT, 'examples', 'expected', expectedAs), { recursive: true });
    writeFileSync(expectedFile, text);
  }
  if (!existsSync(expectedFile)) {
    console.log(`FAIL ${label}: no ${expectedFile} (run with --update)`);
    failed++;
  } else if (readFileSync(expectedFile, 'utf8') === text) {
    console.log(`ok   ${label}: ${got.action ?? (got.trap ? 'trap' : 'error')}`);
    passed++;
  } else {
    console.log(`FAIL ${label}: differs from ${expectedFile}\n${text}`);
    failed++;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
