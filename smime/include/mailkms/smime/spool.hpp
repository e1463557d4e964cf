// Where a message lives while mailkms works on it: in memory up to a
// threshold, then in an unlinked temporary file, so a 100 MB message never
// needs 100 MB of memory. Append-only while written, then read in chunks.
#pragma once

#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "mailkms/smime/result.hpp"

namespace mailkms::smime {

// What every spool in this process holds now, for the metrics: bytes in
// memory and bytes in spool files (borrowed bytes are their owner's).
struct SpoolUsage {
  std::size_t memory_bytes = 0;
  std::size_t file_bytes = 0;
};

struct SpoolOptions {
  std::size_t memory_limit = 1 << 20;  // bytes kept in memory before moving to a file
  std::filesystem::path directory = std::filesystem::temp_directory_path();
};

class Spool {
 public:
  explicit Spool(SpoolOptions options = {});
  // A memory spool holding `bytes` (whatever their size).
  static Spool from(std::string bytes);
  // A read-only spool over bytes the caller keeps alive; no copy is made.
  static Spool borrow(std::string_view bytes);
  static Spool borrow(std::string&& bytes) = delete;  // a temporary would dangle: use from()
  Spool(Spool&&) noexcept;
  Spool& operator=(Spool&&) noexcept;
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;
  ~Spool();

  [[nodiscard]] static SpoolUsage usage() noexcept;

  Status append(std::string_view bytes);
  // Room for `bytes` more in memory, when the spool is still in memory.
  void reserve(std::size_t bytes);
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool in_memory() const noexcept { return file_ == nullptr; }

  // Reads up to `length` bytes at `offset` into `buffer`; returns the count.
  Result<std::size_t> read(std::size_t offset, char* buffer, std::size_t length) const;
  // Calls `visit` with consecutive chunks of [offset, offset + length).
  Status for_each_chunk(std::size_t offset, std::size_t length,
                        const std::function<Status(std::string_view)>& visit) const;
  // The whole content as one string: only for spools known to be small.
  Result<std::string> to_string() const;
  // The same, moved out of a memory spool without a copy; the spool is
  // left empty.
  Result<std::string> take_string();

 private:
  Status move_to_file();
  // What this spool holds, by place, and the process's totals told of a change.
  [[nodiscard]] SpoolUsage held() const noexcept;
  static void account(const SpoolUsage& before, const SpoolUsage& after) noexcept;
  [[nodiscard]] std::string_view contents() const noexcept { return is_borrowed_ ? borrowed_ : memory_; }

  SpoolOptions options_;
  std::string memory_;
  std::string_view borrowed_;  // set for borrowed spools, which never change
  bool is_borrowed_ = false;
  std::FILE* file_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mailkms::smime
