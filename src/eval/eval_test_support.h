#pragma once
// Test helpers for the reference forward pass: a model folder built by hand (config.json plus one F32
// safetensors file) and deterministic pseudo-random weights.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

namespace mlx2gguf::eval_test {

struct F32Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// A model folder in a fresh temporary directory, removed when the object goes away.
class HandModel {
 public:
  HandModel() {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::temp_directory_path() /
           ("mlx2gguf-eval-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  ~HandModel() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  HandModel(const HandModel&) = delete;
  HandModel& operator=(const HandModel&) = delete;

  const std::filesystem::path& dir() const { return dir_; }

  // Writes config.json and model.safetensors (8-byte little-endian header length, JSON header, raw F32 data).
  void write(const nlohmann::json& config, const std::map<std::string, F32Tensor>& tensors) const {
    std::ofstream(dir_ / "config.json") << config.dump(2);
    nlohmann::json header = nlohmann::json::object();
    header["__metadata__"] = {{"format", "mlx"}};
    uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors) {
      int64_t count = 1;
      for (int64_t d : tensor.shape) count *= d;
      EXPECT_EQ(static_cast<size_t>(count), tensor.values.size()) << name;
      const uint64_t bytes = tensor.values.size() * 4;
      header[name] = {{"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
    }
    const std::string text = header.dump();
    std::ofstream out(dir_ / "model.safetensors", std::ios::binary);
    const uint64_t length = text.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((length >> (8 * i)) & 0xff));
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, tensor] : tensors) {
      for (float v : tensor.values) {
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        for (int i = 0; i < 4; ++i) out.put(static_cast<char>((bits >> (8 * i)) & 0xff));
      }
    }
  }

 private:
  std::filesystem::path dir_;
};

// Deterministic values uniform in [-scale, scale).
class Filler {
 public:
  explicit Filler(uint32_t seed) : rng_(seed) {}
  F32Tensor tensor(std::vector<int64_t> shape, double scale) {
    F32Tensor t;
    t.shape = std::move(shape);
    int64_t count = 1;
    for (int64_t d : t.shape) count *= d;
    std::uniform_real_distribution<double> dist(-scale, scale);
    for (int64_t i = 0; i < count; ++i) t.values.push_back(static_cast<float>(dist(rng_)));
    return t;
  }
  // 1 + uniform noise: plausible norm weights.
  F32Tensor norm(int64_t n) {
    F32Tensor t = tensor({n}, 0.2);
    for (float& v : t.values) v += 1.0f;
    return t;
  }

 private:
  std::mt19937 rng_;
};

}  // namespace mlx2gguf::eval_test
