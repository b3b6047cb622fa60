#pragma once
// Test helpers for the read side: a deliberately small safetensors writer (no padding, tensors packed back to back
// like MLX writes them), raw byte writers for malformed files, and a temporary directory that cleans up after itself.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

namespace mlx2gguf::test_support {

// A fresh directory under the system temp dir, removed (with its contents) when the object goes away.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string label = info ? std::string(info->test_suite_name()) + "." + info->name() : "mlx2gguf";
    for (char& c : label)
      if (c == '/') c = '_';
    path_ = std::filesystem::temp_directory_path() /
            ("mlx2gguf-" + label + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// ---- little-endian byte builders -------------------------------------------------------------------------------

inline std::vector<uint8_t> le_bytes(uint64_t value, int width) {
  std::vector<uint8_t> out;
  for (int i = 0; i < width; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
  return out;
}

inline std::vector<uint8_t> f32_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> out;
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    auto b = le_bytes(bits, 4);
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

inline std::vector<uint8_t> u16_bytes(const std::vector<uint16_t>& values) {
  std::vector<uint8_t> out;
  for (uint16_t v : values) {
    out.push_back(static_cast<uint8_t>(v));
    out.push_back(static_cast<uint8_t>(v >> 8));
  }
  return out;
}

inline std::vector<uint8_t> u32_bytes(const std::vector<uint32_t>& values) {
  std::vector<uint8_t> out;
  for (uint32_t v : values) {
    auto b = le_bytes(v, 4);
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

// Packs unsigned codes of `bits` bits each into a little-endian LSB-first bit stream, one bit at a time, and pads
// the stream to whole 32-bit words. Written for obviousness, not speed.
inline std::vector<uint8_t> pack_bits(const std::vector<uint32_t>& codes, int bits) {
  const size_t total_bits = codes.size() * static_cast<size_t>(bits);
  const size_t words = (total_bits + 31) / 32;
  std::vector<uint8_t> out(words * 4, 0);
  size_t position = 0;
  for (uint32_t code : codes) {
    for (int b = 0; b < bits; ++b) {
      const uint32_t bit = (code >> b) & 1u;
      out[position / 8] = static_cast<uint8_t>(out[position / 8] | (bit << (position % 8)));
      ++position;
    }
  }
  return out;
}

// Values exactly representable in both half formats, with their encodings worked out by hand
// (sign | biased exponent | mantissa); the negative entries stand for MLX's negative affine scales.
struct HalfValue {
  double value;
  uint16_t f16;
  uint16_t bf16;
};
inline constexpr HalfValue kHalfValues[] = {
    {1.0, 0x3C00, 0x3F80},     {-0.5, 0xB800, 0xBF00},     {0.25, 0x3400, 0x3E80},  {1.5, 0x3E00, 0x3FC0},
    {-2.0, 0xC000, 0xC000},    {0.125, 0x3000, 0x3E00},    {3.0, 0x4200, 0x4040},   {-0.375, 0xB600, 0xBEC0},
    {0.0625, 0x2C00, 0x3D80},  {-0.03125, 0xA800, 0xBD00}, {0.75, 0x3A00, 0x3F40},  {-1.25, 0xBD00, 0xBFA0},
};
inline constexpr size_t kHalfCount = sizeof(kHalfValues) / sizeof(kHalfValues[0]);

// ---- safetensors files ----------------------------------------------------------------------------------------

struct TensorBytes {
  std::string name;
  std::string dtype;  // as written in the header: "F32", "BF16", "U32", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

using Metadata = std::optional<nlohmann::json>;
inline Metadata mlx_metadata() { return nlohmann::json{{"format", "mlx"}}; }

// Header for `tensors` stored back to back in the given order; `metadata` becomes "__metadata__" (nullopt: no key).
inline nlohmann::json safetensors_header(const std::vector<TensorBytes>& tensors, const Metadata& metadata = mlx_metadata()) {
  nlohmann::json header = nlohmann::json::object();
  if (metadata) header["__metadata__"] = *metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  return header;
}

inline std::vector<uint8_t> concat_data(const std::vector<TensorBytes>& tensors) {
  std::vector<uint8_t> data;
  for (const auto& t : tensors) data.insert(data.end(), t.data.begin(), t.data.end());
  return data;
}

// Writes an 8-byte length, then `header_text` verbatim (no padding), then `data`. `declared_length` overrides the
// length field when given (for files that lie about their header).
inline void write_raw_safetensors(const std::filesystem::path& path, const std::string& header_text,
                                  const std::vector<uint8_t>& data, std::optional<uint64_t> declared_length = {}) {
  std::ofstream out(path, std::ios::binary);
  const auto length = le_bytes(declared_length.value_or(header_text.size()), 8);
  out.write(reinterpret_cast<const char*>(length.data()), 8);
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("test helper could not write " + path.string());
}

inline void write_safetensors(const std::filesystem::path& path, const std::vector<TensorBytes>& tensors,
                              const Metadata& metadata = mlx_metadata()) {
  write_raw_safetensors(path, safetensors_header(tensors, metadata).dump(), concat_data(tensors));
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("test helper could not write " + path.string());
}

inline void write_json(const std::filesystem::path& path, const nlohmann::json& value) {
  write_text(path, value.dump(4));
}

// ---- exception checks -----------------------------------------------------------------------------------------

// Runs `action`, expecting an exception of type E whose message contains every one of `parts`.
template <typename E>
::testing::AssertionResult throws_with(const std::function<void()>& action, const std::vector<std::string>& parts) {
  try {
    action();
  } catch (const E& e) {
    const std::string message = e.what();
    for (const auto& part : parts) {
      if (message.find(part) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << message << "\" lacks \"" << part << "\"";
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw the wrong exception type: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace mlx2gguf::test_support
