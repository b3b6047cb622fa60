#include "plan/tokenizer_metadata.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

#include "read/json_input.h"
#include "util/error.h"
#include "util/warn.h"

namespace mlx2gguf {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// llama.cpp token types (tokenizer.ggml.token_type); SentencePiece uses the same numbering for its pieces.
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

std::optional<json> load_json(const fs::path& dir, const std::string& name) {
  const fs::path path = dir / name;
  if (!fs::is_regular_file(path)) return std::nullopt;
  return read_json_file(path);
}

std::optional<std::string> load_text(const fs::path& path) {
  if (!fs::is_regular_file(path)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '{}'", path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string utf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// Number of code points of a UTF-8 string (continuation bytes are not counted).
size_t utf8_length(const std::string& s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// The 256 symbols byte-level BPE uses for the bytes 0..255 (printable Latin-1 bytes stand for themselves, the
// others are shifted to U+0100 and up, in byte order).
const std::array<std::string, 256>& byte_level_symbols() {
  static const std::array<std::string, 256> symbols = [] {
    std::array<std::string, 256> out;
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      out[b] = utf8(printable ? b : next++);
    }
    return out;
  }();
  return symbols;
}

bool is_byte_piece(const std::string& s) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return s.size() == 6 && s.compare(0, 3, "<0x") == 0 && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

// ---- pre-tokenizer detection ------------------------------------------------------------------------------------

// Split regexes exactly as they appear in real tokenizer.json files, and llama.cpp's name for each.
struct KnownPre {
  const char* name;
  const char* signature;  // the split regexes, in order, one per line ("ByteLevel" = ByteLevel with use_regex)
};

// llama-bpe: Meta Llama 3 tokenizer.json; qwen2: Qwen3 tokenizer.json (the Qwen2/2.5/3 families share it);
// qwen35: Qwen3.5 tokenizer.json (letters include combining marks \p{M}); tekken: Mistral Nemo tokenizer.json;
// gpt-4o: the o200k-style tokenizer.json regex; gpt-2: a ByteLevel pre-tokenizer that applies its built-in regex.
// The last four are the "original regex from tokenizer.json" llama.cpp documents next to its own implementation
// of each pre-tokenizer.
const KnownPre kKnownPres[] = {
    {"llama-bpe",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"qwen2",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"qwen35",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"tekken",
     R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"gpt-4o",
     R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"gpt-2", "ByteLevel"},
};

// Pre-tokenizers whose llama.cpp implementation keeps whole pre-tokens found in the vocabulary (ignore_merges).
bool pre_ignores_merges(const std::string& pre) { return pre == "llama-bpe" || pre == "tekken"; }

// One line per splitting step of a pre_tokenizer, or nullopt when a step is something llama.cpp cannot mirror.
std::optional<std::vector<std::string>> pre_tokenizer_signature(const json& pre) {
  std::vector<std::string> lines;
  std::vector<const json*> steps;
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array()) {
    for (const auto& step : pre["pretokenizers"]) steps.push_back(&step);
  } else if (pre.is_object()) {
    steps.push_back(&pre);
  } else {
    return std::nullopt;
  }
  for (const json* step : steps) {
    if (!step->is_object()) return std::nullopt;
    const std::string type = step->value("type", "");
    if (type == "Split") {
      const json& pattern = step->value("pattern", json::object());
      if (!pattern.is_object() || !pattern.contains("Regex") || !pattern["Regex"].is_string()) return std::nullopt;
      if (step->value("behavior", "") != "Isolated" || step->value("invert", false)) return std::nullopt;
      lines.push_back(pattern["Regex"].get<std::string>());
    } else if (type == "ByteLevel") {
      // llama.cpp never adds a leading space to the text.
      if (step->value("add_prefix_space", false)) return std::nullopt;
      if (step->value("use_regex", true)) lines.push_back("ByteLevel");
    } else {
      return std::nullopt;
    }
  }
  return lines;
}

bool has_byte_level(const json& node) {
  if (node.is_object()) {
    if (node.value("type", "") == "ByteLevel") return true;
    for (const auto& [key, value] : node.items())
      if (has_byte_level(value)) return true;
  } else if (node.is_array()) {
    for (const auto& value : node)
      if (has_byte_level(value)) return true;
  }
  return false;
}

// ---- the vocabulary ---------------------------------------------------------------------------------------------

struct Vocab {
  std::string model;  // "gpt2" or "llama"
  std::string pre;
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<float> scores;         // "llama" only
  std::vector<std::string> merges;   // "gpt2" only
  std::optional<bool> add_space_prefix;
  std::optional<std::string> unk_token;
  std::optional<bool> add_bos, add_eos;  // what the tokenizer file itself implies
  std::string template_bos, template_eos;  // special tokens the tokenizer.json post-processor adds
  std::optional<bool> remove_extra_whitespaces;
  // Special ids a SentencePiece model declares (trainer_spec), used when no config names them.
  std::optional<int64_t> model_bos, model_eos, model_unk, model_pad;
  std::string source;                    // file the vocabulary came from, for messages
};

std::string token_content(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  return {};
}

// No real vocabulary comes near this (the largest have about 262k tokens); it bounds the token list when there is
// no embedding matrix to compare with.
constexpr int64_t kMaxTokens = int64_t{1} << 24;

// Refuses a token id the token list could not hold, before a list of that size is allocated: ids index the rows
// of the embedding matrix (`vocab_rows`, when known).
void check_token_id(int64_t id, int64_t vocab_rows, const fs::path& path, const std::string& what) {
  if (id < 0) fail("'{}': {} has the negative id {}", path.string(), what, id);
  if (vocab_rows > 0 && id >= vocab_rows)
    fail("'{}': {} has id {}, beyond the {} rows of the model's embedding matrix", path.string(), what, id, vocab_rows);
  if (id >= kMaxTokens) fail("'{}': {} has id {}, beyond any real vocabulary ({} tokens)", path.string(), what, id, kMaxTokens);
}

// Token list from a tokenizer.json: model.vocab, then added_tokens (which may reuse or extend vocab ids).
// Types: base vocabulary NORMAL; special added tokens CONTROL, others USER_DEFINED; id holes UNUSED.
void collect_tokens(const json& tok, const fs::path& path, int64_t vocab_rows, Vocab& vocab, std::vector<bool>& added) {
  const json& model = tok["model"];
  if (!model.contains("vocab") || !model["vocab"].is_object())
    fail("'{}': model.vocab is missing or not an object", path.string());
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      fail("'{}': model.vocab entry '{}' has an invalid id {}", path.string(), text, id.dump());
    const int64_t i = id.get<int64_t>();
    check_token_id(i, vocab_rows, path, fmt::format("model.vocab entry '{}'", text));
    if (by_id.contains(i))
      fail("'{}': id {} is used by two vocabulary entries ('{}' and '{}')", path.string(), i, by_id[i].first, text);
    by_id[i] = {text, kNormal};
  }
  std::set<int64_t> added_ids;
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const auto& entry : tok["added_tokens"]) {
      if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
          !entry.contains("content") || !entry["content"].is_string())
        fail("'{}': malformed added_tokens entry {}", path.string(), entry.dump());
      const int64_t id = entry["id"].get<int64_t>();
      check_token_id(id, vocab_rows, path, fmt::format("added token '{}'", entry["content"].get<std::string>()));
      const bool special = entry.value("special", false);
      by_id[id] = {entry["content"].get<std::string>(), special ? kControl : kUserDefined};
      added_ids.insert(id);
    }
  }
  const int64_t count = by_id.empty() ? 0 : by_id.rbegin()->first + 1;
  vocab.tokens.resize(count);
  vocab.types.assign(count, kUnused);
  added.assign(count, false);
  for (int64_t i = 0; i < count; ++i) vocab.tokens[i] = fmt::format("[PAD{}]", i);
  for (const auto& [id, entry] : by_id) {
    vocab.tokens[id] = entry.first;
    vocab.types[id] = entry.second;
    added[id] = added_ids.contains(id);
  }
}

