#include "plan/tokenizer_metadata.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "read/model_folder.h"
#include "read/test_support.h"
#include "test_paths.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using json = nlohmann::json;
using test_support::TempDir;
using test_support::write_json;
using test_support::write_text;

const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen35Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kTekkenRegex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kGpt4oRegex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

json split_then_byte_level(const std::string& regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
}

// The byte-level symbol of a byte (printable Latin-1 stands for itself, the rest moves to U+0100 and up).
std::string byte_symbol(int b) {
  static std::vector<std::string> symbols = [] {
    std::vector<std::string> out(256);
    int next = 256;
    for (int i = 0; i < 256; ++i) {
      const bool printable = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE;
      const int cp = printable ? i : next++;
      std::string s;
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
      out[i] = s;
    }
    return out;
  }();
  return symbols[b];
}

// A small byte-level BPE tokenizer.json: the 256 byte symbols (ids 0..255), then "Ġt" 256, "he" 257, "Ġthe" 258.
json byte_level_tokenizer(const json& merges = json::array({"Ġ t", "h e", "Ġt he"}),
                          const json& pre = split_then_byte_level(kLlama3Regex)) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = b;
  vocab["Ġt"] = 256;
  vocab["he"] = 257;
  vocab["Ġthe"] = 258;
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre},
          {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"}, {"byte_fallback", false}, {"ignore_merges", true}, {"vocab", vocab}, {"merges", merges}}}};
}

json added(int id, const std::string& content, bool special) {
  return {{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},   {"normalized", false}, {"special", special}};
}

GgufMetadata convert(const TempDir& dir, int64_t rows = 0, const TokenizerOptions& options = {},
                     const json& config = json::object()) {
  GgufMetadata out;
  add_tokenizer_metadata(dir.path(), config, rows, options, out);
  return out;
}

std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

const GgufValue& get(const GgufMetadata& m, const std::string& key) {
  const GgufValue* v = m.get(key);
  if (v == nullptr) throw std::runtime_error("missing key " + key);
  return *v;
}
int64_t u32(const GgufMetadata& m, const std::string& key) {
  const GgufValue& v = get(m, key);
  EXPECT_EQ(v.type, GgufType::UINT32) << key;
  return v.ints.at(0);
}
bool boolean(const GgufMetadata& m, const std::string& key) {
  const GgufValue& v = get(m, key);
  EXPECT_EQ(v.type, GgufType::BOOL) << key;
  return v.ints.at(0) != 0;
}
std::string str(const GgufMetadata& m, const std::string& key) {
  const GgufValue& v = get(m, key);
  EXPECT_EQ(v.type, GgufType::STRING) << key;
  return v.strings.at(0);
}

TEST(TokenizerMetadata, MergesLegacyStringForm) {
  TempDir dir;
  write_json(dir / "tokenizer.json", byte_level_tokenizer(json::array({"Ġ t", "h e", "Ġt he"})));
  const GgufMetadata m = convert(dir);
  EXPECT_EQ(str(m, "tokenizer.ggml.model"), "gpt2");
  const GgufValue& merges = get(m, "tokenizer.ggml.merges");
  EXPECT_EQ(merges.element_type, GgufType::STRING);
  EXPECT_EQ(merges.strings, (std::vector<std::string>{"Ġ t", "h e", "Ġt he"}));
}

TEST(TokenizerMetadata, MergesPairFormJoinedWithOneSpace) {
  TempDir dir;
  // A literal space inside a part becomes U+0120 so the separator stays the only ASCII space.
  write_json(dir / "tokenizer.json",
             byte_level_tokenizer(json::array({json::array({"Ġ", "t"}), json::array({"h", "e"}),
                                               json::array({"Ġt", "he"}), json::array({"a b", "c"})})));
  const GgufMetadata m = convert(dir);
  EXPECT_EQ(get(m, "tokenizer.ggml.merges").strings,
            (std::vector<std::string>{"Ġ t", "h e", "Ġt he", "aĠb c"}));
}

