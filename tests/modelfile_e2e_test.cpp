// `--modelfile`: the Ollama Modelfile written next to a converted model or adapter, from what the file holds.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "e2e_support.h"
#include "gen/tiny_adapter.h"
#include "oracle/llama_oracle.h"
#include "read/test_support.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::test_support::TempDir;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(ModelfileE2e, ConvertWritesFromSamplingAndTheEndOfGenerationTokens) {
  TempDir temp;
  const fs::path model = temp / "model";
  fs::copy(e2e::model_folder("llama", "bf16"), model, fs::copy_options::recursive);
  nlohmann::json generation;
  std::ifstream(model / "generation_config.json") >> generation;
  generation.update({{"temperature", 0.7}, {"top_p", 0.8}, {"top_k", 20}});
  mlx2gguf::test_support::write_json(model / "generation_config.json", generation);
  const fs::path out = temp / "tiny.gguf";
  const auto result = e2e::run_mlx2gguf({"convert", model.string(), "-o", out.string(), "-q", "--modelfile"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // The stop strings are the texts of the end-of-sequence and end-of-turn tokens as llama.cpp resolves them.
  const auto llama = oracle::LlamaModel::load(out.string(), /*vocab_only=*/true);
  std::string stops;
  for (const int32_t id : {llama->token_eos(), llama->token_eot()})
    if (id >= 0 && (id != llama->token_eos() || stops.empty()))
      stops += "PARAMETER stop \"" + llama->token_to_piece(id, /*special=*/true) + "\"\n";
  ASSERT_FALSE(stops.empty());
  EXPECT_EQ(read_text(temp / "tiny.Modelfile"),
            "# Ollama Modelfile: ollama create NAME -f tiny.Modelfile\n"
            "FROM ./tiny.gguf\n"
            "PARAMETER temperature 0.7\n"
            "PARAMETER top_k 20\n"
            "PARAMETER top_p 0.8\n" + stops);
}

TEST(ModelfileE2e, ConvertAdapterWritesFromTheBaseAndTheAdapter) {
  TempDir temp;
  const fs::path base_folder = e2e::model_folder("llama", "bf16");
  const fs::path base = temp / "base.gguf";
  auto result = e2e::run_mlx2gguf({"convert", base_folder.string(), "-o", base.string(), "-q"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const fs::path adapter = e2e::adapter_folder("llama", "bf16", "modelfile-lora", mlx2gguf::gen::TinyAdapterSpec{});
  fs::create_directories(temp / "adapters");
  const fs::path lora = temp / "adapters" / "lora.gguf";
  result = e2e::run_mlx2gguf({"convert-adapter", adapter.string(), "--base", base_folder.string(), "-o", lora.string(),
                              "-q", "--modelfile", base.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string text = read_text(temp / "adapters" / "lora.Modelfile");
  EXPECT_NE(text.find("\nFROM " + fs::absolute(base).lexically_normal().string() + "\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nADAPTER ./lora.gguf\n"), std::string::npos) << text;
}

}  // namespace