// Merges as "left right" strings; the pair form [["a","b"], ...] is joined the same way, with any space inside a
// part written as U+0120 so the single separator stays unambiguous.
std::vector<std::string> collect_merges(const json& model, const fs::path& path) {
  std::vector<std::string> merges;
  if (!model.contains("merges")) return merges;
  const json& list = model["merges"];
  if (!list.is_array()) fail("'{}': model.merges is not a list", path.string());
  merges.reserve(list.size());
  const std::string space_symbol = utf8(0x120);
  auto escape = [&](std::string part) {
    std::string out;
    for (char c : part) {
      if (c == ' ')
        out += space_symbol;
      else
        out += c;
    }
    return out;
  };
  for (const auto& m : list) {
    if (m.is_string()) {
      merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.push_back(escape(m[0].get<std::string>()) + " " + escape(m[1].get<std::string>()));
    } else {
      fail("'{}': malformed merge {}", path.string(), m.dump());
    }
  }
  return merges;
}

// add_bos / add_eos as the tokenizer.json post-processor applies them when encoding a single text.
void post_processor_flags(const json& post, const std::string& bos, const std::string& eos, Vocab& vocab) {
  if (post.is_null()) {
    vocab.add_bos = false;
    vocab.add_eos = false;
    return;
  }
  if (!post.is_object()) return;
  const std::string type = post.value("type", "");
  if (type == "Sequence" && post.contains("processors") && post["processors"].is_array()) {
    bool found = false;
    for (const auto& p : post["processors"]) {
      if (p.is_object() && p.value("type", "") == "TemplateProcessing") {
        post_processor_flags(p, bos, eos, vocab);
        found = true;
      }
    }
    if (!found) {
      vocab.add_bos = false;
      vocab.add_eos = false;
    }
    return;
  }
  if (type == "TemplateProcessing") {
    const json single = post.value("single", json::array());
    auto special_at = [&](size_t index) -> std::string {
      if (!single.is_array() || index >= single.size()) return {};
      const json& item = single[index];
      if (item.is_object() && item.contains("SpecialToken")) return item["SpecialToken"].value("id", "");
      return {};
    };
    const size_t n = single.is_array() ? single.size() : 0;
    const std::string first = special_at(0);
    const std::string last = n > 0 ? special_at(n - 1) : std::string();
    vocab.add_bos = !first.empty() && (bos.empty() || first == bos);
    vocab.add_eos = n > 1 && !last.empty() && (eos.empty() || last == eos);
    if (*vocab.add_bos) vocab.template_bos = first;
    if (*vocab.add_eos) vocab.template_eos = last;
    if (!first.empty() && !bos.empty() && first != bos)
      warn(fmt::format("the tokenizer.json post-processor starts with '{}', not the BOS token '{}': not adding BOS",
                       first, bos));
    return;
  }
  if (type == "ByteLevel") {  // only fixes offsets, adds nothing
    vocab.add_bos = false;
    vocab.add_eos = false;
  }
}

