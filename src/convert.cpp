#include "convert.h"

#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <thread>

#include "encode/mlx_aware_k_quants.h"
#include "encode/repack.h"
#include "plan/general_metadata.h"
#include "encode/row_encoder.h"
#include "encode/weighted_quants.h"
#include "read/dequant.h"
#include "report/progress.h"
#include "report/summary.h"
#include "read/imatrix.h"
#include "util/cancel.h"
#include "util/error.h"
#include "write/gguf_file.h"

namespace mlx2gguf {

namespace {

// Locates concatenated source row `row` of a recipe.
std::pair<const SourceTensor*, int64_t> locate(const TensorRecipe& recipe, int64_t row) {
  for (const SourceTensor* source : recipe.sources) {
    if (row < source->row_count()) return {source, row};
    row -= source->row_count();
  }
  fail("internal error: row {} is beyond the sources of '{}'", row, recipe.name);
}

int64_t source_row_length(const TensorRecipe& recipe) {
  return recipe.sources.empty() ? recipe.row_length() : recipe.sources.front()->row_length();
}

void apply_op(ValueOp op, float* values, int64_t n) {
  switch (op) {
    case ValueOp::None: return;
    case ValueOp::AddOne:
      for (int64_t i = 0; i < n; ++i) values[i] += 1.0f;
      return;
    case ValueOp::NegExp:
      for (int64_t i = 0; i < n; ++i) values[i] = -std::exp(values[i]);
      return;
  }
}

}  // namespace

void read_recipe_rows(const TensorRecipe& recipe, int64_t first, int64_t count, float* out) {
  const int64_t length = recipe.row_length();
  if (!recipe.generated.empty()) {
    std::copy(recipe.generated.begin() + first * length, recipe.generated.begin() + (first + count) * length, out);
    return;
  }
  const int64_t source_length = source_row_length(recipe);
  std::vector<float> source_row;
  if (!recipe.column_map.empty()) source_row.resize(static_cast<size_t>(source_length));
  for (int64_t r = first; r < first + count; ++r) {
    const int64_t wanted = recipe.row_map.empty() ? r : recipe.row_map[static_cast<size_t>(r)];
    const auto [source, row] = locate(recipe, wanted);
    float* dest = out + (r - first) * length;
    if (recipe.column_map.empty()) {
      // Runs of consecutive rows from one source are read in one call.
      int64_t run = 1;
      while (recipe.row_map.empty() && r + run < first + count && row + run < source->row_count()) ++run;
      source->read_rows(row, run, dest);
      r += run - 1;
      continue;
    }
    source->read_rows(row, 1, source_row.data());
    for (int64_t c = 0; c < length; ++c) dest[c] = source_row[static_cast<size_t>(recipe.column_map[static_cast<size_t>(c)])];
  }
  apply_op(recipe.op, out, count * length);
}

// Rows [first, first + count) of a repacked recipe, as GGUF bytes moved from the MLX packed codes.
void repack_recipe_rows(const TensorRecipe& recipe, int64_t first, int64_t count, uint8_t* out) {
  const int64_t row_bytes = ggml_row_bytes(recipe.type, recipe.row_length());
  for (int64_t r = first; r < first + count; ++r) {
    const int64_t wanted = recipe.row_map.empty() ? r : recipe.row_map[static_cast<size_t>(r)];
    const auto [source, row] = locate(recipe, wanted);
    repack_row(*source, row, recipe.type, recipe.repack_groups, out + (r - first) * row_bytes);
  }
}

namespace {

// The GGUF type whose bytes are those of a stored float dtype.
std::optional<GgmlType> same_bytes_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return GgmlType::F32;
    case DType::F16: return GgmlType::F16;
    case DType::BF16: return GgmlType::BF16;
    default: return std::nullopt;
  }
}

}  // namespace

bool copies_stored_bytes(const TensorRecipe& recipe) {
  if (recipe.repack || !recipe.generated.empty() || recipe.op != ValueOp::None || recipe.sources.empty()) return false;
  for (const SourceTensor* source : recipe.sources)
    if (source->verbatim_row(0) == nullptr || same_bytes_type(source->value_dtype()) != recipe.type) return false;
  return true;
}

