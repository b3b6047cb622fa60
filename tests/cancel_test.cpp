// Stopping a conversion: SIGINT or SIGTERM in the middle of writing a model of more than 1 GiB stops the workers,
// removes the temporary file and exits with 130 / 143, leaving the output folder exactly as it was (an existing
// output file included). A disk too small for the output is refused before any tensor is written, leaving nothing.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include "e2e_support.h"
#include "refusal_check.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// build/mlx2gguf running as a child process, its stdout and stderr going to `log`; `file_size_limit` sets
// RLIMIT_FSIZE in the child only.
class Child {
 public:
  Child(const std::vector<std::string>& args, const fs::path& log, std::optional<rlim_t> file_size_limit = {}) {
    // Everything the child needs is prepared before fork: only async-signal-safe calls may follow it.
    strings_ = {test_paths::binary().string()};
    strings_.insert(strings_.end(), args.begin(), args.end());
    for (auto& s : strings_) argv_.push_back(s.data());
    argv_.push_back(nullptr);
    const std::string log_path = log.string();
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) ::_exit(126);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      if (file_size_limit) {
        const rlimit limit{*file_size_limit, *file_size_limit};
        ::setrlimit(RLIMIT_FSIZE, &limit);
      }
      ::execv(argv_[0], argv_.data());
      ::_exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  bool running() {
    if (status_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return !status_;
  }
  // The wait status (as waitpid reports it), or nullopt if the child is still running after `timeout`.
  std::optional<int> wait(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (running() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
    return status_;
  }

 private:
  std::vector<std::string> strings_;
  std::vector<char*> argv_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return fmt::format("wait status {}", status);
}

bool has_partial_file(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().ends_with(".partial")) return true;
  return false;
}

// Names, sizes and modification times of the files of a folder: enough to see that nothing wrote to a 1 GiB model
// without reading it twice.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> lines;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    lines.push_back(fmt::format("{} {} {}", fs::relative(entry.path(), dir).string(),
                                entry.is_regular_file() ? entry.file_size() : 0,
                                entry.last_write_time().time_since_epoch().count()));
  std::sort(lines.begin(), lines.end());
  return lines;
}

// A llama of 9 layers at hidden 2048 (16 query and 8 key/value heads of 128) and MLP 8192, bf16: 566M parameters,
// 1.13 GB of weights. Generated once per test process into the test work dir and removed afterwards.
class Cancel : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = e2e::work_dir() / fmt::format("cancel-{}", ::getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
    mlx2gguf::gen::TinyModelSpec spec;
    spec.model_type = "llama";
    spec.hidden = 2048;
    spec.heads = 16;
    spec.kv_heads = 8;
    spec.intermediate = 8192;
    spec.layers = 9;
    model_ = root_ / "model";
    const auto summary = mlx2gguf::gen::write_tiny_model(spec, model_);
    ASSERT_GE(summary.total_size, uint64_t{1} << 30);
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  // Converts the big model into a fresh folder holding a previous output file, sends `signal_number` once the
  // tensors are being written, and checks the exit status and that the folder is as before.
  void interrupt_with(int signal_number) {
    const fs::path out_dir = root_ / fmt::format("out-{}", signal_number);
    fs::remove_all(out_dir);
    fs::create_directories(out_dir);
    const fs::path out = out_dir / "model.gguf";
    { std::ofstream(out) << e2e::kPreviousOutput; }
    const auto model_before = listing(model_);
    const fs::path log = root_ / fmt::format("log-{}.txt", signal_number);

    // q4_k_m on one thread: long enough (tens of seconds) that the signal surely lands while tensors are written.
    Child child({"convert", model_.string(), "--outfile", out.string(), "--outtype", "q4_k_m", "--threads", "1"}, log);
    ASSERT_GT(child.pid(), 0) << std::strerror(errno);
    const auto deadline = std::chrono::steady_clock::now() + 300s;
    while (child.running() && std::chrono::steady_clock::now() < deadline &&
           !(read_file(log).find("writing tensors") != std::string::npos && has_partial_file(out_dir)))
      std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(child.running()) << "the conversion ended before it could be interrupted:\n" << read_file(log);
    ASSERT_TRUE(has_partial_file(out_dir)) << "no temporary file appeared:\n" << read_file(log);
    ASSERT_EQ(::kill(child.pid(), signal_number), 0);
    const auto status = child.wait(120s);
    ASSERT_TRUE(status) << "still running 120 s after the signal:\n" << read_file(log);

    const std::string output = read_file(log);
    EXPECT_TRUE(WIFEXITED(*status)) << describe(*status) << "\n" << output;
    EXPECT_EQ(WEXITSTATUS(*status), 128 + signal_number) << describe(*status) << "\n" << output;
    EXPECT_NE(output.find(signal_number == SIGINT ? "cancelled by SIGINT" : "cancelled by SIGTERM"), std::string::npos)
        << output;
    EXPECT_EQ(output.find("wrote "), std::string::npos) << output;
    EXPECT_EQ(e2e::entry_names(out_dir), std::vector<std::string>{"model.gguf"});
    EXPECT_EQ(read_file(out), e2e::kPreviousOutput);
    EXPECT_EQ(listing(model_), model_before);
  }

  static fs::path root_, model_;
};

