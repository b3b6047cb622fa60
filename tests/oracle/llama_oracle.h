#pragma once
// Reference implementations the tests compare mlx2gguf against. Everything here runs the REAL thing:
//   - llama.cpp and ggml: the prebuilt CPU libraries of the npm package node-llama-cpp (see cmake/oracle.cmake);
//   - Hugging Face tokenizers: the Rust library through its node binding (@anush008/tokenizers).
// llama.cpp's informational logging is silenced; its error messages become the text of the exceptions (or the
// return value of gguf_check_file) instead of being printed.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

struct llama_model;
struct llama_adapter_lora;

namespace oracle {

// Threads llama.cpp uses for evaluation and quantization; fixed so results never depend on the machine.
constexpr int kThreads = 2;

// A GGUF loaded by llama.cpp on the CPU.
class LlamaModel {
 public:
  // Throws std::runtime_error carrying llama.cpp's reason when it rejects the file. With `vocab_only`, only
  // the metadata and vocabulary are loaded (tokenizer tests need no weights). Beware: a few inconsistencies
  // (e.g. block_count 0) trip assertions inside llama.cpp, which abort the process instead of throwing.
  static std::unique_ptr<LlamaModel> load(const std::string& gguf_path, bool vocab_only = false);
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  int n_vocab() const;

  // Logits at EVERY position of one sequence starting at position 0, row-major [tokens.size()][n_vocab()].
  // Each call evaluates in a fresh context, so calls are independent. Throws on a vocab-only model.
  std::vector<float> logits(const std::vector<int32_t>& tokens);

  // Loads a GGUF LoRA adapter for this model (llama_adapter_lora_init); it lives as long as the model. Throws with
  // llama.cpp's reason when it refuses the file. Returns a handle for logits_with_adapter.
  int load_adapter(const std::string& gguf_path);
  // logits() with adapter `handle` applied at `user_scale` (llama_set_adapters_lora), as `llama-cli --lora` does.
  std::vector<float> logits_with_adapter(const std::vector<int32_t>& tokens, int handle, float user_scale = 1.0f);
  // A metadata value of a loaded adapter as llama.cpp reads it; "" if absent.
  std::string adapter_meta(int handle, const std::string& key) const;

  // llama_tokenize: `add_special` adds BOS/EOS as the model's metadata asks; `parse_special` turns the text of
  // special tokens (e.g. "<|eot_id|>") into those tokens instead of tokenizing it as plain text.
  std::vector<int32_t> tokenize(const std::string& text, bool add_special, bool parse_special) const;
  // `special`: render control tokens as their text (otherwise they render as "").
  std::string token_to_piece(int32_t token, bool special) const;
  std::string detokenize(const std::vector<int32_t>& tokens, bool special) const;

  // Renders the model's own chat template (tokenizer.chat_template) with llama_chat_apply_template, which
  // recognises the template among llama.cpp's built-in formats (it does not run Jinja). Throws if the model
  // has no template or llama.cpp does not recognise it.
  std::string apply_chat_template(const std::vector<std::pair<std::string, std::string>>& role_content,
                                  bool add_assistant) const;

  // A metadata value rendered as text by llama.cpp (arrays are not supported); "" if the key is absent.
  std::string meta(const std::string& key) const;

  // Special tokens as llama.cpp resolved them; -1 when the model has none.
  int32_t token_bos() const;
  int32_t token_eos() const;
  int32_t token_eot() const;
  bool is_eog(int32_t token) const;  // any end-of-generation token

 private:
  LlamaModel(llama_model* model, bool vocab_only) : model_(model), vocab_only_(vocab_only) {}
  std::vector<float> evaluate(const std::vector<int32_t>& tokens, llama_adapter_lora* adapter, float scale);
  llama_model* model_;
  bool vocab_only_;
  std::vector<llama_adapter_lora*> adapters_;
};

// ggml's own GGUF parser, reading every byte (tensor data included) and checking alignment, offsets and sizes.
// Returns "" if ggml accepts the file, otherwise ggml's reason.
std::string gguf_check_file(const std::string& path);

// ggml's reference quantizer (ggml_quantize_chunk) for any ggml type code it can produce (F32, F16, BF16 and
// the quantized types): `rows` rows of `row_length` floats each, row_length a multiple of the type's block.
// `imatrix` (row_length importance weights) is required by a few IQ types. Throws on unsupported input.
std::vector<uint8_t> ggml_quantize(int ggml_type, const float* data, int64_t rows, int64_t row_length,
                                   const float* imatrix = nullptr);
// ggml's dequantizer (the type's to_float); `elements` must be a multiple of the type's block size and
// `data` must hold ggml_row_size(type, elements) bytes.
std::vector<float> ggml_dequantize(int ggml_type, const uint8_t* data, int64_t elements);

// llama.cpp's whole-file quantizer (what `llama-quantize` runs) to the llama_ftype code `ftype`
// (e.g. 7 = Q8_0, 15 = Q4_K_M). Throws with llama.cpp's reason on failure.
void llama_quantize_file(const std::string& in, const std::string& out, int ftype, int threads = kThreads);
// The same with an importance matrix, as `llama-quantize --imatrix` passes it to llama_model_quantize: the
// weights of each tensor by GGUF name (ne0 values per expert, the division by counts already done).
void llama_quantize_file_with_imatrix(const std::string& in, const std::string& out, int ftype,
                                      const std::map<std::string, std::vector<float>>& imatrix, int threads = kThreads);

// Hugging Face tokenizers on `tokenizer_json` (a tokenizer.json path): the ids of each text. Padding and
// truncation are switched off so every text is tokenized whole. Runs node; throws if it fails.
std::vector<std::vector<int32_t>> hf_tokenize(const std::string& tokenizer_json,
                                              const std::vector<std::string>& texts, bool add_special_tokens);

// A real tokenizer folder (tokenizer.json + tokenizer_config.json) shipped by npm: "llama3" | "llama2" |
// "qwen3". Throws for other names or when the folder is missing.
std::string real_tokenizer_dir(const std::string& name);

// File name of the CPU backend variant ggml picked for this machine (e.g. "libggml-cpu-haswell.so"): it
// decides which SIMD kernels compute the logits, so it explains small numeric differences between machines.
std::string cpu_backend_name();

}  // namespace oracle
