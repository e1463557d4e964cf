#include "mailkms/smime/spool.hpp"
#include "mailkms/errno_text.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

namespace mailkms::smime {
namespace {

constexpr std::size_t kChunk = std::size_t{64} * 1024;

Error io_error(const std::string& what) { return make_error(Errc::io_error, what + ": " + mailkms::errno_text(errno)); }

std::atomic<std::size_t> memory_total{0};
std::atomic<std::size_t> file_total{0};

}  // namespace

SpoolUsage Spool::usage() noexcept {
  return {memory_total.load(std::memory_order_relaxed), file_total.load(std::memory_order_relaxed)};
}

SpoolUsage Spool::held() const noexcept {
  if (file_ != nullptr) return {0, size_};
  return {is_borrowed_ ? 0 : size_, 0};
}

void Spool::account(const SpoolUsage& before, const SpoolUsage& after) noexcept {
  // Unsigned wrap-around adds the difference either way.
  memory_total.fetch_add(after.memory_bytes - before.memory_bytes, std::memory_order_relaxed);
  file_total.fetch_add(after.file_bytes - before.file_bytes, std::memory_order_relaxed);
}

Spool::Spool(SpoolOptions options) : options_(std::move(options)) {}

Spool Spool::from(std::string bytes) {
  Spool spool({.memory_limit = static_cast<std::size_t>(-1)});
  spool.size_ = bytes.size();
  spool.memory_ = std::move(bytes);
  account({}, spool.held());
  return spool;
}

Spool Spool::borrow(std::string_view bytes) {
  Spool spool;
  spool.borrowed_ = bytes;
  spool.is_borrowed_ = true;
  spool.size_ = bytes.size();
  return spool;
}

Spool::Spool(Spool&& other) noexcept
    : options_(std::move(other.options_)),
      memory_(std::move(other.memory_)),
      borrowed_(other.borrowed_),
      is_borrowed_(other.is_borrowed_),
      file_(other.file_),
      size_(other.size_) {
  other.memory_.clear();  // what it held is this one's now: the totals stay
  other.file_ = nullptr;
  other.size_ = 0;
  other.borrowed_ = {};
}

Spool& Spool::operator=(Spool&& other) noexcept {
  if (this != &other) {
    account(held(), {});
    if (file_ != nullptr) (void)std::fclose(file_);  // a temporary file: nothing in it is kept
    options_ = std::move(other.options_);
    memory_ = std::move(other.memory_);
    borrowed_ = other.borrowed_;
    is_borrowed_ = other.is_borrowed_;
    file_ = other.file_;
    size_ = other.size_;
    other.memory_.clear();
    other.file_ = nullptr;
    other.size_ = 0;
    other.borrowed_ = {};
  }
  return *this;
}

Spool::~Spool() {
  account(held(), {});
  if (file_ != nullptr) (void)std::fclose(file_);  // a temporary file: nothing in it is kept
}

Status Spool::move_to_file() {
  // O_TMPFILE: the file has no name, so nothing is left behind on a crash.
  const int fd = ::open(options_.directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot create a spool file in " + options_.directory.string());
  const SpoolUsage before = held();
  file_ = ::fdopen(fd, "w+b");
  if (file_ == nullptr) {
    ::close(fd);
    return io_error("cannot open the spool file");
  }
  account(before, held());  // the bytes count as the file's from now on, written or not
  if (!memory_.empty() && std::fwrite(memory_.data(), 1, memory_.size(), file_) != memory_.size()) {
    return io_error("cannot write the spool file");
  }
  std::string().swap(memory_);
  return Ok{};
}

void Spool::reserve(std::size_t bytes) {
  if (file_ == nullptr && !is_borrowed_ && memory_.size() + bytes <= options_.memory_limit) {
    memory_.reserve(memory_.size() + bytes);
  }
}

Status Spool::append(std::string_view bytes) {
  if (is_borrowed_) return make_error(Errc::invalid_argument, "a borrowed spool is read-only");
  if (file_ == nullptr && memory_.size() + bytes.size() > options_.memory_limit) MAILKMS_CHECK(move_to_file());
  const SpoolUsage before = held();
  if (file_ == nullptr) {
    memory_.append(bytes);
  } else {
    if (std::fseek(file_, 0, SEEK_END) != 0 || std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) {
      return io_error("cannot write the spool file");  // a full disk lands here
    }
  }
  size_ += bytes.size();
  account(before, held());
  return Ok{};
}

Result<std::size_t> Spool::read(std::size_t offset, char* buffer, std::size_t length) const {
  if (offset >= size_) return std::size_t{0};
  length = std::min(length, size_ - offset);
  if (file_ == nullptr) {
    std::memcpy(buffer, contents().data() + offset, length);
    return length;
  }
  if (std::fflush(file_) != 0) return io_error("cannot flush the spool file");
  const ssize_t n = ::pread(::fileno(file_), buffer, length, static_cast<off_t>(offset));
  if (n < 0) return io_error("cannot read the spool file");
  return static_cast<std::size_t>(n);
}

Status Spool::for_each_chunk(std::size_t offset, std::size_t length,
                             const std::function<Status(std::string_view)>& visit) const {
  const std::size_t end = std::min(size_, offset + length);
  if (file_ == nullptr) {
    if (offset < end) return visit(contents().substr(offset, end - offset));
    return Ok{};
  }
  std::vector<char> buffer(kChunk);
  while (offset < end) {
    MAILKMS_TRY(n, read(offset, buffer.data(), std::min(kChunk, end - offset)));
    if (n == 0) return make_error(Errc::io_error, "the spool file is shorter than expected");
    MAILKMS_CHECK(visit(std::string_view(buffer.data(), n)));
    offset += n;
  }
  return Ok{};
}

Result<std::string> Spool::take_string() {
  if (file_ != nullptr || is_borrowed_) return to_string();
  account(held(), {});
  size_ = 0;
  return std::move(memory_);
}

Result<std::string> Spool::to_string() const {
  if (file_ == nullptr) return std::string(contents());
  std::string out;
  out.reserve(size_);
  MAILKMS_CHECK(for_each_chunk(0, size_, [&out](std::string_view chunk) -> Status {
    out.append(chunk);
    return Ok{};
  }));
  return out;
}

}  // namespace mailkms::smime