// Score of each token for llama.cpp's SentencePiece-style tokenizer, which repeatedly joins the adjacent pair
// whose concatenation is the highest-scoring token. A BPE tokenizer applies the lowest-rank merge first, so a
// token scores minus the rank of the first merge producing it: earlier merges win, as in the BPE model. Tokens
// no merge produces: single characters and byte/special pieces never result from joining two symbols (0); longer
// ones rank below every merge so they are only formed when nothing else applies.
std::vector<float> merge_rank_scores(const Vocab& vocab, const std::vector<std::string>& merges) {
  std::unordered_map<std::string, size_t> rank_of;
  rank_of.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& m = merges[r];
    const size_t sep = m.find(' ', 1);
    if (sep == std::string::npos) continue;
    std::string joined = m.substr(0, sep) + m.substr(sep + 1);
    rank_of.emplace(std::move(joined), r);  // keeps the first (lowest) rank
  }
  std::vector<float> scores(vocab.tokens.size(), 0.0f);
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    auto it = rank_of.find(vocab.tokens[i]);
    if (it != rank_of.end())
      scores[i] = -static_cast<float>(it->second + 1);
    else if (vocab.types[i] == kNormal && utf8_length(vocab.tokens[i]) > 1)
      scores[i] = -static_cast<float>(merges.size() + 1);
  }
  return scores;
}