TEST(TokenizerMetadata, TokensAndTypesInIdOrder) {
  TempDir dir;
  json tok = byte_level_tokenizer();
  // 259 special, 260 a hole in the ids, 261 non-special added token.
  tok["added_tokens"] = json::array({added(259, "<|eot_id|>", true), added(261, "<think>", false)});
  write_json(dir / "tokenizer.json", tok);
  const GgufMetadata m = convert(dir);
  const GgufValue& tokens = get(m, "tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.strings.size(), 262u);
  EXPECT_EQ(tokens.strings[0], byte_symbol(0));
  EXPECT_EQ(tokens.strings[32], "Ġ");
  EXPECT_EQ(tokens.strings[258], "Ġthe");
  EXPECT_EQ(tokens.strings[259], "<|eot_id|>");
  EXPECT_EQ(tokens.strings[260], "[PAD260]");
  EXPECT_EQ(tokens.strings[261], "<think>");
  const GgufValue& types = get(m, "tokenizer.ggml.token_type");
  EXPECT_EQ(types.type, GgufType::ARRAY);
  EXPECT_EQ(types.element_type, GgufType::INT32);  // llama.cpp rejects any other element type
  ASSERT_EQ(types.ints.size(), 262u);
  EXPECT_EQ(types.ints[0], 1);
  EXPECT_EQ(types.ints[258], 1);
  EXPECT_EQ(types.ints[259], 3);  // CONTROL
  EXPECT_EQ(types.ints[260], 5);  // UNUSED
  EXPECT_EQ(types.ints[261], 4);  // USER_DEFINED
  EXPECT_FALSE(m.has("tokenizer.ggml.scores"));
}

TEST(TokenizerMetadata, PadsToEmbeddingRows) {
  TempDir dir;
  write_json(dir / "tokenizer.json", byte_level_tokenizer());
  const GgufMetadata m = convert(dir, 264);
  const GgufValue& tokens = get(m, "tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.strings.size(), 264u);
  EXPECT_EQ(tokens.strings[259], "[PAD259]");
  EXPECT_EQ(tokens.strings[263], "[PAD263]");
  EXPECT_EQ(get(m, "tokenizer.ggml.token_type").ints[263], 5);
  EXPECT_EQ(get(m, "tokenizer.ggml.token_type").ints.size(), 264u);
}

TEST(TokenizerMetadata, MoreTokensThanEmbeddingRowsIsAnError) {
  TempDir dir;
  write_json(dir / "tokenizer.json", byte_level_tokenizer());
  // Refused at the first id past the matrix, before a token list of that size is allocated.
  const std::string message = error_of([&] { convert(dir, 200); });
  EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("beyond the 200 rows of the model's embedding matrix"), std::string::npos) << message;
}

TEST(TokenizerMetadata, DuplicateTokenTextIsAnError) {
  TempDir dir;
  json tok = byte_level_tokenizer();
  tok["added_tokens"] = json::array({added(259, "he", true)});
  write_json(dir / "tokenizer.json", tok);
  const std::string message = error_of([&] { convert(dir); });
  EXPECT_NE(message.find("'he'"), std::string::npos) << message;
  EXPECT_NE(message.find("257 and 259"), std::string::npos) << message;
}

TEST(TokenizerMetadata, MissingByteSymbolIsAnError) {
  TempDir dir;
  json tok = byte_level_tokenizer();
  tok["model"]["vocab"].erase("Ġ");
  tok["model"]["vocab"]["Ġzz"] = 32;
  write_json(dir / "tokenizer.json", tok);
  EXPECT_NE(error_of([&] { convert(dir); }).find("byte 0x20"), std::string::npos);
}

TEST(TokenizerMetadata, PreDetectedFromEachKnownRegex) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {kLlama3Regex, "llama-bpe"}, {kQwen2Regex, "qwen2"}, {kQwen35Regex, "qwen35"},
      {kTekkenRegex, "tekken"},    {kGpt4oRegex, "gpt-4o"},
  };
  for (const auto& [regex, name] : cases) {
    TempDir dir;
    write_json(dir / "tokenizer.json", byte_level_tokenizer(json::array({"Ġ t"}), split_then_byte_level(regex)));
    EXPECT_EQ(str(convert(dir), "tokenizer.ggml.pre"), name);
  }
  // GPT-2: a lone ByteLevel pre-tokenizer applying its built-in regex.
  TempDir dir;
  write_json(dir / "tokenizer.json",
             byte_level_tokenizer(json::array({"Ġ t"}),
                                  {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}));
  EXPECT_EQ(str(convert(dir), "tokenizer.ggml.pre"), "gpt-2");
}

