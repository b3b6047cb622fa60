// Every input a fuzz target ever broke (a crash, a sanitizer report, a leak, an allocation beyond reason, an
// exception other than mlx2gguf::Error), kept in tests/data/fuzz-regressions/<target>/ and replayed through the same
// readers the target drives (fuzz/inputs.h). Each must now be refused with one mlx2gguf::Error naming what is
// wrong; an input whose name ends in ".accepted" is a valid file that once broke a reader and must now be read.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "inputs.h"
#include "test_paths.h"
#include "util/error.h"

namespace {

namespace fs = std::filesystem;

const fs::path kRegressions = test_paths::source_dir() / "tests" / "data" / "fuzz-regressions";

struct KeptInput {
  std::string target;
  fs::path file;
};

std::vector<KeptInput> kept_inputs() {
  std::vector<KeptInput> inputs;
  for (const auto& target : mlx2gguf::fuzz::targets()) {
    if (!fs::is_directory(kRegressions / target.name)) continue;
    for (const auto& entry : fs::directory_iterator(kRegressions / target.name))
      if (entry.is_regular_file()) inputs.push_back({target.name, entry.path()});
  }
  std::sort(inputs.begin(), inputs.end(), [](const KeptInput& a, const KeptInput& b) { return a.file < b.file; });
  return inputs;
}

std::string input_name(const testing::TestParamInfo<KeptInput>& info) {
  std::string name = info.param.target + "_" + info.param.file.filename().string();
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

class FuzzRegression : public testing::TestWithParam<KeptInput> {};

TEST_P(FuzzRegression, IsRefusedWithOneClearErrorOrReadWhenValid) {
  const KeptInput& input = GetParam();
  std::ifstream in(input.file, std::ios::binary);
  ASSERT_TRUE(in) << input.file;
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const auto& targets = mlx2gguf::fuzz::targets();
  const auto target = std::find_if(targets.begin(), targets.end(), [&](const auto& t) { return t.name == input.target; });
  ASSERT_NE(target, targets.end());

  std::string error;
  try {
    target->run(bytes);
  } catch (const mlx2gguf::Error& e) {
    error = e.what();
  }
  if (input.file.extension() == ".accepted") {
    EXPECT_EQ(error, "") << input.file;
  } else {
    EXPECT_NE(error, "") << input.file << " was accepted";
    std::cout << "[ REFUSED ] " << input.target << "/" << input.file.filename().string() << ": " << error.substr(0, 300)
              << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(KeptInputs, FuzzRegression, testing::ValuesIn(kept_inputs()), input_name);

TEST(FuzzRegressions, AreKeptForEveryTargetThatFoundOne) {
  // The folder exists once the fuzzers found anything; an empty or misplaced folder would test nothing.
  EXPECT_FALSE(kept_inputs().empty()) << kRegressions;
}

}  // namespace
