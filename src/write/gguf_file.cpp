#include "write/gguf_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>

#include "util/cancel.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

uint64_t pad_to(uint64_t x, uint64_t alignment) { return (x + alignment - 1) / alignment * alignment; }

class ByteSink {
 public:
  template <typename T>
  void pod(T value) {
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  void string(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  std::vector<uint8_t> bytes;
};

void write_element(ByteSink& out, const GgufValue& v, GgufType t, size_t i) {
  switch (t) {
    case GgufType::UINT8: out.pod<uint8_t>(static_cast<uint8_t>(v.ints[i])); break;
    case GgufType::INT8: out.pod<int8_t>(static_cast<int8_t>(v.ints[i])); break;
    case GgufType::UINT16: out.pod<uint16_t>(static_cast<uint16_t>(v.ints[i])); break;
    case GgufType::INT16: out.pod<int16_t>(static_cast<int16_t>(v.ints[i])); break;
    case GgufType::UINT32: out.pod<uint32_t>(static_cast<uint32_t>(v.ints[i])); break;
    case GgufType::INT32: out.pod<int32_t>(static_cast<int32_t>(v.ints[i])); break;
    case GgufType::FLOAT32: out.pod<float>(static_cast<float>(v.floats[i])); break;
    case GgufType::BOOL: out.pod<uint8_t>(v.ints[i] ? 1 : 0); break;
    case GgufType::STRING: out.string(v.strings[i]); break;
    case GgufType::UINT64: out.pod<uint64_t>(static_cast<uint64_t>(v.ints[i])); break;
    case GgufType::INT64: out.pod<int64_t>(v.ints[i]); break;
    case GgufType::FLOAT64: out.pod<double>(v.floats[i]); break;
    case GgufType::ARRAY: fail("internal error: nested GGUF arrays are not allowed");
  }
}

void write_value(ByteSink& out, const GgufValue& v) {
  out.pod<int32_t>(static_cast<int32_t>(v.type));
  if (!v.is_array()) {
    write_element(out, v, v.type, 0);
    return;
  }
  out.pod<int32_t>(static_cast<int32_t>(v.element_type));
  out.pod<uint64_t>(v.size());
  for (size_t i = 0; i < v.size(); ++i) write_element(out, v, v.element_type, i);
}

// A new temporary file next to `path`, named `<path>.XXXXXX.partial` with a unique XXXXXX, so that two runs writing
// the same output never share one. Returns the open descriptor and sets `temp_path`.
int create_unique_temp(const std::filesystem::path& path, std::filesystem::path& temp_path) {
  std::string name = path.string() + ".XXXXXX.partial";
  const int fd = ::mkstemps(name.data(), static_cast<int>(std::strlen(".partial")));
  if (fd < 0) fail("cannot create a temporary file next to '{}': {}", path.string(), std::strerror(errno));
  temp_path = name;
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  // mkstemps creates the file private (0600); the output gets the usual permissions of a new file.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  return fd;
}

// Allocates `size` bytes for the file, so that a disk too small fails now rather than after minutes of writing.
// Returns 0, or the errno of the failure (EOPNOTSUPP-like values when the file system cannot preallocate).
int preallocate(int fd, uint64_t size) {
#if defined(__linux__)
  return ::fallocate(fd, 0, 0, static_cast<off_t>(size)) == 0 ? 0 : errno;
#elif defined(__APPLE__)
  fstore_t store{F_ALLOCATEALL, F_PEOFPOSMODE, 0, static_cast<off_t>(size), 0};
  return ::fcntl(fd, F_PREALLOCATE, &store) == -1 ? errno : 0;
#else
  return ::posix_fallocate(fd, 0, static_cast<off_t>(size));
#endif
}

bool is_out_of_space(int error) { return error == ENOSPC || error == EFBIG || error == EDQUOT; }

void fail_out_of_space(const std::filesystem::path& path, uint64_t size, const char* reason) {
  fail("not enough space for '{}': it needs {:.1f} MiB ({})", path.string(), static_cast<double>(size) / 1048576.0,
       reason);
}

// Reserves the whole file up front; where the file system cannot preallocate, at least checks the free space.
void reserve_space(int fd, const std::filesystem::path& path, uint64_t size) {
  const int error = preallocate(fd, size);
  if (error == 0) return;
  if (is_out_of_space(error)) fail_out_of_space(path, size, std::strerror(error));
  struct statvfs fs {};
  if (::fstatvfs(fd, &fs) == 0 && static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize < size)
    fail_out_of_space(path, size, "the file system has less free space");
}

// Makes a rename durable: the directory entry itself is flushed. Some file systems cannot fsync a directory
// (EINVAL); the data is flushed already, so that is not an error.
void sync_directory(const std::filesystem::path& file) {
  std::filesystem::path dir = std::filesystem::absolute(file).parent_path();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0 && error != EINVAL && error != EROFS)
    fail("cannot flush directory '{}' after writing '{}': {}", dir.string(), file.string(), std::strerror(error));
}

}  // namespace

