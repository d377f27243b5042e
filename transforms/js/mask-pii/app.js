// mask-pii in JavaScript: the same masking as transforms/rust/mask-pii, built with
// componentize-js (StarlingMonkey, a SpiderMonkey build for WASI) into a component of the world
// `transformer` in wit/transform.wit.
//
// A value inside the envelope's `payLoad` is personal when it sits
//
// * under an object key named like one of PII_FIELDS (`{"phone": "0812..."}`), or
// * in the `value` of a `{"name": <field>, "value": ...}` pair whose `name` is one of them, the
//   shape of a workflow node's `input` list (`{"name": "idNumber", "value": "3174..."}`).
//
// Names compare case-insensitively. Strings and numbers are masked (the last two characters are
// kept, values of up to four characters are masked entirely); when the personal value is an
// object or an array, every string and number inside it is masked. Headers are kept, plus
// `x-pii-masked` with the number of masked values.
//
// The component exports `handler.transform(event)`: it returns the `action` variant as
// `{tag: 'deliver', val: {headers, body}}` or `{tag: 'drop', val: reason}`; a thrown string is
// the `err` case. `body` arrives and leaves as a Uint8Array.
//
// Build:  npx componentize-js app.js --wit ../../wit -n transformer -d http fetch-event -o mask-pii-js.wasm
// (transforms/build.sh does this with the componentize-js pinned in ../package-lock.json.)

const PII_FIELDS = new Set(['idnumber', 'name', 'phone', 'email', 'mobile']); // lower-cased
const FULLY_MASKED_UP_TO = 4;

/** 'SITI CHURIAH' -> '**********AH'; counts characters (code points), as Rust and Python do. */
function mask(s) {
  const chars = Array.from(s);
  const keep = chars.length <= FULLY_MASKED_UP_TO ? 0 : 2;
  return '*'.repeat(chars.length - keep) + chars.slice(chars.length - keep).join('');
}

const isPii = (field) => PII_FIELDS.has(field.toLowerCase());

class Masker {
  constructor() {
    this.count = 0;
  }

  /** Masks every string and number in v (booleans and nulls carry no personal data). */
  maskAll(v) {
    if (v === null || typeof v === 'boolean') return v;
    if (typeof v === 'string') {
      this.count++;
      return mask(v);
    }
    if (typeof v === 'number') {
      this.count++;
      return mask(JSON.stringify(v));
    }
    if (Array.isArray(v)) return v.map((i) => this.maskAll(i));
    const out = {};
    for (const [k, c] of Object.entries(v)) out[k] = this.maskAll(c);
    return out;
  }

  /** Masks personal values under personal keys or in personal {name, value} pairs. */
  maskTree(v) {
    if (Array.isArray(v)) return v.map((i) => this.maskTree(i));
    if (v === null || typeof v !== 'object') return v;
    const label = v.name;
    const pair = typeof label === 'string' && 'value' in v;
    const out = {};
    for (const [key, child] of Object.entries(v)) {
      if (pair && key === 'name') out[key] = child; // the label stays readable
      else if (pair && key === 'value' && isPii(label)) out[key] = this.maskAll(child);
      else if (isPii(key)) out[key] = this.maskAll(child);
      else out[key] = this.maskTree(child);
    }
    return out;
  }
}

function maskBody(body) {
  let envelope;
  try {
    envelope = JSON.parse(new TextDecoder().decode(body));
  } catch (e) {
    throw `body is not valid JSON: ${e.message}`;
  }
  if (envelope === null || typeof envelope !== 'object' || Array.isArray(envelope)) {
    throw 'body is not a JSON object';
  }
  const m = new Masker();
  if ('payLoad' in envelope) envelope.payLoad = m.maskTree(envelope.payLoad);
  return [new TextEncoder().encode(JSON.stringify(envelope)), m.count];
}

export const handler = {
  transform(event) {
    const [body, count] = maskBody(event.body);
    const headers = event.headers.filter(([n]) => n.toLowerCase() !== 'x-pii-masked');
    headers.push(['x-pii-masked', String(count)]);
    return { tag: 'deliver', val: { headers, body } };
  },
};
