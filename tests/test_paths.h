// Where this checkout and its build folder are. Only tests/test_paths.cpp sees the absolute paths (as compile
// definitions), so every other test source compiles to the same object in any checkout or build folder.
#pragma once

#include <filesystem>
#include <string>

namespace test_paths {

std::filesystem::path source_dir();     // the repository's root
std::filesystem::path binary();         // the mlx2gguf executable under test
std::filesystem::path test_work_dir();  // scratch space inside the build folder (not created here)
std::filesystem::path man_page();       // the man page the build makes from --help
std::string project_version();          // the release number CMake's project() declares

}  // namespace test_paths
