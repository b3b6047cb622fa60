#include "gguf/gguf_types.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "util/error.h"

namespace mlx2gguf {

namespace {

const GgmlTypeInfo kTypes[] = {
    {GgmlType::F32, "F32", 1, 4},         {GgmlType::F16, "F16", 1, 2},         {GgmlType::Q4_0, "Q4_0", 32, 18},
    {GgmlType::Q4_1, "Q4_1", 32, 20},     {GgmlType::Q5_0, "Q5_0", 32, 22},     {GgmlType::Q5_1, "Q5_1", 32, 24},
    {GgmlType::Q8_0, "Q8_0", 32, 34},     {GgmlType::Q8_1, "Q8_1", 32, 36},     {GgmlType::Q2_K, "Q2_K", 256, 84},
    {GgmlType::Q3_K, "Q3_K", 256, 110},   {GgmlType::Q4_K, "Q4_K", 256, 144},   {GgmlType::Q5_K, "Q5_K", 256, 176},
    {GgmlType::Q6_K, "Q6_K", 256, 210},   {GgmlType::Q8_K, "Q8_K", 256, 292},   {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66},
    {GgmlType::IQ2_XS, "IQ2_XS", 256, 74}, {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98}, {GgmlType::IQ1_S, "IQ1_S", 256, 50},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18}, {GgmlType::IQ3_S, "IQ3_S", 256, 110}, {GgmlType::IQ2_S, "IQ2_S", 256, 82},
    {GgmlType::IQ4_XS, "IQ4_XS", 256, 136}, {GgmlType::I8, "I8", 1, 1},        {GgmlType::I16, "I16", 1, 2},
    {GgmlType::I32, "I32", 1, 4},         {GgmlType::I64, "I64", 1, 8},         {GgmlType::F64, "F64", 1, 8},
    {GgmlType::IQ1_M, "IQ1_M", 256, 56},  {GgmlType::BF16, "BF16", 1, 2},       {GgmlType::TQ1_0, "TQ1_0", 256, 54},
    {GgmlType::TQ2_0, "TQ2_0", 256, 66},  {GgmlType::MXFP4, "MXFP4", 32, 17},   {GgmlType::NVFP4, "NVFP4", 64, 36},
    {GgmlType::Q1_0, "Q1_0", 128, 18},    {GgmlType::Q2_0, "Q2_0", 64, 18},
};

}  // namespace

std::optional<GgmlTypeInfo> ggml_type_info(int32_t code) {
  for (const auto& info : kTypes) {
    if (static_cast<int32_t>(info.type) == code) return info;
  }
  return std::nullopt;
}

const GgmlTypeInfo& ggml_type_info(GgmlType type) {
  for (const auto& info : kTypes) {
    if (info.type == type) return info;
  }
  fail("internal error: unknown ggml type {}", static_cast<int>(type));
}

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
  std::string upper(name);
  std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
  for (const auto& info : kTypes) {
    if (upper == info.name) return info.type;
  }
  return std::nullopt;
}

int64_t ggml_row_bytes(GgmlType type, int64_t elements) {
  const auto& info = ggml_type_info(type);
  return elements / info.block_size * info.type_size;
}

const char* gguf_type_name(GgufType type) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
  const auto index = static_cast<int32_t>(type);
  return index >= 0 && index <= 12 ? names[index] : "?";
}

GgufValue GgufValue::u32(uint32_t v) { GgufValue x; x.type = GgufType::UINT32; x.ints = {v}; return x; }
GgufValue GgufValue::i32(int32_t v) { GgufValue x; x.type = GgufType::INT32; x.ints = {v}; return x; }
GgufValue GgufValue::u64(uint64_t v) { GgufValue x; x.type = GgufType::UINT64; x.ints = {static_cast<int64_t>(v)}; return x; }
GgufValue GgufValue::f32(float v) { GgufValue x; x.type = GgufType::FLOAT32; x.floats = {v}; return x; }
GgufValue GgufValue::boolean(bool v) { GgufValue x; x.type = GgufType::BOOL; x.ints = {v ? 1 : 0}; return x; }
GgufValue GgufValue::str(std::string v) { GgufValue x; x.type = GgufType::STRING; x.strings = {std::move(v)}; return x; }

GgufValue GgufValue::str_array(std::vector<std::string> v) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.element_type = GgufType::STRING;
  x.strings = std::move(v);
  return x;
}

GgufValue GgufValue::i32_array(const std::vector<int32_t>& v) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.element_type = GgufType::INT32;
  x.ints.assign(v.begin(), v.end());
  return x;
}

GgufValue GgufValue::u32_array(const std::vector<uint32_t>& v) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.element_type = GgufType::UINT32;
  x.ints.assign(v.begin(), v.end());
  return x;
}

GgufValue GgufValue::f32_array(const std::vector<float>& v) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.element_type = GgufType::FLOAT32;
  x.floats.assign(v.begin(), v.end());
  return x;
}

size_t GgufValue::size() const {
  const GgufType t = is_array() ? element_type : type;
  if (t == GgufType::STRING) return strings.size();
  if (t == GgufType::FLOAT32 || t == GgufType::FLOAT64) return floats.size();
  return ints.size();
}

namespace {

std::string element_to_string(const GgufValue& v, GgufType t, size_t i) {
  switch (t) {
    case GgufType::STRING: return fmt::format("{:?}", v.strings[i]);
    case GgufType::FLOAT32:
    case GgufType::FLOAT64: return fmt::format("{}", v.floats[i]);
    case GgufType::BOOL: return v.ints[i] ? "true" : "false";
    case GgufType::UINT64: return fmt::format("{}", static_cast<uint64_t>(v.ints[i]));
    default: return fmt::format("{}", v.ints[i]);
  }
}

}  // namespace

std::string GgufValue::to_string(bool full) const {
  if (!is_array()) return element_to_string(*this, type, 0);
  const size_t n = size();
  const size_t shown = full ? n : std::min<size_t>(n, 8);
  std::string out = "[";
  for (size_t i = 0; i < shown; ++i) {
    if (i) out += ", ";
    out += element_to_string(*this, element_type, i);
  }
  if (shown < n) out += fmt::format(", ... ({} items)", n);
  return out + "]";
}

void GgufMetadata::set(const std::string& key, GgufValue value) {
  for (auto& entry : entries_) {
    if (entry.key == key) {
      entry.value = std::move(value);
      return;
    }
  }
  entries_.push_back({key, std::move(value)});
}

const GgufValue* GgufMetadata::get(const std::string& key) const {
  for (const auto& entry : entries_) {
    if (entry.key == key) return &entry.value;
  }
  return nullptr;
}

void GgufMetadata::erase(const std::string& key) {
  std::erase_if(entries_, [&](const GgufKeyValue& e) { return e.key == key; });
}

}  // namespace mlx2gguf