Vocab vocab_from_tokenizer_json(const fs::path& path, const json& tok, const json& tokenizer_config,
                                const TokenizerOptions& options, int64_t vocab_rows) {
  Vocab vocab;
  vocab.source = path.string();
  if (!tok.is_object() || !tok.contains("model") || !tok["model"].is_object())
    fail("'{}' has no tokenizer model", path.string());
  const json& model = tok["model"];
  std::string type = model.value("type", "");
  if (type.empty() && model.contains("merges")) type = "BPE";
  if (type != "BPE")
    fail("'{}': the {} tokenizer model is not supported (only BPE tokenizers convert to GGUF here)", path.string(),
         type.empty() ? std::string("untyped") : type);

  std::vector<bool> added;
  collect_tokens(tok, path, vocab_rows, vocab, added);
  std::vector<std::string> merges = collect_merges(model, path);
  if (model.contains("unk_token") && model["unk_token"].is_string()) vocab.unk_token = model["unk_token"].get<std::string>();

  const bool byte_fallback = model.value("byte_fallback", false);
  const json pre = tok.value("pre_tokenizer", json());
  if (byte_fallback && !has_byte_level(pre)) {
    // SentencePiece-style BPE: pieces keep their U+2581 word marks and unknown text falls back to <0xXX> bytes.
    vocab.model = "llama";
    vocab.pre = "default";
    for (size_t i = 0; i < vocab.tokens.size(); ++i) {
      if (vocab.types[i] == kNormal && is_byte_piece(vocab.tokens[i])) vocab.types[i] = kByte;
      if (vocab.unk_token && vocab.tokens[i] == *vocab.unk_token) vocab.types[i] = kUnknown;
    }
    vocab.scores = merge_rank_scores(vocab, merges);
    // The word-start mark is prepended either by a Prepend normalizer or by a Metaspace pre-tokenizer.
    bool prefix = false;
    const json normalizer = tok.value("normalizer", json());
    auto scan_normalizer = [&](const json& n) {
      if (n.is_object() && n.value("type", "") == "Prepend" && n.value("prepend", "") == "\u2581") prefix = true;
    };
    if (normalizer.is_object() && normalizer.value("type", "") == "Sequence") {
      for (const auto& n : normalizer.value("normalizers", json::array())) scan_normalizer(n);
    } else {
      scan_normalizer(normalizer);
    }
    auto scan_pre = [&](const json& p) {
      if (p.is_object() && p.value("type", "") == "Metaspace") {
        const std::string scheme = p.value("prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never");
        if (scheme != "never") prefix = true;
        if (scheme == "first")
          warn(fmt::format("'{}': Metaspace prepend_scheme 'first' adds the word mark only at the start of the text; "
                           "llama.cpp also adds it after each special token",
                           path.string()));
      }
    };
    if (pre.is_object() && pre.value("type", "") == "Sequence") {
      for (const auto& p : pre.value("pretokenizers", json::array())) scan_pre(p);
    } else {
      scan_pre(pre);
    }
    vocab.add_space_prefix = prefix;
  } else {
    if (!has_byte_level(pre) && !has_byte_level(tok.value("decoder", json())))
      fail("'{}': BPE tokenizer without byte-level encoding or byte fallback is not supported", path.string());
    vocab.model = "gpt2";
    vocab.merges = std::move(merges);
    if (vocab.merges.empty()) fail("'{}': model.merges is empty", path.string());
    // llama.cpp maps every input byte to its symbol token; all 256 must exist.
    std::unordered_map<std::string, size_t> index;
    for (size_t i = 0; i < vocab.tokens.size(); ++i) index.emplace(vocab.tokens[i], i);
    const auto& symbols = byte_level_symbols();
    for (int b = 0; b < 256; ++b)
      if (!index.contains(symbols[b]))
        fail("'{}': the byte-level vocabulary has no token for byte 0x{:02X} ('{}')", path.string(), b, symbols[b]);

    if (options.pre_override) {
      vocab.pre = *options.pre_override;
    } else {
      const auto signature = pre_tokenizer_signature(pre);
      std::optional<std::string> name = detect_bpe_pre_tokenizer(pre);
      if (!name) {
        std::string shown = pre.is_null() ? std::string("null") : pre.dump();
        if (shown.size() > 600) shown = shown.substr(0, 600) + "...";
        fail("'{}': unknown pre-tokenizer {}; llama.cpp needs a pre-tokenizer name (tokenizer.ggml.pre) "
             "implementing exactly these split rules. If you know which one does, pass --tokenizer-pre NAME "
             "(e.g. llama-bpe, qwen2, qwen35, tekken, gpt-4o, gpt-2)",
             path.string(), shown);
      }
      vocab.pre = *name;
      const bool ignore_merges = model.value("ignore_merges", false);
      if (ignore_merges != pre_ignores_merges(vocab.pre))
        warn(fmt::format("'{}': ignore_merges is {} but llama.cpp's '{}' pre-tokenizer assumes {}", path.string(),
                         ignore_merges, vocab.pre, pre_ignores_merges(vocab.pre)));
    }
  }

  const std::string bos = token_content(tokenizer_config.value("bos_token", json()));
  const std::string eos = token_content(tokenizer_config.value("eos_token", json()));
  if (tok.contains("post_processor")) post_processor_flags(tok["post_processor"], bos, eos, vocab);
  return vocab;
}

// ---- SentencePiece tokenizer.model (protobuf) --------------------------------------------------------------------

// Minimal protobuf wire-format reader for the few ModelProto fields needed: pieces (1: piece 1, score 2,
// type 3), trainer_spec (2: model_type 3), normalizer_spec (3: add_dummy_prefix 3, remove_extra_whitespaces 4).
class ProtoReader {
 public:
  ProtoReader(const char* data, size_t size, const fs::path& path) : p_(data), end_(data + size), path_(path) {}
  bool done() const { return p_ >= end_; }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) bad();
      const uint8_t byte = static_cast<uint8_t>(*p_++);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    bad();
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) bad();
    std::string_view out(p_, n);
    p_ += n;
    return out;
  }
  float fixed32_float() {
    if (end_ - p_ < 4) bad();
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += 4;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: advance(8); break;
      case 2: bytes(); break;
      case 5: advance(4); break;
      default: bad();
    }
  }

 private:
  void advance(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) bad();
    p_ += n;
  }
  [[noreturn]] void bad() const { fail("'{}' is not a valid SentencePiece model (truncated or corrupt protobuf)", path_.string()); }
  const char* p_;
  const char* end_;
  const fs::path& path_;
};

