'use strict';
// Tokenizes texts with the Hugging Face tokenizers library (Rust, through its node binding) for the C++ tests.
// Usage: node hf_tokenize.js <request.json> <response.json>
//   request:  {"tokenizer": "<path of a tokenizer.json>", "add_special_tokens": true|false, "texts": ["...", ...]}
//   response: {"ids": [[...], ...]}  (one list of token ids per text, in order)
// Files rather than pipes keep arbitrary Unicode (newlines, emoji, NUL) intact and the protocol trivial.
const fs = require('fs');
const { Tokenizer } = require('@anush008/tokenizers');

async function main() {
  const [requestPath, responsePath] = process.argv.slice(2);
  if (!requestPath || !responsePath) throw new Error('usage: node hf_tokenize.js <request.json> <response.json>');
  const request = JSON.parse(fs.readFileSync(requestPath, 'utf8'));
  const tokenizer = Tokenizer.fromFile(request.tokenizer);
  // Some tokenizer.json files configure padding or truncation; the tests want every text tokenized whole.
  tokenizer.disablePadding();
  tokenizer.disableTruncation();
  const ids = [];
  for (const text of request.texts) {
    const encoding = await tokenizer.encode(text, null, { addSpecialTokens: Boolean(request.add_special_tokens) });
    ids.push(encoding.getIds());
  }
  fs.writeFileSync(responsePath, JSON.stringify({ ids }));
}

main().catch((error) => {
  console.error((error && error.stack) || String(error));
  process.exit(1);
});
