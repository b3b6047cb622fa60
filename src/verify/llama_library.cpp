#include "verify/llama_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>

#include <fmt/ranges.h>

#include "util/error.h"

namespace mlx2gguf {

namespace {

// llama.cpp's parameter structs change between releases. mlx2gguf keeps them opaque: it takes the library's own
// defaults and changes only the leading fields of the context parameters (context size, batch sizes, sequences),
// which every release has had in that order. They are held in a buffer larger than any release's struct; the
// x86-64 and AArch64 calling conventions pass and return structs of this size through memory, so the library
// reads and writes its own layout inside the buffer.
struct alignas(16) OpaqueParams {
  unsigned char bytes[2048];
};

// One batch of tokens as llama_decode takes it (llama.cpp's struct of that name: a count and six arrays).
struct Batch {
  int32_t n_tokens;
  int32_t* token;
  float* embd;
  int32_t* pos;
  int32_t* n_seq_id;
  int32_t** seq_id;
  int8_t* logits;  // non-zero: keep this position's logits
};

// Messages at warning level and above, kept for error messages; the rest is not printed.
std::mutex log_mutex;
std::string last_log;
void collect_log(int level, const char* text, void*) {
  constexpr int kWarn = 3, kContinuation = 5;
  if (text == nullptr || (level < kWarn && level != kContinuation)) return;
  std::lock_guard lock(log_mutex);
  last_log += text;
  if (last_log.size() > 4000) last_log.erase(0, last_log.size() - 4000);
}

std::string take_log() {
  std::lock_guard lock(log_mutex);
  std::string text = std::move(last_log);
  last_log.clear();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text.empty() ? "no reason given" : text;
}

}  // namespace

struct LlamaLibrary::Api {
  void (*backend_init)();
  void (*log_set)(void (*)(int, const char*, void*), void*);
  void (*load_backends)(const char*);
  OpaqueParams (*model_default_params)();
  void* (*model_load)(const char*, OpaqueParams);
  void (*model_free)(void*);
  OpaqueParams (*context_default_params)();
  void* (*context_init)(void*, OpaqueParams);
  void (*context_free)(void*);
  const void* (*model_vocab)(const void*);
  int32_t (*vocab_size)(const void*);
  Batch (*batch_init)(int32_t, int32_t, int32_t);
  void (*batch_free)(Batch);
  int32_t (*decode)(void*, Batch);
  float* (*logits_ith)(void*, int32_t);
};

namespace {

template <typename F>
void bind(void* handle, const std::filesystem::path& path, const char* name, F& function) {
  void* symbol = ::dlsym(handle, name);
  if (symbol == nullptr) fail("'{}' has no function {}: not a llama.cpp library this version of mlx2gguf can use", path.string(), name);
  function = reinterpret_cast<F>(symbol);
}

}  // namespace

// ---- finding libllama -----------------------------------------------------------------------------------------

namespace {

namespace fs = std::filesystem;

constexpr const char* kLibraryNames[] = {"libllama.so", "libllama.dylib"};
constexpr const char* kLlamaPrograms[] = {"llama-cli", "llama-server"};

bool is_file(const fs::path& path) {
  std::error_code error;
  return fs::is_regular_file(path, error);  // follows symlinks
}

// The folders of $PATH holding `program`, in $PATH order.
std::vector<fs::path> programs_on_path(const std::string& path_variable, const char* program) {
  std::vector<fs::path> found;
  size_t begin = 0;
  while (begin <= path_variable.size()) {
    size_t end = path_variable.find(':', begin);
    if (end == std::string::npos) end = path_variable.size();
    const std::string dir = path_variable.substr(begin, end - begin);
    if (!dir.empty() && is_file(fs::path(dir) / program)) found.push_back(fs::path(dir) / program);
    begin = end + 1;
  }
  return found;
}

struct Place {
  fs::path dir;
  std::string how;
};

void add_program_places(const fs::path& program, std::vector<Place>& places) {
  const std::string how = fmt::format("next to {} on PATH ({})", program.filename().string(), program.string());
  std::vector<fs::path> bins = {program.parent_path()};
  std::error_code error;
  const fs::path real = fs::canonical(program, error);
  if (!error && real.parent_path() != program.parent_path()) bins.push_back(real.parent_path());
  for (const fs::path& bin : bins) {
    places.push_back({bin, how});
    places.push_back({(bin / ".." / "lib").lexically_normal(), how});
  }
}

}  // namespace

LlamaSearch LlamaSearch::from_environment() {
  LlamaSearch search;
  if (const char* env = std::getenv("MLX2GGUF_LLAMA_LIB"); env != nullptr && *env != '\0') search.env_library = env;
  if (const char* path = std::getenv("PATH")) search.path = path;
  search.system_dirs = {"/opt/homebrew/lib", "/usr/local/lib"};
#if defined(__linux__) && defined(__x86_64__)
  search.system_dirs.emplace_back("/usr/lib/x86_64-linux-gnu");
#elif defined(__linux__) && defined(__aarch64__)
  search.system_dirs.emplace_back("/usr/lib/aarch64-linux-gnu");
#endif
  search.system_dirs.emplace_back("/usr/lib64");
  search.system_dirs.emplace_back("/usr/lib");
  return search;
}

FoundLlamaLibrary find_llama_library(const LlamaSearch& search) {
  if (search.env_library) {
    if (!is_file(*search.env_library))
      fail("MLX2GGUF_LLAMA_LIB names '{}', which is not a file", *search.env_library);
    return {*search.env_library, "from MLX2GGUF_LLAMA_LIB"};
  }
  std::vector<Place> places;
  for (const char* program : kLlamaPrograms)
    for (const fs::path& found : programs_on_path(search.path, program)) add_program_places(found, places);
  for (const fs::path& dir : search.system_dirs) places.push_back({dir, "in " + dir.string()});
  std::vector<std::string> looked;
  for (const Place& place : places) {
    for (const char* name : kLibraryNames)
      if (is_file(place.dir / name)) return {place.dir / name, place.how};
    looked.push_back(place.dir.string());
  }
  const bool programs_found = places.size() > search.system_dirs.size();
  fail("no llama.cpp library found for the logits check: pass --llama-lib PATH or set MLX2GGUF_LLAMA_LIB to the "
       "libllama of a llama.cpp installation. Looked for {} in: {}{}",
       fmt::join(kLibraryNames, " and "), fmt::join(looked, ", "),
       programs_found ? "" : fmt::format(" (no {} on PATH)", fmt::join(kLlamaPrograms, " or ")));
}

// ---- loading it ------------------------------------------------------------------------------------------------

std::unique_ptr<LlamaLibrary> LlamaLibrary::open(const std::filesystem::path& given) {
  if (!std::filesystem::exists(given)) fail("llama.cpp library '{}' does not exist", given.string());
  // The real file: its folder is where the ggml libraries it needs ($ORIGIN) and the CPU backends are.
  const std::filesystem::path path = std::filesystem::canonical(given);
  std::unique_ptr<LlamaLibrary> library(new LlamaLibrary());
  library->handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library->handle_ == nullptr) fail("cannot load llama.cpp library '{}': {}", path.string(), ::dlerror());
  library->api_ = std::make_unique<Api>();
  Api& api = *library->api_;
  void* h = library->handle_;
  bind(h, path, "llama_backend_init", api.backend_init);
  bind(h, path, "llama_log_set", api.log_set);
  bind(h, path, "ggml_backend_load_all_from_path", api.load_backends);
  bind(h, path, "llama_model_default_params", api.model_default_params);
  bind(h, path, "llama_model_load_from_file", api.model_load);
  bind(h, path, "llama_model_free", api.model_free);
  bind(h, path, "llama_context_default_params", api.context_default_params);
  bind(h, path, "llama_init_from_model", api.context_init);
  bind(h, path, "llama_free", api.context_free);
  bind(h, path, "llama_model_get_vocab", api.model_vocab);
  bind(h, path, "llama_vocab_n_tokens", api.vocab_size);
  bind(h, path, "llama_batch_init", api.batch_init);
  bind(h, path, "llama_batch_free", api.batch_free);
  bind(h, path, "llama_decode", api.decode);
  bind(h, path, "llama_get_logits_ith", api.logits_ith);
  api.log_set(collect_log, nullptr);
  // Prebuilt releases ship the CPU backend as libggml-cpu-<variant>.so next to libllama.so, loaded on request.
  const std::string dir = std::filesystem::absolute(path).parent_path().string();
  api.load_backends(dir.c_str());
  api.backend_init();
  return library;
}

