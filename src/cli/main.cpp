// mlx2gguf command line: convert an mlx-lm model folder to GGUF, inspect a GGUF file.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "convert.h"
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
}

int run_convert(const std::string& model_dir, std::string outfile, const std::string& outtype,
                const std::string& tokenizer_pre, const std::string& name, int threads, bool quiet) {
  ConvertOptions options;
  options.model_dir = model_dir;
  const auto out_type = parse_out_type(outtype);
  if (!out_type) fail("--outtype '{}' is not one of {}", outtype, fmt::join(out_type_names(), ", "));
  options.plan.out_type = *out_type;
  if (!tokenizer_pre.empty()) options.plan.tokenizer_pre = tokenizer_pre;
  if (!name.empty()) options.plan.name = name;
  if (outfile.empty()) {
    std::filesystem::path folder_path = std::filesystem::absolute(model_dir).lexically_normal();
    if (folder_path.filename().empty()) folder_path = folder_path.parent_path();  // "models/Foo/" names "Foo"
    const std::string folder = folder_path.filename().string();
    outfile = *out_type == OutType::Auto ? folder + ".gguf" : fmt::format("{}-{}.gguf", folder, out_type_name(*out_type));
  }
  options.outfile = outfile;
  options.threads = threads;
  if (!quiet) options.log = [](const std::string& text) { std::fputs(text.c_str(), stderr); };
  const ConvertSummary summary = convert(options);
  if (!quiet) print_summary(outfile, summary);
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
    std::cout << out.dump(2) << "\n";
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

  std::string model_dir, outfile, outtype = "auto", tokenizer_pre, name;
  int threads = 0;
  bool quiet = false;
  auto* convert_cmd = app.add_subcommand("convert", "Convert an mlx-lm model folder to a GGUF file");
  convert_cmd->add_option("MODEL_DIR", model_dir, "mlx-lm model folder (config.json, *.safetensors, tokenizer files)")
      ->required();
  convert_cmd->add_option("--outfile,-o", outfile, "Output GGUF path (default: <folder>.gguf for auto, else <folder>-<outtype>.gguf, here)");
  convert_cmd->add_option("--outtype", outtype,
                          "auto: MLX-quantized weights kept losslessly (affine 2-4 bit as q4_1, 5-bit as q5_1, "
                          "mxfp4, nvfp4; others q8_0), unquantized ones in the source's 16-bit type. Or f32, f16, "
                          "bf16, or a llama-quantize type: q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m, "
                          "q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, mxfp4_moe. Norms and other 1-D tensors "
                          "are always f32")
      ->capture_default_str();
  convert_cmd->add_option("--tokenizer-pre", tokenizer_pre,
                          "Pre-tokenizer name for tokenizer.ggml.pre when the tokenizer.json regex is not recognised "
                          "(e.g. llama-bpe, qwen2, qwen35)");
  convert_cmd->add_option("--name", name, "general.name of the model (default: derived from the folder name)");
  convert_cmd->add_option("--threads,-t", threads, "Worker threads (default: all cores)");
  convert_cmd->add_flag("--quiet,-q", quiet, "No progress or summary output");

  std::string inspect_path;
  bool json = false, full = false;
  auto* inspect_cmd = app.add_subcommand("inspect", "Show the metadata and tensor table of a GGUF file");
  inspect_cmd->add_option("FILE", inspect_path, "GGUF file")->required()->check(CLI::ExistingFile);
  inspect_cmd->add_flag("--json", json, "Machine-readable JSON output");
  inspect_cmd->add_flag("--full", full, "Print long arrays (token lists, merges) completely");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*convert_cmd) return run_convert(model_dir, outfile, outtype, tokenizer_pre, name, threads, quiet);
    if (*inspect_cmd) return run_inspect(inspect_path, json, full);
  } catch (const mlx2gguf::Error& e) {
    fmt::print(stderr, "\nerror: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "\nerror: {}\n", e.what());
    return 1;
  }
  return 0;
}