TEST(TokenizerMetadata, UnknownPreTokenizerIsAnErrorNamingTheFileAndTheOption) {
  TempDir dir;
  // qwen2's regex with one character changed, and a GPT-2 ByteLevel that adds a prefix space.
  std::string almost = kQwen2Regex;
  almost.replace(almost.find("\\p{N}|"), 6, "\\p{N}{1,2}|");
  for (const json& pre : {split_then_byte_level(almost),
                          json{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}, json()}) {
    write_json(dir / "tokenizer.json", byte_level_tokenizer(json::array({"Ġ t"}), pre));
    const std::string message = error_of([&] { convert(dir); });
    EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
    EXPECT_NE(message.find("--tokenizer-pre"), std::string::npos) << message;
  }
  // The override wins and needs no recognised regex.
  TokenizerOptions options;
  options.pre_override = "qwen2";
  write_json(dir / "tokenizer.json", byte_level_tokenizer(json::array({"Ġ t"}), split_then_byte_level(almost)));
  EXPECT_EQ(str(convert(dir, 0, options), "tokenizer.ggml.pre"), "qwen2");
  // ... also over a recognised one.
  options.pre_override = "gpt-2";
  write_json(dir / "tokenizer.json", byte_level_tokenizer());
  EXPECT_EQ(str(convert(dir, 0, options), "tokenizer.ggml.pre"), "gpt-2");
}

// Vocabulary with Llama-3-like special tokens for the special id tests.
json special_tokenizer() {
  json tok = byte_level_tokenizer();
  tok["added_tokens"] = json::array({added(259, "<|begin_of_text|>", true), added(260, "<|end_of_text|>", true),
                                     added(261, "<|eot_id|>", true), added(262, "<|eom_id|>", true),
                                     added(263, "<|stop_here|>", true), added(264, "<|finetune_pad|>", true)});
  return tok;
}

TEST(TokenizerMetadata, SpecialIdsFromTokenizerConfig) {
  TempDir dir;
  write_json(dir / "tokenizer.json", special_tokenizer());
  write_json(dir / "tokenizer_config.json", {{"bos_token", "<|begin_of_text|>"},
                                             {"eos_token", {{"content", "<|end_of_text|>"}, {"special", true}}},
                                             {"pad_token", "<|finetune_pad|>"}});
  const GgufMetadata m = convert(dir);
  EXPECT_EQ(u32(m, "tokenizer.ggml.bos_token_id"), 259);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eos_token_id"), 260);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eot_token_id"), 261);  // found by its text
  EXPECT_EQ(u32(m, "tokenizer.ggml.eom_token_id"), 262);
  EXPECT_EQ(u32(m, "tokenizer.ggml.padding_token_id"), 264);
  EXPECT_FALSE(m.has("tokenizer.ggml.unknown_token_id"));
}

TEST(TokenizerMetadata, SpecialIdsFallBackToConfigJson) {
  TempDir dir;
  write_json(dir / "tokenizer.json", special_tokenizer());
  write_json(dir / "tokenizer_config.json", {{"bos_token", nullptr}, {"eos_token", nullptr}});
  const GgufMetadata m = convert(dir, 0, {}, {{"bos_token_id", 259}, {"eos_token_id", 260}, {"pad_token_id", 264}});
  EXPECT_EQ(u32(m, "tokenizer.ggml.bos_token_id"), 259);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eos_token_id"), 260);
  EXPECT_EQ(u32(m, "tokenizer.ggml.padding_token_id"), 264);
  // Nested text_config (multimodal configs) is read too.
  GgufMetadata nested = convert(dir, 0, {}, {{"text_config", {{"bos_token_id", 260}}}});
  EXPECT_EQ(u32(nested, "tokenizer.ggml.bos_token_id"), 260);
}

