// The Ollama Modelfile: instructions and PARAMETER names of Ollama's Modelfile reference (docs/modelfile.md:
// FROM, ADAPTER, PARAMETER temperature / top_k / top_p / min_p / repeat_penalty / repeat_last_n / stop), and
// RENDERER / PARSER qwen3.5 for Ollama's own Qwen3.5 handling.
#include "write/ollama_modelfile.h"

#include <gtest/gtest.h>

namespace mlx2gguf {
namespace {

GgufMetadata qwen35_metadata() {
  GgufMetadata m;
  m.set("general.architecture", GgufValue::str("qwen35moe"));
  m.set("general.sampling.top_k", GgufValue::i32(20));
  m.set("general.sampling.top_p", GgufValue::f32(0.95f));
  m.set("general.sampling.temp", GgufValue::f32(0.6f));
  m.set("general.sampling.penalty_repeat", GgufValue::f32(1.05f));
  m.set("tokenizer.ggml.tokens", GgufValue::str_array({"a", "<|endoftext|>", "<|im_end|>", "say \"hi\""}));
  m.set("tokenizer.ggml.eos_token_id", GgufValue::u32(2));
  m.set("tokenizer.ggml.eot_token_id", GgufValue::u32(2));  // the same token once
  m.set("tokenizer.ggml.eom_token_id", GgufValue::u32(3));
  return m;
}

TEST(Modelfile, NamesTheFileSamplingStopsAndQwen35RendererAndParser) {
  const ModelfileSpec spec{"/models/out/Qwen3.6-35B-A3B-Q4_1.Modelfile", {"/models/out/Qwen3.6-35B-A3B-Q4_1.gguf"}, std::nullopt};
  EXPECT_EQ(render_modelfile(spec, qwen35_metadata()),
            "# Ollama Modelfile: ollama create NAME -f Qwen3.6-35B-A3B-Q4_1.Modelfile\n"
            "FROM ./Qwen3.6-35B-A3B-Q4_1.gguf\n"
            "# Ollama's own Qwen3.5 prompt rendering and output parsing (needed by Ollama 0.17.5 to 0.24, optional from "
            "0.30 on)\n"
            "RENDERER qwen3.5\n"
            "PARSER qwen3.5\n"
            "PARAMETER temperature 0.6\n"
            "PARAMETER top_k 20\n"
            "PARAMETER top_p 0.95\n"
            "PARAMETER repeat_penalty 1.05\n"
            "PARAMETER stop \"<|im_end|>\"\n"
            "PARAMETER stop \"say \\\"hi\\\"\"\n");
}

TEST(Modelfile, AdapterAndSplitSetsAndFilesOutsideTheFolder) {
  GgufMetadata m;
  m.set("general.architecture", GgufValue::str("llama"));
  const ModelfileSpec spec{"/work/lora.Modelfile",
                           {"/models/base-00001-of-00002.gguf", "/models/base-00002-of-00002.gguf"},
                           std::filesystem::path("/work/sub/lora.gguf")};
  EXPECT_EQ(render_modelfile(spec, m),
            "# Ollama Modelfile: ollama create NAME -f lora.Modelfile\n"
            "# A split GGUF set: one FROM per file (Ollama versions that import split sets take them all).\n"
            "FROM /models/base-00001-of-00002.gguf\n"
            "FROM /models/base-00002-of-00002.gguf\n"
            "ADAPTER ./sub/lora.gguf\n");
  EXPECT_EQ(modelfile_path_for("out/Tiny-1B-Q8_0.gguf"), std::filesystem::path("out/Tiny-1B-Q8_0.Modelfile"));
}

}  // namespace
}  // namespace mlx2gguf
