#include "report/summary.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "report/plan_table.h"

namespace mlx2gguf {

namespace {

double bits_per_weight(uint64_t bytes, int64_t elements) {
  return elements ? 8.0 * static_cast<double>(bytes) / static_cast<double>(elements) : 0.0;
}

int64_t element_count(const std::vector<int64_t>& ne) {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

std::string format_ne(const std::vector<int64_t>& ne) {
  std::string text = "{";
  for (size_t i = 0; i < ne.size(); ++i) text += (i ? ", " : "") + std::to_string(ne[i]);
  return text + "}";
}

// Why tensors of a quantized source were not repacked, or that a float source had nothing to repack.
std::string not_repacked_reason(const PlannedTensor& tensor) {
  if (!tensor.note.empty()) return tensor.note;
  const bool quantized = tensor.source_type.rfind("MLX ", 0) == 0;
  if (tensor.keep_f32) return fmt::format("{} kept F32: llama.cpp computes this tensor in F32", tensor.source_type);
  if (quantized) return fmt::format("{} written as {}, the type --outtype chose", tensor.source_type, tensor.type);
  return fmt::format("{} source, not MLX-quantized: nothing to repack", tensor.source_type);
}

}  // namespace

ConvertSummary summarize_plan(const ConversionPlan& plan) {
  ConvertSummary summary;
  summary.tensors = describe_tensors(plan);
  for (const PlannedTensor& tensor : summary.tensors) {
    const int64_t elements = element_count(tensor.ne);
    TypeSummary& type = summary.types[tensor.type];
    type.tensors++;
    type.elements += elements;
    type.bytes += tensor.bytes;
    if (!tensor.note.empty()) type.notes[tensor.note]++;
    summary.parameters += elements;
  }
  summary.file_bytes = planned_file_size(plan);
  return summary;
}

std::string render_type_lines(const ConvertSummary& summary) {
  std::string text;
  for (const auto& [type, s] : summary.types) {
    text += fmt::format("  {:<6} {:5d} tensors {:>14L} weights {:6.2f} bits/weight\n", type, s.tensors, s.elements,
                        bits_per_weight(s.bytes, s.elements));
    for (const auto& [note, count] : s.notes) text += fmt::format("         {:5d} × {}\n", count, note);
  }
  return text;
}

std::string render_plan(const std::string& outfile, const ConvertSummary& summary) {
  size_t name_width = 4, transform_width = 9, ne_width = 2;
  for (const PlannedTensor& t : summary.tensors) {
    name_width = std::max(name_width, t.name.size());
    transform_width = std::max(transform_width, t.transform.size());
    ne_width = std::max(ne_width, format_ne(t.ne).size());
  }
  std::string text = fmt::format("plan for {} (dry run: nothing written)\n\n", outfile);
  text += fmt::format("  {:<{}}  {:<6}  {:<{}}  {:>12}  {:<{}}  {}\n", "name", name_width, "type", "ne", ne_width,
                      "bytes", "transform", transform_width, "source");
  for (const PlannedTensor& t : summary.tensors)
    text += fmt::format("  {:<{}}  {:<6}  {:<{}}  {:>12}  {:<{}}  {} ({})\n", t.name, name_width, t.type,
                        format_ne(t.ne), ne_width, t.bytes, t.transform, transform_width, t.source, t.source_type);

  text += fmt::format("\ntotal: {} tensors, {:.1f} MiB ({} bytes), {:.2f} bits per weight\n", summary.tensors.size(),
                      summary.file_bytes / 1048576.0, summary.file_bytes, summary.bits_per_weight());
  text += render_type_lines(summary);

  std::map<std::string, int> repacked, not_repacked;
  for (const PlannedTensor& t : summary.tensors) {
    if (t.repack)
      repacked[t.note]++;
    else if (t.ne.size() >= 2)  // vectors (norms, biases) are always F32 and never candidates
      not_repacked[not_repacked_reason(t)]++;
  }
  int repacked_count = 0;
  for (const auto& [note, count] : repacked) repacked_count += count;
  text += fmt::format("\nrepacked losslessly: {} tensors\n", repacked_count);
  for (const auto& [note, count] : repacked) text += fmt::format("  {:5d} × {}\n", count, note);
  int other_count = 0;
  for (const auto& [reason, count] : not_repacked) other_count += count;
  text += fmt::format("not repacked: {} matrices\n", other_count);
  for (const auto& [reason, count] : not_repacked) text += fmt::format("  {:5d} × {}\n", count, reason);
  return text;
}

nlohmann::json summary_json(const std::string& outfile, const ConvertSummary& summary) {
  nlohmann::json out;
  out["outfile"] = outfile;
  out["written"] = summary.written;
  out["file_bytes"] = summary.file_bytes;
  out["parameters"] = summary.parameters;
  out["bits_per_weight"] = summary.bits_per_weight();
  out["seconds"] = summary.seconds;
  out["types"] = nlohmann::json::object();
  for (const auto& [type, s] : summary.types) {
    nlohmann::json notes = nlohmann::json::object();
    for (const auto& [note, count] : s.notes) notes[note] = count;
    out["types"][type] = {{"tensors", s.tensors}, {"elements", s.elements}, {"bytes", s.bytes},
                          {"bits_per_weight", bits_per_weight(s.bytes, s.elements)}, {"notes", notes}};
  }
  const MergeSummary& merge = summary.merge;
  out["merge"] = {{"tensors", merge.tensors},
                  {"bytes", merge.bytes},
                  {"float_from_quantized", merge.float_from_quantized},
                  {"float_from_quantized_bytes", merge.float_from_quantized_bytes},
                  {"requantized_bytes", merge.requantized_bytes}};
  out["tensors"] = nlohmann::json::array();
  for (const PlannedTensor& t : summary.tensors)
    out["tensors"].push_back({{"name", t.name}, {"type", t.type}, {"ne", t.ne}, {"bytes", t.bytes},
                              {"source", t.source}, {"source_type", t.source_type}, {"transform", t.transform},
                              {"repack", t.repack}, {"keep_f32", t.keep_f32}, {"note", t.note}});
  return out;
}

}  // namespace mlx2gguf
