// mlx2gguf command line: convert an mlx-lm model folder to GGUF, inspect a GGUF file.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "convert.h"
#include "mlx2gguf_version.h"
#include "read/hf_cache.h"
#include "report/summary.h"
#include "util/cancel.h"
#include "util/error.h"
#include "verify/llama_library.h"
#include "verify/logits.h"
#include "verify/verify.h"
#include "write/gguf_file.h"
#include "write/gguf_split.h"
#include "write/ollama_modelfile.h"

namespace {

using namespace mlx2gguf;

// One line for the file, then one per tensor type with what made tensors take it.
void print_summary(const std::string& outfile, const ConvertSummary& summary) {
  fmt::print(stderr, "wrote {} ({:.1f} MiB, {:.2f} bits per weight) in {:.1f} s\n", outfile,
             summary.file_bytes / 1048576.0, summary.bits_per_weight(), summary.seconds);
  if (summary.files.size() > 1) {
    fmt::print(stderr, "  split into {} files; llama.cpp loads the set from the first:\n", summary.files.size());
    for (const auto& file : summary.files) fmt::print(stderr, "    {}\n", file.string());
  }
  std::fputs(render_type_lines(summary).c_str(), stderr);
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

// --json: the summary as JSON on stdout; --dry-run: the plan as a table on stdout; else the summary on stderr.
void report(const std::string& outfile, const ConvertSummary& summary, bool json, bool quiet) {
  if (json)
    std::cout << summary_json(outfile, summary).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  else if (!summary.written)
    std::fputs(render_plan(outfile, summary).c_str(), stdout);
  else if (!quiet)
    print_summary(outfile, summary);
}

struct ConvertArgs {
  std::string model_dir, outfile, outtype = "auto", tokenizer_pre, name, adapter_path, adapter_file, metadata_file, imatrix;
  bool fuse_requantize = false;
  bool modelfile = false;
  std::string split_max_size;
  int64_t split_max_tensors = 0;
  bool dry_run = false, json = false;
  int threads = 0;
  bool quiet = false;
  bool allow_non_finite = false;
  bool pure = false;
};

int run_convert(const ConvertArgs& args) {
  // MODEL_DIR and --adapter-path may be Hugging Face repo ids of cached downloads.
  const ModelLocation model = resolve_model_location(args.model_dir, "model folder");
  const std::string model_dir = model.dir.string();
  const std::string& outtype = args.outtype;
  std::string outfile = args.outfile;
  ConvertOptions options;
  options.model_dir = model_dir;
  options.plan.source_name = model.repo_id.empty() ? "" : model.name;
  if (!args.adapter_path.empty()) {
    options.adapter = AdapterLocation{resolve_model_location(args.adapter_path, "adapter folder").dir, std::nullopt};
    if (!args.adapter_file.empty()) options.adapter->weights_file = args.adapter_file;
    if (args.fuse_requantize) options.merge_rule = MergeRule::LikeMlxFuse;
  } else if (!args.adapter_file.empty() || args.fuse_requantize) {
    fail("{} needs --adapter-path", args.fuse_requantize ? "--fuse-requantize" : "--adapter-file");
  }
  const auto out_type = parse_out_type(outtype);
  if (!out_type) fail("--outtype '{}' is not one of {}", outtype, fmt::join(out_type_names(), ", "));
  options.plan.out_type = *out_type;
  options.plan.pure = args.pure;
  if (!args.tokenizer_pre.empty()) options.plan.tokenizer_pre = args.tokenizer_pre;
  if (!args.name.empty()) options.plan.name = args.name;
  options.plan.metadata_file = args.metadata_file;
  if (!args.split_max_size.empty()) options.split.max_bytes = parse_split_size(args.split_max_size);
  if (args.split_max_tensors < 0) fail("--split-max-tensors must be positive, got {}", args.split_max_tensors);
  options.split.max_tensors = args.split_max_tensors;
  options.outfile = outfile;  // empty: llama.cpp's default name, from the metadata
  options.threads = args.threads;
  options.allow_non_finite = args.allow_non_finite;
  if (!args.imatrix.empty()) options.imatrix = args.imatrix;
  if (!args.quiet) options.log = [](const std::string& text) { std::fputs(text.c_str(), stderr); };
  options.dry_run = args.dry_run;
  const ConvertSummary summary = convert(options);
  report(summary.outfile.string(), summary, args.json, args.quiet);
  if (args.modelfile && summary.written) {
    const ModelfileSpec spec{modelfile_path_for(summary.outfile), summary.files, std::nullopt};
    write_modelfile(spec, GgufSplitSet::open(summary.outfile).metadata());
    if (!args.quiet) fmt::print(stderr, "wrote {} (ollama create NAME -f {})\n", spec.modelfile.string(), spec.modelfile.string());
  }
  return 0;
}

struct ConvertAdapterArgs {
  std::string adapter_path, adapter_file, base, outfile, outtype = "f32", name, modelfile_base;
  bool dry_run = false, json = false;
  int threads = 0;
  bool quiet = false;
  bool allow_non_finite = false;
};

int run_convert_adapter(const ConvertAdapterArgs& args) {
  ConvertAdapterOptions options;
  options.base_dir = resolve_model_location(args.base, "base model folder").dir;
  const ModelLocation adapter = resolve_model_location(args.adapter_path, "adapter folder");
  options.adapter = AdapterLocation{adapter.dir, std::nullopt};
  if (!args.adapter_file.empty()) options.adapter.weights_file = args.adapter_file;
  const auto out_type = parse_out_type(args.outtype);
  if (!out_type) fail("--outtype '{}' is not one of f32, f16, bf16, q8_0", args.outtype);
  options.plan.out_type = *out_type;
  if (!args.name.empty()) options.plan.name = args.name;
  else if (!adapter.repo_id.empty()) options.plan.name = adapter.name;
  std::string outfile = args.outfile;
  if (outfile.empty() && !adapter.repo_id.empty()) {
    outfile = fmt::format("{}-lora-{}.gguf", adapter.name, out_type_name(*out_type));
  } else if (outfile.empty()) {
    std::filesystem::path folder = std::filesystem::absolute(adapter.dir).lexically_normal();
    if (std::filesystem::is_regular_file(folder) || folder.filename().empty()) folder = folder.parent_path();
    outfile = fmt::format("{}-lora-{}.gguf", folder.filename().string(), out_type_name(*out_type));
  }
  options.outfile = outfile;
  options.threads = args.threads;
  options.allow_non_finite = args.allow_non_finite;
  if (!args.quiet) options.log = [](const std::string& text) { std::fputs(text.c_str(), stderr); };
  options.dry_run = args.dry_run;
  const ConvertSummary summary = convert_adapter(options);
  report(outfile, summary, args.json, args.quiet);
  if (!args.modelfile_base.empty() && summary.written) {
    const GgufSplitSet base = GgufSplitSet::open(args.modelfile_base);
    const ModelfileSpec spec{modelfile_path_for(outfile), base.paths, std::filesystem::path(outfile)};
    write_modelfile(spec, base.metadata());
    if (!args.quiet) fmt::print(stderr, "wrote {} (ollama create NAME -f {})\n", spec.modelfile.string(), spec.modelfile.string());
  }
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
  const GgufSplitSet set = GgufSplitSet::open(path);
  const GgufFile& file = set.parts.front();
  if (json) {
    nlohmann::json out;
    out["version"] = file.version;
    out["metadata"] = nlohmann::json::object();
    for (const auto& entry : file.metadata.entries()) out["metadata"][entry.key] = value_to_json(entry.value);
    out["tensors"] = nlohmann::json::array();
    for (const auto& [tensor, part, offset] : set.tensors) {
      out["tensors"].push_back({{"name", tensor.name}, {"type", ggml_type_info(tensor.type).name}, {"ne", tensor.ne},
                                {"offset", offset}, {"bytes", tensor.size_bytes()}});
      if (set.parts.size() > 1) out["tensors"].back()["file"] = part;
    }
    if (set.parts.size() > 1)
      for (const auto& part_path : set.paths) out["files"].push_back(part_path.string());
    // GGUF strings are bytes: ones that are not UTF-8 (names, templates of a damaged file) are shown as U+FFFD rather
    // than making the listing fail.
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  fmt::print("{}: GGUF v{}, {} metadata keys, {} tensors, {:.1f} MiB\n", path, file.version, file.metadata.entries().size(),
             set.tensors.size(), set.total_bytes() / 1048576.0);
  if (set.parts.size() > 1) {
    fmt::print("split set of {} files:\n", set.parts.size());
    for (size_t p = 0; p < set.parts.size(); ++p)
      fmt::print("  {} ({} tensors, {:.1f} MiB)\n", set.paths[p].string(), set.parts[p].tensors.size(),
                 set.parts[p].file_size / 1048576.0);
  }
  fmt::print("\nmetadata:\n");
  for (const auto& entry : file.metadata.entries()) {
    const std::string type = entry.value.is_array()
                                 ? fmt::format("{}[{}]", gguf_type_name(entry.value.element_type), entry.value.size())
                                 : gguf_type_name(entry.value.type);
    fmt::print("  {:<48} {:<12} {}\n", entry.key, type, entry.value.to_string(full));
  }
  fmt::print("\ntensors:\n  {:<40} {:<8} {:<24} {:>12}\n", "name", "type", "ne", "bytes");
  for (const auto& [tensor, part, offset] : set.tensors) {
    std::string ne = "{";
    for (size_t i = 0; i < tensor.ne.size(); ++i) ne += (i ? ", " : "") + std::to_string(tensor.ne[i]);
    ne += "}";
    fmt::print("  {:<40} {:<8} {:<24} {:>12}\n", tensor.name, ggml_type_info(tensor.type).name, ne, tensor.size_bytes());
  }
  return 0;
}

struct VerifyArgs {
  std::string file, source, adapter_path, adapter_file, outtype, llama_lib;
  bool fuse_requantize = false, json = false, logits = false;
  int threads = 0, tokens = 16;
};

int run_verify(const VerifyArgs& args) {
  VerifyOptions options;
  options.gguf = args.file;
  options.model_dir = args.source;
  if (!args.adapter_path.empty()) {
    options.adapter = AdapterLocation{args.adapter_path, std::nullopt};
    if (!args.adapter_file.empty()) options.adapter->weights_file = args.adapter_file;
    if (args.fuse_requantize) options.merge_rule = MergeRule::LikeMlxFuse;
  } else if (!args.adapter_file.empty() || args.fuse_requantize) {
    fail("{} needs --adapter-path", args.fuse_requantize ? "--fuse-requantize" : "--adapter-file");
  }
  if (!args.outtype.empty()) {
    options.out_type = parse_out_type(args.outtype);
    if (!options.out_type) fail("--outtype '{}' is not one of {}", args.outtype, fmt::join(out_type_names(), ", "));
  }
  options.threads = args.threads;
  // Found before the tensor check, so that a missing library is reported at once.
  std::string llama_lib = args.llama_lib;
  if (args.logits && llama_lib.empty()) {
    const FoundLlamaLibrary found = find_llama_library(LlamaSearch::from_environment());
    llama_lib = found.path.string();
    fmt::print(stderr, "mlx2gguf: llama.cpp library {} ({})\n", llama_lib, found.how);
  }
  const VerifyReport report = verify_file(options);
  std::optional<LogitsReport> logits;
  if (!llama_lib.empty()) logits = verify_logits({args.file, args.source, llama_lib, options.adapter, args.tokens});
  if (args.json) {
    nlohmann::json out = report_json(report);
    if (logits) {
      out["logits"] = logits_report_json(*logits);
      out["logits"]["llama_lib"] = llama_lib;
    }
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    fmt::print("{}", format_report(report));
    if (logits) fmt::print("{}", format_logits_report(*logits));
  }
  std::fflush(stdout);
  const auto failing = report.failing_tensors();
  if (failing.empty()) return 0;
  fmt::print(stderr, "error: {} of {} tensors of '{}' do not hold what the source gives at their type: {}\n",
             failing.size(), report.tensors.size() + report.missing.size(), args.file, fmt::join(failing, ", "));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlx2gguf: convert mlx-lm model folders (fine-tuned, fused, quantized) to GGUF for llama.cpp, "
               "Ollama and LM Studio"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mlx2gguf " MLX2GGUF_VERSION " (revision " MLX2GGUF_REVISION ")");

  ConvertArgs c;
  auto* convert_cmd = app.add_subcommand("convert", "Convert an mlx-lm model folder to a GGUF file");
  convert_cmd->add_option("MODEL_DIR", c.model_dir,
                          "mlx-lm model folder (config.json, *.safetensors, tokenizer files), or the Hugging Face "
                          "repo id of one already downloaded (org/name[@revision], looked up in $HF_HUB_CACHE, "
                          "$HF_HOME/hub or ~/.cache/huggingface/hub; nothing is downloaded)")
      ->required();
  convert_cmd->add_option("--outfile,-o", c.outfile,
                          "Output GGUF path (default, as llama.cpp names files: {Basename}-{SizeLabel}-{Finetune}-"
                          "{Version}-{TYPE}.gguf, here)");
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
  convert_cmd->add_option("--name", c.name,
                          "general.name of the model (default: the model card's, else derived from config.json's "
                          "_name_or_path or the folder name as llama.cpp derives it)");
  convert_cmd->add_option("--metadata", c.metadata_file,
                          "JSON file of general.* overrides in llama.cpp's --metadata format (general.name, "
                          "general.sampling.temp, general.base_models, general.tags, ...)")
      ->check(CLI::ExistingFile);
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
  convert_cmd->add_option("--split-max-size", c.split_max_size,
                          "Split the output into files of at most this much tensor data (e.g. 50G, 500M; K/M/G are "
                          "powers of 1000), named <outfile>-00001-of-0000N.gguf as llama.cpp's tools name them; "
                          "llama.cpp loads the set from the first file");
  convert_cmd->add_option("--split-max-tensors", c.split_max_tensors, "Split the output into files of at most N tensors");
  convert_cmd->add_flag("--pure", c.pure,
                        "With a llama-quantize --outtype: exactly llama-quantize's tensor types and bytes, every "
                        "tensor quantized from its float values. Without it, MLX-quantized tensors keep their "
                        "lossless type wherever the mix asks for as many bits or more, and K-types are searched to "
                        "keep the MLX codes");
  convert_cmd->add_option("--imatrix", c.imatrix,
                          "Importance matrix from llama-imatrix (GGUF or legacy .dat): quantized tensors are weighted "
                          "by it as llama-quantize --imatrix weights them (Q4_0..Q5_1 and the K types; lossless "
                          "repacks and other types are unaffected)");
  convert_cmd->add_option("--threads,-t", c.threads, "Worker threads (default: all cores)");
  convert_cmd->add_flag("--allow-non-finite", c.allow_non_finite,
                        "Write NaN or infinite weights, scales or biases instead of refusing them (the GGUF will "
                        "compute NaN wherever they are used)");
  convert_cmd->add_flag("--modelfile", c.modelfile,
                        "Also write an Ollama Modelfile next to the output (<outfile>.Modelfile): FROM the file, the "
                        "model's sampling defaults and stop tokens as PARAMETERs, RENDERER/PARSER for Qwen3.5/3.6");
  convert_cmd->add_flag("--quiet,-q", c.quiet, "No progress or summary output");
  convert_cmd->add_flag("--dry-run", c.dry_run,
                        "Print the plan (every tensor's source, transform, GGUF type and size; the total; which "
                        "tensors repack losslessly and why others do not) without writing anything");
  convert_cmd->add_flag("--json", c.json, "Print the run summary (or the --dry-run plan) as JSON on stdout");

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
  adapter_cmd->add_option("--modelfile", a.modelfile_base,
                          "Also write an Ollama Modelfile next to the output applying the adapter (ADAPTER) to this "
                          "base GGUF (FROM), with the base's sampling defaults and stop tokens")
      ->check(CLI::ExistingFile);
  adapter_cmd->add_flag("--quiet,-q", a.quiet, "No progress or summary output");
  adapter_cmd->add_flag("--dry-run", a.dry_run, "Print the plan without writing anything");
  adapter_cmd->add_flag("--json", a.json, "Print the run summary (or the --dry-run plan) as JSON on stdout");

  std::string inspect_path;
  bool json = false, full = false;
  auto* inspect_cmd = app.add_subcommand("inspect", "Show the metadata and tensor table of a GGUF file");
  inspect_cmd->add_option("FILE", inspect_path, "GGUF file")->required()->check(CLI::ExistingFile);
  inspect_cmd->add_flag("--json", json, "Machine-readable JSON output");
  inspect_cmd->add_flag("--full", full, "Print long arrays (token lists, merges) completely");

  VerifyArgs v;
  auto* verify_cmd = app.add_subcommand(
      "verify",
      "Check every tensor of a GGUF file against the model folder it was converted from. A tensor passes when it "
      "decodes exactly to what its type allows the source values to become: repacked MLX codes to the repacked "
      "blocks (lossless), F32 to the source values, F16/BF16 to their rounding, quantized types to "
      "decode(encode(source values)) with mlx2gguf's encoders (byte-identical to ggml's). Reports per tensor "
      "lossless or the relative RMSE and max abs error against the source; exit status 1 names the tensors that fail");
  verify_cmd->add_option("FILE", v.file, "GGUF file")->required()->check(CLI::ExistingFile);
  verify_cmd->add_option("--source", v.source, "The mlx-lm model folder the file was converted from")->required();
  verify_cmd->add_option("--adapter-path", v.adapter_path, "The fine-tune merged into the file (as for convert)");
  verify_cmd->add_option("--adapter-file", v.adapter_file, "Weights file of the adapter folder (as for convert)");
  verify_cmd->add_flag("--fuse-requantize", v.fuse_requantize, "The file was written with --fuse-requantize");
  verify_cmd->add_option("--outtype", v.outtype,
                         "The --outtype the file was written with (default: the first, auto first, whose plan gives "
                         "every tensor the file's type)");
  verify_cmd->add_option("--llama-lib", v.llama_lib,
                         "libllama.so of a llama.cpp installation: also run --tokens tokens through llama.cpp and "
                         "through mlx2gguf's float32 reference forward pass of the source, and report NMSE, KL "
                         "divergence and top-1 agreement per position (llama.cpp is loaded at run time)");
  verify_cmd->add_flag(
      "--logits", v.logits,
      "Run the logits check with the libllama found automatically: $MLX2GGUF_LLAMA_LIB, else next to llama-cli or "
      "llama-server on PATH (their folder and ../lib), else /opt/homebrew/lib, /usr/local/lib, /usr/lib/<multiarch>, "
      "/usr/lib64, /usr/lib");
  auto* tokens_option = verify_cmd->add_option("--tokens", v.tokens, "Tokens of the logits check (implies --logits)")
                            ->capture_default_str();
  verify_cmd->add_option("--threads,-t", v.threads, "Worker threads (default: all cores)");
  verify_cmd->add_flag("--json", v.json, "Machine-readable JSON report");

  CLI11_PARSE(app, argc, argv);
  if (tokens_option->count() > 0) v.logits = true;
  mlx2gguf::install_cancel_handlers();
  try {
    if (*convert_cmd) return run_convert(c);
    if (*adapter_cmd) return run_convert_adapter(a);
    if (*inspect_cmd) return run_inspect(inspect_path, json, full);
    if (*verify_cmd) return run_verify(v);
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
