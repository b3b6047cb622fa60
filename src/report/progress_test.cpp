#include "report/progress.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mlx2gguf {
namespace {

constexpr uint64_t kMiB = 1048576;

TEST(Progress, LineShowsBytesThroughputAndTimeLeft) {
  // 25 of 100 MiB in 5 s: 5 MiB/s, 75 MiB left → 15 s.
  EXPECT_EQ(progress_line(25 * kMiB, 100 * kMiB, 5.0), "writing tensors  25% (25.0 / 100.0 MiB, 5.0 MiB/s, ETA 0:15)");
  // Done: the elapsed time instead of an ETA.
  EXPECT_EQ(progress_line(100 * kMiB, 100 * kMiB, 62.0), "writing tensors 100% (100.0 / 100.0 MiB, 1.6 MiB/s, 1:02 elapsed)");
  // Nothing measured yet: no rate, no ETA.
  EXPECT_EQ(progress_line(0, 100 * kMiB, 0.0), "writing tensors   0% (0.0 / 100.0 MiB, 0.0 MiB/s, ETA --:--)");
}

TEST(Progress, DurationsAreMinutesSecondsOrHours) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(59.4), "0:59");
  EXPECT_EQ(format_duration(754), "12:34");
  EXPECT_EQ(format_duration(3723), "1:02:03");
}

std::vector<std::string> run(bool interactive, const std::vector<uint64_t>& chunks, uint64_t total) {
  std::vector<std::string> lines;
  Progress progress([&](const std::string& text) { lines.push_back(text); }, total, interactive);
  for (uint64_t chunk : chunks) progress.advance(chunk);
  progress.finish();
  return lines;
}

TEST(Progress, LogLinesAtEveryTenPercentEndingAtOneHundred) {
  const std::vector<std::string> lines = run(false, std::vector<uint64_t>(40, kMiB / 4), 10 * kMiB);
  ASSERT_EQ(lines.size(), 10u);
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].substr(0, 22), "  writing tensors " + std::string(i == 9 ? "100" : " " + std::to_string(10 * (i + 1))) + "%")
        << lines[i];
    EXPECT_EQ(lines[i].back(), '\n');
  }
}

TEST(Progress, TerminalLineIsRedrawnAndEndsAtOneHundred) {
  // Chunks faster than the redraw interval: the first and the completing one are drawn, then the line ends.
  const std::vector<std::string> lines = run(true, std::vector<uint64_t>(8, kMiB), 8 * kMiB);
  ASSERT_GE(lines.size(), 3u);
  EXPECT_EQ(lines.front().substr(0, 3), "\r  ");
  EXPECT_NE(lines[lines.size() - 2].find("100% (8.0 / 8.0 MiB"), std::string::npos) << lines[lines.size() - 2];
  EXPECT_EQ(lines.back(), "\n");
}

TEST(Progress, FinishReportsCompletionEvenWhenTheTotalWasNeverCounted) {
  // Nothing to write (no tensor bytes): finish() still says 100 %.
  const std::vector<std::string> lines = run(false, {}, 0);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("100%"), std::string::npos) << lines[0];
}

TEST(Progress, SilentWithoutALog) {
  Progress progress(nullptr, 10, false);
  progress.advance(10);
  progress.finish();  // nothing to observe but that it does not call an empty function
}

}  // namespace
}  // namespace mlx2gguf
