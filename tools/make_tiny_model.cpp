// Writes a tiny random mlx-lm model folder (as mlx_lm.convert would save it) for tests and examples, and optionally
// a fine-tune of it: the adapter folder mlx_lm.lora writes and/or the folder mlx_lm.fuse makes from both.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gen/tiny_adapter.h"
#include "gen/tiny_model.h"
#include "util/error.h"

namespace {

using mlx2gguf::gen::QuantOverride;
using mlx2gguf::gen::QuantRecipe;

// "SUFFIX=BITS:GROUP_SIZE[:MODE]" or "SUFFIX=float".
QuantOverride parse_override(const std::string& text) {
  const size_t equals = text.find('=');
  if (equals == std::string::npos || equals == 0)
    mlx2gguf::fail("--quant-override '{}' is not SUFFIX=BITS:GROUP_SIZE[:MODE] or SUFFIX=float", text);
  QuantOverride result;
  result.module_suffix = text.substr(0, equals);
  const std::string value = text.substr(equals + 1);
  if (value == "float") {
    result.bits = 0;
    return result;
  }
  // Same syntax as --quant after the mode: reuse its parser with a placeholder mode.
  const size_t mode_colon = value.find(':', value.find(':') + 1);
  const QuantRecipe parsed = QuantRecipe::parse("affine:" + value.substr(0, mode_colon));
  if (parsed.bits == 0 || parsed.group_size == 0)
    mlx2gguf::fail("--quant-override '{}' needs both bits and group size", text);
  result.bits = parsed.bits;
  result.group_size = parsed.group_size;
  if (mode_colon != std::string::npos) result.mode = value.substr(mode_colon + 1);
  return result;
}

std::string human_size(uintmax_t bytes) {
  if (bytes < 10 * 1024) return fmt::format("{} B", bytes);
  if (bytes < 10 * 1024 * 1024) return fmt::format("{} KiB", bytes / 1024);
  return fmt::format("{} MiB", bytes / (1024 * 1024));
}

void print_files(const std::vector<std::filesystem::path>& files) {
  for (const auto& file : files)
    fmt::print("  {:<32} {}\n", file.filename().string(), human_size(std::filesystem::file_size(file)));
}

// The value of --preset, looked up before parsing so that the preset's values become the defaults that the other
// options override.
std::string preset_argument(int argc, char** argv) {
  std::string preset;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--preset" && i + 1 < argc) preset = argv[i + 1];
    if (arg.starts_with("--preset=")) preset = arg.substr(std::string("--preset=").size());
  }
  return preset;
}

}  // namespace

