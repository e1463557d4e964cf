#include "stream.hpp"

#include "text.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>

namespace mailkms::smime::detail {
namespace {

int pieces_read(BIO* bio, char* out, int length) {
  BIO_clear_retry_flags(bio);
  return static_cast<PiecesSource*>(BIO_get_data(bio))->read(out, length);
}

long pieces_ctrl(BIO* bio, int cmd, long, void*) {
  const auto* source = static_cast<PiecesSource*>(BIO_get_data(bio));
  switch (cmd) {
    case BIO_CTRL_EOF: return source->at_end() ? 1 : 0;
    case BIO_CTRL_PENDING: return static_cast<long>(source->remaining());
    case BIO_CTRL_FLUSH: return 1;
    default: return 0;
  }
}

int sink_write(BIO* bio, const char* data, int length) {
  return static_cast<Base64Sink*>(BIO_get_data(bio))->write(data, length);
}

long sink_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

// The methods are immutable once made; made once per process.
const BIO_METHOD* pieces_method() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mailkms pieces");
    BIO_meth_set_read(m, pieces_read);
    BIO_meth_set_ctrl(m, pieces_ctrl);
    return m;
  }();
  return method;
}

const BIO_METHOD* sink_method() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mailkms base64 sink");
    BIO_meth_set_write(m, sink_write);
    BIO_meth_set_ctrl(m, sink_ctrl);
    return m;
  }();
  return method;
}

constexpr std::size_t kLineInput = 57;            // octets per 76-character line
constexpr std::size_t kBatch = kLineInput * 1024;  // encode about 57 KiB at a time

}  // namespace

void Pieces::add(std::string literal) {
  size_ += literal.size();
  pieces_.push_back(Piece{std::move(literal), nullptr, 0, 0});
  pieces_.back().length = pieces_.back().literal.size();
}

void Pieces::add(const Spool& spool, std::size_t offset, std::size_t length) {
  size_ += length;
  pieces_.push_back(Piece{{}, &spool, offset, length});
}

void Pieces::add(const Pieces& other) {
  for (const auto& p : other.pieces_) {
    pieces_.push_back(p);
    size_ += p.length;
  }
}

Status Pieces::for_each_chunk(const std::function<Status(std::string_view)>& visit) const {
  for (const auto& p : pieces_) {
    if (p.spool == nullptr) {
      MAILKMS_CHECK(visit(p.literal));
    } else {
      MAILKMS_CHECK(p.spool->for_each_chunk(p.offset, p.length, visit));
    }
  }
  return Ok{};
}

Result<std::size_t> Pieces::read(std::size_t offset, char* buffer, std::size_t length) const {
  std::size_t done = 0;
  for (const auto& p : pieces_) {
    if (done == length) break;
    if (offset >= p.length) {
      offset -= p.length;
      continue;
    }
    const std::size_t take = std::min(length - done, p.length - offset);
    if (p.spool == nullptr) {
      std::memcpy(buffer + done, p.literal.data() + offset, take);
      done += take;
    } else {
      MAILKMS_TRY(n, p.spool->read(p.offset + offset, buffer + done, take));
      done += n;
      if (n < take) break;
    }
    offset = 0;
  }
  return done;
}

PiecesSource::PiecesSource(const Pieces& pieces) : pieces_(pieces), bio_(BIO_new(pieces_method())) {
  if (bio_) {
    BIO_set_data(bio_.get(), this);
    BIO_set_init(bio_.get(), 1);
  }
}

int PiecesSource::read(char* out, int length) {
  if (error_) return -1;
  if (length <= 0) return 0;
  auto n = pieces_.read(offset_, out, static_cast<std::size_t>(length));
  if (!n) {
    error_ = std::move(n).error();
    return -1;
  }
  offset_ += *n;
  return static_cast<int>(*n);
}

Base64Sink::Base64Sink(Spool& out) : out_(out), bio_(BIO_new(sink_method())) {
  if (bio_) {
    BIO_set_data(bio_.get(), this);
    BIO_set_init(bio_.get(), 1);
  }
}

int Base64Sink::write(const char* data, int length) {
  if (error_ || length < 0) return -1;
  pending_.append(data, static_cast<std::size_t>(length));
  if (pending_.size() >= kBatch) {
    const std::size_t whole = pending_.size() / kLineInput * kLineInput;
    if (auto s = encode_lines(std::string_view(pending_).substr(0, whole)); !s) {
      error_ = std::move(s).error();
      return -1;
    }
    pending_.erase(0, whole);
  }
  return length;
}

Status Base64Sink::encode_lines(std::string_view data) {
  encoded_.clear();
  append_base64_lines(encoded_, data);
  return out_.append(encoded_);
}

Status Base64Sink::finish() {
  if (error_) return *error_;
  MAILKMS_CHECK(encode_lines(pending_));
  pending_.clear();
  return Ok{};
}

std::string header_section(const std::vector<HeaderField>& outer, const std::vector<HeaderField>& entity_headers) {
  std::string out;
  append_fields(out, outer);
  if (find_field(outer, "MIME-Version") == nullptr) out += "MIME-Version: 1.0\r\n";
  append_fields(out, entity_headers);
  out += "\r\n";
  return out;
}

}  // namespace mailkms::smime::detail
