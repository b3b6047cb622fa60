#include "write/gguf_split.h"

#include <limits>
#include <regex>
#include <set>

#include "util/cancel.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

constexpr const char* kSplitNo = "split.no";
constexpr const char* kSplitCount = "split.count";
constexpr const char* kSplitTensors = "split.tensors.count";

GgufValue u16(uint16_t value) {
  GgufValue v;
  v.type = GgufType::UINT16;
  v.ints = {value};
  return v;
}

GgufValue i32(int32_t value) {
  GgufValue v;
  v.type = GgufType::INT32;
  v.ints = {value};
  return v;
}

// A split key as llama.cpp requires it: present and of exactly its type.
int64_t split_key(const GgufFile& file, const std::filesystem::path& path, const char* key, GgufType type) {
  const GgufValue* value = file.metadata.get(key);
  if (value == nullptr) fail("'{}' is part of a split GGUF set but has no '{}'", path.string(), key);
  if (value->type != type || value->ints.size() != 1)
    fail("'{}': '{}' must be a {} (llama.cpp reads it so), got {}", path.string(), key, gguf_type_name(type),
         gguf_type_name(value->type));
  return value->ints[0];
}

}  // namespace

uint64_t parse_split_size(const std::string& text) {
  static const std::regex pattern(R"((\d{1,15})([KMG]?))");
  std::smatch match;
  if (!std::regex_match(text, match, pattern))
    fail("--split-max-size '{}' is not a number of bytes, optionally followed by K, M or G (1000, 1000², 1000³)", text);
  const uint64_t number = std::stoull(match[1].str());
  const std::string unit = match[2].str();
  const uint64_t scale = unit == "K" ? 1000ULL : unit == "M" ? 1000ULL * 1000 : unit == "G" ? 1000ULL * 1000 * 1000 : 1;
  if (number == 0) fail("--split-max-size '{}' must be more than 0", text);
  return number * scale;  // at most 15 digits times 10^9: no overflow
}

std::vector<size_t> assign_split_parts(const std::vector<GgufTensorInfo>& tensors, const SplitLimits& limits) {
  std::vector<size_t> parts;
  size_t part = 0;
  int64_t count = 0;
  uint64_t bytes = 0;
  for (const auto& tensor : tensors) {
    const uint64_t size = tensor.size_bytes();
    const bool too_many = limits.max_tensors > 0 && count >= limits.max_tensors;
    const bool too_big = limits.max_bytes > 0 && bytes + size > limits.max_bytes;
    if (count > 0 && (too_many || too_big)) {
      ++part;
      count = 0;
      bytes = 0;
    }
    parts.push_back(part);
    ++count;
    bytes += size;
  }
  return parts;
}

std::filesystem::path split_part_path(const std::filesystem::path& outfile, size_t index, size_t count) {
  std::string prefix = outfile.string();
  if (prefix.size() > 5 && prefix.ends_with(".gguf")) prefix.resize(prefix.size() - 5);
  return fmt::format("{}-{:05d}-of-{:05d}.gguf", prefix, index + 1, count);
}

