#include "gen/safetensors_writer.h"

#include <fstream>

#include "read/mlx_quantize.h"
#include "util/error.h"

namespace mlx2gguf::gen {

int64_t GenTensor::element_count() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

std::string safetensors_header(const std::vector<GenTensor>& tensors, const nlohmann::json& metadata,
                               size_t header_alignment) {
  nlohmann::json header = nlohmann::json::object();  // std::map-backed: keys come out sorted, as in MLX's files
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const GenTensor& tensor : tensors) {
    const uint64_t size = static_cast<uint64_t>(tensor.element_count()) * dtype_size(tensor.dtype);
    if (tensor.data.size() != size)
      fail("tensor '{}': {} data bytes for a {} tensor of {} elements (expected {})", tensor.name, tensor.data.size(),
           dtype_name(tensor.dtype), tensor.element_count(), size);
    if (header.contains(tensor.name)) fail("tensor '{}' is given twice", tensor.name);
    header[tensor.name] = {{"dtype", dtype_name(tensor.dtype)}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string text = header.dump();
  if (header_alignment > 1) text.append((header_alignment - text.size() % header_alignment) % header_alignment, ' ');
  return text;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<GenTensor>& tensors,
                       const nlohmann::json& metadata, size_t header_alignment) {
  const std::string header = safetensors_header(tensors, metadata, header_alignment);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create '{}'", path.string());
  uint8_t length[8];
  uint64_t value = header.size();
  for (uint8_t& byte : length) {
    byte = static_cast<uint8_t>(value & 0xff);
    value >>= 8;
  }
  out.write(reinterpret_cast<const char*>(length), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const GenTensor& tensor : tensors)
    out.write(reinterpret_cast<const char*>(tensor.data.data()), static_cast<std::streamsize>(tensor.data.size()));
  if (!out.flush()) fail("cannot write '{}'", path.string());
}

std::vector<uint8_t> float_bytes(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) store_float(values[i], dtype, bytes.data() + i * dtype_size(dtype));
  return bytes;
}

std::vector<uint8_t> word_bytes(const std::vector<uint32_t>& words) {
  std::vector<uint8_t> bytes(words.size() * 4);
  for (size_t i = 0; i < words.size(); ++i)
    for (int b = 0; b < 4; ++b) bytes[i * 4 + b] = static_cast<uint8_t>(words[i] >> (8 * b));
  return bytes;
}

}  // namespace mlx2gguf::gen
