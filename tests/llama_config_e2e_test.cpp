// llama / mistral / mixtral configs whose keys change what mlx-lm computes: each is either written so that llama.cpp
// computes the same (checked against the reference forward pass) or refused with a clear error, never dropped.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>

#include "convert.h"
#include "e2e_support.h"
#include "refusal_check.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "plan/permutations.h"
#include "plan/planner.h"
#include "read/source_model.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class LlamaConfigs : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = e2e::work_dir() / "llama-configs" / testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A copy of a generated model whose config.json `edit` changes.
  fs::path edited(const fs::path& source, const std::function<void(json&)>& edit) {
    const fs::path folder = dir_ / "model";
    fs::copy(source, folder, fs::copy_options::recursive);
    json config = json::parse(std::ifstream(folder / "config.json"));
    edit(config);
    std::ofstream(folder / "config.json", std::ios::trunc) << config.dump(4);
    return folder;
  }

  // The f32 conversion of `folder` in llama.cpp vs the reference forward pass; also returns what the binary said.
  double f32_nmse(const fs::path& folder, std::string* output = nullptr) {
    const fs::path gguf = dir_ / "model.gguf";
    const auto result = e2e::run_mlx2gguf({"convert", folder.string(), "-o", gguf.string(), "--outtype", "f32"});
    EXPECT_EQ(result.exit_code, 0) << result.output;
    if (output) *output = result.output;
    auto model = oracle::LlamaModel::load(gguf.string());
    const auto tokens = e2e::probe_tokens(std::min<int64_t>(model->n_vocab(), 32000), 16, 1);
    const auto source = mlx2gguf::SourceModel::open(folder);
    const double error = e2e::nmse(model->logits(tokens), mlx2gguf::reference_logits(source, tokens));
    std::printf("[ NMSE     ] %s: f32 vs reference = %.3e\n",
                testing::UnitTest::GetInstance()->current_test_info()->name(), error);
    return error;
  }

  fs::path dir_;
};

TEST_F(LlamaConfigs, TraditionalRopeIsWrittenWithoutTheQueryKeyPermutation) {
  const fs::path folder = edited(e2e::model_folder("llama", "bf16"), [](json& c) { c["rope_traditional"] = true; });
  EXPECT_LE(f32_nmse(folder), 1e-6);

  // The trap: the permutation every plain llama needs, applied here too.
  const auto source = mlx2gguf::SourceModel::open(folder);
  mlx2gguf::PlanOptions options;
  options.out_type = mlx2gguf::OutType::F32;
  mlx2gguf::ConversionPlan plan = mlx2gguf::make_plan(source, options);
  const auto& cfg = source.config();
  const int64_t heads = cfg["num_attention_heads"], kv_heads = cfg["num_key_value_heads"], head_dim = cfg["head_dim"];
  int permuted = 0;
  for (auto& tensor : plan.tensors) {
    if (!tensor.row_map.empty()) ADD_FAILURE() << tensor.name << " is permuted under rope_traditional";
    if (tensor.name.ends_with("attn_q.weight")) tensor.row_map = mlx2gguf::rope_halves_to_pairs(heads, head_dim), ++permuted;
    if (tensor.name.ends_with("attn_k.weight")) tensor.row_map = mlx2gguf::rope_halves_to_pairs(kv_heads, head_dim), ++permuted;
  }
  EXPECT_GT(permuted, 0);
  const fs::path broken = dir_ / "permuted.gguf";
  mlx2gguf::write_plan(plan, broken, 2, nullptr);
  auto model = oracle::LlamaModel::load(broken.string());
  const auto tokens = e2e::probe_tokens(std::min<int64_t>(model->n_vocab(), 32000), 16, 1);
  const double error = e2e::nmse(model->logits(tokens), mlx2gguf::reference_logits(source, tokens));
  std::printf("[ NMSE     ] rope_traditional with the permutation applied anyway = %.3e\n", error);
  EXPECT_GT(error, 1e-2);
}

TEST_F(LlamaConfigs, SlidingLayersAreRefusedNamingTheLayer) {
  const fs::path folder = edited(e2e::model_folder("mistral", "bf16"), [](json& c) {
    c["sliding_window"] = 8;
    c["layer_types"] = {"full_attention", "sliding_attention"};
  });
  const fs::path out_dir = dir_ / "sliding-out";
  fs::remove_all(out_dir);
  fs::create_directories(out_dir);
  const auto message = e2e::expect_refusal({"convert", folder.string()}, out_dir / "out.gguf", {folder});
  EXPECT_NE(message.find("layer 1 uses sliding-window attention"), std::string::npos) << message;
}

TEST_F(LlamaConfigs, SlidingWindowWithoutSlidingLayersComputesFullAttentionAsMlxLm) {
  // Mistral 7B v0.1's config: mlx-lm's llama.py windows no layer, so neither does the file; the user is told.
  const fs::path folder = edited(e2e::model_folder("mistral", "bf16"), [](json& c) { c["sliding_window"] = 4; });
  std::string output;
  EXPECT_LE(f32_nmse(folder, &output), 1e-6);
  EXPECT_NE(output.find("sliding_window 4 is ignored"), std::string::npos) << output;
}

TEST_F(LlamaConfigs, MixtralDefaultsAreMlxLmsNotLlamaCpps) {
  // Without rope_theta and num_key_value_heads mlx-lm's mixtral uses 1e6 and 8 (llama.cpp's defaults: 10000 and
  // the query heads); a rope_scaling entry it ignores.
  mlx2gguf::gen::TinyModelSpec spec = e2e::model_spec("mixtral");
  spec.heads = 16;  // llama.cpp's default would be 16 key/value heads, mlx-lm's is 8
  spec.kv_heads = 8;
  spec.rope_theta = 1e6;
  const fs::path source = e2e::cached_model("mixtral-16-heads-8-kv", spec);
  const fs::path folder = edited(source, [](json& c) {
    c.erase("rope_theta");
    c.erase("num_key_value_heads");
    c["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  });
  std::string output;
  EXPECT_LE(f32_nmse(folder, &output), 1e-6);
  EXPECT_NE(output.find("rope_scaling"), std::string::npos) << output;
}

}  // namespace
