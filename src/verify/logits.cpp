#include "verify/logits.h"

#include "eval/reference.h"
#include "util/error.h"
#include "verify/llama_library.h"
#include "write/gguf_file.h"

namespace mlx2gguf {

namespace {

// The vocabulary and first token llama.cpp will use for the file: its token list and BOS token (1 without one).
std::pair<int64_t, int32_t> vocabulary_of(const GgufFile& file, const SourceModel& model) {
  int64_t vocab = 0;
  if (const GgufValue* tokens = file.metadata.get("tokenizer.ggml.tokens")) vocab = static_cast<int64_t>(tokens->size());
  if (vocab == 0) vocab = model.config().value("vocab_size", int64_t{0});
  if (vocab <= 1) fail("the GGUF file has no vocabulary (tokenizer.ggml.tokens) to draw tokens from");
  int32_t first = 1;
  if (const GgufValue* bos = file.metadata.get("tokenizer.ggml.bos_token_id"); bos && !bos->ints.empty())
    first = static_cast<int32_t>(bos->ints[0]);
  return {vocab, first};
}

}  // namespace

LogitsReport verify_logits(const LogitsOptions& options) {
  if (options.tokens < 1 || options.tokens > 4096) fail("--tokens {} is not between 1 and 4096", options.tokens);
  const GgufFile file = GgufFile::read(options.gguf);
  SourceModel model = SourceModel::open(options.model_dir);
  std::unique_ptr<Adapter> adapter;
  const Adapter* unfused = nullptr;
  if (options.adapter) {
    adapter = Adapter::open(*options.adapter, model);
    // A full fine-tune replaces tensors (which stay in the adapter, so it lives on); LoRA and DoRA run unfused, as
    // mlx-lm's modules compute them.
    if (adapter->type() == FineTuneType::Full)
      model.apply_adapter(*adapter, MergeRule::Float32);
    else
      unfused = adapter.get();
  }
  const auto [vocab, first] = vocabulary_of(file, model);
  const std::vector<int32_t> tokens = verify_tokens(vocab, options.tokens, first);

  const std::vector<float> reference = reference_logits(model, tokens, unfused);
  const int64_t reference_vocab = static_cast<int64_t>(reference.size() / tokens.size());
  int64_t llama_vocab = 0;
  const std::vector<float> llama = LlamaLibrary::open(options.llama_lib)->logits(options.gguf, tokens, llama_vocab);
  if (llama_vocab != reference_vocab)
    fail("llama.cpp's vocabulary for '{}' has {} tokens, the source model's output {}", options.gguf.string(),
         llama_vocab, reference_vocab);
  return compare_logits(tokens, llama, reference, llama_vocab);
}

}  // namespace mlx2gguf
