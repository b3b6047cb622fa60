#include "read/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "read/json_input.h"
#include "util/error.h"

namespace mlx2gguf {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::U32: return "U32";
    case DType::U8: return "U8";
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::U32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

int64_t StoredTensor::element_count() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

namespace {

bool parse_dtype(const std::string& text, DType& out) {
  static const std::pair<const char*, DType> known[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"U32", DType::U32}, {"U8", DType::U8}};
  for (const auto& [name, dtype] : known) {
    if (text == name) {
      out = dtype;
      return true;
    }
  }
  return false;
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(path));
  file->parse();
  return file;
}

void SafetensorsFile::parse() {
  const std::string file = map_.path().string();
  const auto bytes = map_.bytes();
  if (bytes.size() < 8) fail("'{}' is not a safetensors file: {} bytes, too short for the 8-byte header length", file, bytes.size());
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxHeaderBytes)
    fail("'{}': safetensors header claims {} bytes, more than the {} byte limit (corrupt or not a safetensors file)", file,
         header_len, kMaxHeaderBytes);
  if (header_len > bytes.size() - 8)
    fail("'{}' is truncated: header claims {} bytes but the file has only {} after the length field", file, header_len,
         bytes.size() - 8);
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  const nlohmann::json header =
      parse_json_text(std::string_view(header_begin, header_len), fmt::format("the safetensors header of '{}'", file));
  if (!header.is_object()) fail("'{}': safetensors header is not a JSON object", file);

  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = bytes.size() - data_begin;
  struct Extent {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Extent> extents;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      metadata_ = entry;
      continue;
    }
    if (!entry.is_object()) fail("'{}': header entry '{}' is not an object describing a tensor", file, name);
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(field)) fail("'{}': tensor '{}' lacks \"{}\" in the header", file, name, field);
    }
    StoredTensor tensor;
    tensor.name = name;
    tensor.file = map_.path();
    if (!entry["dtype"].is_string()) fail("'{}': tensor '{}' has a non-string dtype", file, name);
    const std::string dtype_text = entry["dtype"].get<std::string>();
    if (!parse_dtype(dtype_text, tensor.dtype))
      fail("'{}': tensor '{}' has dtype {}, which is not an MLX weight type (expected F32, F16, BF16, U32 or U8)", file, name,
           dtype_text);
    const auto& shape = entry["shape"];
    if (!shape.is_array()) fail("'{}': tensor '{}' has a shape that is not a list", file, name);
    uint64_t elements = 1;
    for (const auto& dim : shape) {
      if (!dim.is_number_unsigned()) fail("'{}': tensor '{}' has a negative or non-integer dimension", file, name);
      const uint64_t d = dim.get<uint64_t>();
      if (d != 0 && elements > std::numeric_limits<uint64_t>::max() / 8 / d)
        fail("'{}': tensor '{}' has an impossibly large shape", file, name);
      elements *= d;
      tensor.shape.push_back(static_cast<int64_t>(d));
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      fail("'{}': tensor '{}' has malformed data_offsets (expected two non-negative integers)", file, name);
    const uint64_t begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    if (begin > end) fail("'{}': tensor '{}' has data_offsets [{}, {}] that end before they begin", file, name, begin, end);
    if (end > data_size)
      fail("'{}': tensor '{}' ends at byte {} of the data section, but the file holds only {} data bytes (truncated file?)",
           file, name, end, data_size);
    const uint64_t expected = elements * dtype_size(tensor.dtype);
    if (end - begin != expected)
      fail("'{}': tensor '{}' has {} data bytes but shape {} of {} needs {}", file, name, end - begin, shape.dump(),
           dtype_text, expected);
    tensor.bytes = bytes.subspan(data_begin + begin, end - begin);
    if (end > begin) extents.push_back({begin, end, name});
    tensors_.emplace(name, std::move(tensor));
  }

  std::sort(extents.begin(), extents.end(), [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < extents.size(); ++i) {
    if (extents[i].begin < extents[i - 1].end)
      fail("'{}': tensors '{}' and '{}' overlap in the data section", file, extents[i - 1].name, extents[i].name);
  }
}

}  // namespace mlx2gguf