std::span<const uint8_t> copy_recipe_rows(const TensorRecipe& recipe, int64_t first, int64_t count,
                                          std::vector<uint8_t>& buffer) {
  const int64_t length = recipe.row_length();
  const size_t value_size = static_cast<size_t>(ggml_type_info(recipe.type).type_size);
  const size_t row_bytes = static_cast<size_t>(length) * value_size;
  if (recipe.row_map.empty() && recipe.column_map.empty()) {
    const auto [source, row] = locate(recipe, first);
    if (row + count <= source->row_count())  // one stretch of one source: the mapped bytes themselves
      return {source->verbatim_row(row), row_bytes * static_cast<size_t>(count)};
  }
  buffer.resize(row_bytes * static_cast<size_t>(count));
  for (int64_t r = first; r < first + count; ++r) {
    const int64_t wanted = recipe.row_map.empty() ? r : recipe.row_map[static_cast<size_t>(r)];
    const auto [source, row] = locate(recipe, wanted);
    const uint8_t* from = source->verbatim_row(row);
    uint8_t* to = buffer.data() + static_cast<size_t>(r - first) * row_bytes;
    if (recipe.column_map.empty()) {
      std::memcpy(to, from, row_bytes);
      continue;
    }
    for (int64_t c = 0; c < length; ++c)
      std::memcpy(to + static_cast<size_t>(c) * value_size,
                  from + static_cast<size_t>(recipe.column_map[static_cast<size_t>(c)]) * value_size, value_size);
  }
  return buffer;
}

namespace {

// Whether float bytes of `type` hold a NaN or infinity: an OR over the exponent test, which the compiler
// vectorizes, so checking costs next to nothing beside copying the same bytes.
template <typename Bits, Bits kExponent>
bool any_all_ones_exponent(std::span<const uint8_t> bytes) {
  const size_t count = bytes.size() / sizeof(Bits);
  uint32_t found = 0;
  for (size_t i = 0; i < count; ++i) {
    Bits bits;
    std::memcpy(&bits, bytes.data() + i * sizeof(Bits), sizeof(Bits));
    found |= static_cast<uint32_t>((bits & kExponent) == kExponent);
  }
  return found != 0;
}

bool any_non_finite_bytes(GgmlType type, std::span<const uint8_t> bytes) {
  switch (type) {
    case GgmlType::F32: return any_all_ones_exponent<uint32_t, 0x7f800000u>(bytes);
    case GgmlType::F16: return any_all_ones_exponent<uint16_t, 0x7c00>(bytes);
    case GgmlType::BF16: return any_all_ones_exponent<uint16_t, 0x7f80>(bytes);
    default: fail("internal error: {} is not a float type", ggml_type_info(type).name);
  }
}

struct Chunk {
  size_t tensor;
  int64_t first_row, rows;
};

// Whether any of `count` floats is NaN or infinite: a branch-free OR over the exponent bits, so the compiler
// vectorizes it and the check costs next to nothing beside reading and encoding the same values.
bool any_non_finite(const float* values, int64_t count) {
  uint32_t all_ones = 0;
  for (int64_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, values + i, 4);
    all_ones |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return all_ones != 0;
}

// The scale or bias of an MLX-quantized row that is NaN or infinite, as "'<name>.scales' holds nan (group 3)".
std::optional<std::string> non_finite_quantization(const SourceTensor& source, int64_t row) {
  if (!source.stored_quant() || source.scales() == nullptr) return std::nullopt;
  const QuantSpec& spec = *source.stored_quant();
  const int64_t groups = source.row_length() / spec.group_size;
  const StoredTensor& scales = *source.scales();
  const size_t size = dtype_size(scales.dtype);
  const size_t offset = static_cast<size_t>(row * groups) * size;
  for (const StoredTensor* stored : {source.scales(), source.biases()}) {
    if (stored == nullptr || offset + static_cast<size_t>(groups) * size > stored->bytes.size()) continue;
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* at = stored->bytes.data() + offset;
      float value;
      if (stored->dtype != DType::U8)
        value = load_float(at, stored->dtype, g);
      else  // fp modes: E8M0 exponents (mxfp4, mxfp8) or E4M3 scales (nvfp4)
        value = spec.mode == QuantMode::NVFP4 ? e4m3_to_f32(at[g]) : e8m0_to_f32(at[g]);
      if (!std::isfinite(value))
        return fmt::format("'{}' in '{}' holds {} (row {}, group {})", stored->name, stored->file.string(), value, row, g);
    }
  }
  return std::nullopt;
}

