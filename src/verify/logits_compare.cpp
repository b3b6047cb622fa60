#include "verify/logits_compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "util/error.h"

namespace mlx2gguf {

namespace {

int32_t arg_max(const float* row, int64_t n) { return static_cast<int32_t>(std::max_element(row, row + n) - row); }

// log Σ exp(row), computed around the maximum so that large logits do not overflow.
double log_sum_exp(const float* row, int64_t n) {
  const double top = *std::max_element(row, row + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(row[i]) - top);
  return top + std::log(sum);
}

double kl_divergence(const float* p_logits, const float* q_logits, int64_t n) {
  const double p_norm = log_sum_exp(p_logits, n), q_norm = log_sum_exp(q_logits, n);
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double log_p = p_logits[i] - p_norm, log_q = q_logits[i] - q_norm;
    kl += std::exp(log_p) * (log_p - log_q);
  }
  return std::max(0.0, kl);
}

}  // namespace

LogitsReport compare_logits(const std::vector<int32_t>& tokens, const std::vector<float>& llama,
                            const std::vector<float>& reference, int64_t vocab) {
  const size_t expected = tokens.size() * static_cast<size_t>(vocab);
  if (llama.size() != expected || reference.size() != expected)
    fail("internal error: {} and {} logits for {} tokens of a vocabulary of {}", llama.size(), reference.size(),
         tokens.size(), vocab);
  LogitsReport report;
  report.vocab = vocab;
  double error = 0, energy = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const float* l = llama.data() + t * static_cast<size_t>(vocab);
    const float* r = reference.data() + t * static_cast<size_t>(vocab);
    double e = 0, s = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const double d = static_cast<double>(l[i]) - r[i];
      e += d * d;
      s += static_cast<double>(r[i]) * r[i];
    }
    PositionScore score;
    score.token = tokens[t];
    score.nmse = s > 0 ? e / s : e;
    score.kl = kl_divergence(r, l, vocab);
    score.reference_top1 = arg_max(r, vocab);
    score.llama_top1 = arg_max(l, vocab);
    report.positions.push_back(score);
    error += e;
    energy += s;
    report.mean_kl += score.kl / static_cast<double>(tokens.size());
    report.max_kl = std::max(report.max_kl, score.kl);
    report.top1_agreements += score.reference_top1 == score.llama_top1;
  }
  report.nmse = energy > 0 ? error / energy : error;
  return report;
}

std::vector<int32_t> verify_tokens(int64_t vocab, int count, int32_t first) {
  const auto range = static_cast<uint32_t>(std::min<int64_t>(vocab, 32000));
  std::mt19937 rng(1234);
  std::vector<int32_t> tokens{first};
  while (static_cast<int>(tokens.size()) < count) tokens.push_back(static_cast<int32_t>(rng() % range));
  return tokens;
}

std::string format_logits_report(const LogitsReport& report) {
  std::string out = fmt::format("logits: llama.cpp vs the reference forward pass of the source, {} positions, vocabulary {}\n",
                                report.positions.size(), report.vocab);
  out += fmt::format("  {:>4} {:>8} {:>11} {:>11} {:>8} {:>8}\n", "pos", "token", "NMSE", "KL", "top-1", "");
  for (size_t i = 0; i < report.positions.size(); ++i) {
    const PositionScore& p = report.positions[i];
    out += fmt::format("  {:>4} {:>8} {:>11.3e} {:>11.3e} {:>8} {}\n", i, p.token, p.nmse, p.kl, p.llama_top1,
                       p.llama_top1 == p.reference_top1 ? "same" : fmt::format("reference {}", p.reference_top1));
  }
  out += fmt::format("  all positions: NMSE {:.3e}, KL mean {:.3e} max {:.3e}, top-1 agreement {}/{}\n", report.nmse,
                     report.mean_kl, report.max_kl, report.top1_agreements, report.positions.size());
  return out;
}

nlohmann::json logits_report_json(const LogitsReport& report) {
  nlohmann::json out;
  out["vocab"] = report.vocab;
  out["nmse"] = report.nmse;
  out["mean_kl"] = report.mean_kl;
  out["max_kl"] = report.max_kl;
  out["top1_agreements"] = report.top1_agreements;
  out["positions"] = nlohmann::json::array();
  for (const auto& p : report.positions)
    out["positions"].push_back({{"token", p.token}, {"nmse", p.nmse}, {"kl", p.kl}, {"llama_top1", p.llama_top1},
                                {"reference_top1", p.reference_top1}});
  return out;
}

}  // namespace mlx2gguf
