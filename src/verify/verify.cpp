#include "verify/verify.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "convert.h"
#include "encode/mlx_aware_k_quants.h"
#include "encode/row_encoder.h"
#include "plan/quant_mix.h"
#include "util/cancel.h"
#include "util/error.h"
#include "write/gguf_file.h"

namespace mlx2gguf {

namespace {

// The GGUF file read with pread: a memory map would keep every page read in the process's resident set.
class FileReader {
 public:
  explicit FileReader(const std::filesystem::path& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail("cannot open '{}': {}", path.string(), std::strerror(errno));
  }
  ~FileReader() { ::close(fd_); }
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;

  void read(uint64_t offset, size_t size, uint8_t* out) const {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pread(fd_, out + done, size - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("cannot read {} bytes at offset {} of '{}'", size, offset + done, path_.string());
      done += static_cast<size_t>(n);
    }
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

std::string shape_string(const std::vector<int64_t>& ne) { return fmt::format("{{{}}}", fmt::join(ne, ", ")); }

bool same_value(const GgufValue& a, const GgufValue& b) {
  return a.type == b.type && (!a.is_array() || a.element_type == b.element_type) && a.ints == b.ints &&
         a.floats == b.floats && a.strings == b.strings;
}

// Plans the conversion the way `convert` would, with `out_type`. A tokenizer whose pre-tokenizer mlx2gguf does not
// recognise is planned with the file's tokenizer.ggml.pre (convert needed --tokenizer-pre for it).
ConversionPlan plan_as(const SourceModel& model, OutType out_type, const GgufFile& file, PlanOptions options) {
  options.out_type = out_type;
  if (const GgufValue* name = file.metadata.get("general.name"); name && name->type == GgufType::STRING)
    options.name = name->strings.at(0);
  try {
    return make_plan(model, options);
  } catch (const Error&) {
    const GgufValue* pre = file.metadata.get("tokenizer.ggml.pre");
    if (pre == nullptr || pre->type != GgufType::STRING) throw;
    options.tokenizer_pre = pre->strings.at(0);
    return make_plan(model, options);
  }
}

int matching_types(const ConversionPlan& plan, const GgufFile& file) {
  std::map<std::string, GgmlType> planned;
  for (const auto& recipe : plan.tensors) planned[recipe.name] = recipe.type;
  int matches = 0;
  for (const auto& tensor : file.tensors) {
    const auto it = planned.find(tensor.name);
    if (it != planned.end() && it->second == tensor.type) ++matches;
  }
  return matches;
}

// Every --outtype, those whose general.file_type is the file's first (planning reads the tokenizer each time).
std::vector<OutType> candidate_out_types(const GgufFile& file) {
  const GgufValue* file_type = file.metadata.get("general.file_type");
  std::vector<OutType> likely, rest;
  for (const std::string& name : out_type_names()) {
    const OutType out_type = *parse_out_type(name);
    std::optional<uint32_t> code;
    if (const QuantMix* mix = find_quant_mix(name)) code = mix->llama_ftype;
    if (out_type == OutType::F32) code = 0;
    if (out_type == OutType::F16) code = 1;
    if (out_type == OutType::BF16) code = 32;
    const bool same = file_type && !file_type->ints.empty() && code && static_cast<int64_t>(*code) == file_type->ints[0];
    (same ? likely : rest).push_back(out_type);
  }
  // auto writes the code of its dominant type: it comes right after the exact matches.
  std::stable_partition(rest.begin(), rest.end(), [](OutType t) { return t == OutType::Auto; });
  likely.insert(likely.end(), rest.begin(), rest.end());
  return likely;
}

// The plan to compare with: the requested --outtype, or the first (auto first) whose plan gives every tensor the
// type the file has; failing that, the one matching most tensors, whose differences are then reported.
std::pair<ConversionPlan, OutType> choose_plan(const SourceModel& model, const GgufFile& file,
                                               std::optional<OutType> requested, const PlanOptions& base) {
  if (requested) return {plan_as(model, *requested, file, base), *requested};
  std::optional<std::pair<ConversionPlan, OutType>> best;
  int best_matches = -1;
  for (const OutType out_type : candidate_out_types(file)) {
    ConversionPlan plan = plan_as(model, out_type, file, base);
    const int matches = matching_types(plan, file);
    const bool complete = matches == static_cast<int>(file.tensors.size()) && plan.tensors.size() == file.tensors.size();
    if (complete) return {std::move(plan), out_type};
    if (matches > best_matches) {
      best_matches = matches;
      best.emplace(std::move(plan), out_type);
    }
  }
  return std::move(*best);
}

struct ChunkStats {
  double squared_error = 0, squared_source = 0, max_abs = 0;
  int64_t wrong = 0, first_wrong_row = -1, not_bit_exact = 0;
};

// Equal values: -0 and +0 are the same (ggml decodes FP4's "-0" code as +0, MLX as -0), as are two NaNs.
bool same_float(float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }

// What a tensor of the file's type must decode to, for planned source values `expected`.
void allowed_values(const TensorRecipe& recipe, GgmlType type, int64_t first, int64_t rows, const float* expected,
                    std::vector<uint8_t>& bytes, float* out) {
  const int64_t length = recipe.row_length();
  const size_t count = static_cast<size_t>(rows * length);
  if (recipe.repack && type == recipe.type) {
    bytes.resize(static_cast<size_t>(rows * ggml_row_bytes(type, length)));
    repack_recipe_rows(recipe, first, rows, bytes.data());
    decode_rows(type, bytes.data(), rows, length, out);
  } else if (type == GgmlType::F32) {
    std::copy(expected, expected + count, out);
  } else {
    bytes.resize(static_cast<size_t>(rows * ggml_row_bytes(type, length)));
    if (recipe.mlx_aware_source && type == recipe.type)  // K-types searched to keep the MLX codes
      encode_rows_mlx_aware(type, *recipe.mlx_aware_source, expected, rows, length, bytes.data());
    else
      encode_rows(type, expected, rows, length, bytes.data());
    decode_rows(type, bytes.data(), rows, length, out);
  }
}

ChunkStats compare_chunk(const TensorRecipe& recipe, const GgufTensorInfo& tensor, const GgufFile& file,
                         const FileReader& reader, int64_t first, int64_t rows) {
  const int64_t length = recipe.row_length();
  const int64_t row_bytes = ggml_row_bytes(tensor.type, length);
  const size_t count = static_cast<size_t>(rows * length);
  thread_local std::vector<uint8_t> file_bytes, scratch;
  thread_local std::vector<float> got, expected, allowed;
  file_bytes.resize(static_cast<size_t>(rows * row_bytes));
  got.resize(count);
  expected.resize(count);
  allowed.resize(count);
  reader.read(file.data_start + tensor.offset + static_cast<uint64_t>(first * row_bytes), file_bytes.size(),
              file_bytes.data());
  decode_rows(tensor.type, file_bytes.data(), rows, length, got.data());
  read_recipe_rows(recipe, first, rows, expected.data());
  allowed_values(recipe, tensor.type, first, rows, expected.data(), scratch, allowed.data());

  ChunkStats stats;
  for (size_t i = 0; i < count; ++i) {
    if (!same_float(got[i], allowed[i])) {
      if (stats.wrong++ == 0) stats.first_wrong_row = first + static_cast<int64_t>(i) / length;
    }
    if (!same_float(got[i], expected[i])) ++stats.not_bit_exact;
    if (!std::isfinite(got[i]) || !std::isfinite(expected[i])) continue;
    const double diff = static_cast<double>(got[i]) - static_cast<double>(expected[i]);
    stats.squared_error += diff * diff;
    stats.squared_source += static_cast<double>(expected[i]) * static_cast<double>(expected[i]);
    stats.max_abs = std::max(stats.max_abs, std::abs(diff));
  }
  return stats;
}

// Drops the source pages a finished tensor was read from out of the resident set (they stay in the page cache):
// mapped inputs would otherwise keep every page ever read resident, as much as the whole model.
void release_source_pages(const TensorRecipe& recipe) {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  auto release = [](const StoredTensor* stored) {
    if (stored == nullptr || stored->bytes.empty()) return;
    const auto begin = reinterpret_cast<uintptr_t>(stored->bytes.data()) / page * page;
    const auto end = reinterpret_cast<uintptr_t>(stored->bytes.data() + stored->bytes.size());
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // a hint: failure changes nothing
  };
  for (const SourceTensor* source : recipe.sources) {
    release(&source->weight());
    release(source->scales());
    release(source->biases());
  }
}

struct Work {
  size_t verdict;
  const TensorRecipe* recipe;
  const GgufTensorInfo* tensor;
  int64_t first, rows;
};

void compare_tensors(const std::vector<Work>& chunks, const GgufFile& file, const FileReader& reader, int threads_wanted,
                     std::vector<TensorVerdict>& verdicts) {
  std::vector<ChunkStats> stats(chunks.size());
  std::vector<std::atomic<int64_t>> remaining(verdicts.size());
  for (const Work& work : chunks) remaining[work.verdict]++;
  const int threads = threads_wanted > 0 ? threads_wanted : static_cast<int>(std::thread::hardware_concurrency());
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, std::max(1, threads));
  tbb::parallel_for(size_t{0}, chunks.size(), [&](size_t i) {
    throw_if_cancelled();
    const Work& work = chunks[i];
    stats[i] = compare_chunk(*work.recipe, *work.tensor, file, reader, work.first, work.rows);
    if (--remaining[work.verdict] == 0) release_source_pages(*work.recipe);
  });
  std::vector<double> squared_error(verdicts.size()), squared_source(verdicts.size());
  std::vector<int64_t> not_bit_exact(verdicts.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    TensorVerdict& v = verdicts[chunks[i].verdict];
    const ChunkStats& s = stats[i];
    if (s.wrong > 0 && v.first_wrong_row < 0) v.first_wrong_row = s.first_wrong_row;
    v.wrong_values += s.wrong;
    v.max_abs = std::max(v.max_abs, s.max_abs);
    squared_error[chunks[i].verdict] += s.squared_error;
    squared_source[chunks[i].verdict] += s.squared_source;
    not_bit_exact[chunks[i].verdict] += s.not_bit_exact;
  }
  for (size_t t = 0; t < verdicts.size(); ++t) {
    TensorVerdict& v = verdicts[t];
    if (!v.checked) continue;
    v.passed = v.wrong_values == 0;
    v.lossless = not_bit_exact[t] == 0;
    v.rel_rmse = squared_source[t] > 0 ? std::sqrt(squared_error[t] / squared_source[t]) : std::sqrt(squared_error[t]);
  }
}

void compare_metadata(const ConversionPlan& plan, const GgufFile& file, VerifyReport& report) {
  for (const auto& entry : plan.metadata.entries()) {
    const GgufValue* value = file.metadata.get(entry.key);
    if (value == nullptr)
      report.metadata_differences.push_back(fmt::format("{}: missing (the plan has {})", entry.key, entry.value.to_string()));
    else if (!same_value(*value, entry.value))
      report.metadata_differences.push_back(
          fmt::format("{}: {} where the plan has {}", entry.key, value->to_string(), entry.value.to_string()));
  }
  for (const auto& entry : file.metadata.entries())
    if (!plan.metadata.has(entry.key))
      report.metadata_differences.push_back(fmt::format("{}: not in the plan ({})", entry.key, entry.value.to_string()));
}

}  // namespace

std::vector<std::string> VerifyReport::failing_tensors() const {
  std::set<std::string> names(missing.begin(), missing.end());
  names.insert(extra.begin(), extra.end());
  for (const auto& v : tensors)
    if (!v.passed) names.insert(v.name);
  std::vector<std::string> ordered;
  for (const auto& v : tensors)
    if (names.erase(v.name)) ordered.push_back(v.name);
  ordered.insert(ordered.end(), names.begin(), names.end());
  return ordered;
}

VerifyReport verify_file(const VerifyOptions& options) {
  const GgufFile file = GgufFile::read(options.gguf);
  SourceModel model = SourceModel::open(options.model_dir);
  std::unique_ptr<Adapter> adapter;
  if (options.adapter) {
    adapter = Adapter::open(*options.adapter, model);
    model.apply_adapter(*adapter, options.merge_rule);
  }
  PlanOptions base;  // what convert plans with besides the output type
  if (adapter) describe_merged_adapter(*adapter, base);
  auto [plan, out_type] = choose_plan(model, file, options.out_type, base);

  VerifyReport report;
  report.gguf = options.gguf;
  report.model_dir = options.model_dir;
  report.out_type = out_type_name(out_type);
  compare_metadata(plan, file, report);

  std::map<std::string, const TensorRecipe*> planned;
  for (const auto& recipe : plan.tensors) planned[recipe.name] = &recipe;
  std::set<std::string> in_file;
  std::vector<Work> chunks;
  for (const auto& tensor : file.tensors) {
    in_file.insert(tensor.name);
    const auto it = planned.find(tensor.name);
    if (it == planned.end()) {
      report.extra.push_back(tensor.name);
      continue;
    }
    const TensorRecipe& recipe = *it->second;
    if (tensor.ne != recipe.ne()) {
      report.layout_differences.push_back(fmt::format("{}: shape {} where the plan has {}", tensor.name,
                                                      shape_string(tensor.ne), shape_string(recipe.ne())));
      TensorVerdict v;
      v.name = tensor.name;
      v.type = tensor.type;
      report.tensors.push_back(v);
      continue;
    }
    TensorVerdict v;
    v.name = tensor.name;
    v.type = tensor.type;
    v.repacked = recipe.repack && tensor.type == recipe.type;
    v.elements = tensor.element_count();
    v.checked = can_encode(tensor.type);
    if (tensor.type != recipe.type)
      report.layout_differences.push_back(fmt::format("{}: type {} where the plan has {}", tensor.name,
                                                      ggml_type_info(tensor.type).name, ggml_type_info(recipe.type).name));
    if (!v.checked)
      report.layout_differences.push_back(
          fmt::format("{}: type {} cannot be decoded by mlx2gguf", tensor.name, ggml_type_info(tensor.type).name));
    if (v.checked) {
      const int64_t rows_per_chunk = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, recipe.row_length()));
      for (int64_t first = 0; first < recipe.row_count(); first += rows_per_chunk)
        chunks.push_back({report.tensors.size(), &recipe, &tensor, first, std::min(rows_per_chunk, recipe.row_count() - first)});
    }
    report.tensors.push_back(v);
  }
  for (const auto& recipe : plan.tensors)
    if (!in_file.count(recipe.name)) report.missing.push_back(recipe.name);

