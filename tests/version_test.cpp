// `mlx2gguf --version` and the man page made from the program's help.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>

#include "e2e_support.h"
#include "test_paths.h"

namespace {

std::string command_output(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return output;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  ::pclose(pipe);
  return output;
}

TEST(Version, NamesTheReleaseAndTheSourceRevision) {
  const auto result = e2e::run_mlx2gguf({"--version"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // The revision as git itself names the checkout the tests were built from.
  std::string head = command_output("git -C '" + test_paths::source_dir().string() + "' rev-parse --short=12 HEAD");
  while (!head.empty() && head.back() == '\n') head.pop_back();
  ASSERT_EQ(head.size(), 12u) << head;
  const std::regex expected("mlx2gguf " + std::regex_replace(test_paths::project_version(), std::regex(R"(\.)"), R"(\.)") +
                            R"( \(revision )" + head + R"((-dirty)?\)\n)");
  EXPECT_TRUE(std::regex_match(result.output, expected)) << result.output;
}

TEST(Version, ManPageCarriesEveryCommandAndOptionOfTheHelp) {
  std::ifstream in(test_paths::man_page());
  ASSERT_TRUE(in) << "no man page at " << test_paths::man_page().string();
  std::stringstream text;
  text << in.rdbuf();
  const std::string page = text.str();
  EXPECT_EQ(page.rfind(".TH MLX2GGUF 1 ", 0), 0u) << page.substr(0, 200);
  EXPECT_NE(page.find("\"mlx2gguf " + test_paths::project_version() + " (revision "), std::string::npos) << page.substr(0, 200);
  for (const char* section : {"\n.SH NAME\n", "\n.SH SYNOPSIS\n", "\n.SH DESCRIPTION\n", "\n.SH CONVERT\n",
                              "\n.SH CONVERT-ADAPTER\n", "\n.SH INSPECT\n", "\n.SH ENVIRONMENT\n"})
    EXPECT_NE(page.find(section), std::string::npos) << section;
  // Every option the help of each command names is in the page.
  for (const char* command : {"convert", "convert-adapter", "inspect"}) {
    const auto help = e2e::run_mlx2gguf({command, "--help"});
    ASSERT_EQ(help.exit_code, 0);
    const std::regex option(R"([\s,](--[a-z][a-z-]+))");
    int options = 0;
    for (auto it = std::sregex_iterator(help.output.begin(), help.output.end(), option); it != std::sregex_iterator(); ++it, ++options)
      EXPECT_NE(page.find((*it)[1].str()), std::string::npos) << command << " " << (*it)[1];
    EXPECT_GE(options, 2) << help.output;
  }
  // No line may start a roff request by accident: every line that starts with '.' is one of ours.
  std::istringstream lines(page);
  std::string line;
  const std::regex request(R"(\.(TH|SH|TP|B|I|nf|fi)( .*)?)");
  while (std::getline(lines, line))
    if (!line.empty() && (line[0] == '.' || line[0] == '\'')) {
      EXPECT_TRUE(std::regex_match(line, request)) << line;
    }
}

}  // namespace
