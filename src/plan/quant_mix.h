#pragma once
// llama-quantize's file types ("mixes"): the default block type of each, and its per-tensor rules that give the
// tensors quantization hurts most (output, attn_v, some ffn_down layers ...) more bits. Reproducing the rules
// makes our one-pass q4_k_m file hold the same types as llama-quantize would write from an f16 file.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gguf/gguf_types.h"

namespace mlx2gguf {

struct QuantMix {
  const char* name;        // as on the command line: "q4_k_m"
  uint32_t llama_ftype;    // general.file_type
  GgmlType default_type;
};

// Every mix mlx2gguf writes; nullptr for unknown names.
const QuantMix* find_quant_mix(const std::string& name);
const std::vector<QuantMix>& quant_mixes();

// What the rules look at in the model.
struct MixModel {
  std::string arch;      // general.architecture
  int64_t n_layer = 0;   // block_count
  int64_t n_expert = 0;  // expert_count (0 for dense models)
  int64_t n_head = 0, n_head_kv = 0;
  bool has_output = false;  // false: token_embd doubles as the output head (tied) and gets the output's type
  bool has_imatrix = false;  // an importance matrix is given (--imatrix): one rule differs with it
};

// One tensor the mix may re-type (2+ dimensions, a ".weight" that llama-quantize quantizes).
struct MixTensor {
  std::string name;
  std::vector<int64_t> shape;  // logical row-major; ne[0] = shape.back()
};

// The type of each tensor, in the order given. Tensors are visited in llama-quantize's order (non-block tensors,
// then by layer, then by name), which its attn_v counter depends on.
std::vector<GgmlType> choose_mix_types(const QuantMix& mix, const MixModel& model, const std::vector<MixTensor>& tensors);

// The type choice on MLX-quantized sources. llama-quantize's rules assume float sources, where more bits always
// means less error. An MLX-quantized tensor already holds exactly representable values, so:
//  * a type at least as wide (bits per weight) as the tensor's lossless home costs more and can only add error:
//    the tensor keeps its lossless home instead (e.g. q4_k_m's Q6_K output head on a 4-bit model stays Q4_1);
//  * a source with no lossless home (affine 6/8-bit, mxfp8) that the mix raises above its default type (after the
//    shape fallback) to a type of 5 or more bits per weight gets Q8_0, which adds far less error than a 5- or 6-bit
//    K-type.
// --pure skips this and gives exactly llama-quantize's types.
struct MlxSource {
  std::optional<GgmlType> lossless_home;  // the exact GGUF type of its codes, when there is one
  int bits = 0;                           // bits per value of the MLX quantization
};
enum class MlxTypeRule { MixType, LosslessHome, Q8_0ForMoreBits };
struct MlxTypeChoice {
  GgmlType type;
  MlxTypeRule rule;
};
MlxTypeChoice mlx_source_type(const QuantMix& mix, GgmlType mix_type, const MlxSource& source, int64_t row_length);

// Storage cost of a type: bits per weight of its blocks.
double bits_per_weight(GgmlType type);

}  // namespace mlx2gguf
