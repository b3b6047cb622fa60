// Fine-tunes end to end: mlx-lm adapter folders (LoRA, DoRA, full) on llama, mixtral and qwen3_5_moe bases, float
// and 4-bit, merged by `mlx2gguf convert --adapter-path` or exported by `mlx2gguf convert-adapter`, run in real
// llama.cpp and compared with the reference forward pass applying the adapter unfused, as mlx-lm's LoRA and DoRA
// modules compute it. `--fuse-requantize` must give the very file that converting mlx_lm.fuse's folder gives.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <fstream>

#include "e2e_support.h"
#include "eval/reference.h"
#include "oracle/llama_oracle.h"
#include "read/adapter.h"
#include "read/source_model.h"
#include "write/gguf_file.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::gen::TinyAdapterSpec;

// The fine-tunes the tests use, by name:
//   lora        mlx-lm's default: every Linear / SwitchLinear of every block (attention, Gated DeltaNet
//               projections, routers, shared experts, switch_mlp experts)
//   dora        DoRA on every Linear (mlx-lm refuses DoRA on experts)
//   full        full fine-tune of the last block
//   lora-embed  (llama) LoRA on q/k projections, the embedding table and the output head
//   lora-tied-embed, dora-tied-embed  (mistral, tied) LoRA / DoRA on q_proj and the embedding that is also the head
TinyAdapterSpec tune_spec(const std::string& model, const std::string& tune) {
  TinyAdapterSpec spec;
  spec.seed = 31;
  if (tune == "lora") return spec;
  if (tune == "full") {
    spec.fine_tune_type = "full";
    spec.num_layers = 1;
    return spec;
  }
  if (tune == "lora-embed") {
    spec.keys = {"self_attn.q_proj", "self_attn.k_proj", "model.embed_tokens", "lm_head"};
    return spec;
  }
  if (tune == "lora-tied-embed" || tune == "dora-tied-embed") {  // the embedding is also the output head
    spec.keys = {"self_attn.q_proj", "model.embed_tokens"};
    if (tune == "dora-tied-embed") spec.fine_tune_type = "dora";
    return spec;
  }
  if (tune == "dora") {
    spec.fine_tune_type = "dora";
    if (model == "mixtral") spec.keys = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "block_sparse_moe.gate"};
    if (model == "qwen35moe")
      spec.keys = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                   "linear_attn.in_proj_qkv", "linear_attn.in_proj_z", "linear_attn.in_proj_b",
                   "linear_attn.in_proj_a", "linear_attn.out_proj", "mlp.gate", "mlp.shared_expert.gate_proj",
                   "mlp.shared_expert.up_proj", "mlp.shared_expert.down_proj", "mlp.shared_expert_gate"};
    return spec;
  }
  throw std::runtime_error("unknown fine-tune " + tune);
}

struct Tuned {
  std::string model, variant, tune;
  fs::path base() const { return e2e::model_folder(model, variant); }
  fs::path adapter() const { return e2e::adapter_folder(model, variant, tune, tune_spec(model, tune)); }
  std::string label() const { return model + "/" + variant + "/" + tune; }
};

std::vector<int32_t> probe_for(oracle::LlamaModel& model) {
  const int64_t vocab = std::min<int64_t>(model.n_vocab(), 32000);
  return e2e::probe_tokens(vocab, 16, model.token_bos() >= 0 ? model.token_bos() : 1);
}

// The source model's logits with the fine-tune applied as mlx-lm applies it: LoRA and DoRA unfused, full
// fine-tunes as tensors replacing the base's.
std::vector<float> adapted_reference(const Tuned& t, const std::vector<int32_t>& tokens) {
  auto source = mlx2gguf::SourceModel::open(t.base());
  const auto adapter = mlx2gguf::Adapter::open({t.adapter(), std::nullopt}, source);
  if (adapter->type() == mlx2gguf::FineTuneType::Full) {
    source.apply_adapter(*adapter, mlx2gguf::MergeRule::Float32);
    return mlx2gguf::reference_logits(source, tokens);
  }
  return mlx2gguf::reference_logits(source, tokens, adapter.get());
}

