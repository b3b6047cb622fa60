#pragma once
// Shared pieces of the end-to-end tests: tiny models generated once and cached on disk, the mlx2gguf binary run
// as a user runs it, and the numbers that judge a converted file against the reference forward pass.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gen/tiny_adapter.h"
#include "gen/tiny_model.h"
#include "gguf/gguf_types.h"

namespace e2e {

// Directory for generated models and converted files, shared by all tests of a build.
std::filesystem::path work_dir();

// Generates the model once (atomically, so concurrent test processes can share it) and returns its folder.
std::filesystem::path cached_model(const std::string& key, const mlx2gguf::gen::TinyModelSpec& spec);

// The tiny source models the end-to-end tests share:
//   llama          Llama 3 style: byte-level BPE (real Llama 3 tokenizer), llama3 rope scaling, untied head
//   mistral        SentencePiece BPE (real Llama 2 tokenizer), head_dim != hidden/heads, tied, bias, linear rope
//   mixtral        stacked experts under switch_mlp (4 experts, top 2)
//   qwen35moe      small Qwen3.5/3.6 MoE (real Qwen3 tokenizer); qwen35moe-hf: the same in Hugging Face layout
//   qwen35         small dense Qwen3.5
//   qwen3next      small Qwen3-Next MoE (real Qwen3 tokenizer)
//   gemma3         small Gemma 3 text model: tied, local layers with window 8, every third layer global
//   qwen36-widths  Qwen3.6-35B-A3B's real widths on 2 layers; qwen36-widths-hf: Hugging Face layout
mlx2gguf::gen::TinyModelSpec model_spec(const std::string& model);

// The folder of `model` saved as `variant`: "bf16" (unquantized) or an MLX quantization: "q4g64" (affine 4-bit,
// group 64; any bits/group), "mxfp4", "nvfp4", "mxfp8". Hugging Face layouts exist only unquantized.
std::filesystem::path model_folder(const std::string& model, const std::string& variant);

// The adapter folder of a fine-tune of model_folder(model, variant) (written once and cached like the models), and
// the folder mlx_lm.fuse makes of the two.
std::filesystem::path adapter_folder(const std::string& model, const std::string& variant, const std::string& key,
                                     const mlx2gguf::gen::TinyAdapterSpec& adapter);
std::filesystem::path fused_folder(const std::string& model, const std::string& variant, const std::string& key,
                                   const mlx2gguf::gen::TinyAdapterSpec& adapter);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs build/mlx2gguf with `args` (inside `cwd` when given) and captures what it printed.
CommandResult run_mlx2gguf(const std::vector<std::string>& args, const std::filesystem::path& cwd = {});

// Normalised mean squared error: sum (got - want)^2 / sum want^2.
double nmse(const std::vector<float>& got, const std::vector<float>& want);
struct Top1Comparison {
  int positions = 0;
  int decidable = 0;   // positions where the reference's top-2 margin is at least min_margin x RMS(logits)
  int mismatches = 0;  // decidable positions whose arg-max differs
};
Top1Comparison compare_top1(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab,
                            double min_relative_margin);

// A float32 array saved by numpy (.npy, little-endian '<f4', C order): its values and shape. Throws on anything else.
struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
NpyArray read_npy_f32(const std::filesystem::path& path);

// The tiny models of tests/data/fixtures/: written independently of mlx2gguf's generator, with llama.cpp's logits
// for them (its own converter on an equivalent float32 Hugging Face folder).
struct OracleFixture {
  std::string name;               // e.g. gemma3-4bit
  std::filesystem::path dir;      // tests/data/fixtures/<name>
  std::filesystem::path model;    // dir/mlx: the folder to convert
  std::vector<int32_t> tokens;    // tokens.json
  NpyArray logits;                // oracle_logits.npy: [tokens][vocab]

  // `mlx2gguf convert` of the folder with `extra` arguments into the test work folder, a file ggml's reader accepts
  // (throws with the tool's output when the conversion fails).
  std::filesystem::path convert(const std::vector<std::string>& extra, const std::string& label) const;
  // llama.cpp's logits of `gguf` for the fixture's tokens against the oracle's, printed as an [ NMSE ] line.
  double llama_nmse(const std::filesystem::path& gguf, const std::string& label) const;
};
OracleFixture oracle_fixture(const std::string& name);
// The fixtures' error measure: Σ(got − oracle)² / Σ(oracle − its row mean)² over all logits.
double fixture_nmse(const std::vector<float>& got, const NpyArray& oracle);

// A fixed token sequence of `count` ids below `vocab`, starting with `first`.
std::vector<int32_t> probe_tokens(int64_t vocab, int count, int32_t first);

// Our conversion of `folder` with --outtype `outtype`, made once per build (atomically, as test processes run in
// parallel) and kept in work_dir().
std::filesystem::path converted_once(const std::filesystem::path& folder, const std::string& outtype);

// llama.cpp's own file of the same weights: our f32 conversion of `folder` quantized by llama_model_quantize to the
// llama_ftype of `outtype` (f16, bf16 or a llama-quantize type name), as llama-quantize would. Written to `path`.
void llama_quantize_of(const std::filesystem::path& folder, const std::string& outtype, const std::filesystem::path& path);

// A tensor of a GGUF file with its data.
struct TensorBytes {
  mlx2gguf::GgmlType type;
  std::vector<int64_t> ne;
  std::vector<uint8_t> bytes;
  int64_t elements() const;
};
// Every tensor of a GGUF file by name.
std::map<std::string, TensorBytes> tensors_in(const std::filesystem::path& gguf);
// A GGUF file's tensor table (names, types, shapes, offsets) followed by its data section: what computes, without
// the metadata.
std::string tensor_table_and_data(const std::filesystem::path& gguf);

}  // namespace e2e
