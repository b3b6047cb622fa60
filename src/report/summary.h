#pragma once
// The run summary of `convert` and `convert-adapter`: computed from the plan (so a dry run reports exactly what a
// real run writes), rendered as text for people and as JSON for scripts (`--json`).
#include <nlohmann/json.hpp>

#include <string>

#include "convert.h"

namespace mlx2gguf {

// Types, tensors, parameters and file size of the file the plan makes, without writing it.
ConvertSummary summarize_plan(const ConversionPlan& plan);

// One line per GGUF type (tensors, weights, bits per weight), each followed by what made tensors take it.
std::string render_type_lines(const ConvertSummary& summary);

// `convert --dry-run`: the tensor table (source, transform, type, bytes), the totals, and which tensors repack
// losslessly and why the others do not.
std::string render_plan(const std::string& outfile, const ConvertSummary& summary);

// `--json`: the whole summary, tensors included.
nlohmann::json summary_json(const std::string& outfile, const ConvertSummary& summary);

}  // namespace mlx2gguf
