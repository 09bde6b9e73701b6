// Small file helpers shared by the loaders and writers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace reglage::core {

// Whole file as bytes; throws "PATH: reason" when it is missing, a directory or unreadable.
std::string read_file(const std::string& path);

// The same without throwing: false with `reason` ("is a directory, expected a file", "cannot open the file:
// No such file or directory", "cannot read the file: Input/output error") for callers that word their own error.
bool try_read_file(const std::string& path, std::string& out, std::string& reason);

// Writes to "path.tmp.<pid>" then renames over path: readers never see a half-written file.
void write_file_atomic(const std::string& path, const std::string& bytes);

bool is_directory(const std::string& path);
bool file_exists(const std::string& path);
std::string path_join(const std::string& a, const std::string& b);
std::string parent_dir(const std::string& path);

}  // namespace reglage::core