Vocab vocab_from_sentencepiece(const fs::path& path) {
  Vocab vocab;
  vocab.source = path.string();
  vocab.model = "llama";
  vocab.pre = "default";
  const std::string data = *load_text(path);
  ProtoReader top(data.data(), data.size(), path);
  bool add_dummy_prefix = true, remove_extra_whitespaces = true;
  int model_type = 1;
  int64_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;  // SentencePiece's defaults
  while (!top.done()) {
    const uint64_t key = top.varint();
    const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (field == 1 && wire == 2) {
      const std::string_view piece_bytes = top.bytes();
      ProtoReader piece(piece_bytes.data(), piece_bytes.size(), path);
      std::string text;
      float score = 0.0f;
      int32_t type = kNormal;
      while (!piece.done()) {
        const uint64_t k = piece.varint();
        const int f = static_cast<int>(k >> 3), w = static_cast<int>(k & 7);
        if (f == 1 && w == 2)
          text = std::string(piece.bytes());
        else if (f == 2 && w == 5)
          score = piece.fixed32_float();
        else if (f == 3 && w == 0)
          type = static_cast<int32_t>(piece.varint());
        else
          piece.skip(w);
      }
      vocab.tokens.push_back(std::move(text));
      vocab.scores.push_back(score);
      vocab.types.push_back(type >= kNormal && type <= kByte ? type : kNormal);
    } else if ((field == 2 || field == 3) && wire == 2) {
      const std::string_view spec_bytes = top.bytes();
      ProtoReader spec(spec_bytes.data(), spec_bytes.size(), path);
      while (!spec.done()) {
        const uint64_t k = spec.varint();
        const int f = static_cast<int>(k >> 3), w = static_cast<int>(k & 7);
        // int32 fields arrive as 64-bit varints (negative values sign-extended).
        auto int32 = [&] { return static_cast<int64_t>(static_cast<int32_t>(spec.varint())); };
        if (field == 2 && f == 3 && w == 0)
          model_type = static_cast<int>(int32());
        else if (field == 2 && f == 40 && w == 0)
          unk_id = int32();
        else if (field == 2 && f == 41 && w == 0)
          bos_id = int32();
        else if (field == 2 && f == 42 && w == 0)
          eos_id = int32();
        else if (field == 2 && f == 43 && w == 0)
          pad_id = int32();
        else if (field == 3 && f == 3 && w == 0)
          add_dummy_prefix = spec.varint() != 0;
        else if (field == 3 && f == 4 && w == 0)
          remove_extra_whitespaces = spec.varint() != 0;
        else
          spec.skip(w);
      }
    } else {
      top.skip(wire);
    }
  }
  if (vocab.tokens.empty()) fail("'{}' holds no SentencePiece pieces", path.string());
  if (model_type != 1 && model_type != 2)
    fail("'{}': SentencePiece model type {} is not supported (only BPE and unigram)", path.string(), model_type);
  if (model_type == 1)
    warn(fmt::format("'{}' is a unigram SentencePiece model; llama.cpp tokenizes it with score-ordered merges, "
                     "which can differ from SentencePiece on some inputs",
                     path.string()));
  vocab.add_space_prefix = add_dummy_prefix;
  vocab.remove_extra_whitespaces = remove_extra_whitespaces;
  if (remove_extra_whitespaces)
    warn(fmt::format("'{}' collapses runs of whitespace; llama.cpp's SentencePiece tokenizer keeps them",
                     path.string()));
  const int64_t n = static_cast<int64_t>(vocab.tokens.size());
  auto valid = [&](int64_t id) { return id >= 0 && id < n ? std::optional<int64_t>(id) : std::nullopt; };
  vocab.model_unk = valid(unk_id);
  vocab.model_bos = valid(bos_id);
  vocab.model_eos = valid(eos_id);
  vocab.model_pad = valid(pad_id);
  if (vocab.model_unk) vocab.unk_token = vocab.tokens[*vocab.model_unk];
  return vocab;
}

// Added tokens a SentencePiece folder declares outside tokenizer.model: added_tokens.json ({text: id}) and
// tokenizer_config.json added_tokens_decoder ({id: {content, special}}).
void add_sentencepiece_extras(const fs::path& dir, const json& tokenizer_config, int64_t vocab_rows, Vocab& vocab) {
  std::map<int64_t, std::pair<std::string, int32_t>> extra;
  if (auto added = load_json(dir, "added_tokens.json"); added && added->is_object()) {
    for (const auto& [text, id] : added->items())
      if (id.is_number_integer()) {
        check_token_id(id.get<int64_t>(), vocab_rows, dir / "added_tokens.json", fmt::format("added token '{}'", text));
        extra[id.get<int64_t>()] = {text, kUserDefined};
      }
  }
  if (tokenizer_config.contains("added_tokens_decoder") && tokenizer_config["added_tokens_decoder"].is_object()) {
    for (const auto& [id_text, entry] : tokenizer_config["added_tokens_decoder"].items()) {
      int64_t id = -1;
      try {
        id = std::stoll(id_text);
      } catch (const std::exception&) {
        continue;
      }
      if (id < 0 || !entry.is_object() || !entry.contains("content") || !entry["content"].is_string()) continue;
      check_token_id(id, vocab_rows, dir / "tokenizer_config.json",
                     fmt::format("added_tokens_decoder entry '{}'", entry["content"].get<std::string>()));
      extra[id] = {entry["content"].get<std::string>(), entry.value("special", false) ? kControl : kUserDefined};
    }
  }
  for (const auto& [id, entry] : extra) {
    if (id < static_cast<int64_t>(vocab.tokens.size())) {
      if (vocab.tokens[id] != entry.first)
        warn(fmt::format("added token '{}' has id {}, which tokenizer.model already gives to '{}': keeping the piece",
                         entry.first, id, vocab.tokens[id]));
      continue;
    }
    while (static_cast<int64_t>(vocab.tokens.size()) < id) {
      vocab.tokens.push_back(fmt::format("[PAD{}]", vocab.tokens.size()));
      vocab.types.push_back(kUnused);
      vocab.scores.push_back(0.0f);
    }
    vocab.tokens.push_back(entry.first);
    vocab.types.push_back(entry.second);
    vocab.scores.push_back(0.0f);
  }
}

