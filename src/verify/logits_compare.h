#pragma once
// The logits level of `verify`: llama.cpp's logits of a GGUF file against the reference forward pass of its source,
// position by position.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mlx2gguf {

struct PositionScore {
  int32_t token = 0;
  double nmse = 0;        // Σ(llama − reference)² / Σ reference² over the vocabulary
  double kl = 0;          // KL(reference ‖ llama) of the softmax distributions, in nats
  int32_t reference_top1 = 0, llama_top1 = 0;
};

struct LogitsReport {
  std::vector<PositionScore> positions;
  int64_t vocab = 0;
  double nmse = 0;        // over all positions: Σ(llama − reference)² / Σ reference²
  double mean_kl = 0, max_kl = 0;
  int top1_agreements = 0;
};

// `llama` and `reference`: row-major [tokens][vocab].
LogitsReport compare_logits(const std::vector<int32_t>& tokens, const std::vector<float>& llama,
                            const std::vector<float>& reference, int64_t vocab);

// A fixed token sequence: `first` (the BOS token, or 1), then ids drawn below min(vocab, 32000) from a Mersenne
// Twister seeded with 1234, so runs and machines evaluate the same tokens.
std::vector<int32_t> verify_tokens(int64_t vocab, int count, int32_t first);

std::string format_logits_report(const LogitsReport& report);
nlohmann::json logits_report_json(const LogitsReport& report);

}  // namespace mlx2gguf
