// general.* metadata: names split and titled as llama.cpp's converter does (gguf-py/gguf/metadata.py,
// Metadata.get_model_id_components and Metadata.id_to_title; utility.py naming_convention), the model card,
// generation_config.json and llama.cpp's --metadata override file.
#include "plan/general_metadata.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

#include "plan/plan_test_support.h"
#include "read/model_card.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using namespace plan_test;

struct NameCase {
  const char* id;
  int64_t total_parameters;
  const char* basename;
  const char* size_label;
  const char* finetune;
  const char* version;
  const char* title;
};

// Expected parts worked out by hand from llama.cpp's rules (metadata.py get_model_id_components):
//  * a part matching (v|iter)?\d+(\.\d+)* is a version; i?q\d(_\w)*|b?fp?(16|32) a quantization type (dropped);
//  * a later part matching ([A]|\d+x)?\d+([._]\d+)?[KMBT]\d? (or small/mini/medium/large/xl) is a size label, unless
//    its count is more than 7/8 away from the model's parameter count (a context length: it becomes a lowercase
//    finetune part), unless it is followed by an active count ("A3B") that matches; labels whose number is not plain
//    ("8x7B", "A3B", "mini") are never compared;
//  * chat/instruct/vision/lora after the first part are finetune parts;
//  * leading unmarked words and versions form the basename, later unmarked words are finetune, a version ending the
//    name leaves the basename; no size, finetune or version at all: no basename either.
//  * the title (id_to_title): hyphens to spaces, all-lowercase words title-cased unless a version or starting with a
//    digit, Python's str.title (a letter after a digit is uppercase).
const NameCase kNameCases[] = {
    {"Mistral-7B-Instruct-v0.3", 7'250'000'000, "Mistral", "7B", "Instruct", "v0.3", "Mistral 7B Instruct v0.3"},
    {"Meta-Llama-3.1-8B-Instruct", 8'030'000'000, "Meta-Llama-3.1", "8B", "Instruct", "", "Meta Llama 3.1 8B Instruct"},
    {"Qwen3.6-35B-A3B", 35'100'000'000, "Qwen3.6", "35B-A3B", "", "", "Qwen3.6 35B A3B"},
    {"Mixtral-8x7B-Instruct-v0.1", 46'700'000'000, "Mixtral", "8x7B", "Instruct", "v0.1", "Mixtral 8x7B Instruct v0.1"},
    {"Llama-3-8B-Instruct-Gradient-1048k", 8'030'000'000, "Llama-3", "8B", "Instruct-Gradient-1048k", "",
     "Llama 3 8B Instruct Gradient 1048k"},
    {"gemma-3-27b-it", 27'000'000'000, "gemma-3", "27B", "it", "", "Gemma 3 27b It"},
    {"phi-4-mini-instruct", 3'840'000'000, "phi-4", "mini", "instruct", "", "Phi 4 Mini Instruct"},
    {"SmolLM2-135M-Instruct", 134'500'000, "SmolLM2", "135M", "Instruct", "", "SmolLM2 135M Instruct"},
    {"Qwen2.5-7B-Instruct-Q8_0", 7'620'000'000, "Qwen2.5", "7B", "Instruct", "", "Qwen2.5 7B Instruct Q8_0"},
    {"TinyLlama-1.1B-Chat-v1.0", 0, "TinyLlama", "1.1B", "Chat", "v1.0", "TinyLlama 1.1B Chat v1.0"},
    // The same name on a 423K-parameter test model: 1.1B is far from the real size, so it reads as a context length.
    {"TinyLlama-1.1B-Chat-v1.0", 423'296, "TinyLlama", "", "1.1b-Chat", "v1.0", "TinyLlama 1.1B Chat v1.0"},
    {"bloom-7b1", 7'070'000'000, "bloom", "7.1B", "", "", "Bloom 7b1"},
    {"my-model", 1'000'000, "", "", "", "", "My Model"},
};

TEST(ModelIdComponents, FollowLlamaCppsNamingRules) {
  for (const NameCase& c : kNameCases) {
    SCOPED_TRACE(c.id);
    const ModelNameParts parts = model_id_components(c.id, c.total_parameters);
    EXPECT_EQ(parts.name, c.id);
    EXPECT_EQ(parts.basename, c.basename);
    EXPECT_EQ(parts.size_label, c.size_label);
    EXPECT_EQ(parts.finetune, c.finetune);
    EXPECT_EQ(parts.version, c.version);
    EXPECT_EQ(id_to_title(parts.name), c.title);
  }
}

TEST(ModelIdComponents, SplitTheOrganizationOffAHubId) {
  const ModelNameParts parts = model_id_components("mistralai/Mistral-7B-v0.1", 7'240'000'000);
  EXPECT_EQ(parts.organization, "mistralai");
  EXPECT_EQ(parts.name, "Mistral-7B-v0.1");
  EXPECT_EQ(parts.basename, "Mistral");
  EXPECT_EQ(parts.version, "v0.1");
  EXPECT_EQ(id_to_title("qwen3b-instruct"), "Qwen3B Instruct");  // str.title: a letter after a digit is uppercase
}

TEST(ParseModelName, DropsMlxConversionSuffixesBeforeSplitting) {
  // llama.cpp would read "4bit" as a finetune part; MLX conversions append it (and mlx, bf16, dwq, ...).
  const ModelNameParts qwen = parse_model_name("Qwen3.6-35B-A3B-4bit", 35'100'000'000);
  EXPECT_EQ(qwen.name, "Qwen3.6-35B-A3B");
  EXPECT_EQ(qwen.basename, "Qwen3.6");
  EXPECT_EQ(qwen.size_label, "35B-A3B");
  EXPECT_EQ(qwen.finetune, "");
  const ModelNameParts llama = parse_model_name("Meta-Llama-3.1-8B-Instruct-mlx-bf16", 8'030'000'000);
  EXPECT_EQ(llama.name, "Meta-Llama-3.1-8B-Instruct");
  EXPECT_EQ(llama.finetune, "Instruct");
  EXPECT_EQ(parse_model_name("mlx").name, "");
  EXPECT_EQ(parse_model_name("Mistral-7B-Instruct-v0.3-8bit-dwq").name, "Mistral-7B-Instruct-v0.3");
}

TEST(FormatParameterCount, UsesTheLargestScaleReachedWithAtLeastTwoSignificantDigits) {
  EXPECT_EQ(format_parameter_count(8.03e9), "8.0B");
  EXPECT_EQ(format_parameter_count(1e9), "1.0B");  // utility.py: >= 1e9 is billions
  EXPECT_EQ(format_parameter_count(35.9e9), "36B");
  EXPECT_EQ(format_parameter_count(423296), "423K");
}

// ---- from a model folder ------------------------------------------------------------------------------------------

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

void add_generation_settings(const fs::path& dir, const nlohmann::json& settings) {
  nlohmann::json generation;
  std::ifstream(dir / "generation_config.json") >> generation;
  generation.update(settings);
  test_support::write_json(dir / "generation_config.json", generation);
}

TEST(GeneralMetadata, FolderNameGivesTheNameAndItsParts) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "TinyLlama-1.1B-Chat-v1.0-bf16", llama_spec()));
  EXPECT_TRUE(is_str(*p, "general.type", "model"));
  EXPECT_TRUE(is_str(*p, "general.name", "TinyLlama 1.1B Chat v1.0"));
  EXPECT_TRUE(is_str(*p, "general.basename", "TinyLlama"));
  // 423,296 parameters: "1.1B" is far from them (see the table above), so the label is counted.
  EXPECT_TRUE(is_str(*p, "general.size_label", "423K"));
  EXPECT_TRUE(is_str(*p, "general.finetune", "1.1b-Chat"));
  EXPECT_TRUE(is_str(*p, "general.version", "v1.0"));
  EXPECT_TRUE(is_u32(*p, "general.quantization_version", 2));
  EXPECT_EQ(default_output_name(p->plan.metadata), "TinyLlama-423K-1.1b-Chat-v1.0-BF16.gguf");
}

TEST(GeneralMetadata, FolderGivenWithATrailingSeparatorKeepsItsName) {
  TempDir temp;
  const fs::path dir = write_model(temp, "SmolLM2-Instruct-bf16", llama_spec());
  const auto p = plan_model(dir.string() + "/");
  EXPECT_TRUE(is_str(*p, "general.name", "SmolLM2 Instruct"));
  EXPECT_TRUE(is_str(*p, "general.basename", "SmolLM2"));
  EXPECT_TRUE(is_str(*p, "general.finetune", "Instruct"));
}

TEST(GeneralMetadata, AFolderNamedOnlyByItsConversionTakesItsParentsName) {
  TempDir temp;
  fs::create_directories(temp / "Qwen3-Coder");
  const auto p = plan_model(write_model(temp, "Qwen3-Coder/mlx", llama_spec()));
  EXPECT_TRUE(is_str(*p, "general.name", "Qwen3 Coder"));
  EXPECT_FALSE(p->plan.metadata.has("general.basename"));  // two plain words: too ambiguous to split
  EXPECT_EQ(default_output_name(p->plan.metadata), "Qwen3-Coder-423K-BF16.gguf");
}

TEST(GeneralMetadata, NameOptionSetsOnlyTheNameAsInLlamaCpp) {
  TempDir temp;
  const fs::path dir = write_model(temp, "tiny", llama_spec());
  PlanOptions options;
  options.name = "My Tiny Model";
  Planned p(dir, options);
  EXPECT_TRUE(is_str(p, "general.name", "My Tiny Model"));
  EXPECT_FALSE(p.plan.metadata.has("general.basename"));  // "tiny" alone is too ambiguous to split
  EXPECT_TRUE(is_str(p, "general.size_label", "423K"));
  EXPECT_EQ(default_output_name(p.plan.metadata), "My-Tiny-Model-423K-BF16.gguf");
}

TEST(GeneralMetadata, HubIdInConfigComesBeforeTheFolderName) {
  TempDir temp;
  const fs::path dir = write_model(temp, "tiny", llama_spec());
  nlohmann::json config;
  std::ifstream(dir / "config.json") >> config;
  config["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct";
  test_support::write_json(dir / "config.json", config);
  const auto p = plan_model(dir);
  EXPECT_TRUE(is_str(*p, "general.name", "SmolLM2 135M Instruct"));
  EXPECT_TRUE(is_str(*p, "general.organization", "HuggingFaceTB"));
  EXPECT_TRUE(is_str(*p, "general.basename", "SmolLM2"));
  EXPECT_TRUE(is_str(*p, "general.finetune", "135m-Instruct"));  // 135M is far from 423K parameters
}

TEST(GeneralMetadata, ModelCardGivesLicenseLineageTagsAndLanguages) {
  TempDir temp;
  const fs::path dir = write_model(temp, "Qwen3-Tiny-4bit", llama_spec());
  // As mlx-lm's card for a converted model, with what Hugging Face cards add.
  write_text(dir / "README.md", R"(---
license: apache-2.0
license_link: https://huggingface.co/Qwen/Qwen3-8B/blob/main/LICENSE
pipeline_tag: text-generation
library_name: mlx
base_model:
- Qwen/Qwen3-8B
- https://huggingface.co/Qwen/Qwen3-8B-Base
tags: [mlx, "chat"]
language:
  - en
  - "no"
datasets:
- HuggingFaceH4/ultrachat_200k
model-index:
- name: Qwen3-Tiny
  results: []
---

# Qwen3-Tiny-4bit
text: not front matter
)");
  const auto p = plan_model(dir);
  EXPECT_TRUE(is_str(*p, "general.license", "apache-2.0"));
  EXPECT_TRUE(is_str(*p, "general.license.link", "https://huggingface.co/Qwen/Qwen3-8B/blob/main/LICENSE"));
  EXPECT_TRUE(is_u32(*p, "general.base_model.count", 2));
  EXPECT_TRUE(is_str(*p, "general.base_model.0.name", "Qwen3 8B"));
  EXPECT_TRUE(is_str(*p, "general.base_model.0.organization", "Qwen"));
  EXPECT_TRUE(is_str(*p, "general.base_model.0.repo_url", "https://huggingface.co/Qwen/Qwen3-8B"));
  EXPECT_TRUE(is_str(*p, "general.base_model.1.name", "Qwen3 8B Base"));
  EXPECT_TRUE(is_str(*p, "general.base_model.1.repo_url", "https://huggingface.co/Qwen/Qwen3-8B-Base"));
  EXPECT_TRUE(is_u32(*p, "general.dataset.count", 1));
  EXPECT_TRUE(is_str(*p, "general.dataset.0.name", "Ultrachat_200K"));
  EXPECT_TRUE(is_str(*p, "general.dataset.0.organization", "HuggingFaceH4"));
  EXPECT_TRUE(is_str(*p, "general.dataset.0.repo_url", "https://huggingface.co/HuggingFaceH4/ultrachat_200k"));
  EXPECT_EQ(p->key("general.tags").strings, (std::vector<std::string>{"mlx", "chat", "text-generation"}));
  EXPECT_EQ(p->key("general.languages").strings, (std::vector<std::string>{"en", "no"}));
  EXPECT_TRUE(is_str(*p, "general.name", "Qwen3 Tiny"));  // the card names no model: the folder does
}

TEST(ModelCard, ReadsOnlyTopLevelScalarsAndListsOfTheFrontMatter) {
  const ModelCard card = parse_model_card("---\nlicense: mit # a comment\nwidget:\n  - text: hi\nextra_gated_fields:\n"
                                          "  Name: text\nbase_model: 'a/b'\n---\nlicense: other\n");
  EXPECT_EQ(card.scalar("license"), "mit");
  EXPECT_EQ(card.scalar("base_model"), "a/b");
  EXPECT_EQ(card.get("widget"), nullptr);
  EXPECT_EQ(card.get("extra_gated_fields"), nullptr);
  EXPECT_TRUE(parse_model_card("# no front matter\nlicense: mit\n").fields.empty());
}

TEST(GeneralMetadata, GenerationConfigGivesTheSamplingDefaults) {
  TempDir temp;
  const fs::path dir = write_model(temp, "tiny", llama_spec());
  add_generation_settings(dir, {{"temperature", 0.6}, {"top_k", 20}, {"top_p", 0.95}, {"min_p", 0.0},
                                {"repetition_penalty", 1.05}, {"do_sample", true}});
  const auto p = plan_model(dir);
  EXPECT_TRUE(is_f32(*p, "general.sampling.temp", 0.6f));
  EXPECT_TRUE(is_f32(*p, "general.sampling.top_p", 0.95f));
  EXPECT_TRUE(is_f32(*p, "general.sampling.min_p", 0.0f));
  EXPECT_TRUE(is_f32(*p, "general.sampling.penalty_repeat", 1.05f));
  EXPECT_EQ(p->key("general.sampling.top_k").type, GgufType::INT32);
  EXPECT_EQ(p->key("general.sampling.top_k").ints.at(0), 20);
}

TEST(GeneralMetadata, SamplingSettingOfTheWrongTypeIsAnErrorNamingTheFile) {
  TempDir temp;
  const fs::path dir = write_model(temp, "tiny", llama_spec());
  add_generation_settings(dir, {{"top_k", 2.5}});
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, {"generation_config.json", "top_k"}));
  add_generation_settings(dir, {{"top_k", 20}, {"temperature", "hot"}});
  EXPECT_TRUE(test_support::throws_with<Error>([&] { plan_model(dir); }, {"generation_config.json", "temperature"}));
}

TEST(GeneralMetadata, OverrideFileReplacesWhatTheHeuristicsFound) {
  TempDir temp;
  const fs::path dir = write_model(temp, "Tiny-Chat-v2-4bit", llama_spec());
  add_generation_settings(dir, {{"temperature", 0.6}});
  test_support::write_json(temp / "meta.json",
                           {{"general.name", "Tiny Chat"},
                            {"general.basename", "Tiny"},
                            {"general.size_label", "1B"},
                            {"general.sampling.temp", 0.2},
                            {"general.sampling.penalty_last_n", 64},
                            {"general.base_models", nlohmann::json::array({{{"name", "Tiny Base"}, {"repo_url", "https://example.org/tiny"}}})},
                            {"general.tags", nlohmann::json::array({"a", "b"})}});
  PlanOptions options;
  options.metadata_file = temp / "meta.json";
  Planned p(dir, options);
  EXPECT_TRUE(is_str(p, "general.name", "Tiny Chat"));
  EXPECT_TRUE(is_str(p, "general.size_label", "1B"));
  EXPECT_TRUE(is_str(p, "general.finetune", "Chat"));  // not overridden: still from the folder
  EXPECT_TRUE(is_f32(p, "general.sampling.temp", 0.2f));
  EXPECT_EQ(p.key("general.sampling.penalty_last_n").type, GgufType::INT32);
  EXPECT_TRUE(is_u32(p, "general.base_model.count", 1));
  EXPECT_TRUE(is_str(p, "general.base_model.0.repo_url", "https://example.org/tiny"));
  EXPECT_EQ(p.key("general.tags").strings, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(default_output_name(p.plan.metadata), "Tiny-1B-Chat-v2-BF16.gguf");

  test_support::write_json(temp / "meta.json", {{"general.nmae", "typo"}});
  EXPECT_TRUE(test_support::throws_with<Error>([&] { Planned again(dir, options); }, {"meta.json", "general.nmae"}));
  test_support::write_json(temp / "meta.json", {{"general.sampling.top_k", "many"}});
  EXPECT_TRUE(test_support::throws_with<Error>([&] { Planned again(dir, options); }, {"meta.json", "top_k"}));
}

}  // namespace
}  // namespace mlx2gguf
