#pragma once
// GGUF vocabulary: tensor (ggml) types with their block geometry, and metadata values.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mlx2gguf {

enum class GgmlType : int32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41, Q2_0 = 42,
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;
  int64_t block_size;  // elements per block
  int64_t type_size;   // bytes per block
};

// Geometry of a type; nullopt for codes ggml does not (or no longer) accept.
std::optional<GgmlTypeInfo> ggml_type_info(int32_t code);
const GgmlTypeInfo& ggml_type_info(GgmlType type);
std::optional<GgmlType> ggml_type_from_name(std::string_view name);  // "q8_0", "F16", ...
int64_t ggml_row_bytes(GgmlType type, int64_t elements);

enum class GgufType : int32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType type);

// A metadata value: a scalar or a one-level array. Integers (and bools) live in `ints`, floats in `floats`,
// strings in `strings`; scalars have exactly one element.
struct GgufValue {
  GgufType type = GgufType::UINT32;
  GgufType element_type = GgufType::UINT32;  // meaningful for arrays only
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue str(std::string v);
  static GgufValue str_array(std::vector<std::string> v);
  static GgufValue i32_array(const std::vector<int32_t>& v);
  static GgufValue u32_array(const std::vector<uint32_t>& v);
  static GgufValue f32_array(const std::vector<float>& v);

  bool is_array() const { return type == GgufType::ARRAY; }
  size_t size() const;  // element count (1 for scalars)
  // Human-readable rendering for `inspect`; long arrays are abbreviated unless `full`.
  std::string to_string(bool full = false) const;
};

struct GgufKeyValue {
  std::string key;
  GgufValue value;
};

// Ordered metadata; setting an existing key replaces its value in place.
class GgufMetadata {
 public:
  void set(const std::string& key, GgufValue value);
  const GgufValue* get(const std::string& key) const;
  bool has(const std::string& key) const { return get(key) != nullptr; }
  void erase(const std::string& key);
  const std::vector<GgufKeyValue>& entries() const { return entries_; }

 private:
  std::vector<GgufKeyValue> entries_;
};

}  // namespace mlx2gguf
