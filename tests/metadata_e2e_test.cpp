// general.* keys of converted files as llama.cpp reads them: ggml's own GGUF reader (typed values) and the
// llama.cpp model loader (llama_model_meta_val_str), for the model card, the sampling defaults and the overrides.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "e2e_support.h"
#include "gen/tiny_adapter.h"
#include "oracle/gguf_values.h"
#include "oracle/llama_oracle.h"
#include "read/test_support.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::test_support::TempDir;

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// A copy of the cached tiny llama under `name`, so that its card and settings can be changed.
fs::path copy_of_tiny_llama(const TempDir& temp, const std::string& name) {
  const fs::path dir = temp / name;
  fs::copy(e2e::model_folder("llama", "bf16"), dir, fs::copy_options::recursive);
  return dir;
}

TEST(MetadataE2e, ModelCardSamplingAndOverridesAreReadBackByLlamaCpp) {
  TempDir temp;
  const fs::path dir = copy_of_tiny_llama(temp, "Tiny-Chat-v2-4bit");
  write_text(dir / "README.md", "---\nlicense: apache-2.0\nbase_model: example-org/Tiny-Chat-Base\ntags:\n- mlx\n"
                                "language: [en, fr]\ndatasets: [example-org/chats]\npipeline_tag: text-generation\n---\n"
                                "# Tiny\n");
  nlohmann::json generation;
  std::ifstream(dir / "generation_config.json") >> generation;
  generation.update({{"temperature", 0.7}, {"top_k", 20}, {"top_p", 0.8}, {"min_p", 0.05}, {"repetition_penalty", 1.1}});
  mlx2gguf::test_support::write_json(dir / "generation_config.json", generation);
  mlx2gguf::test_support::write_json(temp / "meta.json", {{"general.author", "Someone"},
                                                           {"general.sampling.penalty_last_n", 64},
                                                           {"general.sampling.temp", 0.6}});
  const fs::path out = temp / "tiny.gguf";
  const auto result = e2e::run_mlx2gguf({"convert", dir.string(), "-o", out.string(), "-q", "--metadata",
                                         (temp / "meta.json").string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;

  // Types as llama.cpp's own converter writes them (gguf_writer.py: top_k and penalty_last_n i32, the rest f32).
  const oracle::GgufValues ggml(out.string());
  EXPECT_EQ(ggml.f32("general.sampling.temp"), 0.6f);  // the override wins over generation_config.json
  EXPECT_EQ(ggml.i32("general.sampling.top_k"), 20);
  EXPECT_EQ(ggml.f32("general.sampling.top_p"), 0.8f);
  EXPECT_EQ(ggml.f32("general.sampling.min_p"), 0.05f);
  EXPECT_EQ(ggml.f32("general.sampling.penalty_repeat"), 1.1f);
  EXPECT_EQ(ggml.i32("general.sampling.penalty_last_n"), 64);
  EXPECT_EQ(ggml.str("general.name"), "Tiny Chat v2");
  EXPECT_EQ(ggml.str("general.basename"), "Tiny");
  EXPECT_EQ(ggml.str("general.finetune"), "Chat");
  EXPECT_EQ(ggml.str("general.version"), "v2");
  EXPECT_EQ(ggml.str("general.author"), "Someone");
  EXPECT_EQ(ggml.str("general.license"), "apache-2.0");
  EXPECT_EQ(ggml.u32("general.base_model.count"), 1u);
  EXPECT_EQ(ggml.str("general.base_model.0.name"), "Tiny Chat Base");
  EXPECT_EQ(ggml.str("general.base_model.0.organization"), "Example Org");
  EXPECT_EQ(ggml.str("general.base_model.0.repo_url"), "https://huggingface.co/example-org/Tiny-Chat-Base");
  EXPECT_EQ(ggml.u32("general.dataset.count"), 1u);
  EXPECT_EQ(ggml.str("general.dataset.0.repo_url"), "https://huggingface.co/example-org/chats");
  EXPECT_EQ(ggml.str_array("general.tags"), (std::vector<std::string>{"mlx", "text-generation"}));
  EXPECT_EQ(ggml.str_array("general.languages"), (std::vector<std::string>{"en", "fr"}));

  // The model loader sees the same values (it renders them as text).
  const auto model = oracle::LlamaModel::load(out.string(), /*vocab_only=*/true);
  EXPECT_EQ(model->meta("general.sampling.top_k"), "20");
  EXPECT_EQ(std::stof(model->meta("general.sampling.temp")), 0.6f);
  EXPECT_EQ(model->meta("general.base_model.0.repo_url"), "https://huggingface.co/example-org/Tiny-Chat-Base");
}

TEST(MetadataE2e, MergedAdapterRecordsTheBaseModelAndTheAdapter) {
  TempDir temp;
  mlx2gguf::gen::TinyAdapterSpec adapter;
  const fs::path adapter_dir = e2e::adapter_folder("llama", "bf16", "metadata-lora", adapter);
  const std::string adapter_name = adapter_dir.filename().string();
  const fs::path out = temp / "merged.gguf";
  const auto result = e2e::run_mlx2gguf({"convert", e2e::model_folder("llama", "bf16").string(), "--adapter-path",
                                         adapter_dir.string(), "-o", out.string(), "-q"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const oracle::GgufValues ggml(out.string());
  // The base folder "llama-bf16": "llama" once the MLX suffix is dropped, titled "Llama".
  EXPECT_EQ(ggml.str("general.name"), "Llama");
  EXPECT_EQ(ggml.u32("general.base_model.count"), 1u);
  EXPECT_EQ(ggml.str("general.base_model.0.name"), "Llama");
  EXPECT_EQ(ggml.str("general.finetune"), adapter_name);
  const std::string description = ggml.str("general.description");
  EXPECT_NE(description.find("LoRA adapter '" + adapter_name + "/adapters.safetensors'"), std::string::npos) << description;
  EXPECT_NE(description.find("scale 20"), std::string::npos) << description;
}

}  // namespace
