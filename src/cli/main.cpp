// mlx2gguf command line: convert an mlx-lm model folder to GGUF, inspect a GGUF file.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "convert.h"
#include "util/cancel.h"
#include "util/error.h"
#include "write/gguf_file.h"

namespace {

using namespace mlx2gguf;

// One line for the file, then one per tensor type with what made tensors take it.
void print_summary(const std::string& outfile, const ConvertSummary& summary) {
  fmt::print(stderr, "wrote {} ({:.1f} MiB, {:.2f} bits per weight) in {:.1f} s\n", outfile,
             summary.file_bytes / 1048576.0, summary.bits_per_weight(), summary.seconds);
  for (const auto& [type, s] : summary.types) {
    const double bpw = s.elements ? 8.0 * static_cast<double>(s.bytes) / static_cast<double>(s.elements) : 0.0;
    fmt::print(stderr, "  {:<6} {:5d} tensors {:>14L} weights {:6.2f} bits/weight\n", type, s.tensors, s.elements, bpw);
    for (const auto& [note, count] : s.notes) fmt::print(stderr, "         {:5d} × {}\n", count, note);
  }
  const MergeSummary& merge = summary.merge;
  if (merge.tensors > 0)
    fmt::print(stderr, "  merged with the adapter: {} tensors, {:.1f} MiB\n", merge.tensors, merge.bytes / 1048576.0);
  if (merge.float_from_quantized > 0) {
    const double share = summary.file_bytes ? 100.0 * merge.float_from_quantized_bytes / summary.file_bytes : 0.0;
    fmt::print(stderr,
               "note: {} merged tensors of the quantized base are stored as floats ({:.1f} MiB, {:.0f}% of the file): "
               "a LoRA update changes every weight of the modules it adapts, so they cannot keep the base's codes.\n"
               "  Smaller files: --fuse-requantize (re-quantize them at the base's quantization as mlx_lm.fuse does: "
               "{:.1f} MiB instead), `mlx2gguf convert-adapter` (keep the base lossless and write the adapter as a "
               "separate GGUF LoRA), or a quantized --outtype (q8_0, q4_k_m, ...).\n",
               merge.float_from_quantized, merge.float_from_quantized_bytes / 1048576.0, share,
               merge.requantized_bytes / 1048576.0);
  }
}

struct ConvertArgs {
  std::string model_dir, outfile, outtype = "auto", tokenizer_pre, name, adapter_path, adapter_file, imatrix;
  bool fuse_requantize = false;
  int threads = 0;
  bool quiet = false;
  bool allow_non_finite = false;
};

int run_convert(const ConvertArgs& args) {
  const std::string& model_dir = args.model_dir;
  const std::string& outtype = args.outtype;
  std::string outfile = args.outfile;
  ConvertOptions options;
  options.model_dir = model_dir;
  if (!args.adapter_path.empty()) {
    options.adapter = AdapterLocation{args.adapter_path, std::nullopt};
    if (!args.adapter_file.empty()) options.adapter->weights_file = args.adapter_file;
    if (args.fuse_requantize) options.merge_rule = MergeRule::LikeMlxFuse;
  } else if (!args.adapter_file.empty() || args.fuse_requantize) {
    fail("{} needs --adapter-path", args.fuse_requantize ? "--fuse-requantize" : "--adapter-file");
  }
  const auto out_type = parse_out_type(outtype);
  if (!out_type) fail("--outtype '{}' is not one of {}", outtype, fmt::join(out_type_names(), ", "));
  options.plan.out_type = *out_type;
  if (!args.tokenizer_pre.empty()) options.plan.tokenizer_pre = args.tokenizer_pre;
  if (!args.name.empty()) options.plan.name = args.name;
  if (outfile.empty()) {
    std::filesystem::path folder_path = std::filesystem::absolute(model_dir).lexically_normal();
    if (folder_path.filename().empty()) folder_path = folder_path.parent_path();  // "models/Foo/" names "Foo"
    const std::string folder = folder_path.filename().string();
    outfile = *out_type == OutType::Auto ? folder + ".gguf" : fmt::format("{}-{}.gguf", folder, out_type_name(*out_type));
  }
  options.outfile = outfile;
  options.threads = args.threads;
  options.allow_non_finite = args.allow_non_finite;
  if (!args.imatrix.empty()) options.imatrix = args.imatrix;
  if (!args.quiet) options.log = [](const std::string& text) { std::fputs(text.c_str(), stderr); };
  const ConvertSummary summary = convert(options);
  if (!args.quiet) print_summary(outfile, summary);
  return 0;
}

struct ConvertAdapterArgs {
  std::string adapter_path, adapter_file, base, outfile, outtype = "f32", name;
  int threads = 0;
  bool quiet = false;
  bool allow_non_finite = false;
};

int run_convert_adapter(const ConvertAdapterArgs& args) {
  ConvertAdapterOptions options;
  options.base_dir = args.base;
  options.adapter = AdapterLocation{args.adapter_path, std::nullopt};
  if (!args.adapter_file.empty()) options.adapter.weights_file = args.adapter_file;
  const auto out_type = parse_out_type(args.outtype);
  if (!out_type) fail("--outtype '{}' is not one of f32, f16, bf16, q8_0", args.outtype);
  options.plan.out_type = *out_type;
  if (!args.name.empty()) options.plan.name = args.name;
  std::string outfile = args.outfile;
  if (outfile.empty()) {
    std::filesystem::path folder = std::filesystem::absolute(args.adapter_path).lexically_normal();
    if (std::filesystem::is_regular_file(folder) || folder.filename().empty()) folder = folder.parent_path();
    outfile = fmt::format("{}-lora-{}.gguf", folder.filename().string(), out_type_name(*out_type));
  }
  options.outfile = outfile;
  options.threads = args.threads;
  options.allow_non_finite = args.allow_non_finite;
  if (!args.quiet) options.log = [](const std::string& text) { std::fputs(text.c_str(), stderr); };
  const ConvertSummary summary = convert_adapter(options);
  if (!args.quiet) print_summary(outfile, summary);
  return 0;
}

nlohmann::json value_to_json(const GgufValue& value) {
  const GgufType type = value.is_array() ? value.element_type : value.type;
  nlohmann::json items = nlohmann::json::array();
  for (size_t i = 0; i < value.size(); ++i) {
    switch (type) {
      case GgufType::STRING: items.push_back(value.strings[i]); break;
      case GgufType::FLOAT32:
      case GgufType::FLOAT64: items.push_back(value.floats[i]); break;
      case GgufType::BOOL: items.push_back(value.ints[i] != 0); break;
      default: items.push_back(value.ints[i]);
    }
  }
  return value.is_array() ? items : items.at(0);
}

int run_inspect(const std::string& path, bool json, bool full) {
  const GgufFile file = GgufFile::read(path);
  if (json) {
    nlohmann::json out;
    out["version"] = file.version;
    out["metadata"] = nlohmann::json::object();
    for (const auto& entry : file.metadata.entries()) out["metadata"][entry.key] = value_to_json(entry.value);
    out["tensors"] = nlohmann::json::array();
    for (const auto& tensor : file.tensors)
      out["tensors"].push_back({{"name", tensor.name}, {"type", ggml_type_info(tensor.type).name}, {"ne", tensor.ne},
                                {"offset", file.data_start + tensor.offset}, {"bytes", tensor.size_bytes()}});
    // GGUF strings are bytes: ones that are not UTF-8 (names, templates of a damaged file) are shown as U+FFFD rather
    // than making the listing fail.
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  fmt::print("{}: GGUF v{}, {} metadata keys, {} tensors, {:.1f} MiB\n", path, file.version, file.metadata.entries().size(),
             file.tensors.size(), file.file_size / 1048576.0);
  fmt::print("\nmetadata:\n");
  for (const auto& entry : file.metadata.entries()) {
    const std::string type = entry.value.is_array()
                                 ? fmt::format("{}[{}]", gguf_type_name(entry.value.element_type), entry.value.size())
                                 : gguf_type_name(entry.value.type);
    fmt::print("  {:<48} {:<12} {}\n", entry.key, type, entry.value.to_string(full));
  }
  fmt::print("\ntensors:\n  {:<40} {:<8} {:<24} {:>12}\n", "name", "type", "ne", "bytes");
  for (const auto& tensor : file.tensors) {
    std::string ne = "{";
    for (size_t i = 0; i < tensor.ne.size(); ++i) ne += (i ? ", " : "") + std::to_string(tensor.ne[i]);
    ne += "}";
    fmt::print("  {:<40} {:<8} {:<24} {:>12}\n", tensor.name, ggml_type_info(tensor.type).name, ne, tensor.size_bytes());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlx2gguf: convert mlx-lm model folders (fine-tuned, fused, quantized) to GGUF for llama.cpp, "
               "Ollama and LM Studio"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mlx2gguf 0.1.0");

  ConvertArgs c;
  auto* convert_cmd = app.add_subcommand("convert", "Convert an mlx-lm model folder to a GGUF file");
  convert_cmd->add_option("MODEL_DIR", c.model_dir, "mlx-lm model folder (config.json, *.safetensors, tokenizer files)")
      ->required();
  convert_cmd->add_option("--outfile,-o", c.outfile, "Output GGUF path (default: <folder>.gguf for auto, else <folder>-<outtype>.gguf, here)");
  convert_cmd->add_option("--outtype", c.outtype,
                          "auto: MLX-quantized weights kept losslessly (affine 2-4 bit as q4_1, 5-bit as q5_1, "
                          "mxfp4, nvfp4; others q8_0), unquantized ones in the source's 16-bit type. Or f32, f16, "
                          "bf16, or a llama-quantize type: q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m, "
                          "q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, mxfp4_moe. Norms and other 1-D tensors "
                          "are always f32")
      ->capture_default_str();
  convert_cmd->add_option("--tokenizer-pre", c.tokenizer_pre,
                          "Pre-tokenizer name for tokenizer.ggml.pre when the tokenizer.json regex is not recognised "
                          "(e.g. llama-bpe, qwen2, qwen35)");
  convert_cmd->add_option("--name", c.name, "general.name of the model (default: derived from the folder name)");
  convert_cmd->add_option("--adapter-path", c.adapter_path,
                          "Merge an mlx-lm fine-tune: the folder mlx_lm.lora wrote (adapter_config.json + "
                          "adapters.safetensors), or one of its weights files (e.g. 0000100_adapters.safetensors). "
                          "LoRA and DoRA are merged exactly in float32; merged tensors are written as floats under "
                          "--outtype auto; full fine-tunes replace the base's tensors");
  convert_cmd->add_option("--adapter-file", c.adapter_file,
                          "Weights file of the adapter folder to use instead of adapters.safetensors (a checkpoint)");
  convert_cmd->add_flag("--fuse-requantize", c.fuse_requantize,
                        "Merge as mlx_lm.fuse does (in the module's dtype) and re-quantize merged tensors of a "
                        "quantized base at its own quantization, then repack them losslessly: the file equals the "
                        "conversion of the folder mlx_lm.fuse would write");
  convert_cmd->add_option("--imatrix", c.imatrix,
                          "Importance matrix from llama-imatrix (GGUF or legacy .dat): quantized tensors are weighted "
                          "by it as llama-quantize --imatrix weights them (Q4_0..Q5_1 and the K types; lossless "
                          "repacks and other types are unaffected)");
  convert_cmd->add_option("--threads,-t", c.threads, "Worker threads (default: all cores)");
  convert_cmd->add_flag("--allow-non-finite", c.allow_non_finite,
                        "Write NaN or infinite weights, scales or biases instead of refusing them (the GGUF will "
                        "compute NaN wherever they are used)");
  convert_cmd->add_flag("--quiet,-q", c.quiet, "No progress or summary output");

  ConvertAdapterArgs a;
  auto* adapter_cmd = app.add_subcommand(
      "convert-adapter", "Write an mlx-lm LoRA fine-tune as a GGUF LoRA adapter (llama.cpp --lora, Ollama ADAPTER)");
  adapter_cmd->add_option("ADAPTER_DIR", a.adapter_path,
                          "The folder mlx_lm.lora wrote (adapter_config.json + adapters.safetensors), or one of its "
                          "weights files")
      ->required();
  adapter_cmd->add_option("--base", a.base, "The mlx-lm model folder the adapter was trained on")->required();
  adapter_cmd->add_option("--adapter-file", a.adapter_file, "Weights file to use instead of adapters.safetensors");
  adapter_cmd->add_option("--outfile,-o", a.outfile, "Output GGUF path (default: <adapter folder>-lora-<outtype>.gguf, here)");
  adapter_cmd->add_option("--outtype", a.outtype, "f32, f16, bf16 or q8_0 (q8_0 only where rows are whole blocks, else f16)")
      ->capture_default_str();
  adapter_cmd->add_option("--name", a.name, "general.name of the adapter (default: the adapter folder's name)");
  adapter_cmd->add_option("--threads,-t", a.threads, "Worker threads (default: all cores)");
  adapter_cmd->add_flag("--allow-non-finite", a.allow_non_finite, "Write NaN or infinite adapter weights instead of refusing them");
  adapter_cmd->add_flag("--quiet,-q", a.quiet, "No progress or summary output");

  std::string inspect_path;
  bool json = false, full = false;
  auto* inspect_cmd = app.add_subcommand("inspect", "Show the metadata and tensor table of a GGUF file");
  inspect_cmd->add_option("FILE", inspect_path, "GGUF file")->required()->check(CLI::ExistingFile);
  inspect_cmd->add_flag("--json", json, "Machine-readable JSON output");
  inspect_cmd->add_flag("--full", full, "Print long arrays (token lists, merges) completely");

  CLI11_PARSE(app, argc, argv);
  mlx2gguf::install_cancel_handlers();
  try {
    if (*convert_cmd) return run_convert(c);
    if (*adapter_cmd) return run_convert_adapter(a);
    if (*inspect_cmd) return run_inspect(inspect_path, json, full);
  } catch (const mlx2gguf::Cancelled& e) {
    fmt::print(stderr, "\n{}\n", e.what());
    return e.exit_status();
  } catch (const mlx2gguf::Error& e) {
    fmt::print(stderr, "\nerror: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "\nerror: {}\n", e.what());
    return 1;
  }
  return 0;
}