GgufSplitWriter::GgufSplitWriter(const std::filesystem::path& outfile, const GgufMetadata& metadata,
                                 std::vector<GgufTensorInfo> tensors, const SplitLimits& limits) {
  const std::vector<size_t> part_of = assign_split_parts(tensors, limits);
  const size_t count = part_of.empty() ? 1 : part_of.back() + 1;
  if (count > std::numeric_limits<uint16_t>::max())
    fail("the limits make {} files for '{}', more than the {} split.count can number: raise --split-max-size or "
         "--split-max-tensors", count, outfile.string(), std::numeric_limits<uint16_t>::max());
  if (tensors.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    fail("internal error: {} tensors cannot be counted in split.tensors.count", tensors.size());
  std::vector<std::vector<GgufTensorInfo>> part_tensors(count);
  for (size_t i = 0; i < tensors.size(); ++i) {
    location_.emplace_back(part_of[i], part_tensors[part_of[i]].size());
    part_tensors[part_of[i]].push_back(std::move(tensors[i]));
  }
  if (count == 1) {
    paths_ = {outfile};
    parts_.push_back(std::make_unique<GgufWriter>(outfile, metadata, std::move(part_tensors[0])));
    return;
  }
  for (size_t p = 0; p < count; ++p) {
    // As llama.cpp's tools write sets: all metadata in the first file, only the split keys in the others.
    GgufMetadata part_metadata = p == 0 ? metadata : GgufMetadata{};
    part_metadata.set(kSplitNo, u16(static_cast<uint16_t>(p)));
    part_metadata.set(kSplitCount, u16(static_cast<uint16_t>(count)));
    part_metadata.set(kSplitTensors, i32(static_cast<int32_t>(tensors.size())));
    paths_.push_back(split_part_path(outfile, p, count));
    parts_.push_back(std::make_unique<GgufWriter>(paths_.back(), part_metadata, std::move(part_tensors[p])));
  }
}

GgufSplitWriter::~GgufSplitWriter() = default;  // each part removes its temporary file unless published

uint64_t GgufSplitWriter::file_size() const {
  uint64_t total = 0;
  for (const auto& part : parts_) total += part->file_size();
  return total;
}

void GgufSplitWriter::write(size_t index, uint64_t offset, std::span<const uint8_t> bytes) {
  const auto [part, local] = location_.at(index);
  parts_[part]->write(local, offset, bytes);
}

void GgufSplitWriter::commit() {
  for (auto& part : parts_) part->flush();
  throw_if_cancelled();  // the last moment a stop request can still leave previous outputs in place
  // The first file last: until it appears, no loader takes the set for complete.
  size_t published = 0;
  try {
    for (size_t i = parts_.size(); i-- > 0; ++published) parts_[i]->publish();
  } catch (...) {
    for (size_t i = parts_.size() - published; i < parts_.size(); ++i) parts_[i]->unpublish();
    throw;
  }
}

uint64_t GgufSplitSet::total_bytes() const {
  uint64_t total = 0;
  for (const auto& part : parts) total += part.file_size;
  return total;
}

GgufSplitSet GgufSplitSet::open(const std::filesystem::path& path) {
  GgufSplitSet set;
  GgufFile given = GgufFile::read(path);
  if (!given.metadata.has(kSplitCount)) {
    set.paths = {path};
    set.parts.push_back(std::move(given));
  } else {
    const int64_t count = split_key(given, path, kSplitCount, GgufType::UINT16);
    const int64_t no = split_key(given, path, kSplitNo, GgufType::UINT16);
    if (count < 1 || no >= count)
      fail("'{}' is corrupt: split.no {} of split.count {}", path.string(), no, count);
    const std::string suffix = fmt::format("-{:05d}-of-{:05d}.gguf", no + 1, count);
    const std::string name = path.string();
    if (!name.ends_with(suffix))
      fail("'{}' is file {} of a split set of {} but is not named '<prefix>{}': its other files cannot be found",
           name, no + 1, count, suffix);
    const std::filesystem::path prefix = name.substr(0, name.size() - suffix.size()) + ".gguf";
    for (int64_t i = 0; i < count; ++i) {
      const std::filesystem::path part_path = split_part_path(prefix, static_cast<size_t>(i), static_cast<size_t>(count));
      if (i != no && !std::filesystem::exists(part_path))
        fail("split set of '{}': its file {} of {}, '{}', is missing", path.string(), i + 1, count, part_path.string());
      GgufFile part = i == no ? std::move(given) : GgufFile::read(part_path);
      if (split_key(part, part_path, kSplitNo, GgufType::UINT16) != i ||
          split_key(part, part_path, kSplitCount, GgufType::UINT16) != count)
        fail("'{}' does not belong to the split set of '{}' as file {} of {}", part_path.string(), path.string(), i + 1,
             count);
      set.paths.push_back(part_path);
      set.parts.push_back(std::move(part));
    }
  }
  std::set<std::string> names;
  for (size_t p = 0; p < set.parts.size(); ++p) {
    for (const auto& tensor : set.parts[p].tensors) {
      if (!names.insert(tensor.name).second)
        fail("'{}': tensor '{}' appears twice in the split set", set.paths[p].string(), tensor.name);
      set.tensors.push_back({tensor, p, set.parts[p].data_start + tensor.offset});
    }
  }
  if (set.parts.size() > 1) {
    const int64_t expected = split_key(set.parts.front(), set.paths.front(), kSplitTensors, GgufType::INT32);
    if (expected != static_cast<int64_t>(set.tensors.size()))
      fail("split set of '{}': split.tensors.count says {} tensors, its files hold {}", path.string(), expected,
           set.tensors.size());
  }
  return set;
}

}  // namespace mlx2gguf