// ---- special tokens ---------------------------------------------------------------------------------------------

std::optional<int64_t> integer(const json& node, const std::string& key) {
  if (node.is_object() && node.contains(key) && node[key].is_number_integer()) return node[key].get<int64_t>();
  return std::nullopt;
}

// Integer ids of a key that may hold one id or a list of ids.
std::vector<int64_t> id_list(const json& node, const std::string& key) {
  std::vector<int64_t> out;
  if (!node.is_object() || !node.contains(key)) return out;
  const json& v = node[key];
  if (v.is_number_integer()) out.push_back(v.get<int64_t>());
  if (v.is_array())
    for (const auto& e : v)
      if (e.is_number_integer()) out.push_back(e.get<int64_t>());
  return out;
}

// Texts llama.cpp itself treats as end of turn / end of message.
bool is_eot_text(const std::string& t) {
  return t == "<|eot_id|>" || t == "<|im_end|>" || t == "<|end|>" || t == "<end_of_turn>" || t == "<|eot|>" ||
         t == "<EOT>" || t == "<|endofturn|>";
}
// Texts llama.cpp adds to its end-of-generation set by text alone (src/llama-vocab.cpp).
bool is_eog_text(const std::string& t) {
  static const std::set<std::string> texts = {
      "<|eot_id|>", "<|im_end|>",     "<|end|>",         "<|return|>",      "<|call|>", "<|flush|>",
      "<|calls|>",  "<end_of_turn>",  "<|endoftext|>",   "</s>",            "<|eom_id|>", "<EOT>",
      "_<EOT>",     "[EOT]",          "[EOS]",           "<|end_of_text|>", "<end_of_utterance>",
      "<eos>",      "<turn|>",        "<|tool_response>", "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
  };
  return texts.contains(t);
}

