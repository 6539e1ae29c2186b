// bench/engine/gguf-same.mjs - do two GGUF files hold the same tensors, each
// of the same type with the same bytes, whatever their order in the files?
// Prints "yes" or "no: NAME (why)" for the first difference.
// usage: node gguf-same.mjs A.gguf B.gguf
import { readFileSync } from 'node:fs';

// ggml type id: [elements, bytes] per block
const block = { 0: [1, 4], 1: [1, 2], 30: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34],
  20: [32, 18], 10: [256, 84], 11: [256, 110], 12: [256, 144], 13: [256, 176], 14: [256, 210] };

function tensors(path) {
  const b = readFileSync(path);
  let o = 4; // after the magic
  const u32 = () => { const v = b.readUInt32LE(o); o += 4; return v; };
  const u64 = () => { const v = Number(b.readBigUInt64LE(o)); o += 8; return v; };
  const str = () => { const n = u64(); const s = b.toString('utf8', o, o + n); o += n; return s; };
  const size = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const skip = (t) => {
    if (t === 8) str();
    else if (t === 9) { const et = u32(), n = u64(); for (let i = 0; i < n; i++) skip(et); }
    else o += size[t];
  };
  u32(); // version
  const nt = u64(), nkv = u64();
  let align = 32;
  for (let i = 0; i < nkv; i++) {
    const k = str(), t = u32();
    if (k === 'general.alignment') { align = b.readUInt32LE(o); }
    skip(t);
  }
  const list = [];
  for (let i = 0; i < nt; i++) {
    const name = str(), nd = u32(), ne = [];
    for (let d = 0; d < nd; d++) ne.push(u64());
    list.push({ name, ne, type: u32(), off: u64() });
  }
  const data = Math.ceil(o / align) * align;
  const out = new Map();
  for (const t of list) {
    const [elems, bytes] = block[t.type];
    const n = (t.ne.reduce((x, y) => x * y, 1) / elems) * bytes;
    out.set(t.name, { type: t.type, ne: t.ne.join('x'), bytes: b.subarray(data + t.off, data + t.off + n) });
  }
  return out;
}

const [a, b] = [tensors(process.argv[2]), tensors(process.argv[3])];
let why = '';
for (const [name, x] of a) {
  const y = b.get(name);
  if (!y) { why = `${name} (missing)`; break; }
  if (x.type !== y.type || x.ne !== y.ne) { why = `${name} (type ${x.type} vs ${y.type})`; break; }
  if (!x.bytes.equals(y.bytes)) { why = `${name} (bytes)`; break; }
}
if (!why && a.size !== b.size) why = `${b.size - a.size} more tensors in the second`;
console.log(why ? `no: ${why}` : 'yes');
