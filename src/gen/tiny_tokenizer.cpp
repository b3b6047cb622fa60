#include "gen/tiny_tokenizer.h"

#include <nlohmann/json.hpp>

#include <array>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "util/error.h"

namespace mlx2gguf::gen {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

namespace {

std::string utf8(uint32_t code_point) {
  std::string out;
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xc0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3f));
  } else {
    out += static_cast<char>(0xe0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code_point & 0x3f));
  }
  return out;
}

// Byte-level BPE spells every byte as a printable character: bytes that are printable Latin-1 stand for
// themselves, the others (controls, space, 127-160, soft hyphen) take code points 256, 257, ... in byte order.
std::array<std::string, 256> byte_symbols() {
  std::array<std::string, 256> symbols;
  uint32_t next_extra = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    symbols[b] = utf8(printable ? b : next_extra++);
  }
  return symbols;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create '{}'", path.string());
  out << text;
  if (!out.flush()) fail("cannot write '{}'", path.string());
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail("cannot read '{}'", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' is not valid JSON: {}", path.string(), e.what());
  }
}

constexpr const char* kSpecialTokens[] = {"<s>", "</s>", "<|im_start|>", "<|im_end|>"};

// Words whose pieces become merges; a leading space is part of the word, as byte-level BPE sees it.
constexpr const char* kMergeWords[] = {" the", " of", " and", " to", " in", " is", "ing", " a",  "er",     "on",
                                       "Hello", " world", " model", " test", " tiny", "The", " you", "\n\n", "  "};

constexpr const char* kChatTemplate =
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

}  // namespace

namespace {

struct TinyTokenizerFiles {
  ordered_json tokenizer;
  nlohmann::json config;
};

TinyTokenizerFiles build_tiny_tokenizer() {
  const auto symbols = byte_symbols();
  ordered_json vocab = ordered_json::object();
  for (int b = 0; b < 256; ++b) vocab[symbols[b]] = b;

  // Each word is merged left to right: (w0 w1), (w0w1 w2), ... so every merge joins two existing tokens.
  ordered_json merges = ordered_json::array();
  for (const char* word : kMergeWords) {
    std::vector<std::string> pieces;
    for (const char* c = word; *c; ++c) pieces.push_back(symbols[static_cast<unsigned char>(*c)]);
    std::string left = pieces[0];
    for (size_t i = 1; i < pieces.size(); ++i) {
      const std::string joined = left + pieces[i];
      if (!vocab.contains(joined)) {
        merges.push_back(left + " " + pieces[i]);
        const int64_t id = static_cast<int64_t>(vocab.size());
        vocab[joined] = id;
      }
      left = joined;
    }
  }

  ordered_json added = ordered_json::array();
  std::map<std::string, int64_t> special_ids;
  for (const char* token : kSpecialTokens) {
    const int64_t id = static_cast<int64_t>(vocab.size() + added.size());
    special_ids[token] = id;
    added.push_back({{"id", id}, {"content", token}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  }
  const int64_t bos = special_ids.at("<s>");

  const ordered_json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  ordered_json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           // Llama 3's pre-tokenizer pattern, so the tokenizer is recognised as a known pre-tokenizer type.
           {"pattern",
            {{"Regex",
              "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
              "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          byte_level}}}},
      {"post_processor",
       {{"type", "Sequence"},
        {"processors",
         {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}},
          {{"type", "TemplateProcessing"},
           {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
           {"pair",
            {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
             {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}},
             {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
           {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {bos}}, {"tokens", {"<s>"}}}}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges}}}};
  nlohmann::json decoder = nlohmann::json::object();
  for (const auto& [token, id] : special_ids)
    decoder[std::to_string(id)] = {{"content", token}, {"lstrip", false}, {"normalized", false}, {"rstrip", false},
                                   {"single_word", false}, {"special", true}};
  const nlohmann::json config = {{"add_bos_token", true},
                                 {"add_eos_token", false},
                                 {"added_tokens_decoder", decoder},
                                 {"bos_token", "<s>"},
                                 {"clean_up_tokenization_spaces", false},
                                 {"eos_token", "</s>"},
                                 {"model_input_names", {"input_ids", "attention_mask"}},
                                 {"model_max_length", 2048},
                                 {"tokenizer_class", "PreTrainedTokenizerFast"}};
  return {tokenizer, config};
}

}  // namespace

void write_tiny_tokenizer(const fs::path& dir) {
  const TinyTokenizerFiles files = build_tiny_tokenizer();
  write_text(dir / "tokenizer.json", files.tokenizer.dump(2) + "\n");
  write_text(dir / "tokenizer_config.json", files.config.dump(2) + "\n");
  write_text(dir / "chat_template.jinja", kChatTemplate);
}

namespace {

// A special token named in tokenizer_config.json: a plain string or an AddedToken object with "content".
std::optional<std::string> token_name(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const auto& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

namespace {

TokenizerFacts facts_from(const nlohmann::json& tokenizer, const nlohmann::json& config, const std::string& where) {
  std::map<std::string, int64_t> ids;
  int64_t max_id = -1;
  if (tokenizer.contains("model") && tokenizer["model"].contains("vocab")) {
    const auto& vocab = tokenizer["model"]["vocab"];
    if (vocab.is_object()) {  // BPE, WordPiece, WordLevel: {token: id}
      for (const auto& [token, id] : vocab.items()) {
        ids[token] = id.get<int64_t>();
        max_id = std::max(max_id, id.get<int64_t>());
      }
    } else if (vocab.is_array()) {  // Unigram: [[piece, score], ...], id = position
      for (size_t i = 0; i < vocab.size(); ++i) ids[vocab[i].at(0).get<std::string>()] = static_cast<int64_t>(i);
      max_id = static_cast<int64_t>(vocab.size()) - 1;
    }
  }
  if (tokenizer.contains("added_tokens")) {
    for (const auto& token : tokenizer["added_tokens"]) {
      const int64_t id = token.at("id").get<int64_t>();
      ids[token.at("content").get<std::string>()] = id;
      max_id = std::max(max_id, id);
    }
  }
  if (max_id < 0) fail("'{}' defines no tokens", where);

  TokenizerFacts facts;
  facts.vocab_size = max_id + 1;
  auto lookup = [&](const char* key) -> std::optional<int64_t> {
    const auto name = token_name(config, key);
    if (!name) return std::nullopt;
    const auto it = ids.find(*name);
    if (it == ids.end()) return std::nullopt;
    return it->second;
  };
  facts.bos_id = lookup("bos_token");
  facts.eos_id = lookup("eos_token");
  return facts;
}

}  // namespace

TokenizerFacts read_tokenizer_facts(const fs::path& dir) {
  const fs::path path = dir / "tokenizer.json";
  if (!fs::exists(path)) fail("'{}' has no tokenizer.json", dir.string());
  const fs::path config_path = dir / "tokenizer_config.json";
  return facts_from(read_json(path), fs::exists(config_path) ? read_json(config_path) : nlohmann::json::object(),
                    path.string());
}

TokenizerFacts tiny_tokenizer_facts() {
  const TinyTokenizerFiles files = build_tiny_tokenizer();
  return facts_from(nlohmann::json(files.tokenizer), files.config, "built-in tiny tokenizer");
}

}  // namespace mlx2gguf::gen