// The error for a non-finite value in output row `out_row` of `recipe`, naming the source tensor it came from.
[[noreturn]] void fail_non_finite(const TensorRecipe& recipe, int64_t out_row, const float* row_values) {
  std::string what;
  if (recipe.sources.empty()) {
    what = "the values computed for it";
  } else {
    const int64_t wanted = recipe.row_map.empty() ? out_row : recipe.row_map[static_cast<size_t>(out_row)];
    const auto [source, row] = locate(recipe, wanted);
    if (const auto quant = non_finite_quantization(*source, row)) {
      what = *quant;
    } else {
      float value = 0;
      for (int64_t c = 0; c < recipe.row_length(); ++c)
        if (!std::isfinite(row_values[c])) {
          value = row_values[c];
          break;
        }
      what = fmt::format("'{}' in '{}' gives {} in row {}{}", source->name(), source->weight().file.string(), value, row,
                         source->merge() ? " once merged with the adapter" : "");
    }
  }
  fail("non-finite value for GGUF tensor '{}': {}; llama.cpp would compute NaN from it (--allow-non-finite writes "
       "it anyway)", recipe.name, what);
}

void check_finite(const TensorRecipe& recipe, int64_t first_row, int64_t rows, const float* values) {
  const int64_t length = recipe.row_length();
  if (!any_non_finite(values, rows * length)) return;
  for (int64_t r = 0; r < rows; ++r)
    if (any_non_finite(values + r * length, length)) fail_non_finite(recipe, first_row + r, values + r * length);
}

void check_output_directory(const std::filesystem::path& outfile) {
  const auto out_dir = std::filesystem::absolute(outfile).parent_path();
  if (!std::filesystem::is_directory(out_dir)) fail("output directory '{}' does not exist", out_dir.string());
}

void log_adapter(const Adapter& adapter, MergeRule rule, const std::function<void(const std::string&)>& log) {
  if (adapter.type() == FineTuneType::Full) {
    log(fmt::format("adapter {}: full fine-tune, {} tensors replace the base's\n", adapter.weights_path().string(),
                    adapter.replacements().size()));
  } else {
    log(fmt::format("adapter {}: {}, {} modules, rank {}, scale {}, merged {}\n", adapter.weights_path().string(),
                    fine_tune_type_name(adapter.type()), adapter.modules().size(), adapter.rank(), adapter.scale(),
                    rule == MergeRule::Float32 ? "in float32" : "and re-quantized as mlx_lm.fuse does"));
  }
  for (const auto& note : adapter.notes()) log("  note: " + note + "\n");
}


// --threads for every parallel step while the returned object lives (0: all hardware threads).
tbb::global_control thread_limit(int threads_wanted) {
  const int threads = threads_wanted > 0 ? threads_wanted : static_cast<int>(std::thread::hardware_concurrency());
  return tbb::global_control(tbb::global_control::max_allowed_parallelism, static_cast<size_t>(std::max(1, threads)));
}

bool is_merged(const TensorRecipe& recipe) {
  for (const SourceTensor* source : recipe.sources)
    if (source->merge()) return true;
  return false;
}

MergeSummary summarize_merge(const ConversionPlan& plan) {
  MergeSummary merge;
  for (const auto& recipe : plan.tensors) {
    if (!is_merged(recipe)) continue;
    const uint64_t bytes = static_cast<uint64_t>(recipe.row_count() * ggml_row_bytes(recipe.type, recipe.row_length()));
    merge.tensors++;
    merge.bytes += bytes;
    const auto& base_quant = recipe.sources.front()->stored_quant();
    const bool float_type = recipe.type == GgmlType::F32 || recipe.type == GgmlType::F16 || recipe.type == GgmlType::BF16;
    if (!base_quant || !float_type || recipe.keep_f32) continue;  // F32 tensors (routers ...) are F32 anyway
    merge.float_from_quantized++;
    merge.float_from_quantized_bytes += bytes;
    const auto target = lossless_target(*base_quant, recipe.row_length()).type;
    merge.requantized_bytes +=
        static_cast<uint64_t>(recipe.row_count() * ggml_row_bytes(target.value_or(GgmlType::Q8_0), recipe.row_length()));
  }
  return merge;
}