fs::path output(const std::string& what, const Tuned& t, const std::string& type) {
  std::string name = fmt::format("adapter-{}-{}-{}-{}-{}-{}.gguf", what, t.model, t.variant, t.tune, type, ::getpid());
  return e2e::work_dir() / name;
}

void convert_ok(const std::vector<std::string>& args) {
  const auto result = e2e::run_mlx2gguf(args);
  ASSERT_EQ(result.exit_code, 0) << result.output;
}

// ---- merged files ------------------------------------------------------------------------------------------------

struct MergeCase {
  Tuned tuned;
  std::string outtype;
};
void PrintTo(const MergeCase& c, std::ostream* os) { *os << c.tuned.label() << "/" << c.outtype; }

std::vector<MergeCase> merge_cases() {
  std::vector<MergeCase> cases;
  for (const char* model : {"llama", "mixtral", "qwen35moe"})
    for (const char* variant : {"bf16", "q4g64"}) {
      for (const char* tune : {"lora", "dora", "full"}) cases.push_back({{model, variant, tune}, "f32"});
      for (const char* type : {"f16", "bf16", "q8_0", "auto"}) cases.push_back({{model, variant, "lora"}, type});
      cases.push_back({{model, variant, "dora"}, "auto"});
    }
  for (const char* type : {"f32", "auto"}) cases.push_back({{"llama", "q4g64", "lora-embed"}, type});
  cases.push_back({{"mistral", "bf16", "lora-tied-embed"}, "f32"});
  cases.push_back({{"mistral", "bf16", "dora-tied-embed"}, "f32"});
  cases.push_back({{"llama", "mxfp4", "lora"}, "auto"});
  // Gemma 3: the merged norms of a full fine-tune carry Gemma's (1 + w) and embedding-scale factor too.
  for (const char* tune : {"lora", "full"}) cases.push_back({{"gemma3", "bf16", tune}, "f32"});
  for (const char* type : {"f32", "auto"}) cases.push_back({{"gemma3", "q4g64", "lora"}, type});
  return cases;
}

class MergedAdapter : public testing::TestWithParam<MergeCase> {};

TEST_P(MergedAdapter, LlamaCppMatchesTheUnfusedReference) {
  const MergeCase& c = GetParam();
  const Tuned& t = c.tuned;
  const fs::path gguf = output("merged", t, c.outtype);
  const auto result = e2e::run_mlx2gguf(
      {"convert", t.base().string(), "--adapter-path", t.adapter().string(), "-o", gguf.string(), "--outtype", c.outtype});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find(t.tune == "full" ? "full fine-tune" : "merged with the adapter"), std::string::npos)
      << result.output;
  EXPECT_EQ(oracle::gguf_check_file(gguf.string()), "");

  auto model = oracle::LlamaModel::load(gguf.string());
  const auto tokens = probe_for(*model);
  const auto got = model->logits(tokens);
  const auto want = adapted_reference(t, tokens);
  const double error = e2e::nmse(got, want);
  std::printf("[ NMSE     ] merged %s/%s vs unfused reference = %.3e\n", t.label().c_str(), c.outtype.c_str(), error);

  if (c.outtype == "f32") {
    EXPECT_LE(error, 1e-6);
    const auto top1 = e2e::compare_top1(got, want, model->n_vocab(), 0.0);
    EXPECT_EQ(top1.mismatches, 0);
  } else if (c.outtype == "f16" || c.outtype == "bf16" || (c.outtype == "auto" && t.variant == "bf16")) {
    EXPECT_LE(error, 1e-4);
  } else {
    // Lossy and lossless-quantized files: judged against the f32 file of the same merged weights in llama.cpp.
    const fs::path f32 = output("merged-f32", t, c.outtype);
    convert_ok({"convert", t.base().string(), "--adapter-path", t.adapter().string(), "-o", f32.string(), "--outtype", "f32", "-q"});
    const auto exact = oracle::LlamaModel::load(f32.string())->logits(tokens);
    const double vs_f32 = e2e::nmse(got, exact);
    std::printf("[ NMSE     ] merged %s/%s vs the f32 file of the same merged weights = %.3e\n", t.label().c_str(),
                c.outtype.c_str(), vs_f32);
    if (c.outtype == "q8_0") {
      const fs::path theirs = output("merged-llama-q8_0", t, c.outtype);
      oracle::llama_quantize_file(f32.string(), theirs.string(), 7);
      const double their_error = e2e::nmse(oracle::LlamaModel::load(theirs.string())->logits(tokens), want);
      std::printf("[ NMSE     ] llama.cpp's own q8_0 of the merged weights vs reference = %.3e\n", their_error);
      EXPECT_LE(error, their_error * 1.05 + 1e-9);
      EXPECT_LE(error, 2e-3);
      fs::remove(theirs);
    } else {  // auto on a quantized base: untouched tensors repacked losslessly, merged ones 16-bit
      EXPECT_NE(result.output.find("lossless from MLX"), std::string::npos) << result.output;
      EXPECT_LE(vs_f32, 1e-3);
    }
    fs::remove(f32);
  }
  fs::remove(gguf);
}

