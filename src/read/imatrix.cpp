#include "read/imatrix.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <span>

#include "read/mapped_file.h"
#include "util/error.h"
#include "write/gguf_file.h"

namespace mlx2gguf {

namespace {

const std::string kSumsSuffix = ".in_sum2";
const std::string kCountsSuffix = ".counts";

void check_finite(const ImportanceMatrix& matrix, const std::string& name, const std::vector<float>& weights) {
  for (size_t i = 0; i < weights.size(); ++i)
    if (!std::isfinite(weights[i]))
      fail("importance matrix '{}': entry '{}' holds {} at index {}; llama-quantize refuses non-finite importance",
           matrix.path.string(), name, weights[i], i);
}

// --- legacy .dat ---

class LegacyReader {
 public:
  LegacyReader(const std::filesystem::path& path, std::span<const uint8_t> bytes) : path_(path), bytes_(bytes) {}

  size_t remaining() const { return bytes_.size() - at_; }

  int32_t int32(const char* what) {
    if (remaining() < 4) fail("importance matrix '{}' is truncated: no room for {} at byte {}", path_.string(), what, at_);
    int32_t v;
    std::memcpy(&v, bytes_.data() + at_, 4);
    at_ += 4;
    return v;
  }

  std::string text(size_t length) {
    std::string s(reinterpret_cast<const char*>(bytes_.data() + at_), length);
    at_ += length;
    return s;
  }

  std::vector<float> floats(size_t count) {
    std::vector<float> v(count);
    std::memcpy(v.data(), bytes_.data() + at_, count * 4);
    at_ += count * 4;
    return v;
  }

 private:
  const std::filesystem::path& path_;
  std::span<const uint8_t> bytes_;
  size_t at_ = 0;
};

void read_legacy(std::span<const uint8_t> bytes, ImportanceMatrix& matrix) {
  const std::string file = matrix.path.string();
  LegacyReader in(matrix.path, bytes);
  const int32_t n_entries = in.int32("the entry count");
  if (n_entries < 1) fail("importance matrix '{}' holds no entries (entry count {})", file, n_entries);
  for (int32_t e = 0; e < n_entries; ++e) {
    const int32_t length = in.int32("a name length");
    if (length < 1 || static_cast<size_t>(length) > in.remaining())
      fail("importance matrix '{}' is corrupt: entry {} of {} has a name length of {} with {} bytes left", file, e + 1,
           n_entries, length, in.remaining());
    const std::string name = in.text(static_cast<size_t>(length));
    if (name.find('\0') != std::string::npos)
      fail("importance matrix '{}' is corrupt: the name of entry {} contains a NUL byte", file, e + 1);
    const int32_t calls = in.int32("a call count");
    const int32_t count = in.int32("a value count");
    if (count < 1 || static_cast<size_t>(count) > in.remaining() / 4)
      fail("importance matrix '{}' is corrupt: entry '{}' claims {} values with {} bytes left", file, name, count,
           in.remaining());
    std::vector<float> values = in.floats(static_cast<size_t>(count));
    // llama-imatrix stores mean squared activations times the call count; llama-quantize divides it back out.
    if (calls > 0)
      for (float& v : values) v = v / static_cast<float>(calls);
    check_finite(matrix, name, values);
    if (!matrix.entries.emplace(name, std::move(values)).second)
      fail("importance matrix '{}' is corrupt: entry '{}' appears twice", file, name);
  }
  // Optional trailer: the chunk count, then the dataset name.
  if (in.remaining() == 0) return;
  const int32_t chunks = in.int32("the chunk count");
  matrix.chunk_count = chunks > 0 ? static_cast<uint32_t>(chunks) : 0;
  if (in.remaining() < 4) return;
  const int32_t length = in.int32("the dataset name length");
  if (length > 0 && static_cast<size_t>(length) <= in.remaining()) {
    std::string dataset = in.text(static_cast<size_t>(length));
    dataset.resize(std::strlen(dataset.c_str()));  // llama.cpp reads it as a C string
    matrix.datasets.push_back(std::move(dataset));
  }
}

// --- GGUF ---

const GgufValue& required_key(const GgufFile& gguf, const ImportanceMatrix& matrix, const char* key) {
  const GgufValue* value = gguf.metadata.get(key);
  if (value == nullptr)
    fail("importance matrix '{}' lacks the key '{}' that llama-imatrix writes (llama-quantize refuses such files)",
         matrix.path.string(), key);
  return *value;
}

uint32_t u32_key(const GgufFile& gguf, const ImportanceMatrix& matrix, const char* key) {
  const GgufValue& value = required_key(gguf, matrix, key);
  if (value.type != GgufType::UINT32 || value.ints.size() != 1)
    fail("importance matrix '{}': '{}' must be a u32, got {}", matrix.path.string(), key, gguf_type_name(value.type));
  return static_cast<uint32_t>(value.ints[0]);
}

bool strip_suffix(std::string& name, const std::string& suffix) {
  if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
  name.resize(name.size() - suffix.size());
  return true;
}

std::vector<float> tensor_floats(const GgufFile& gguf, const MappedFile& mapped, const GgufTensorInfo& tensor,
                                 const ImportanceMatrix& matrix) {
  if (tensor.type != GgmlType::F32)
    fail("importance matrix '{}': tensor '{}' is {}, llama-imatrix writes F32", matrix.path.string(), tensor.name,
         ggml_type_info(tensor.type).name);
  std::vector<float> values(static_cast<size_t>(tensor.element_count()));
  // GgufFile::read checked that every tensor lies within the file. An empty tensor has no data to copy (and an empty
  // vector no buffer to copy into).
  if (!values.empty())
    std::memcpy(values.data(), mapped.bytes().data() + gguf.data_start + tensor.offset, values.size() * 4);
  return values;
}

void read_gguf(const MappedFile& mapped, ImportanceMatrix& matrix) {
  const std::string file = matrix.path.string();
  const GgufFile gguf = GgufFile::read(matrix.path);
  if (gguf.tensors.empty()) fail("importance matrix '{}' holds no entries", file);

  const GgufValue& datasets = required_key(gguf, matrix, "imatrix.datasets");
  if (!datasets.is_array() || datasets.element_type != GgufType::STRING)
    fail("importance matrix '{}': 'imatrix.datasets' must be an array of strings", file);
  matrix.datasets = datasets.strings;
  matrix.chunk_count = u32_key(gguf, matrix, "imatrix.chunk_count");
  u32_key(gguf, matrix, "imatrix.chunk_size");

  std::map<std::string, std::pair<const GgufTensorInfo*, const GgufTensorInfo*>> parts;  // sums, counts
  for (const auto& tensor : gguf.tensors) {
    std::string name = tensor.name;
    if (strip_suffix(name, kSumsSuffix))
      parts[name].first = &tensor;
    else if (strip_suffix(name, kCountsSuffix))
      parts[name].second = &tensor;
  }
  for (const auto& [name, pair] : parts) {
    const auto [sums_info, counts_info] = pair;
    if (sums_info == nullptr || counts_info == nullptr)
      fail("importance matrix '{}': '{}' has {} but no {}", file, name, sums_info ? kSumsSuffix : kCountsSuffix,
           sums_info ? kCountsSuffix : kSumsSuffix);
    const std::vector<float> sums = tensor_floats(gguf, mapped, *sums_info, matrix);
    const std::vector<float> counts = tensor_floats(gguf, mapped, *counts_info, matrix);
    if (counts.empty() || sums.size() % counts.size() != 0)
      fail("importance matrix '{}': '{}' has {} sums for {} counts; the sums must be a whole row per count", file,
           name, sums.size(), counts.size());
    const size_t row = sums.size() / counts.size();
    std::vector<float> weights(sums.size());
    for (size_t expert = 0; expert < counts.size(); ++expert) {
      if (!std::isfinite(counts[expert]) || counts[expert] < 0)
        fail("importance matrix '{}': '{}' has count {} for expert {}", file, name, counts[expert], expert);
      // Counts are whole numbers stored as floats; an expert never activated gets uniform importance.
      const float count = static_cast<float>(std::lround(counts[expert]));
      for (size_t i = 0; i < row; ++i)
        weights[expert * row + i] = count > 0.0f ? sums[expert * row + i] / count : 1.0f;
    }
    check_finite(matrix, name, weights);
    matrix.entries.emplace(name, std::move(weights));
  }
  if (matrix.entries.empty())
    fail("importance matrix '{}' has no '<tensor>{}' / '<tensor>{}' pairs", file, kSumsSuffix, kCountsSuffix);
}

}  // namespace

ImportanceMatrix read_imatrix(const std::filesystem::path& path) {
  if (!std::filesystem::is_regular_file(path)) fail("importance matrix '{}' does not exist or is not a file", path.string());
  ImportanceMatrix matrix;
  matrix.path = path;
  const MappedFile mapped(path);
  const auto bytes = mapped.bytes();
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0) {
    read_gguf(mapped, matrix);
  } else {
    matrix.legacy = true;
    read_legacy(bytes, matrix);
  }
  return matrix;
}