int main(int argc, char** argv) {
  mlx2gguf::gen::TinyModelSpec spec;
  std::string preset = preset_argument(argc, argv);
  try {
    if (!preset.empty()) spec = mlx2gguf::gen::tiny_model_preset(preset);
  } catch (const std::exception& e) {
    fmt::print(stderr, "mlx2gguf-make-tiny-model: {}\n", e.what());
    return 1;
  }
  std::string out, quant, rope_scaling, norm_topk_prob;
  std::vector<std::string> overrides;
  bool no_mode_key = false;

  std::string types;
  for (const auto& type : mlx2gguf::gen::tiny_model_types()) types += (types.empty() ? "" : ", ") + type;
  CLI::App app{"Writes a tiny mlx-lm model folder with random weights, saved as mlx_lm.convert saves models."};
  std::string presets;
  for (const auto& name : mlx2gguf::gen::tiny_model_presets()) presets += (presets.empty() ? "" : ", ") + name;
  app.add_option("--preset", preset, "Start from a named spec (" + presets + "); other options override its values");
  app.add_option("--type", spec.model_type, "Model type: " + types)->capture_default_str();
  app.add_option("--layout", spec.layout,
                 "mlx: as mlx_lm.convert saves it; hf: the Hugging Face checkpoint it came from (qwen3_5 types)")
      ->capture_default_str();
  app.add_option("--out", out, "Folder to create (must not exist or be empty)")->required();
  app.add_option("--tokenizer", spec.tokenizer_dir,
                 "Folder with tokenizer.json (+ tokenizer_config.json, chat_template.jinja); default: a built-in tiny "
                 "byte-level BPE tokenizer");
  app.add_option("--quant", quant, "Quantize like mlx_lm.convert -q: MODE[:BITS[:GROUP_SIZE]], e.g. affine:4:64, mxfp4");
  app.add_option("--quant-override", overrides,
                 "Per-module quantization, repeatable: SUFFIX=BITS:GROUP_SIZE[:MODE] or SUFFIX=float, e.g. "
                 "block_sparse_moe.gate=8:64")
      ->allow_extra_args(false);
  app.add_flag("--no-quant-mode-key", no_mode_key, "Omit \"mode\" from the quantization entry, as older mlx-lm did");
  app.add_option("--dtype", spec.dtype, "Float storage: bfloat16, float16 or float32")->capture_default_str();
  app.add_flag("--tied", spec.tie_embeddings, "Tie the output head to the embeddings (no lm_head tensor)");
  app.add_option("--seed", spec.seed, "Random seed")->capture_default_str();
  app.add_option("--layers", spec.layers, "Number of layers (default 2, qwen3_5 types 4)");
  app.add_option("--hidden", spec.hidden, "Hidden size")->capture_default_str();
  app.add_option("--heads", spec.heads, "Attention heads")->capture_default_str();
  app.add_option("--kv-heads", spec.kv_heads, "Key/value heads")->capture_default_str();
  app.add_option("--head-dim", spec.head_dim, "Head size (default: hidden / heads, qwen3_5 types 64)");
  app.add_option("--intermediate", spec.intermediate, "Dense MLP (mixtral: per-expert) intermediate size")
      ->capture_default_str();
  app.add_option("--vocab", spec.vocab, "Vocabulary rows (default: the tokenizer's size)");
  app.add_option("--experts", spec.experts, "Experts of MoE types (default 4)");
  app.add_option("--experts-per-tok", spec.experts_per_tok, "Experts used per token (default 2)");
  app.add_flag("--attention-bias", spec.attention_bias, "Biases on q/k/v/o projections");
  app.add_flag("--mlp-bias", spec.mlp_bias, "Biases on MLP projections");
  app.add_option("--rope-theta", spec.rope_theta, "RoPE base (default 10000, qwen3_5 types 1e7)");
  app.add_option("--rope-scaling", rope_scaling, "rope_scaling JSON, e.g. '{\"type\":\"linear\",\"factor\":2.0}'");
  app.add_option("--rms-norm-eps", spec.rms_norm_eps, "RMSNorm epsilon (default 1e-5, qwen3_5 types 1e-6)");
  app.add_option("--max-position-embeddings", spec.max_position_embeddings, "Context length in the config")
      ->capture_default_str();
  app.add_option("--max-shard-bytes", spec.max_shard_bytes, "Start a new weight shard past this many bytes")
      ->capture_default_str();
  // qwen3_5 / qwen3_5_moe
  app.add_option("--linear-key-heads", spec.linear_num_key_heads, "Linear-attention key (and query) heads")
      ->capture_default_str();
  app.add_option("--linear-value-heads", spec.linear_num_value_heads, "Linear-attention value heads")
      ->capture_default_str();
  app.add_option("--linear-key-head-dim", spec.linear_key_head_dim, "Linear-attention key head size")
      ->capture_default_str();
  app.add_option("--linear-value-head-dim", spec.linear_value_head_dim, "Linear-attention value head size")
      ->capture_default_str();
  app.add_option("--conv-kernel", spec.linear_conv_kernel_dim, "Linear-attention causal conv kernel size")
      ->capture_default_str();
  app.add_option("--full-attention-interval", spec.full_attention_interval,
                 "Layer i is full attention when (i + 1) is a multiple of this, else linear attention")
      ->capture_default_str();
  app.add_option("--partial-rotary-factor", spec.partial_rotary_factor, "Share of each head's dims RoPE rotates")
      ->capture_default_str();
  app.add_option("--mrope-section", spec.mrope_section, "rope_parameters.mrope_section, 3 numbers (default: Qwen's "
                                                        "[11, 11, 10] scaled to the rotated dims)")
      ->expected(3);
  app.add_option("--moe-intermediate", spec.moe_intermediate, "Routed expert intermediate size (default 64)");
  app.add_option("--shared-expert-intermediate", spec.shared_expert_intermediate,
                 "Shared expert intermediate size (default 64)");
  app.add_option("--norm-topk-prob", norm_topk_prob, "Write norm_topk_prob true or false (default: no key)");
  app.add_flag("--hf-extra-tensors", spec.hf_extra_tensors,
               "hf layout: also store a few mtp.* and model.visual.* tensors, as real checkpoints do");
  // Fine-tune of the model written above.
  mlx2gguf::gen::TinyAdapterSpec adapter;
  std::string adapter_out, fused_out;
  bool fused_dequantize = false;
  app.add_option("--adapter-out", adapter_out, "Also write the adapter folder mlx_lm.lora would write for a fine-tune");
  app.add_option("--adapter-type", adapter.fine_tune_type, "Fine-tune type: lora, dora or full")->capture_default_str();
  app.add_option("--adapter-rank", adapter.rank, "lora_parameters.rank")->capture_default_str();
  app.add_option("--adapter-scale", adapter.scale, "lora_parameters.scale (the update's multiplier)")
      ->capture_default_str();
  app.add_option("--adapter-layers", adapter.num_layers, "num_layers: train the last N blocks (-1 or 0: all)")
      ->capture_default_str();
  app.add_option("--adapter-keys", adapter.keys,
                 "lora_parameters.keys, comma-separated: block-relative (self_attn.q_proj) or full module paths "
                 "(lm_head, model.embed_tokens); default: every Linear, SwitchLinear and Embedding of the blocks")
      ->delimiter(',');
  app.add_option("--adapter-seed", adapter.seed, "Random seed of the adapter values")->capture_default_str();
  app.add_flag("--adapter-legacy-config", adapter.legacy_config,
               "Write the config of mlx-lm before September 2024 (lora_layers, use_dora, alpha); without keys it "
               "adapts that version's defaults (q and v projections)");
  app.add_option("--adapter-legacy-alpha", adapter.legacy_alpha, "lora_parameters.alpha of the legacy config (0: none)")
      ->capture_default_str();
  app.add_flag("--adapter-legacy-switch-shape", adapter.legacy_switch_shape,
               "Store expert lora_a as [E*r, in], as mlx-lm did before October 2025");
  app.add_option("--adapter-checkpoint", adapter.checkpoint_iteration,
                 "Also write the checkpoint NNNNNNN_adapters.safetensors of this iteration");
  app.add_option("--fused-out", fused_out, "Also write the folder mlx_lm.fuse makes from the model and the adapter");
  app.add_flag("--fused-dequantize", fused_dequantize, "Fuse as mlx_lm.fuse --dequantize");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!rope_scaling.empty()) {
      try {
        spec.rope_scaling = nlohmann::json::parse(rope_scaling);
      } catch (const nlohmann::json::exception& e) {
        mlx2gguf::fail("--rope-scaling is not valid JSON: {}", e.what());
      }
    }
    if (!norm_topk_prob.empty()) {
      if (norm_topk_prob != "true" && norm_topk_prob != "false")
        mlx2gguf::fail("--norm-topk-prob takes true or false, not '{}'", norm_topk_prob);
      spec.norm_topk_prob = norm_topk_prob == "true";
    }
    if (!quant.empty()) {
      spec.quant = QuantRecipe::parse(quant);
      spec.quant->write_mode = !no_mode_key;
      for (const auto& text : overrides) spec.quant->overrides.push_back(parse_override(text));
    } else if (!overrides.empty() || no_mode_key) {
      mlx2gguf::fail("--quant-override and --no-quant-mode-key need --quant");
    }

    if (adapter_out.empty() && fused_out.empty()) {
      for (const auto* option : app.get_options())
        if (option->get_name().starts_with("--adapter-") && option->count() > 0)
          mlx2gguf::fail("{} needs --adapter-out or --fused-out", option->get_name());
    }
    if (fused_dequantize && fused_out.empty()) mlx2gguf::fail("--fused-dequantize needs --fused-out");

    const auto summary = mlx2gguf::gen::write_tiny_model(spec, out);
    std::string quant_text = "float";
    if (spec.quant)
      quant_text = fmt::format("{} {}-bit group {}, {} modules quantized", spec.quant->mode, spec.quant->resolved_bits(),
                               spec.quant->resolved_group_size(), summary.quantized_modules);
    fmt::print("wrote {}: {} {} layout ({}), {} tensors, {} parameters, vocab {}\n", out, spec.model_type, spec.layout,
               quant_text, summary.tensor_count, summary.total_parameters, summary.vocab_size);
    print_files(summary.files);

    adapter.model = out;
    if (!adapter_out.empty()) {
      const auto written = mlx2gguf::gen::write_tiny_adapter(spec, adapter, adapter_out);
      fmt::print("wrote {}: {} fine-tune, {} tensors{}\n", adapter_out, adapter.fine_tune_type, written.tensors.size(),
                 written.modules.empty() ? "" : fmt::format(" ({} adapted modules)", written.modules.size()));
      print_files(written.files);
    }
    if (!fused_out.empty()) {
      const auto fused = mlx2gguf::gen::write_fused_model(spec, out, adapter, fused_out, fused_dequantize);
      fmt::print("wrote {}: fused{}, {} tensors, {} of them changed by the fine-tune\n", fused_out,
                 fused_dequantize ? " and dequantized" : "", fused.tensor_count, fused.replaced.size());
      print_files(fused.files);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "mlx2gguf-make-tiny-model: {}\n", e.what());
    return 1;
  }
  return 0;
}