bool is_token_embedding(const std::string& name) {
  return name == "token_embd.weight" || name == "per_layer_token_embd.weight";
}

// Stacked experts are 3-D: [experts, rows, columns], each expert with its own slice of the importance weights.
int64_t expert_count(const TensorRecipe& recipe) {
  return recipe.shape.size() >= 3 ? recipe.shape[recipe.shape.size() - 3] : 1;
}
int64_t rows_per_expert(const TensorRecipe& recipe) { return recipe.row_count() / expert_count(recipe); }

// The importance weights of each tensor (nullptr where none apply), matched by GGUF name as llama-quantize
// matches them. An entry of the wrong size means a matrix of another model: an error, except for the token
// embedding, which llama-quantize quantizes without weights then.
std::vector<const float*> match_importance(const ConversionPlan& plan, const ImportanceMatrix& matrix,
                                           const std::function<void(const std::string&)>& log) {
  std::vector<const float*> weights(plan.tensors.size(), nullptr);
  int used = 0;
  std::vector<std::string> missing;
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    const TensorRecipe& recipe = plan.tensors[t];
    // Repacked tensors keep the MLX codes exactly; F32 tensors are not quantized.
    if (recipe.repack || recipe.keep_f32 || recipe.type == GgmlType::F32) continue;
    const std::vector<float>* entry = matrix.find(recipe.name);
    const bool matters = uses_importance(recipe.type);
    if (entry == nullptr) {
      if (matters) missing.push_back(recipe.name);
      continue;
    }
    const int64_t wanted = recipe.row_length() * expert_count(recipe);
    if (static_cast<int64_t>(entry->size()) != wanted) {
      if (is_token_embedding(recipe.name)) continue;
      fail("importance matrix '{}': entry '{}' has {} values, the tensor needs {} ({} columns × {} experts); was it "
           "computed for another model?", matrix.path.string(), recipe.name, entry->size(), wanted,
           recipe.row_length(), expert_count(recipe));
    }
    if (!matters) continue;
    weights[t] = entry->data();
    ++used;
  }
  if (log) {
    log(fmt::format("importance matrix {} ({}, {} entries{}): weights {} tensors\n", matrix.path.string(),
                    matrix.legacy ? "legacy format" : "GGUF", matrix.entries.size(),
                    matrix.chunk_count ? fmt::format(", {} chunks", matrix.chunk_count) : "", used));
    if (!missing.empty())
      log(fmt::format("  note: no entry for {} quantized tensors (quantized without importance, as llama-quantize "
                      "does): {}{}\n", missing.size(), missing.front(), missing.size() > 1 ? ", ..." : ""));
  }
  return weights;
}

// Encodes rows [first_row, first_row + rows) of a tensor, each with its expert's importance weights.
void encode_weighted(const TensorRecipe& recipe, int64_t first_row, int64_t rows, const float* values,
                     const float* importance, uint8_t* out) {
  const int64_t length = recipe.row_length();
  const int64_t per_expert = rows_per_expert(recipe);
  const int64_t row_bytes = ggml_row_bytes(recipe.type, length);
  for (int64_t r = 0; r < rows;) {
    const int64_t expert = (first_row + r) / per_expert;
    const int64_t run = std::min(rows - r, (expert + 1) * per_expert - (first_row + r));
    encode_rows_weighted(recipe.type, values + r * length, run, length, importance + expert * length,
                         out + r * row_bytes);
    r += run;
  }
}