int64_t GgufTensorInfo::element_count() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

uint64_t GgufTensorInfo::size_bytes() const {
  const auto& info = ggml_type_info(type);
  return static_cast<uint64_t>(element_count() / info.block_size * info.type_size);
}

namespace {

// The header (magic, metadata, tensor infos) padded to the data section, with every tensor's offset set.
ByteSink lay_out(const GgufMetadata& metadata, std::vector<GgufTensorInfo>& tensors, uint64_t& data_start,
                 uint64_t& data_size) {
  ByteSink header;
  header.bytes.insert(header.bytes.end(), {'G', 'G', 'U', 'F'});
  header.pod<uint32_t>(3);
  header.pod<int64_t>(static_cast<int64_t>(tensors.size()));
  header.pod<int64_t>(static_cast<int64_t>(metadata.entries().size()));
  for (const auto& entry : metadata.entries()) {
    header.string(entry.key);
    write_value(header, entry.value);
  }
  uint64_t offset = 0;
  for (auto& tensor : tensors) {
    if (tensor.name.size() >= 64) fail("internal error: tensor name '{}' is 64 bytes or longer", tensor.name);
    const auto& info = ggml_type_info(tensor.type);
    if (tensor.ne.empty() || tensor.ne[0] % info.block_size != 0)
      fail("internal error: tensor '{}' row of {} is not a multiple of the {} block size {}", tensor.name,
           tensor.ne.empty() ? 0 : tensor.ne[0], info.name, info.block_size);
    tensor.offset = offset;
    offset += pad_to(tensor.size_bytes(), kGgufAlignment);
    header.string(tensor.name);
    header.pod<uint32_t>(static_cast<uint32_t>(tensor.ne.size()));
    for (int64_t d : tensor.ne) header.pod<int64_t>(d);
    header.pod<int32_t>(static_cast<int32_t>(tensor.type));
    header.pod<uint64_t>(tensor.offset);
  }
  data_start = pad_to(header.bytes.size(), kGgufAlignment);
  data_size = offset;
  header.bytes.resize(data_start, 0);
  return header;
}

}  // namespace

uint64_t gguf_file_size(const GgufMetadata& metadata, std::vector<GgufTensorInfo> tensors) {
  uint64_t data_start = 0, data_size = 0;
  lay_out(metadata, tensors, data_start, data_size);
  return data_start + data_size;
}

GgufWriter::GgufWriter(std::filesystem::path path, const GgufMetadata& metadata, std::vector<GgufTensorInfo> tensors)
    : path_(std::move(path)), tensors_(std::move(tensors)) {
  const ByteSink header = lay_out(metadata, tensors_, data_start_, data_size_);

  fd_ = create_unique_temp(path_, temp_path_);
  set_cancel_cleanup_path(temp_path_.string());
  try {
    reserve_space(fd_, path_, file_size());
    // Zero-filled to full size up front: padding needs no writes and the data can be written in any order.
    if (::ftruncate(fd_, static_cast<off_t>(file_size())) != 0) {
      const int error = errno;
      if (is_out_of_space(error)) fail_out_of_space(path_, file_size(), std::strerror(error));
      fail("cannot size '{}' to {} bytes: {}", temp_path_.string(), file_size(), std::strerror(error));
    }
    const uint8_t* p = header.bytes.data();
    size_t left = header.bytes.size();
    off_t at = 0;
    while (left > 0) {
      const ssize_t n = ::pwrite(fd_, p, left, at);
      if (n <= 0) fail("cannot write '{}': {}", temp_path_.string(), std::strerror(errno));
      p += n;
      left -= static_cast<size_t>(n);
      at += n;
    }
  } catch (...) {
    // The destructor does not run for a constructor that throws: clean up here.
    ::close(fd_);
    std::error_code ec;
    std::filesystem::remove(temp_path_, ec);
    clear_cancel_cleanup_path(temp_path_.string());
    throw;
  }
}

GgufWriter::~GgufWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(temp_path_, ec);
  }
  clear_cancel_cleanup_path(temp_path_.string());
}

