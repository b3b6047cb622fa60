#include "e2e_support.h"

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <random>

namespace e2e {

namespace fs = std::filesystem;

fs::path work_dir() {
  fs::path dir = MLX2GGUF_TEST_WORK_DIR;
  fs::create_directories(dir);
  return dir;
}

fs::path cached_model(const std::string& key, const mlx2gguf::gen::TinyModelSpec& spec) {
  const fs::path dir = work_dir() / "models" / key;
  if (fs::exists(dir / "config.json")) return dir;
  fs::create_directories(dir.parent_path());
  const fs::path temp = dir.parent_path() / fmt::format(".{}.{}", key, ::getpid());
  fs::remove_all(temp);
  mlx2gguf::gen::write_tiny_model(spec, temp);
  std::error_code ec;
  fs::rename(temp, dir, ec);  // another process may have won the race: its copy is identical
  if (ec) fs::remove_all(temp);
  return dir;
}

CommandResult run_mlx2gguf(const std::vector<std::string>& args, const fs::path& cwd) {
  auto quote = [](const std::string& text) {
    std::string inner;
    for (char c : text) inner += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return fmt::format("'{}'", inner);
  };
  std::string command = cwd.empty() ? quote(MLX2GGUF_BINARY) : fmt::format("cd {} && {}", quote(cwd.string()), quote(MLX2GGUF_BINARY));
  for (const auto& arg : args) command += " " + quote(arg);
  command += " 2>&1";
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size() || want.empty()) return INFINITY;
  double error = 0, energy = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    error += d * d;
    energy += static_cast<double>(want[i]) * want[i];
  }
  return error / energy;
}

Top1Comparison compare_top1(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab,
                            double min_relative_margin) {
  Top1Comparison result;
  for (size_t row = 0; (row + 1) * vocab <= want.size(); ++row) {
    const float* g = got.data() + row * vocab;
    const float* w = want.data() + row * vocab;
    ++result.positions;
    const int64_t best = std::max_element(w, w + vocab) - w;
    double second = -INFINITY, energy = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      energy += static_cast<double>(w[v]) * w[v];
      if (v != best) second = std::max(second, static_cast<double>(w[v]));
    }
    const double rms = std::sqrt(energy / static_cast<double>(vocab));
    if (w[best] - second < min_relative_margin * rms) continue;
    ++result.decidable;
    if (std::max_element(g, g + vocab) - g != best) ++result.mismatches;
  }
  return result;
}

std::vector<int32_t> probe_tokens(int64_t vocab, int count, int32_t first) {
  std::mt19937 rng(1234);
  std::vector<int32_t> tokens{first};
  while (static_cast<int>(tokens.size()) < count) tokens.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
  return tokens;
}

}  // namespace e2e
