#include "gguf_listing.h"

#include <stdexcept>

#include "ggml.h"
#include "gguf.h"

namespace oracle {

GgufListing gguf_list_file(const std::string& path) {
  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_context* gguf = gguf_init_from_file(path.c_str(), params);
  if (gguf == nullptr) throw std::runtime_error("ggml rejected " + path);
  GgufListing listing;
  listing.version = gguf_get_version(gguf);
  for (int64_t i = 0; i < gguf_get_n_kv(gguf); ++i) listing.keys.emplace_back(gguf_get_key(gguf, i));
  const size_t data_offset = gguf_get_data_offset(gguf);
  for (int64_t i = 0; i < gguf_get_n_tensors(gguf); ++i) {
    GgufListing::Tensor tensor;
    tensor.name = gguf_get_tensor_name(gguf, i);
    tensor.type = ggml_type_name(gguf_get_tensor_type(gguf, i));
    const int64_t* ne = gguf_get_tensor_ne(gguf, i);
    tensor.ne.assign(ne, ne + GGML_MAX_DIMS);
    tensor.file_offset = data_offset + gguf_get_tensor_offset(gguf, i);
    tensor.bytes = gguf_get_tensor_size(gguf, i);
    listing.tensors.push_back(std::move(tensor));
  }
  gguf_free(gguf);
  return listing;
}

}  // namespace oracle