void add_special_ids(const fs::path& dir, const json& config, const json& tokenizer_config, const Vocab& vocab,
                     GgufMetadata& out) {
  std::unordered_map<std::string, int64_t> id_of;
  id_of.reserve(vocab.tokens.size());
  for (size_t i = 0; i < vocab.tokens.size(); ++i) id_of.emplace(vocab.tokens[i], static_cast<int64_t>(i));
  const int64_t n = static_cast<int64_t>(vocab.tokens.size());
  const json& text_config = config.contains("text_config") && config["text_config"].is_object() ? config["text_config"] : config;
  const json generation = load_json(dir, "generation_config.json").value_or(json::object());

  auto by_text = [&](const std::string& kind) -> std::optional<int64_t> {
    const std::string text = token_content(tokenizer_config.value(kind + "_token", json()));
    if (text.empty()) return std::nullopt;
    auto it = id_of.find(text);
    if (it == id_of.end()) {
      warn(fmt::format("tokenizer_config.json {}_token '{}' is not in the vocabulary: ignored", kind, text));
      return std::nullopt;
    }
    return it->second;
  };
  auto by_config = [&](const std::string& kind) -> std::optional<int64_t> {
    for (const json* node : {&text_config, &config}) {
      if (auto id = integer(*node, kind + "_token_id")) return id;
    }
    return std::nullopt;
  };
  auto set_id = [&](const std::string& key, std::optional<int64_t> id) {
    if (!id) return;
    if (*id < 0 || *id >= n) {
      warn(fmt::format("{} = {} is outside the vocabulary (0..{}): not written", key, *id, n - 1));
      return;
    }
    out.set(key, GgufValue::u32(static_cast<uint32_t>(*id)));
  };

  auto by_token = [&](const std::string& text) -> std::optional<int64_t> {
    if (text.empty()) return std::nullopt;
    auto it = id_of.find(text);
    return it == id_of.end() ? std::nullopt : std::optional<int64_t>(it->second);
  };
  std::optional<int64_t> bos = by_text("bos");
  if (!bos) bos = by_config("bos");
  if (!bos) bos = by_token(vocab.template_bos);
  if (!bos) bos = vocab.model_bos;
  std::optional<int64_t> unk = by_text("unk");
  if (!unk && vocab.unk_token) {
    auto it = id_of.find(*vocab.unk_token);
    if (it != id_of.end()) unk = it->second;
  }
  if (!unk) unk = vocab.model_unk;
  std::optional<int64_t> pad = by_text("pad");
  if (!pad) pad = by_config("pad");
  if (!pad) pad = vocab.model_pad;

  // EOS: tokenizer_config's eos_token is what chat templates and tokenization use; generation_config.json (or
  // config.json) may list several ids that all stop generation. llama.cpp stores one eos id plus eot/eom ids, and
  // adds tokens to its end-of-generation set by their text (<|eot_id|>, <|im_end|>, <|endoftext|>, ...).
  std::vector<int64_t> eos_list = id_list(generation, "eos_token_id");
  for (const json* node : {&text_config, &config})
    if (eos_list.empty()) eos_list = id_list(*node, "eos_token_id");
  std::optional<int64_t> eos = by_text("eos");
  if (!eos && !eos_list.empty()) eos = eos_list.front();
  if (!eos) eos = by_token(vocab.template_eos);
  if (!eos) eos = vocab.model_eos;
  if (!eos && vocab.model == "llama") eos = by_token("</s>");

  // EOT: an id from the eos list whose text marks the end of a turn, else such a token of the vocabulary.
  auto text_of = [&](int64_t id) { return id >= 0 && id < n ? vocab.tokens[id] : std::string(); };
  std::optional<int64_t> eot, eom;
  for (int64_t id : eos_list)
    if (!eot && id != eos && is_eot_text(text_of(id))) eot = id;
  if (!eot) {
    for (const char* text : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"}) {
      auto it = id_of.find(text);
      if (it != id_of.end() && it->second != eos) {
        eot = it->second;
        break;
      }
    }
  }
  if (auto it = id_of.find("<|eom_id|>"); it != id_of.end()) eom = it->second;
  // Other ids of the eos list llama.cpp would not recognise by their text take the remaining eot / eom slots.
  for (int64_t id : eos_list) {
    if (id == eos || id == eot || id == eom || is_eog_text(text_of(id))) continue;
    if (!eot)
      eot = id;
    else if (!eom)
      eom = id;
    else
      warn(fmt::format("eos id {} ('{}') from generation_config.json cannot be stored: llama.cpp keeps one eos, "
                       "one eot and one eom id",
                       id, text_of(id)));
  }

  set_id("tokenizer.ggml.bos_token_id", bos);
  set_id("tokenizer.ggml.eos_token_id", eos);
  set_id("tokenizer.ggml.eot_token_id", eot);
  set_id("tokenizer.ggml.eom_token_id", eom);
  set_id("tokenizer.ggml.unknown_token_id", unk);
  set_id("tokenizer.ggml.padding_token_id", pad);
  std::optional<int64_t> sep = by_text("sep"), cls = by_text("cls"), mask = by_text("mask");
  set_id("tokenizer.ggml.seperator_token_id", sep);
  set_id("tokenizer.ggml.cls_token_id", cls);
  set_id("tokenizer.ggml.mask_token_id", mask);

  // add_bos / add_eos: the tokenizer.json post-processor decides when there is one (as the tokenizers library and
  // transformers do); else tokenizer_config.json's flags; else SentencePiece's defaults (BOS yes, EOS no).
  auto flag = [&](const std::string& key) -> std::optional<bool> {
    if (tokenizer_config.contains(key) && tokenizer_config[key].is_boolean()) return tokenizer_config[key].get<bool>();
    return std::nullopt;
  };
  bool add_bos = vocab.add_bos ? *vocab.add_bos : flag("add_bos_token").value_or(vocab.model == "llama");
  bool add_eos = vocab.add_eos ? *vocab.add_eos : flag("add_eos_token").value_or(false);
  if (add_bos && !bos) {
    warn("the tokenizer adds a BOS token but none is defined: not adding BOS");
    add_bos = false;
  }
  if (add_eos && !eos) {
    warn("the tokenizer adds an EOS token but none is defined: not adding EOS");
    add_eos = false;
  }
  out.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(add_bos));
  out.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(add_eos));
}

// ---- chat templates ---------------------------------------------------------------------------------------------

// Chat templates, in the precedence transformers applies when loading a tokenizer: template files
// (chat_template.jinja, additional_chat_templates/*.jinja) replace tokenizer_config.json's chat_template, which
// may be one string or a list of {name, template}; chat_template.json (a processor file) is the last resort.
void add_chat_templates(const fs::path& dir, const json& tokenizer_config, GgufMetadata& out) {
  std::map<std::string, std::string> templates;
  if (auto text = load_text(dir / "chat_template.jinja")) templates["default"] = *text;
  const fs::path extra_dir = dir / "additional_chat_templates";
  if (fs::is_directory(extra_dir)) {
    for (const auto& entry : fs::directory_iterator(extra_dir)) {
      if (entry.path().extension() != ".jinja") continue;
      templates[entry.path().stem().string()] = *load_text(entry.path());
    }
  }
  auto from_value = [&](const json& value, const std::string& file) {
    if (value.is_string()) {
      templates["default"] = value.get<std::string>();
    } else if (value.is_array()) {
      for (const auto& item : value) {
        if (!item.is_object() || !item.contains("name") || !item["name"].is_string() || !item.contains("template") ||
            !item["template"].is_string())
          fail("'{}': chat_template list entries must be {{\"name\": ..., \"template\": ...}}", (dir / file).string());
        templates[item["name"].get<std::string>()] = item["template"].get<std::string>();
      }
    } else if (!value.is_null()) {
      fail("'{}': chat_template must be a string or a list of named templates", (dir / file).string());
    }
  };
  if (templates.empty() && tokenizer_config.contains("chat_template"))
    from_value(tokenizer_config["chat_template"], "tokenizer_config.json");
  if (templates.empty()) {
    if (auto processor = load_json(dir, "chat_template.json"); processor && processor->is_object())
      from_value(processor->value("chat_template", json()), "chat_template.json");
  }
  std::vector<std::string> names;
  for (const auto& [name, text] : templates) {
    if (name == "default") {
      out.set("tokenizer.chat_template", GgufValue::str(text));
    } else {
      out.set("tokenizer.chat_template." + name, GgufValue::str(text));
      names.push_back(name);
    }
  }
  if (!names.empty()) out.set("tokenizer.chat_templates", GgufValue::str_array(names));
}

}  // namespace

