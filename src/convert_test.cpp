#include "convert.h"

#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include <algorithm>
#include <vector>

#include "encode/row_encoder.h"
#include "plan/plan_test_support.h"

namespace mlx2gguf {
namespace {

using plan_test::Planned;
using plan_test::plan_model;
using plan_test::write_model;

struct CopyCount {
  int copied = 0, row_mapped = 0, column_mapped = 0;
};

// Every recipe that copies stored bytes, in chunks of `rows_per_chunk` rows: the copied bytes must be the bytes the
// float path (read as float32, encode) writes.
CopyCount expect_copies_equal_float_path(const Planned& planned, int64_t rows_per_chunk) {
  CopyCount count;
  for (const TensorRecipe& recipe : planned.plan.tensors) {
    if (!copies_stored_bytes(recipe)) continue;
    count.copied++;
    count.row_mapped += !recipe.row_map.empty();
    count.column_mapped += !recipe.column_map.empty();
    const int64_t row_bytes = ggml_row_bytes(recipe.type, recipe.row_length());
    for (int64_t first = 0; first < recipe.row_count(); first += rows_per_chunk) {
      const int64_t rows = std::min(rows_per_chunk, recipe.row_count() - first);
      std::vector<float> values(static_cast<size_t>(rows * recipe.row_length()));
      read_recipe_rows(recipe, first, rows, values.data());
      std::vector<uint8_t> encoded(static_cast<size_t>(rows * row_bytes));
      encode_rows(recipe.type, values.data(), rows, recipe.row_length(), encoded.data());
      std::vector<uint8_t> buffer;
      const std::span<const uint8_t> copied = copy_recipe_rows(recipe, first, rows, buffer);
      const bool same = std::equal(copied.begin(), copied.end(), encoded.begin(), encoded.end());
      EXPECT_TRUE(same) << recipe.name << " rows " << first;
      if (!same) return count;
    }
  }
  return count;
}

TEST(PassThrough, Bf16LlamaRowsAreCopiedWithTheRotaryRowPermutation) {
  plan_test::TempDir temp;
  gen::TinyModelSpec spec;
  spec.model_type = "llama";
  spec.dtype = "bfloat16";
  const auto planned = plan_model(write_model(temp, "llama-bf16", spec));
  for (int64_t rows : {1, 3, 1000}) {
    const CopyCount count = expect_copies_equal_float_path(*planned, rows);
    EXPECT_GE(count.copied, 7);      // embedding, output, attention and MLP weights of every layer
    EXPECT_GE(count.row_mapped, 2);  // attn_q and attn_k
  }
  EXPECT_EQ(planned->tensor("blk.0.attn_q.weight").type, GgmlType::BF16);
  EXPECT_FALSE(copies_stored_bytes(planned->tensor("blk.0.attn_norm.weight")));  // bf16 norm written as f32
}

TEST(PassThrough, F16Qwen35RowsAreCopiedWithTheValueHeadColumnReorder) {
  plan_test::TempDir temp;
  gen::TinyModelSpec spec;
  spec.model_type = "qwen3_5";
  spec.dtype = "float16";
  const auto planned = plan_model(write_model(temp, "qwen35-f16", spec));
  const CopyCount count = expect_copies_equal_float_path(*planned, 5);
  EXPECT_GE(count.copied, 10);
  EXPECT_GE(count.column_mapped, 1);  // ssm_out
  EXPECT_EQ(planned->tensor("blk.0.ssm_out.weight").type, GgmlType::F16);
}

TEST(PassThrough, OtherOutputTypesGoThroughFloats) {
  plan_test::TempDir temp;
  gen::TinyModelSpec spec;
  const auto planned = plan_model(write_model(temp, "llama-bf16", spec), OutType::F16);
  for (const TensorRecipe& recipe : planned->plan.tensors) EXPECT_FALSE(copies_stored_bytes(recipe)) << recipe.name;
}

TEST(ConvertThreads, ThreadLimitHoldsWhileReadingAndPlanning) {
  plan_test::TempDir temp;
  gen::TinyModelSpec spec;
  ConvertOptions options;
  options.model_dir = write_model(temp, "llama", spec);
  options.outfile = temp / "out.gguf";
  options.threads = 1;
  size_t parallelism_at_plan_log = 0;
  options.log = [&](const std::string& line) {
    if (parallelism_at_plan_log == 0 && line.find("tensors") != std::string::npos)
      parallelism_at_plan_log = tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism);
  };
  convert(options);
  EXPECT_EQ(parallelism_at_plan_log, 1u);
}

}  // namespace
}  // namespace mlx2gguf