LlamaLibrary::~LlamaLibrary() {
  // The library stays loaded: ggml's backends register global state that unloading would leave dangling.
}

std::vector<float> LlamaLibrary::logits(const std::filesystem::path& gguf, const std::vector<int32_t>& tokens,
                                        int64_t& vocab) {
  const Api& api = *api_;
  take_log();
  const auto n = static_cast<uint32_t>(tokens.size());
  if (n == 0) fail("no tokens to evaluate");
  const std::unique_ptr<void, void (*)(void*)> model(api.model_load(gguf.c_str(), api.model_default_params()), api.model_free);
  if (!model) fail("llama.cpp cannot load '{}': {}", gguf.string(), take_log());
  vocab = api.vocab_size(api.model_vocab(model.get()));

  OpaqueParams params = api.context_default_params();
  const uint32_t sizes[4] = {n, n, n, 1};  // n_ctx, n_batch, n_ubatch, n_seq_max: one batch of the whole sequence
  std::memcpy(params.bytes, sizes, sizeof(sizes));
  const std::unique_ptr<void, void (*)(void*)> context(api.context_init(model.get(), params), api.context_free);
  if (!context) fail("llama.cpp cannot create a context for '{}': {}", gguf.string(), take_log());

  Batch batch = api.batch_init(static_cast<int32_t>(n), 0, 1);
  for (uint32_t i = 0; i < n; ++i) {
    batch.token[i] = tokens[i];
    batch.pos[i] = static_cast<int32_t>(i);
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;
  }
  batch.n_tokens = static_cast<int32_t>(n);
  const int32_t status = api.decode(context.get(), batch);
  api.batch_free(batch);
  if (status != 0) fail("llama.cpp failed to evaluate '{}' (llama_decode returned {}): {}", gguf.string(), status, take_log());
  std::vector<float> out(static_cast<size_t>(n) * static_cast<size_t>(vocab));
  for (uint32_t i = 0; i < n; ++i) {
    const float* row = api.logits_ith(context.get(), static_cast<int32_t>(i));
    if (row == nullptr) fail("llama.cpp returned no logits for position {} of '{}'", i, gguf.string());
    std::memcpy(out.data() + static_cast<size_t>(i) * static_cast<size_t>(vocab), row, static_cast<size_t>(vocab) * 4);
  }
  return out;
}

}  // namespace mlx2gguf