std::optional<std::string> detect_bpe_pre_tokenizer(const json& pre_tokenizer) {
  const auto lines = pre_tokenizer_signature(pre_tokenizer);
  if (!lines || lines->empty()) return std::nullopt;
  std::string signature;
  for (size_t i = 0; i < lines->size(); ++i) signature += (i ? "\n" : "") + (*lines)[i];
  for (const KnownPre& known : kKnownPres)
    if (signature == known.signature) return std::string(known.name);
  return std::nullopt;
}

void add_tokenizer_metadata(const fs::path& dir, const json& config, int64_t vocab_rows,
                            const TokenizerOptions& options, GgufMetadata& out) {
  const json tokenizer_config = load_json(dir, "tokenizer_config.json").value_or(json::object());
  if (!tokenizer_config.is_object()) fail("'{}' is not a JSON object", (dir / "tokenizer_config.json").string());

  Vocab vocab;
  if (auto tok = load_json(dir, "tokenizer.json")) {
    vocab = vocab_from_tokenizer_json(dir / "tokenizer.json", *tok, tokenizer_config, options, vocab_rows);
  } else if (fs::is_regular_file(dir / "tokenizer.model")) {
    vocab = vocab_from_sentencepiece(dir / "tokenizer.model");
    add_sentencepiece_extras(dir, tokenizer_config, vocab_rows, vocab);
  } else {
    fail("'{}' has no tokenizer: expected tokenizer.json (or a SentencePiece tokenizer.model)", dir.string());
  }

  const int64_t count = static_cast<int64_t>(vocab.tokens.size());
  if (vocab_rows > 0 && count > vocab_rows)
    fail("'{}' defines {} tokens but the embedding matrix has only {} rows", vocab.source, count, vocab_rows);
  for (int64_t i = count; i < vocab_rows; ++i) {
    vocab.tokens.push_back(fmt::format("[PAD{}]", i));
    vocab.types.push_back(kUnused);
    if (!vocab.scores.empty()) vocab.scores.push_back(0.0f);
  }
  // llama.cpp requires every token text to be unique (it maps texts back to ids).
  {
    std::unordered_map<std::string, size_t> seen;
    seen.reserve(vocab.tokens.size());
    for (size_t i = 0; i < vocab.tokens.size(); ++i) {
      if (vocab.tokens[i].empty()) continue;  // llama.cpp renames empty tokens to [EMPTY_<id>]
      auto [it, inserted] = seen.emplace(vocab.tokens[i], i);
      if (!inserted)
        fail("'{}': token text '{}' is used by ids {} and {}; llama.cpp needs unique token texts", vocab.source,
             vocab.tokens[i], it->second, i);
    }
  }

  out.set("tokenizer.ggml.model", GgufValue::str(vocab.model));
  out.set("tokenizer.ggml.pre", GgufValue::str(vocab.pre));
  out.set("tokenizer.ggml.tokens", GgufValue::str_array(vocab.tokens));
  if (!vocab.scores.empty()) out.set("tokenizer.ggml.scores", GgufValue::f32_array(vocab.scores));
  out.set("tokenizer.ggml.token_type", GgufValue::i32_array(vocab.types));
  if (vocab.model == "gpt2") out.set("tokenizer.ggml.merges", GgufValue::str_array(vocab.merges));
  if (vocab.add_space_prefix) out.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(*vocab.add_space_prefix));
  if (vocab.remove_extra_whitespaces)
    out.set("tokenizer.ggml.remove_extra_whitespaces", GgufValue::boolean(*vocab.remove_extra_whitespaces));
  add_special_ids(dir, config, tokenizer_config, vocab, out);
  add_chat_templates(dir, tokenizer_config, out);
}

void add_tokenizer_metadata(const ModelFolder& folder, int64_t vocab_rows, const TokenizerOptions& options,
                            GgufMetadata& out) {
  add_tokenizer_metadata(folder.dir(), folder.config(), vocab_rows, options, out);
}

}  // namespace mlx2gguf