TEST(TokenizerMetadata, EosListFromGenerationConfig) {
  TempDir dir;
  write_json(dir / "tokenizer.json", special_tokenizer());
  write_json(dir / "tokenizer_config.json", {{"eos_token", "<|end_of_text|>"}});
  // <|eot_id|> and <|eom_id|> are known to llama.cpp by text; <|stop_here|> is not and takes a free slot.
  write_json(dir / "generation_config.json", {{"eos_token_id", {260, 262, 261}}});
  GgufMetadata m = convert(dir);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eos_token_id"), 260);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eot_token_id"), 261);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eom_token_id"), 262);

  // Without tokenizer_config's eos_token, the first id of the list is the eos; an id llama.cpp cannot recognise
  // by text becomes the eot when no end-of-turn token exists.
  json tok = byte_level_tokenizer();
  tok["added_tokens"] = json::array({added(259, "<|end_of_text|>", true), added(260, "<|stop_here|>", true)});
  write_json(dir / "tokenizer.json", tok);
  write_json(dir / "tokenizer_config.json", json::object());
  write_json(dir / "generation_config.json", {{"eos_token_id", {259, 260}}});
  m = convert(dir);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eos_token_id"), 259);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eot_token_id"), 260);
  EXPECT_FALSE(m.has("tokenizer.ggml.eom_token_id"));

  // A single integer works the same way.
  write_json(dir / "generation_config.json", {{"eos_token_id", 260}});
  EXPECT_EQ(u32(convert(dir), "tokenizer.ggml.eos_token_id"), 260);
}