// The keys llama-quantize adds when given an importance matrix (strings cut to its 127 bytes).
void add_imatrix_metadata(const ImportanceMatrix& matrix, const std::string& given_path, GgufMetadata& metadata) {
  const auto cut = [](const std::string& s) { return s.substr(0, 127); };
  metadata.set("quantize.imatrix.file", GgufValue::str(cut(given_path)));
  if (!matrix.datasets.empty()) metadata.set("quantize.imatrix.dataset", GgufValue::str(cut(matrix.datasets.front())));
  metadata.set("quantize.imatrix.entries_count", GgufValue::u32(static_cast<uint32_t>(matrix.entries.size())));
  if (matrix.chunk_count > 0 && matrix.chunk_count <= INT32_MAX)
    metadata.set("quantize.imatrix.chunks_count", GgufValue::u32(matrix.chunk_count));
}

}  // namespace

// general.description and general.finetune of a merged model name the adapter (general_metadata.h).
void describe_merged_adapter(const Adapter& adapter, PlanOptions& options) {
  options.merged_adapter_name = adapter.config_path().parent_path().filename().string();
  options.merged_adapter =
      adapter.type() == FineTuneType::Full
          ? fmt::format("mlx-lm full fine-tune '{}' merged into the weights", adapter.weights_path().filename().string())
          : fmt::format("mlx-lm {} adapter '{}/{}' merged into the weights (rank {}, scale {})",
                        adapter.type() == FineTuneType::Dora ? "DoRA" : "LoRA", options.merged_adapter_name,
                        adapter.weights_path().filename().string(), adapter.rank(), adapter.scale());
}

ConvertSummary convert(const ConvertOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!options.outfile.empty()) check_output_directory(options.outfile);

  std::optional<ImportanceMatrix> importance;
  if (options.imatrix) importance = read_imatrix(*options.imatrix);
  const tbb::global_control limit = thread_limit(options.threads);  // reading and planning scan in parallel too

  SourceModel model = SourceModel::open(options.model_dir);
  std::unique_ptr<Adapter> adapter;
  PlanOptions plan_options = options.plan;
  if (options.adapter) {
    adapter = Adapter::open(*options.adapter, model);
    model.apply_adapter(*adapter, options.merge_rule);
    if (options.log) log_adapter(*adapter, options.merge_rule, options.log);
    describe_merged_adapter(*adapter, plan_options);
  }
  plan_options.has_imatrix = importance.has_value();
  ConversionPlan plan = make_plan(model, plan_options);
  if (importance) add_imatrix_metadata(*importance, options.imatrix->string(), plan.metadata);
  const std::filesystem::path outfile =
      options.outfile.empty() ? std::filesystem::path(default_output_name(plan.metadata)) : options.outfile;
  if (options.log)
    options.log(fmt::format("{}: {} '{}' → {} tensors, {} metadata keys\n", options.model_dir.string(),
                            model.folder().model_type(), plan.metadata.get("general.architecture")->strings[0],
                            plan.tensors.size(), plan.metadata.entries().size()));
  ConvertSummary summary = options.dry_run ? summarize_plan(plan)
                                           : write_plan(plan, outfile, options.threads, options.log,
                                                        options.allow_non_finite, options.split,
                                                        importance ? &*importance : nullptr);
  if (!summary.written) summary.outfile = outfile;  // a dry run names the file it would write
  summary.merge = summarize_merge(plan);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