void GgufWriter::write(size_t index, uint64_t offset, std::span<const uint8_t> bytes) {
  const auto& tensor = tensors_.at(index);
  if (offset + bytes.size() > tensor.size_bytes())
    fail("internal error: write past the end of tensor '{}'", tensor.name);
  const uint8_t* p = bytes.data();
  size_t left = bytes.size();
  off_t at = static_cast<off_t>(data_start_ + tensor.offset + offset);
  while (left > 0) {
    const ssize_t n = ::pwrite(fd_, p, left, at);
    if (n <= 0) fail("cannot write '{}' (the output '{}'): {}", temp_path_.string(), path_.string(),
                     n < 0 ? std::strerror(errno) : "disk full?");
    p += n;
    left -= static_cast<size_t>(n);
    at += n;
  }
}

void GgufWriter::commit() {
  flush();
  throw_if_cancelled();  // the last moment a stop request can still leave the previous output in place
  publish();
}

void GgufWriter::flush() {
  if (fd_ < 0) return;
  if (::fsync(fd_) != 0) fail("cannot flush '{}': {}", temp_path_.string(), std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
}

void GgufWriter::publish() {
  flush();
  std::error_code ec;
  std::filesystem::rename(temp_path_, path_, ec);
  if (ec) fail("cannot rename '{}' to '{}': {}", temp_path_.string(), path_.string(), ec.message());
  committed_ = true;
  clear_cancel_cleanup_path(temp_path_.string());
  sync_directory(path_);
}

void GgufWriter::unpublish() {
  if (!committed_) return;
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

namespace {

class ByteSource {
 public:
  ByteSource(const std::filesystem::path& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) fail("cannot open '{}'", path.string());
    in_.seekg(0, std::ios::end);
    size_ = static_cast<uint64_t>(in_.tellg());
    in_.seekg(0);
  }
  template <typename T>
  T pod() {
    T value{};
    read(&value, sizeof(T));
    return value;
  }
  std::string string() {
    const uint64_t n = pod<uint64_t>();
    if (n > remaining()) fail("'{}' is corrupt: a {}-byte string runs past the end of the file", path_.string(), n);
    std::string s(n, '\0');
    read(s.data(), n);
    return s;
  }
  void read(void* out, uint64_t n) {
    if (n > remaining()) fail("'{}' is truncated (wanted {} more bytes at offset {})", path_.string(), n, position());
    in_.read(static_cast<char*>(out), static_cast<std::streamsize>(n));
  }
  uint64_t position() { return static_cast<uint64_t>(in_.tellg()); }
  uint64_t remaining() { return size_ - position(); }
  uint64_t size() const { return size_; }

 private:
  std::filesystem::path path_;
  std::ifstream in_;
  uint64_t size_ = 0;
};

void read_element(ByteSource& in, GgufValue& v, GgufType t) {
  switch (t) {
    case GgufType::UINT8: v.ints.push_back(in.pod<uint8_t>()); break;
    case GgufType::INT8: v.ints.push_back(in.pod<int8_t>()); break;
    case GgufType::UINT16: v.ints.push_back(in.pod<uint16_t>()); break;
    case GgufType::INT16: v.ints.push_back(in.pod<int16_t>()); break;
    case GgufType::UINT32: v.ints.push_back(in.pod<uint32_t>()); break;
    case GgufType::INT32: v.ints.push_back(in.pod<int32_t>()); break;
    case GgufType::FLOAT32: v.floats.push_back(in.pod<float>()); break;
    case GgufType::BOOL: v.ints.push_back(in.pod<uint8_t>() != 0); break;
    case GgufType::STRING: v.strings.push_back(in.string()); break;
    case GgufType::UINT64: v.ints.push_back(static_cast<int64_t>(in.pod<uint64_t>())); break;
    case GgufType::INT64: v.ints.push_back(in.pod<int64_t>()); break;
    case GgufType::FLOAT64: v.floats.push_back(in.pod<double>()); break;
    default: fail("invalid GGUF value type {}", static_cast<int>(t));
  }
}

// Dimensions a tensor info may claim: non-negative, whole blocks per row, and no more bytes than the file has (which
// also keeps every size computed from them free of overflow).
void check_tensor_shape(const std::filesystem::path& path, const GgufTensorInfo& tensor, uint64_t file_size) {
  const auto& info = ggml_type_info(tensor.type);
  uint64_t elements = 1;
  for (const int64_t d : tensor.ne) {
    if (d < 0) fail("'{}' is corrupt: tensor '{}' has the negative dimension {}", path.string(), tensor.name, d);
    const auto n = static_cast<uint64_t>(d);
    if (n != 0 && elements > std::numeric_limits<uint64_t>::max() / n / info.type_size)
      fail("'{}' is corrupt: tensor '{}' has an impossibly large shape", path.string(), tensor.name);
    elements *= n;
  }
  if (!tensor.ne.empty() && tensor.ne[0] % info.block_size != 0)
    fail("'{}' is corrupt: tensor '{}' has rows of {} elements, not whole {} blocks of {}", path.string(), tensor.name,
         tensor.ne[0], info.name, info.block_size);
  if (elements / info.block_size * info.type_size > file_size)
    fail("'{}' is corrupt or truncated: tensor '{}' needs {} bytes, more than the whole file ({})", path.string(),
         tensor.name, elements / info.block_size * info.type_size, file_size);
}

}  // namespace

GgufFile GgufFile::read(const std::filesystem::path& path) {
  ByteSource in(path);
  GgufFile file;
  file.file_size = in.size();
  char magic[4];
  in.read(magic, 4);
  if (std::memcmp(magic, "GGUF", 4) != 0) fail("'{}' is not a GGUF file (bad magic)", path.string());
  file.version = in.pod<uint32_t>();
  if (file.version != 2 && file.version != 3) fail("'{}': unsupported GGUF version {}", path.string(), file.version);
  const int64_t n_tensors = in.pod<int64_t>();
  const int64_t n_kv = in.pod<int64_t>();
  if (n_tensors < 0 || n_kv < 0 || static_cast<uint64_t>(n_tensors) > in.remaining() ||
      static_cast<uint64_t>(n_kv) > in.remaining() - static_cast<uint64_t>(n_tensors))
    fail("'{}' is corrupt: {} tensors and {} keys cannot fit in the file", path.string(), n_tensors, n_kv);
  for (int64_t i = 0; i < n_kv; ++i) {
    std::string key = in.string();
    GgufValue value;
    value.type = static_cast<GgufType>(in.pod<int32_t>());
    if (value.is_array()) {
      value.element_type = static_cast<GgufType>(in.pod<int32_t>());
      const uint64_t count = in.pod<uint64_t>();
      if (count > in.remaining()) fail("'{}' is corrupt: array '{}' claims {} elements", path.string(), key, count);
      for (uint64_t j = 0; j < count; ++j) read_element(in, value, value.element_type);
    } else {
      read_element(in, value, value.type);
    }
    file.metadata.set(key, std::move(value));
  }
  uint64_t alignment = kGgufAlignment;
  if (const auto* a = file.metadata.get("general.alignment")) {
    // ggml accepts only a u32 power of two; anything else would also break the offset arithmetic below.
    const bool valid = a->type == GgufType::UINT32 && a->ints.size() == 1 && a->ints[0] > 0 && (a->ints[0] & (a->ints[0] - 1)) == 0;
    if (!valid) fail("'{}' is corrupt: general.alignment must be a u32 power of two, got {} {}", path.string(),
                     gguf_type_name(a->type), a->to_string());
    alignment = static_cast<uint64_t>(a->ints[0]);
  }
  for (int64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo tensor;
    tensor.name = in.string();
    const uint32_t n_dims = in.pod<uint32_t>();
    if (n_dims > 4) fail("'{}': tensor '{}' has {} dimensions", path.string(), tensor.name, n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) tensor.ne.push_back(in.pod<int64_t>());
    const int32_t type = in.pod<int32_t>();
    if (!ggml_type_info(type)) fail("'{}': tensor '{}' has unknown type {}", path.string(), tensor.name, type);
    tensor.type = static_cast<GgmlType>(type);
    tensor.offset = in.pod<uint64_t>();
    check_tensor_shape(path, tensor, in.size());
    file.tensors.push_back(std::move(tensor));
  }
  file.data_start = pad_to(in.position(), alignment);
  const uint64_t data_bytes = file.file_size > file.data_start ? file.file_size - file.data_start : 0;
  for (const auto& tensor : file.tensors) {
    const uint64_t bytes = tensor.size_bytes();
    if (bytes > 0 && (tensor.offset > data_bytes || bytes > data_bytes - tensor.offset))
      fail("'{}' is corrupt or truncated: tensor '{}' ({} bytes at data offset {}) runs past the end of the file ({} "
           "data bytes)", path.string(), tensor.name, bytes, tensor.offset, data_bytes);
  }
  return file;
}

}  // namespace mlx2gguf
