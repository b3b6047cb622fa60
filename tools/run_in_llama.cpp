// Loads a GGUF in real llama.cpp, continues a prompt greedily and, given the source MLX folder, measures how far
// llama.cpp's logits are from mlx2gguf's reference forward pass of the source model.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>

#include "eval/reference.h"
#include "llama_oracle.h"
#include "read/adapter.h"
#include "read/source_model.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Run a GGUF file in llama.cpp (the prebuilt library of the test oracles)"};
  std::string gguf, prompt = "The capital of France is", reference_dir, adapter_path, lora;
  int n_predict = 16;
  app.add_option("GGUF", gguf, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("--prompt,-p", prompt, "Prompt text")->capture_default_str();
  app.add_option("--n-predict,-n", n_predict, "Tokens to generate (greedy)")->capture_default_str();
  app.add_option("--lora", lora, "GGUF LoRA adapter llama.cpp applies on top of the model (scale 1.0)")
      ->check(CLI::ExistingFile);
  app.add_option("--reference", reference_dir, "Source MLX folder: compare llama.cpp's logits with the reference");
  app.add_option("--adapter-path", adapter_path,
                 "mlx-lm adapter folder (or weights file) of a fine-tune of the --reference folder: the reference "
                 "applies it unfused (LoRA/DoRA) or with its tensors replaced (full)")
      ->check(CLI::ExistingPath);
  CLI11_PARSE(app, argc, argv);
  if (!adapter_path.empty() && reference_dir.empty()) {
    fmt::print(stderr, "error: --adapter-path needs --reference\n");
    return 1;
  }
  try {
    auto model = oracle::LlamaModel::load(gguf);
    const int lora_handle = lora.empty() ? -1 : model->load_adapter(lora);
    auto logits_of = [&](const std::vector<int32_t>& tokens) {
      return lora_handle < 0 ? model->logits(tokens) : model->logits_with_adapter(tokens, lora_handle);
    };
    std::vector<int32_t> tokens = model->tokenize(prompt, true, false);
    const size_t prompt_tokens = tokens.size();
    for (int i = 0; i < n_predict; ++i) {
      const auto logits = logits_of(tokens);
      const float* last = logits.data() + (tokens.size() - 1) * model->n_vocab();
      const auto next = static_cast<int32_t>(std::max_element(last, last + model->n_vocab()) - last);
      if (model->is_eog(next)) break;
      tokens.push_back(next);
    }
    const std::vector<int32_t> generated(tokens.begin() + static_cast<std::ptrdiff_t>(prompt_tokens), tokens.end());
    fmt::print("llama.cpp ({}): {} prompt tokens, {} generated\n", oracle::cpu_backend_name(), prompt_tokens, generated.size());
    fmt::print("prompt:     {}\ncontinued:  {}\n", prompt, model->detokenize(generated, false));
    if (!reference_dir.empty()) {
      std::unique_ptr<mlx2gguf::Adapter> adapter;  // declared first: it must outlive the model it is applied to
      auto source = mlx2gguf::SourceModel::open(reference_dir);
      if (!adapter_path.empty()) {
        adapter = mlx2gguf::Adapter::open({adapter_path, std::nullopt}, source);
        for (const std::string& note : adapter->notes()) fmt::print("note: {}\n", note);
        const bool full = adapter->type() == mlx2gguf::FineTuneType::Full;
        fmt::print("reference with the {} adapter {} ({} {})\n", mlx2gguf::fine_tune_type_name(adapter->type()),
                   adapter->weights_path().string(),
                   full ? adapter->replacements().size() : adapter->modules().size(),
                   full ? "tensors replaced" : "modules applied unfused");
        // Full fine-tunes have no low-rank terms: their tensors simply replace the base's.
        if (full) source.apply_adapter(*adapter, mlx2gguf::MergeRule::Float32);
      }
      const bool unfused = adapter && adapter->type() != mlx2gguf::FineTuneType::Full;
      const auto want = mlx2gguf::reference_logits(source, tokens, unfused ? adapter.get() : nullptr);
      const auto got = logits_of(tokens);
      double error = 0, energy = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        error += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
        energy += static_cast<double>(want[i]) * want[i];
      }
      int same = 0;
      const int64_t vocab = model->n_vocab();
      for (size_t row = 0; row < tokens.size(); ++row) {
        const float* g = got.data() + row * vocab;
        const float* w = want.data() + row * vocab;
        same += (std::max_element(g, g + vocab) - g) == (std::max_element(w, w + vocab) - w);
      }
      fmt::print("logits vs reference forward pass of {}: NMSE {:.3e}, same top token at {}/{} positions\n",
                 reference_dir, error / energy, same, tokens.size());
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