void write_imatrix_gguf(const std::filesystem::path& path, const std::map<std::string, std::vector<float>>& sums,
                        const std::map<std::string, std::vector<float>>& counts, const std::vector<std::string>& datasets,
                        uint32_t chunk_count, uint32_t chunk_size) {
  GgufMetadata metadata;
  metadata.set("general.type", GgufValue::str("imatrix"));
  metadata.set("imatrix.datasets", GgufValue::str_array(datasets));
  metadata.set("imatrix.chunk_count", GgufValue::u32(chunk_count));
  metadata.set("imatrix.chunk_size", GgufValue::u32(chunk_size));
  std::vector<GgufTensorInfo> infos;
  std::vector<const std::vector<float>*> data;
  for (const auto& [name, values] : sums) {
    const auto& n = counts.at(name);
    const auto experts = static_cast<int64_t>(n.size());
    infos.push_back({name + kSumsSuffix, {static_cast<int64_t>(values.size()) / experts, experts}, GgmlType::F32, 0});
    data.push_back(&values);
    infos.push_back({name + kCountsSuffix, {1, experts}, GgmlType::F32, 0});
    data.push_back(&n);
  }
  GgufWriter writer(path, metadata, infos);
  for (size_t i = 0; i < data.size(); ++i)
    writer.write(i, 0, {reinterpret_cast<const uint8_t*>(data[i]->data()), data[i]->size() * 4});
  writer.commit();
}

void write_imatrix_legacy(const std::filesystem::path& path, const std::map<std::string, std::vector<float>>& values,
                          const std::map<std::string, int32_t>& calls, int32_t chunk_count, const std::string& dataset) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const auto put = [&](int32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  put(static_cast<int32_t>(values.size()));
  for (const auto& [name, v] : values) {
    put(static_cast<int32_t>(name.size()));
    out.write(name.data(), static_cast<std::streamsize>(name.size()));
    put(calls.at(name));
    put(static_cast<int32_t>(v.size()));
    out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  }
  put(chunk_count);
  put(static_cast<int32_t>(dataset.size()));
  out.write(dataset.data(), static_cast<std::streamsize>(dataset.size()));
  if (!out) fail("cannot write importance matrix '{}'", path.string());
}

}  // namespace mlx2gguf