fs::path Cancel::root_, Cancel::model_;

TEST_F(Cancel, SigintStopsTheConversionWithStatus130AndLeavesTheOutputFolderAsItWas) { interrupt_with(SIGINT); }

TEST_F(Cancel, SigtermStopsTheConversionWithStatus143AndLeavesTheOutputFolderAsItWas) { interrupt_with(SIGTERM); }

// A small tmpfs (or, where mounting is not permitted, a file-size limit on the process) as the output's home.
class DiskFull : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = e2e::work_dir() / "disk-full" / testing::UnitTest::GetInstance()->current_test_info()->name();
    if (fs::exists(dir_)) ::umount2(dir_.c_str(), MNT_DETACH);
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "out");
    mounted_ = ::mount("tmpfs", (dir_ / "out").c_str(), "tmpfs", 0, "size=1m") == 0;
    std::printf("[ DISKFULL ] output folder: %s\n",
                mounted_ ? "a 1 MiB tmpfs" : "RLIMIT_FSIZE of 1 MiB (mounting a tmpfs is not permitted here)");
  }
  void TearDown() override {
    if (mounted_) ::umount2((dir_ / "out").c_str(), MNT_DETACH);
    fs::remove_all(dir_);
  }

  // Runs mlx2gguf writing to out/<name> and checks that it is refused for lack of space before any tensor is
  // written, leaving out/ as it was.
  void refused_for_space(std::vector<std::string> args, const std::string& name) {
    const fs::path out = dir_ / "out" / name;
    { std::ofstream(out) << e2e::kPreviousOutput; }
    args.insert(args.end(), {"--outfile", out.string()});
    Child child(args, dir_ / "log.txt", mounted_ ? std::nullopt : std::optional<rlim_t>(1 << 20));
    const auto status = child.wait(120s);
    const std::string output = read_file(dir_ / "log.txt");
    ASSERT_TRUE(status) << output;
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << describe(*status) << "\n" << output;
    EXPECT_NE(output.find("not enough space for '" + out.string() + "'"), std::string::npos) << output;
    // Refused when the space is reserved, before the first tensor: no progress line at all.
    EXPECT_EQ(output.find("writing tensors"), std::string::npos) << output;
    EXPECT_EQ(e2e::entry_names(dir_ / "out"), std::vector<std::string>{name});
    EXPECT_EQ(read_file(out), e2e::kPreviousOutput);
  }

  fs::path dir_;
  bool mounted_ = false;
};

// A 2-layer llama at hidden 512 and MLP 1024: about 8 MiB in f32, eight times what the output folder holds.
TEST_F(DiskFull, ConvertIsRefusedBeforeWritingAndLeavesNothing) {
  mlx2gguf::gen::TinyModelSpec spec;
  spec.model_type = "llama";
  spec.hidden = 512;
  spec.intermediate = 1024;
  const fs::path model = e2e::cached_model("disk-full-llama", spec);
  refused_for_space({"convert", model.string(), "--outtype", "f32"}, "model.gguf");
}

}  // namespace