INSTANTIATE_TEST_SUITE_P(FineTunes, MergedAdapter, testing::ValuesIn(merge_cases()),
                         [](const testing::TestParamInfo<MergeCase>& info) {
                           std::string name = info.param.tuned.model + "_" + info.param.tuned.variant + "_" +
                                              info.param.tuned.tune + "_" + info.param.outtype;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

// ---- GGUF LoRA adapters ------------------------------------------------------------------------------------------

struct LoraCase {
  Tuned tuned;
  std::string base_type, adapter_type;
};
void PrintTo(const LoraCase& c, std::ostream* os) { *os << c.tuned.label() << "/" << c.base_type << "+" << c.adapter_type; }

std::vector<LoraCase> lora_cases() {
  std::vector<LoraCase> cases;
  for (const char* model : {"llama", "mixtral", "qwen35moe"}) {
    cases.push_back({{model, "bf16", "lora"}, "f32", "f32"});
    cases.push_back({{model, "q4g64", "lora"}, "f32", "f32"});
    cases.push_back({{model, "q4g64", "lora"}, "auto", "f32"});
  }
  // Qwen3-Next's fused in_proj_qkvz becomes two GGUF tensors: each gets the update of its rows.
  cases.push_back({{"qwen3next", "bf16", "lora"}, "f32", "f32"});
  cases.push_back({{"llama", "bf16", "lora"}, "f32", "f16"});
  cases.push_back({{"llama", "bf16", "lora"}, "f32", "q8_0"});
  cases.push_back({{"llama", "q4g64", "lora-embed"}, "f32", "f32"});
  cases.push_back({{"llama", "q4g64", "lora-embed"}, "auto", "f32"});
  cases.push_back({{"gemma3", "bf16", "lora"}, "f32", "f32"});
  cases.push_back({{"gemma3", "q4g64", "lora"}, "auto", "f32"});
  return cases;
}

class GgufLora : public testing::TestWithParam<LoraCase> {};

TEST_P(GgufLora, LlamaCppAppliesItLikeMlxLm) {
  const LoraCase& c = GetParam();
  const Tuned& t = c.tuned;
  const fs::path base = output("base", t, c.base_type);
  const fs::path lora = output("lora", t, c.adapter_type);
  convert_ok({"convert", t.base().string(), "-o", base.string(), "--outtype", c.base_type, "-q"});
  const auto result = e2e::run_mlx2gguf({"convert-adapter", t.adapter().string(), "--base", t.base().string(), "-o",
                                         lora.string(), "--outtype", c.adapter_type});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(oracle::gguf_check_file(lora.string()), "");

  auto model = oracle::LlamaModel::load(base.string());
  const int adapter = model->load_adapter(lora.string());
  EXPECT_EQ(model->adapter_meta(adapter, "general.type"), "adapter");
  EXPECT_EQ(model->adapter_meta(adapter, "adapter.type"), "lora");
  EXPECT_EQ(model->adapter_meta(adapter, "adapter.lora.alpha"), "160.000000");  // scale 20 × rank 8
  const auto tokens = probe_for(*model);
  const auto got = model->logits_with_adapter(tokens, adapter);
  const auto want = adapted_reference(t, tokens);
  const double error = e2e::nmse(got, want);
  std::printf("[ NMSE     ] %s: %s base + %s GGUF LoRA vs unfused reference = %.3e (adapter %.2f MiB, base %.2f MiB)\n",
              t.label().c_str(), c.base_type.c_str(), c.adapter_type.c_str(), error, fs::file_size(lora) / 1048576.0,
              fs::file_size(base) / 1048576.0);
  EXPECT_GT(e2e::nmse(model->logits(tokens), want), 1e-3) << "the adapter must matter for this test to mean anything";

  if (c.base_type == "f32") {
    const double bar = c.adapter_type == "f32" ? 1e-6 : c.adapter_type == "f16" ? 1e-4 : 2e-3;
    EXPECT_LE(error, bar);
  } else {
    // Lossless base: as close to the f32 base + the same adapter as repacked files are to f32 files.
    const fs::path f32 = output("base-f32", t, "f32");
    convert_ok({"convert", t.base().string(), "-o", f32.string(), "--outtype", "f32", "-q"});
    auto exact_model = oracle::LlamaModel::load(f32.string());
    const auto exact = exact_model->logits_with_adapter(tokens, exact_model->load_adapter(lora.string()));
    const double vs_f32 = e2e::nmse(got, exact);
    std::printf("[ NMSE     ] %s: lossless base + GGUF LoRA vs f32 base + GGUF LoRA = %.3e\n", t.label().c_str(), vs_f32);
    EXPECT_LE(vs_f32, 1e-3);
    fs::remove(f32);
  }
  fs::remove(base);
  fs::remove(lora);
}

INSTANTIATE_TEST_SUITE_P(FineTunes, GgufLora, testing::ValuesIn(lora_cases()),
                         [](const testing::TestParamInfo<LoraCase>& info) {
                           std::string name = info.param.tuned.model + "_" + info.param.tuned.variant + "_" +
                                              info.param.tuned.tune + "_" + info.param.base_type + "_" +
                                              info.param.adapter_type;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

// ---- --fuse-requantize -------------------------------------------------------------------------------------------

void PrintTo(const Tuned& t, std::ostream* os) { *os << t.label(); }

class FuseRequantize : public testing::TestWithParam<Tuned> {};

TEST_P(FuseRequantize, EqualsTheConversionOfMlxLmFusesFolder) {
  const Tuned& t = GetParam();
  const fs::path ours = output("fuse-ours", t, "auto");
  const fs::path theirs = output("fuse-theirs", t, "auto");
  const auto result = e2e::run_mlx2gguf({"convert", t.base().string(), "--adapter-path", t.adapter().string(),
                                         "--fuse-requantize", "--name", "tiny", "-o", ours.string()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const fs::path fused = e2e::fused_folder(t.model, t.variant, t.tune, tune_spec(t.model, t.tune));
  convert_ok({"convert", fused.string(), "--name", "tiny", "-o", theirs.string(), "-q"});
  // The tensors byte for byte; the metadata differs only where ours records the merged adapter (general.*).
  const std::string a = e2e::tensor_table_and_data(ours), b = e2e::tensor_table_and_data(theirs);
  EXPECT_GT(a.size(), 0u);
  EXPECT_TRUE(a == b) << "the tensors differ (" << a.size() << " vs " << b.size() << " bytes)";
  if (t.variant != "bf16") EXPECT_NE(result.output.find("re-quantized as mlx_lm.fuse"), std::string::npos) << result.output;
  std::printf("[ FUSE     ] %s: tensors of --fuse-requantize and of the conversion of mlx_lm.fuse's folder are %s (%zu bytes)\n",
              t.label().c_str(), a == b ? "byte-identical" : "DIFFERENT", a.size());
  fs::remove(ours);
  fs::remove(theirs);
}

INSTANTIATE_TEST_SUITE_P(FineTunes, FuseRequantize,
                         testing::Values(Tuned{"llama", "q4g64", "lora"}, Tuned{"mixtral", "q4g64", "lora"},
                                         Tuned{"qwen35moe", "q4g64", "lora"}, Tuned{"llama", "q4g64", "dora"},
                                         Tuned{"llama", "mxfp4", "lora"}, Tuned{"llama", "q4g64", "lora-embed"},
                                         Tuned{"qwen35moe", "bf16", "lora"}, Tuned{"llama", "bf16", "dora"}),
                         [](const testing::TestParamInfo<Tuned>& info) {
                           std::string name = info.param.model + "_" + info.param.variant + "_" + info.param.tune;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

// ---- where adapters come from ------------------------------------------------------------------------------------

TEST(AdapterLocations, CheckpointFilesGiveTheSameFileAsTheirFolder) {
  TinyAdapterSpec spec = tune_spec("llama", "lora");
  spec.checkpoint_iteration = 100;
  const fs::path adapters = e2e::adapter_folder("llama", "bf16", "lora-checkpoint", spec);
  const fs::path base = e2e::model_folder("llama", "bf16");
  const Tuned t{"llama", "bf16", "lora-checkpoint"};
  std::vector<std::string> outputs;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--adapter-path", adapters.string()},
           {"--adapter-path", (adapters / "0000100_adapters.safetensors").string()},
           {"--adapter-path", adapters.string(), "--adapter-file", "0000100_adapters.safetensors"}}) {
    const fs::path gguf = output(fmt::format("location{}", outputs.size()), t, "f16");
    std::vector<std::string> command = {"convert", base.string(), "-o", gguf.string(), "--outtype", "f16", "-q", "--name", "x"};
    command.insert(command.end(), args.begin(), args.end());
    convert_ok(command);
    outputs.push_back(e2e::tensor_table_and_data(gguf));  // general.description names the weights file, the tensors must agree
    fs::remove(gguf);
  }
  EXPECT_TRUE(outputs[0] == outputs[1]);
  EXPECT_TRUE(outputs[0] == outputs[2]);
}

TEST(AdapterLocations, LegacyConfigsAndExpertLayoutsAreRead) {
  TinyAdapterSpec spec = tune_spec("mixtral", "lora");
  spec.legacy_config = true;
  spec.legacy_switch_shape = true;
  spec.keys = {"self_attn.q_proj", "self_attn.v_proj", "block_sparse_moe.gate", "block_sparse_moe.switch_mlp.up_proj"};
  const Tuned t{"mixtral", "bf16", "lora-legacy"};
  const fs::path adapters = e2e::adapter_folder(t.model, t.variant, t.tune, spec);
  const fs::path gguf = output("legacy", t, "f32");
  const auto result = e2e::run_mlx2gguf(
      {"convert", t.base().string(), "--adapter-path", adapters.string(), "-o", gguf.string(), "--outtype", "f32"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("use_dora"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("alpha"), std::string::npos) << result.output;
  auto model = oracle::LlamaModel::load(gguf.string());
  const auto tokens = probe_for(*model);
  auto source = mlx2gguf::SourceModel::open(t.base());
  const auto adapter = mlx2gguf::Adapter::open({adapters, std::nullopt}, source);
  const double error = e2e::nmse(model->logits(tokens), mlx2gguf::reference_logits(source, tokens, adapter.get()));
  std::printf("[ NMSE     ] legacy mixtral adapter (lora_layers, use_dora, alpha, experts' lora_a [E·r, in]) = %.3e\n", error);
  EXPECT_LE(error, 1e-6);
  fs::remove(gguf);
}

}  // namespace
