#include "mailkms/keystore/storage_copy.hpp"

#include <string>
#include <utility>
#include <vector>

namespace mailkms::keystore {
namespace {

// Rows at a time: a keystore of 100,000 users is a few hundred megabytes,
// never held whole.
constexpr std::size_t kPage = 1000;

using Rows = std::vector<std::pair<std::string, std::string>>;

// Calls `each` with every page of `storage`'s rows, in key order.
template <class Each>
Status pages(Storage& storage, Each&& each) {
  std::string after;
  for (;;) {
    MAILKMS_TRY(page, storage.scan("", after, kPage));
    if (page.empty()) return Ok{};
    after = page.back().first;
    MAILKMS_CHECK(each(page));
    if (page.size() < kPage) return Ok{};
  }
}

Status copy_rows(Storage& from, Storage& to, CopyReport& report) {
  return to.transaction([&]() -> Status {
    return pages(from, [&](const Rows& page) -> Status {
      for (const auto& [key, value] : page) {
        MAILKMS_CHECK(to.put(key, value));
        ++report.rows;
        report.bytes += key.size() + value.size();
      }
      return Ok{};
    });
  });
}

// Every row of `to` against `from`'s, page by page, after the copy committed.
Status compare_rows(Storage& from, Storage& to, std::size_t expected) {
  std::size_t compared = 0;
  std::string after;
  MAILKMS_CHECK(pages(from, [&](const Rows& page) -> Status {
    MAILKMS_TRY(copied, to.scan("", after, page.size()));
    after = page.back().first;
    for (std::size_t i = 0; i < page.size(); ++i) {
      if (i >= copied.size() || copied[i] != page[i]) {
        return make_error(Errc::storage_failed, "the copy differs from the source at row " + page[i].first);
      }
    }
    compared += page.size();
    return Ok{};
  }));
  MAILKMS_TRY(beyond, to.scan("", after, 1));
  if (!beyond.empty() || compared != expected) {
    return make_error(Errc::storage_failed, "the copy holds rows the source does not");
  }
  return Ok{};
}

}  // namespace

Result<CopyReport> copy_storage(Storage& from, Storage& to) {
  MAILKMS_TRY(existing, to.scan("", {}, 1));
  if (!existing.empty()) {
    return make_error(Errc::already_exists, "the target already holds records: copy only into an empty database");
  }
  CopyReport report;
  MAILKMS_CHECK(from.transaction([&]() -> Status {
    MAILKMS_CHECK(copy_rows(from, to, report));
    return compare_rows(from, to, report.rows);
  }));
  return report;
}

}  // namespace mailkms::keystore