ConvertSummary convert_adapter(const ConvertAdapterOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  check_output_directory(options.outfile);
  const tbb::global_control limit = thread_limit(options.threads);
  const SourceModel base = SourceModel::open(options.base_dir);
  const std::unique_ptr<Adapter> adapter = Adapter::open(options.adapter, base);
  const ConversionPlan plan = make_adapter_plan(base, *adapter, options.plan);
  if (options.log) {
    options.log(fmt::format("{}: {} modules, rank {}, scale {} → {} tensors for '{}' (adapter.lora.alpha {})\n",
                            adapter->weights_path().string(), adapter->modules().size(), adapter->rank(), adapter->scale(),
                            plan.tensors.size(), plan.metadata.get("general.architecture")->strings[0],
                            plan.metadata.get("adapter.lora.alpha")->floats[0]));
    for (const auto& note : adapter->notes()) options.log("  note: " + note + "\n");
  }
  ConvertSummary summary = options.dry_run ? summarize_plan(plan)
                                           : write_plan(plan, options.outfile, options.threads, options.log,
                                                        options.allow_non_finite);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

ConvertSummary write_plan(const ConversionPlan& plan, const std::filesystem::path& outfile, int threads_wanted,
                          const std::function<void(const std::string&)>& log, bool allow_non_finite,
                          const SplitLimits& split, const ImportanceMatrix* importance) {
  throw_if_cancelled();  // a signal during reading or planning: no file is created at all
  const auto start = std::chrono::steady_clock::now();
  std::vector<GgufTensorInfo> infos;
  for (const auto& recipe : plan.tensors) {
    if (!can_encode(recipe.type)) fail("internal error: no encoder for {}", ggml_type_info(recipe.type).name);
    infos.push_back({recipe.name, recipe.ne(), recipe.type, 0});
  }
  const std::vector<const float*> weights =
      importance ? match_importance(plan, *importance, log) : std::vector<const float*>(plan.tensors.size(), nullptr);
  GgufSplitWriter writer(outfile, plan.metadata, std::move(infos), split);

  // Work items of about 1M elements, so memory stays bounded whatever the model size.
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    const auto& recipe = plan.tensors[t];
    const int64_t rows_per_chunk = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, recipe.row_length()));
    for (int64_t first = 0; first < recipe.row_count(); first += rows_per_chunk)
      chunks.push_back({t, first, std::min(rows_per_chunk, recipe.row_count() - first)});
  }

  // Float tensors written in their stored type are byte copies (row and column gathers), never floats.
  std::vector<bool> copy(plan.tensors.size());
  for (size_t t = 0; t < plan.tensors.size(); ++t) copy[t] = copies_stored_bytes(plan.tensors[t]);

  Progress progress(log, writer.file_size(), ::isatty(STDERR_FILENO) != 0);
  const tbb::global_control limit = thread_limit(threads_wanted);
  tbb::parallel_for(size_t{0}, chunks.size(), [&](size_t i) {
    throw_if_cancelled();
    const Chunk& chunk = chunks[i];
    const TensorRecipe& recipe = plan.tensors[chunk.tensor];
    thread_local std::vector<float> values;
    thread_local std::vector<uint8_t> bytes;
    const int64_t row_bytes = ggml_row_bytes(recipe.type, recipe.row_length());
    if (copy[chunk.tensor]) {
      // A NaN or infinity goes through floats instead, which names it or writes it in canonical form.
      const std::span<const uint8_t> copied = copy_recipe_rows(recipe, chunk.first_row, chunk.rows, bytes);
      if (!any_non_finite_bytes(recipe.type, copied)) {
        writer.write(chunk.tensor, static_cast<uint64_t>(chunk.first_row * row_bytes), copied);
        progress.advance(copied.size());
        return;
      }
    }
    bytes.resize(static_cast<size_t>(chunk.rows * row_bytes));
    if (recipe.repack) {
      // Repacked tensors are finite: repack_obstacle sent any with a non-finite scale or bias to the float path.
      repack_recipe_rows(recipe, chunk.first_row, chunk.rows, bytes.data());
    } else {
      values.resize(static_cast<size_t>(chunk.rows * recipe.row_length()));
      read_recipe_rows(recipe, chunk.first_row, chunk.rows, values.data());
      if (!allow_non_finite) check_finite(recipe, chunk.first_row, chunk.rows, values.data());
      if (weights[chunk.tensor] != nullptr)
        encode_weighted(recipe, chunk.first_row, chunk.rows, values.data(), weights[chunk.tensor], bytes.data());
      else if (recipe.mlx_aware_source)
        encode_rows_mlx_aware(recipe.type, *recipe.mlx_aware_source, values.data(), chunk.rows, recipe.row_length(), bytes.data());
      else
        encode_rows(recipe.type, values.data(), chunk.rows, recipe.row_length(), bytes.data());
    }
    writer.write(chunk.tensor, static_cast<uint64_t>(chunk.first_row * row_bytes), bytes);
    progress.advance(bytes.size());
  });
  progress.finish();
  writer.commit();

  ConvertSummary summary = summarize_plan(plan);
  summary.written = true;
  summary.file_bytes = writer.file_size();
  summary.outfile = writer.paths().front();
  summary.files = writer.paths();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace mlx2gguf
