// The reference side of the tokenizer parity test (test_tokenizer_parity.py): encodes and
// decodes a corpus with transformers.js (AutoTokenizer from a local directory, offline) and
// with the tokenizers library's Node binding (the Rust implementation transformers uses),
// one JSON line per string: {"js": {...}, "rs": {...}}, each with ids (special tokens added),
// plain (without) and the decoded ids with ("shown") and without ("text") special tokens.
//   node reference.mjs TOKENIZER_DIR CORPUS.json OUT.jsonl [TOKENIZER_DIR CORPUS.json OUT.jsonl...]
// (several in one run: loading transformers.js is most of the time).
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { env, AutoTokenizer } from '@huggingface/transformers';

const require = createRequire(import.meta.url);
const { Tokenizer } = require('tokenizers');

const guard = (f) => {
  try {
    return f();
  } catch (e) {
    return { error: String(e) };
  }
};

async function run(dir, corpusPath, outPath) {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = path.dirname(path.resolve(dir)) + '/';
  const js = await AutoTokenizer.from_pretrained(path.basename(path.resolve(dir)));
  const rs = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const corpus = JSON.parse(fs.readFileSync(corpusPath, 'utf8'));
  // The library in batches (one call per batch crosses into Rust), transformers.js per string.
  let rsOut;
  try {
    const withSpecials = (await rs.encodeBatch(corpus)).map((e) => e.getIds());
    const plain = (await rs.encodeBatch(corpus, { addSpecialTokens: false })).map((e) => e.getIds());
    const shown = await rs.decodeBatch(withSpecials, false);
    const text = await rs.decodeBatch(withSpecials, true);
    rsOut = corpus.map((_, i) => ({ ids: withSpecials[i], plain: plain[i], shown: shown[i], text: text[i] }));
  } catch (e) {
    rsOut = corpus.map(() => ({ error: String(e) }));
  }
  const lines = corpus.map((s, i) => {
    const j = guard(() => {
      const ids = js.encode(s);
      const plain = js.encode(s, { add_special_tokens: false });
      const dec = (skip) =>
        ids.length ? js.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false }) : '';
      return { ids, plain, shown: dec(false), text: dec(true) };
    });
    return JSON.stringify({ js: j, rs: rsOut[i] });
  });
  fs.writeFileSync(outPath, lines.join('\n') + '\n');
}

const args = process.argv.slice(2);
for (let i = 0; i + 2 < args.length; i += 3) await run(args[i], args[i + 1], args[i + 2]);