TEST(TokenizerMetadata, AddBosAddEosFromPostProcessor) {
  TempDir dir;
  json tok = special_tokenizer();
  write_json(dir / "tokenizer_config.json", {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}});
  // ByteLevel post-processor: adds nothing.
  write_json(dir / "tokenizer.json", tok);
  GgufMetadata m = convert(dir);
  EXPECT_FALSE(boolean(m, "tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(boolean(m, "tokenizer.ggml.add_eos_token"));
  // Template adding BOS (inside a Sequence, as Llama 3.1 ships it).
  json bos_template = {{"type", "TemplateProcessing"},
                       {"single",
                        {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                         {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
  tok["post_processor"] = {{"type", "Sequence"},
                           {"processors", {{{"type", "ByteLevel"}, {"trim_offsets", false}}, bos_template}}};
  write_json(dir / "tokenizer.json", tok);
  m = convert(dir);
  EXPECT_TRUE(boolean(m, "tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(boolean(m, "tokenizer.ggml.add_eos_token"));
  // Template adding BOS and EOS.
  bos_template["single"].push_back({{"SpecialToken", {{"id", "<|end_of_text|>"}, {"type_id", 0}}}});
  tok["post_processor"] = bos_template;
  write_json(dir / "tokenizer.json", tok);
  m = convert(dir);
  EXPECT_TRUE(boolean(m, "tokenizer.ggml.add_bos_token"));
  EXPECT_TRUE(boolean(m, "tokenizer.ggml.add_eos_token"));
}

TEST(TokenizerMetadata, ChatTemplateString) {
  TempDir dir;
  write_json(dir / "tokenizer.json", byte_level_tokenizer());
  write_json(dir / "tokenizer_config.json", {{"chat_template", "{{ messages }}"}});
  const GgufMetadata m = convert(dir);
  EXPECT_EQ(str(m, "tokenizer.chat_template"), "{{ messages }}");
  EXPECT_FALSE(m.has("tokenizer.chat_templates"));
}

TEST(TokenizerMetadata, ChatTemplateNamedList) {
  TempDir dir;
  write_json(dir / "tokenizer.json", byte_level_tokenizer());
  write_json(dir / "tokenizer_config.json",
             {{"chat_template",
               {{{"name", "default"}, {"template", "D"}}, {{"name", "tool_use"}, {"template", "T"}},
                {{"name", "rag"}, {"template", "R"}}}}});
  const GgufMetadata m = convert(dir);
  EXPECT_EQ(str(m, "tokenizer.chat_template"), "D");
  EXPECT_EQ(str(m, "tokenizer.chat_template.tool_use"), "T");
  EXPECT_EQ(str(m, "tokenizer.chat_template.rag"), "R");
  EXPECT_EQ(get(m, "tokenizer.chat_templates").strings, (std::vector<std::string>{"rag", "tool_use"}));
}

TEST(TokenizerMetadata, ChatTemplateJinjaFiles) {
  TempDir dir;
  write_json(dir / "tokenizer.json", byte_level_tokenizer());
  write_json(dir / "tokenizer_config.json", json::object());
  write_text(dir / "chat_template.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}\n");
  GgufMetadata m = convert(dir);
  EXPECT_EQ(str(m, "tokenizer.chat_template"), "{% for m in messages %}{{ m.content }}{% endfor %}\n");
  // Template files take precedence over tokenizer_config.json, as when transformers loads the folder.
  write_json(dir / "tokenizer_config.json", {{"chat_template", "old"}});
  std::filesystem::create_directories(dir / "additional_chat_templates");
  write_text(dir / "additional_chat_templates" / "tool_use.jinja", "TOOLS");
  m = convert(dir);
  EXPECT_EQ(str(m, "tokenizer.chat_template"), "{% for m in messages %}{{ m.content }}{% endfor %}\n");
  EXPECT_EQ(str(m, "tokenizer.chat_template.tool_use"), "TOOLS");
  EXPECT_EQ(get(m, "tokenizer.chat_templates").strings, (std::vector<std::string>{"tool_use"}));
}

TEST(TokenizerMetadata, NoChatTemplateWritesNoKey) {
  TempDir dir;
  write_json(dir / "tokenizer.json", byte_level_tokenizer());
  EXPECT_FALSE(convert(dir).has("tokenizer.chat_template"));
}

TEST(TokenizerMetadata, MissingTokenizerIsAnErrorNamingTheFolder) {
  TempDir dir;
  write_json(dir / "tokenizer_config.json", json::object());
  const std::string message = error_of([&] { convert(dir); });
  EXPECT_NE(message.find(dir.path().string()), std::string::npos) << message;
  EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
}

TEST(TokenizerMetadata, UnsupportedModelTypeIsAnError) {
  TempDir dir;
  write_json(dir / "tokenizer.json", {{"model", {{"type", "WordPiece"}, {"vocab", {{"a", 0}}}}}});
  EXPECT_NE(error_of([&] { convert(dir); }).find("WordPiece"), std::string::npos);
}

// A SentencePiece-style BPE tokenizer.json (as Llama 2 ships): U+2581 word marks, <0xXX> byte fallback.
json sentencepiece_bpe_tokenizer() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 3 + b;
  int id = 259;
  for (const char* piece : {"▁", "t", "h", "e", "▁t", "he", "▁the", "▁▁", "x", "yz"}) vocab[piece] = id++;
  return {{"added_tokens", {added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "▁"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}},
          {"decoder", {{"type", "Sequence"}, {"decoders", json::array()}}},
          {"model",
           {{"type", "BPE"},
            {"byte_fallback", true},
            {"unk_token", "<unk>"},
            {"vocab", vocab},
            {"merges", {"▁ t", "h e", "▁t he", "▁ ▁"}}}}};
}

TEST(TokenizerMetadata, SentencePieceStyleTokenizerJson) {
  TempDir dir;
  write_json(dir / "tokenizer.json", sentencepiece_bpe_tokenizer());
  write_json(dir / "tokenizer_config.json", {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}});
  const GgufMetadata m = convert(dir, 272);
  EXPECT_EQ(str(m, "tokenizer.ggml.model"), "llama");
  EXPECT_EQ(str(m, "tokenizer.ggml.pre"), "default");
  EXPECT_FALSE(m.has("tokenizer.ggml.merges"));
  const auto& tokens = get(m, "tokenizer.ggml.tokens").strings;
  ASSERT_EQ(tokens.size(), 272u);
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(tokens[265], "▁the");
  const auto& types = get(m, "tokenizer.ggml.token_type").ints;
  EXPECT_EQ(types[0], 2);    // UNKNOWN
  EXPECT_EQ(types[1], 3);    // CONTROL
  EXPECT_EQ(types[2], 3);
  EXPECT_EQ(types[3], 6);    // BYTE
  EXPECT_EQ(types[258], 6);
  EXPECT_EQ(types[259], 1);
  EXPECT_EQ(types[271], 5);  // padding
  // Scores: minus (rank + 1) of the merge producing the token; multi-character tokens no merge produces rank
  // below every merge; single characters, bytes and special tokens 0.
  const GgufValue& scores = get(m, "tokenizer.ggml.scores");
  EXPECT_EQ(scores.element_type, GgufType::FLOAT32);
  ASSERT_EQ(scores.floats.size(), 272u);
  EXPECT_EQ(scores.floats[263], -1.0);   // ▁t
  EXPECT_EQ(scores.floats[264], -2.0);   // he
  EXPECT_EQ(scores.floats[265], -3.0);   // ▁the
  EXPECT_EQ(scores.floats[266], -4.0);   // ▁▁
  EXPECT_EQ(scores.floats[268], -5.0);   // yz: no merge
  EXPECT_EQ(scores.floats[259], 0.0);    // ▁
  EXPECT_EQ(scores.floats[10], 0.0);     // byte
  EXPECT_TRUE(boolean(m, "tokenizer.ggml.add_space_prefix"));
  EXPECT_TRUE(boolean(m, "tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(boolean(m, "tokenizer.ggml.add_eos_token"));
  EXPECT_EQ(u32(m, "tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eos_token_id"), 2);
  EXPECT_EQ(u32(m, "tokenizer.ggml.unknown_token_id"), 0);
}

TEST(TokenizerMetadata, SentencePieceStyleWithoutPrefixNormalizer) {
  TempDir dir;
  json tok = sentencepiece_bpe_tokenizer();
  tok["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}};
  write_json(dir / "tokenizer.json", tok);
  const GgufMetadata m = convert(dir);
  EXPECT_FALSE(boolean(m, "tokenizer.ggml.add_space_prefix"));
  // Without tokenizer_config.json, the token the post-processor puts first is the BOS.
  EXPECT_EQ(u32(m, "tokenizer.ggml.bos_token_id"), 1);
  EXPECT_TRUE(boolean(m, "tokenizer.ggml.add_bos_token"));
  // A Metaspace pre-tokenizer prepends the mark too.
  tok["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", false}};
  write_json(dir / "tokenizer.json", tok);
  EXPECT_TRUE(boolean(convert(dir), "tokenizer.ggml.add_space_prefix"));
}

const std::filesystem::path kSpmFixture = test_paths::source_dir() / "tests/data/tokenizer/spm_bpe";

TEST(TokenizerMetadata, SentencePieceModelFile) {
  // tokenizer.model trained by spm_train (BPE, byte fallback, user-defined "<tool>", control "<ctl>").
  TempDir dir;
  std::filesystem::copy_file(kSpmFixture / "tokenizer.model", dir / "tokenizer.model");
  const GgufMetadata m = convert(dir, 402);
  EXPECT_EQ(str(m, "tokenizer.ggml.model"), "llama");
  const auto& tokens = get(m, "tokenizer.ggml.tokens").strings;
  const auto& types = get(m, "tokenizer.ggml.token_type").ints;
  const auto& scores = get(m, "tokenizer.ggml.scores").floats;
  ASSERT_EQ(tokens.size(), 402u);
  // Values as SentencePiece's own library reports them for this file.
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(types[0], 2);
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(types[1], 3);
  EXPECT_EQ(tokens[3], "<ctl>");
  EXPECT_EQ(types[3], 3);
  EXPECT_EQ(tokens[4], "<tool>");
  EXPECT_EQ(types[4], 4);  // USER_DEFINED
  EXPECT_EQ(tokens[5], "<0x00>");
  EXPECT_EQ(types[5], 6);
  EXPECT_EQ(tokens[262], "ce");
  EXPECT_FLOAT_EQ(scores[262], -1.0f);
  EXPECT_EQ(tokens[300], "iece");
  EXPECT_FLOAT_EQ(scores[300], -39.0f);
  EXPECT_EQ(tokens[399], "ы");
  EXPECT_FLOAT_EQ(scores[399], -138.0f);
  EXPECT_EQ(tokens[401], "[PAD401]");
  EXPECT_EQ(types[401], 5);
  EXPECT_TRUE(boolean(m, "tokenizer.ggml.add_space_prefix"));
  EXPECT_FALSE(boolean(m, "tokenizer.ggml.remove_extra_whitespaces"));
  EXPECT_TRUE(boolean(m, "tokenizer.ggml.add_bos_token"));  // SentencePiece default
  // Special ids from the model's trainer_spec when no config names them.
  EXPECT_EQ(u32(m, "tokenizer.ggml.unknown_token_id"), 0);
  EXPECT_EQ(u32(m, "tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eos_token_id"), 2);
  EXPECT_FALSE(m.has("tokenizer.ggml.padding_token_id"));  // pad_id -1: none
}

TEST(TokenizerMetadata, SentencePieceModelWithAddedTokens) {
  TempDir dir;
  std::filesystem::copy_file(kSpmFixture / "tokenizer.model", dir / "tokenizer.model");
  write_json(dir / "tokenizer_config.json",
             {{"bos_token", "<s>"},
              {"eos_token", "<|im_end|>"},
              {"add_bos_token", false},
              {"added_tokens_decoder",
               {{"1", {{"content", "<s>"}, {"special", true}}},
                {"400", {{"content", "<|im_end|>"}, {"special", true}}},
                {"402", {{"content", "<extra>"}, {"special", false}}}}}});
  const GgufMetadata m = convert(dir);
  const auto& tokens = get(m, "tokenizer.ggml.tokens").strings;
  const auto& types = get(m, "tokenizer.ggml.token_type").ints;
  ASSERT_EQ(tokens.size(), 403u);
  EXPECT_EQ(tokens[400], "<|im_end|>");
  EXPECT_EQ(types[400], 3);
  EXPECT_EQ(tokens[401], "[PAD401]");
  EXPECT_EQ(types[401], 5);
  EXPECT_EQ(tokens[402], "<extra>");
  EXPECT_EQ(types[402], 4);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eos_token_id"), 400);
  EXPECT_FALSE(boolean(m, "tokenizer.ggml.add_bos_token"));
}

TEST(TokenizerMetadata, CorruptSentencePieceModelIsAnError) {
  TempDir dir;
  write_text(dir / "tokenizer.model", std::string("\x0a\x7f\x0a\x03", 4));
  EXPECT_NE(error_of([&] { convert(dir); }).find("tokenizer.model"), std::string::npos);
}

TEST(TokenizerMetadata, ThroughModelFolder) {
  TempDir dir;
  write_json(dir / "config.json", {{"model_type", "llama"}, {"eos_token_id", {260, 261}}});
  test_support::write_safetensors(dir / "model.safetensors",
                                  {{"w", "F32", {1}, test_support::f32_bytes({1.0f})}});
  write_json(dir / "tokenizer.json", special_tokenizer());
  const ModelFolder folder = ModelFolder::open(dir.path());
  GgufMetadata m;
  add_tokenizer_metadata(folder, 300, {}, m);
  EXPECT_EQ(get(m, "tokenizer.ggml.tokens").strings.size(), 300u);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eos_token_id"), 260);
  EXPECT_EQ(u32(m, "tokenizer.ggml.eot_token_id"), 261);
  EXPECT_EQ(str(m, "tokenizer.ggml.pre"), "llama-bpe");
}

}  // namespace
}  // namespace mlx2gguf
