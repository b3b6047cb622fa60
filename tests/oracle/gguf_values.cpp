#include "gguf_values.h"

#include <stdexcept>

#include "gguf.h"

namespace oracle {

GgufValues::GgufValues(const std::string& path) : path_(path) {
  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_ = gguf_init_from_file(path.c_str(), params);
  if (gguf_ == nullptr) throw std::runtime_error("ggml rejected " + path);
}

GgufValues::~GgufValues() { gguf_free(gguf_); }

bool GgufValues::has(const std::string& key) const { return gguf_find_key(gguf_, key.c_str()) >= 0; }

std::string GgufValues::type(const std::string& key) const {
  const int64_t id = gguf_find_key(gguf_, key.c_str());
  if (id < 0) throw std::runtime_error(path_ + " has no key " + key);
  const gguf_type type = gguf_get_kv_type(gguf_, id);
  if (type == GGUF_TYPE_ARRAY) return std::string("arr[") + gguf_type_name(gguf_get_arr_type(gguf_, id)) + "]";
  return gguf_type_name(type);
}

int64_t GgufValues::require(const std::string& key, int type) const {
  const int64_t id = gguf_find_key(gguf_, key.c_str());
  if (id < 0) throw std::runtime_error(path_ + " has no key " + key);
  if (gguf_get_kv_type(gguf_, id) != type)
    throw std::runtime_error(key + " is " + this->type(key) + ", not " + gguf_type_name(static_cast<gguf_type>(type)));
  return id;
}

std::string GgufValues::str(const std::string& key) const { return gguf_get_val_str(gguf_, require(key, GGUF_TYPE_STRING)); }

std::vector<std::string> GgufValues::str_array(const std::string& key) const {
  const int64_t id = require(key, GGUF_TYPE_ARRAY);
  if (gguf_get_arr_type(gguf_, id) != GGUF_TYPE_STRING) throw std::runtime_error(key + " is " + type(key));
  std::vector<std::string> items;
  for (size_t i = 0; i < gguf_get_arr_n(gguf_, id); ++i) items.emplace_back(gguf_get_arr_str(gguf_, id, i));
  return items;
}

float GgufValues::f32(const std::string& key) const { return gguf_get_val_f32(gguf_, require(key, GGUF_TYPE_FLOAT32)); }
int32_t GgufValues::i32(const std::string& key) const { return gguf_get_val_i32(gguf_, require(key, GGUF_TYPE_INT32)); }
uint32_t GgufValues::u32(const std::string& key) const { return gguf_get_val_u32(gguf_, require(key, GGUF_TYPE_UINT32)); }
uint16_t GgufValues::u16(const std::string& key) const { return gguf_get_val_u16(gguf_, require(key, GGUF_TYPE_UINT16)); }
int64_t GgufValues::n_tensors() const { return gguf_get_n_tensors(gguf_); }

}  // namespace oracle
