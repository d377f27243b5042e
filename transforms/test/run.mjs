// Runs a transform component locally in Node (the component is transpiled to JS by jco).
//
//   node test/run.mjs dist/mask-pii.wasm examples/node-event.json
//
// It builds the `event` record the way hookline does (ids and notification type from the
// envelope, the envelope as compact JSON for `body`, hookline's usual headers) and prints what the
// transform returned. It enforces none of hookline's limits (CPU, memory, output size, reserved
// headers): use `hookline transform test` or the test endpoint for that.
import { readFileSync, mkdirSync, rmSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import { transpile, writeFiles } from '@bytecodealliance/jco-transpile';

// componentize-py output uses extended constant expressions, still behind a flag in Node 20.
v8.setFlagsFromString('--experimental-wasm-extended-const');

const HERE = fileURLToPath(new URL('.', import.meta.url));

/** The headers hookline passes to a transform when a subscription adds none of its own. */
export const DEFAULT_HEADERS = [
  ['content-type', 'application/json;charset=UTF-8'],
  ['user-agent', 'hookline/0.1.0'],
];

/** Builds the WIT `event` record for an envelope file. */
export function eventFor(envelopePath, subscriptionId = 'sub-example') {
  const envelope = JSON.parse(readFileSync(envelopePath, 'utf8'));
  return {
    id: envelope.id,
    tenantId: envelope.tenantId,
    subscriptionId,
    notificationType: envelope.notificationType,
    headers: DEFAULT_HEADERS.map(([n, v]) => [n, v]),
    body: new TextEncoder().encode(JSON.stringify(envelope)),
  };
}

const loaded = new Map();

/** Transpiles `wasmPath` (once per process) and returns its `handler` export. */
export async function load(wasmPath) {
  const key = resolve(wasmPath);
  if (!loaded.has(key)) {
    const name = basename(wasmPath, '.wasm').replace(/[^A-Za-z0-9_-]/g, '_');
    // Under test/ so the generated code finds @bytecodealliance/preview2-shim in node_modules.
    const outDir = join(HERE, '.out', `${name}-${process.pid}`);
    rmSync(outDir, { recursive: true, force: true });
    mkdirSync(outDir, { recursive: true });
    const { files } = await transpile(resolve(wasmPath), { name, outDir, quiet: true });
    await writeFiles(files);
    const mod = await import(pathToFileURL(join(outDir, `${name}.js`)).href);
    rmSync(outDir, { recursive: true, force: true });
    const handler = mod.handler ?? mod['hookline:transform/handler@1.0.0'];
    if (!handler?.transform) throw new Error(`${wasmPath} does not export hookline:transform/handler@1.0.0`);
    loaded.set(key, handler);
  }
  return loaded.get(key);
}

/**
 * Calls `transform` and describes the outcome as plain JSON:
 * `{action: "deliver", headers, bodyBytes, body}` (body as UTF-8 text, left out past 64 KiB),
 * `{action: "drop", reason}`, `{error}` for `err(msg)`, or `{trap: message}`.
 */
export async function runTransform(wasmPath, event) {
  const handler = await load(wasmPath);
  let action;
  try {
    action = handler.transform(event);
  } catch (e) {
    // jco throws the `err` payload itself (older versions wrap it in an Error with `payload`);
    // traps are WebAssembly.RuntimeError, or RangeError for a JS-engine stack overflow.
    if (!(e instanceof Error)) return { error: e };
    if (e.payload !== undefined) return { error: e.payload };
    return { trap: e.message };
  }
  if (action.tag === 'deliver') {
    const { headers, body } = action.val;
    const out = { action: 'deliver', headers, bodyBytes: body.length };
    if (body.length <= 64 * 1024) out.body = new TextDecoder('utf-8', { fatal: false }).decode(body);
    return out;
  }
  return { action: action.tag, reason: action.val };
}

/** JSON with two spaces of indent and each header pair on one line. */
export function pretty(value) {
  const str = '"(?:[^"\\\\]|\\\\.)*"';
  return JSON.stringify(value, null, 2).replace(
    new RegExp(`\\[\\n\\s+(${str}),\\n\\s+(${str})\\n\\s+\\]`, 'g'),
    '[$1, $2]',
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [wasm, envelope] = process.argv.slice(2);
  if (!wasm || !envelope) {
    console.error('usage: node test/run.mjs TRANSFORM.wasm ENVELOPE.json');
    process.exit(2);
  }
  const started = performance.now();
  const result = await runTransform(wasm, eventFor(envelope));
  console.log(pretty(result));
  console.error(`(${(performance.now() - started).toFixed(1)} ms including transpiling)`);
}
