// The package cache: packages stored under cache_directory()/packages/<name>-<key>, where the
// key hashes everything a package depends on (package.cpp: package_cache_key), so an unchanged
// model for the same target is not compiled again and a stale package is never reused.
#pragma once

#include <string>

namespace cnnc {

// A 128-bit FNV-1a hash of `text`, as 32 hex digits.
std::string hash_hex(const std::string& text);

// "<base>.tmp-<pid>-<random>": a name beside `base` to write into, then rename.
std::string temporary_name(const std::string& base);

// Copies a package's files (not its objects and build logs) from `from` into `to`, each
// written under a temporary name and renamed, so a reader never sees half a file.
void copy_package(const std::string& from, const std::string& to);

}  // namespace cnnc