  const FileReader reader(options.gguf);
  compare_tensors(chunks, file, reader, options.threads, report.tensors);
  // A tensor of the right values but another type than the plan's still fails: the file is not the planned one.
  for (auto& v : report.tensors) {
    const auto it = planned.find(v.name);
    if (it != planned.end() && it->second->type != v.type) v.passed = false;
  }
  return report;
}

namespace {

std::string verdict_word(const TensorVerdict& v) {
  if (!v.checked) return "UNCHECKED";
  if (v.wrong_values > 0) return "WRONG";
  if (!v.passed) return "OTHER-TYPE";
  return v.lossless ? "lossless" : "rounded";
}

}  // namespace

std::string format_report(const VerifyReport& report) {
  std::string out = fmt::format("{} against {} (plan of --outtype {}): {} tensors\n", report.gguf.string(),
                                report.model_dir.string(), report.out_type, report.tensors.size());
  out += fmt::format("  {:<40} {:<6} {:<10} {:>10} {:>10}\n", "tensor", "type", "result", "rel RMSE", "max abs");
  struct TypeTotals {
    int tensors = 0, lossless = 0, repacked = 0, failed = 0;
    double worst_rel_rmse = 0;
  };
  std::map<std::string, TypeTotals> types;
  for (const auto& v : report.tensors) {
    const std::string type = ggml_type_info(v.type).name;
    out += fmt::format("  {:<40} {:<6} {:<10} {:>10.3e} {:>10.3e}{}", v.name, type, verdict_word(v), v.rel_rmse,
                       v.max_abs, v.repacked ? "  (repacked MLX codes)" : "");
    if (v.wrong_values > 0)
      out += fmt::format("  {} of {} values differ from what {} allows, first in row {}", v.wrong_values, v.elements,
                         type, v.first_wrong_row);
    out += "\n";
    TypeTotals& t = types[type];
    t.tensors++;
    t.lossless += v.lossless && v.passed;
    t.repacked += v.repacked;
    t.failed += !v.passed;
    t.worst_rel_rmse = std::max(t.worst_rel_rmse, v.rel_rmse);
  }
  out += "per type:\n";
  for (const auto& [type, t] : types)
    out += fmt::format("  {:<6} {:5d} tensors {:5d} lossless {:5d} repacked {:5d} failed   worst rel RMSE {:.3e}\n", type,
                       t.tensors, t.lossless, t.repacked, t.failed, t.worst_rel_rmse);
  for (const auto& name : report.missing) out += fmt::format("missing: {} (planned, not in the file)\n", name);
  for (const auto& name : report.extra) out += fmt::format("extra: {} (in the file, not in the plan)\n", name);
  for (const auto& line : report.layout_differences) out += fmt::format("differs: {}\n", line);
  for (const auto& line : report.metadata_differences) out += fmt::format("metadata: {}\n", line);
  const auto failing = report.failing_tensors();
  if (failing.empty()) {
    int lossless = 0;
    for (const auto& v : report.tensors) lossless += v.lossless;
    out += fmt::format("passed: every tensor holds what the plan makes of the source at its type ({} lossless, {} "
                       "rounded to their type)\n",
                       lossless, static_cast<int>(report.tensors.size()) - lossless);
  }
  return out;
}

nlohmann::json report_json(const VerifyReport& report) {
  nlohmann::json out;
  out["file"] = report.gguf.string();
  out["source"] = report.model_dir.string();
  out["outtype"] = report.out_type;
  out["passed"] = report.passed();
  out["failing_tensors"] = report.failing_tensors();
  out["tensors"] = nlohmann::json::array();
  for (const auto& v : report.tensors)
    out["tensors"].push_back({{"name", v.name},
                              {"type", ggml_type_info(v.type).name},
                              {"result", verdict_word(v)},
                              {"repacked", v.repacked},
                              {"lossless", v.lossless},
                              {"passed", v.passed},
                              {"elements", v.elements},
                              {"wrong_values", v.wrong_values},
                              {"first_wrong_row", v.first_wrong_row},
                              {"rel_rmse", v.rel_rmse},
                              {"max_abs", v.max_abs}});
  out["missing"] = report.missing;
  out["extra"] = report.extra;
  out["layout_differences"] = report.layout_differences;
  out["metadata_differences"] = report.metadata_differences;
  return out;
}

}  // namespace mlx2gguf
