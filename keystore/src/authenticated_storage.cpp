#include "mailkms/keystore/authenticated_storage.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <nlohmann/json.hpp>

#include "aead.hpp"
#include "mailkms/keystore/kdf.hpp"

namespace mailkms::keystore {
namespace {

// Rows whose every version the manifest names: deleting one, or putting an
// older copy back, is seen.
constexpr std::array<std::string_view, 13> kTracked{
    "admins/", "sessions/", "requests/", "request-params/", "request-results/", "trust/",       "config/",
    "ca/",     "revoked/",  "crl/",      "crl-number/",     "token/",          "token-index/"};
// Rows too many to list, authenticated one by one: a changed or forged one
// is seen; revocation, which must not be undone, is also kept in revoked/.
constexpr std::array<std::string_view, 2> kAuthenticated{"users/", "certs/"};

constexpr std::string_view kRootKey = "core/manifest";
constexpr std::string_view kSealKey = "core/seal";
constexpr std::string_view kCollectionPrefix = "manifest/";
constexpr std::string_view kMagic = "mkms-auth-1 ";
constexpr std::string_view kKeyLabel = "mailkms/row-authentication/v1";
constexpr std::size_t kMaxReports = 100;

enum class Protection { none, authenticated, tracked };

std::optional<std::string_view> tracked_prefix(std::string_view key) {
  for (const auto prefix : kTracked) {
    if (key.starts_with(prefix)) return prefix;
  }
  return std::nullopt;
}

Protection protection_of(std::string_view key) {
  if (tracked_prefix(key)) return Protection::tracked;
  for (const auto prefix : kAuthenticated) {
    if (key.starts_with(prefix)) return Protection::authenticated;
  }
  return Protection::none;
}

// The collection a tracked key is listed in: its prefix without the slash.
std::string collection_of(std::string_view key) {
  const auto prefix = *tracked_prefix(key);
  return std::string(prefix.substr(0, prefix.size() - 1));
}

// For searching scanned rows by key, with a key or a row on either side.
std::string_view key_of(const std::string& key) { return key; }
std::string_view key_of(const std::pair<std::string, std::string>& row) { return row.first; }

nlohmann::json root_json(std::uint64_t counter, const std::map<std::string, std::uint64_t, std::less<>>& collections) {
  nlohmann::json j{{"counter", counter}, {"collections", nlohmann::json::object()}};
  for (const auto& [name, version] : collections) j["collections"][name] = version;
  return j;
}

}  // namespace

Status AuthenticatedStorage::unlock(const smime::SecretBytes& master_key) {
  MAILKMS_TRY(key, hkdf_sha256(master_key, kKeyLabel));
  MAILKMS_TRY(seal, inner_.get(kSealKey));
  const std::unique_lock lock(key_mutex_);
  row_key_ = std::move(key);
  seal_at_unlock_ = seal.value_or("");
  key_superseded_ = false;
  return Ok{};
}

void AuthenticatedStorage::lock() {
  const std::unique_lock lock(key_mutex_);
  row_key_.reset();
  key_superseded_ = false;  // sealed says it all now
}

namespace {

Result<std::string> row_tag(const smime::SecretBytes& row_key, std::string_view key, std::uint64_t version,
                            std::string_view payload) {
  std::string message = "mailkms/row/v1";
  message.push_back('\0');
  message += key;
  message.push_back('\0');
  message += std::to_string(version);
  message.push_back('\0');
  message += payload;
  return detail::hex_hmac_sha256(row_key, message);
}

std::string tagged_row(std::uint64_t version, std::string_view mac, std::string_view payload) {
  std::string row(kMagic);
  row += std::to_string(version);
  row += ' ';
  row += mac;
  row += '\n';
  row += payload;
  return row;
}

}  // namespace

Result<std::string> AuthenticatedStorage::tag(std::string_view key, std::uint64_t version,
                                              std::string_view payload) const {
  const std::shared_lock lock(key_mutex_);
  if (!row_key_) return make_error(Errc::sealed, "the keystore is sealed");
  return row_tag(*row_key_, key, version, payload);
}

Result<std::string> AuthenticatedStorage::encode(std::string_view key, std::uint64_t version,
                                                 std::string_view payload) const {
  MAILKMS_TRY(mac, tag(key, version, payload));
  return tagged_row(version, mac, payload);
}

Result<std::string> AuthenticatedStorage::decode(std::string_view key, std::string_view row,
                                                 std::uint64_t& version) const {
  const Error bad = make_error(Errc::corrupt, "no valid authentication tag");
  if (!row.starts_with(kMagic)) return bad;
  row.remove_prefix(kMagic.size());
  const auto space = row.find(' ');
  const auto newline = row.find('\n');
  if (space == std::string_view::npos || newline == std::string_view::npos || newline < space) return bad;
  const auto [end, ec] = std::from_chars(row.data(), row.data() + space, version);
  if (ec != std::errc() || end != row.data() + space) return bad;
  const std::string_view claimed = row.substr(space + 1, newline - space - 1);
  const std::string_view payload = row.substr(newline + 1);
  MAILKMS_TRY(expected, tag(key, version, payload));
  if (claimed.size() != expected.size() || CRYPTO_memcmp(claimed.data(), expected.data(), expected.size()) != 0) {
    return bad;
  }
  return std::string(payload);
}

void AuthenticatedStorage::report_tamper(std::string_view key, std::string problem) {
  const std::lock_guard lock(reports_mutex_);
  if (reports_.size() < kMaxReports) reports_.push_back({std::string(key), std::move(problem)});
}

Error AuthenticatedStorage::tampered(std::string_view key, const std::string& problem) {
  // Every row looks changed to an instance whose key was rotated away.
  if (Status current = check_key_current(); !current && key_superseded_) return std::move(current).error();
  report_tamper(key, problem);
  return make_error(Errc::corrupt, "integrity check failed: " + std::string(key) + ": " + problem);
}

std::vector<TamperReport> AuthenticatedStorage::take_tamper_reports() {
  const std::lock_guard lock(reports_mutex_);
  return std::exchange(reports_, {});
}

Result<std::optional<AuthenticatedStorage::Root>> AuthenticatedStorage::read_root() {
  MAILKMS_TRY(row, inner_.get(kRootKey));
  return root_from(row);
}

Result<std::optional<AuthenticatedStorage::Root>> AuthenticatedStorage::root_from(const std::optional<std::string>& row) {
  if (!row) return std::optional<Root>();
  std::uint64_t version = 0;
  auto payload = decode(kRootKey, *row, version);
  if (!payload) {
    if (payload.error().code != Errc::corrupt) return std::move(payload).error();
    return tampered(kRootKey, "the manifest was changed");
  }
  const auto j = nlohmann::json::parse(*payload, nullptr, false);
  Root root;
  try {
    root.counter = j.at("counter").get<std::uint64_t>();
    for (const auto& [name, v] : j.at("collections").items()) root.collections[name] = v.get<std::uint64_t>();
  } catch (const nlohmann::json::exception&) {
    return tampered(kRootKey, "the manifest does not parse");
  }
  if (root.counter != version) return tampered(kRootKey, "the manifest's version is not its counter");
  return std::optional<Root>(std::move(root));
}

Result<AuthenticatedStorage::Root> AuthenticatedStorage::require_root() {
  MAILKMS_TRY(root, read_root());
  if (!root) return tampered(kRootKey, "the manifest is missing");
  return std::move(*root);
}

Result<bool> AuthenticatedStorage::has_manifest() {
  MAILKMS_TRY(root, read_root());
  return root.has_value();
}

Result<AuthenticatedStorage::Versions> AuthenticatedStorage::read_collection(const Root& root,
                                                                              std::string_view collection) {
  MAILKMS_TRY(row, inner_.get(std::string(kCollectionPrefix) + std::string(collection)));
  return collection_from(root, collection, row);
}

Result<AuthenticatedStorage::Versions> AuthenticatedStorage::collection_from(const Root& root,
                                                                              std::string_view collection,
                                                                              const std::optional<std::string>& row) {
  const std::string key = std::string(kCollectionPrefix) + std::string(collection);
  const auto listed = root.collections.find(collection);
  if (listed == root.collections.end()) {
    if (row) return tampered(key, "a list the manifest does not name");
    return Versions{};
  }
  if (!row) return tampered(key, "the list of " + std::string(collection) + " was deleted");
  std::uint64_t version = 0;
  auto payload = decode(key, *row, version);
  if (!payload) {
    if (payload.error().code != Errc::corrupt) return std::move(payload).error();
    return tampered(key, "the list of " + std::string(collection) + " was changed");
  }
  if (version != listed->second) {
    return tampered(key, "an older copy of the list of " + std::string(collection) + " was put back");
  }
  const auto j = nlohmann::json::parse(*payload, nullptr, false);
  if (!j.is_object()) return tampered(key, "the list does not parse");
  Versions versions;
  for (const auto& [name, v] : j.items()) {
    if (!v.is_number_unsigned()) return tampered(key, "the list does not parse");
    versions[name] = v.get<std::uint64_t>();
  }
  return versions;
}

Status AuthenticatedStorage::write_manifest(Root& root, std::string_view collection, const Versions& versions) {
  const std::string key = std::string(kCollectionPrefix) + std::string(collection);
  nlohmann::json list = nlohmann::json::object();
  for (const auto& [name, v] : versions) list[name] = v;
  MAILKMS_TRY(list_row, encode(key, root.counter, list.dump()));
  MAILKMS_CHECK(inner_.put(key, list_row));
  root.collections[std::string(collection)] = root.counter;
  MAILKMS_TRY(root_row, encode(kRootKey, root.counter, root_json(root.counter, root.collections).dump()));
  return inner_.put(kRootKey, root_row);
}

Status AuthenticatedStorage::transaction(const std::function<Status()>& work) {
  return inner_.transaction([&]() -> Status {
    // The inner storage holds its lock for the whole transaction, nested
    // ones included, so the depth is read and written under it. The key is
    // checked once, by the outermost transaction: an audit batch nests one
    // transaction per record and must not read the manifest for each.
    struct Depth {
      std::size_t& depth;
      explicit Depth(std::size_t& d) : depth(++d) {}
      ~Depth() { --depth; }
      Depth(const Depth&) = delete;
      Depth& operator=(const Depth&) = delete;
    } depth{transaction_depth_};
    if (transaction_depth_ == 1) MAILKMS_CHECK(check_key_current());
    return work();
  });
}

Status AuthenticatedStorage::check_key_current() {
  {
    const std::shared_lock lock(key_mutex_);
    if (!row_key_) return Ok{};  // sealed: no row can be tagged, nothing guarded written
  }
  MAILKMS_TRY(row, inner_.get(kRootKey));
  if (!row) return Ok{};  // before the manifest exists
  std::uint64_t version = 0;
  auto payload = decode(kRootKey, *row, version);
  if (payload || payload.error().code != Errc::corrupt) return payload ? Status(Ok{}) : Status(std::move(payload).error());
  // A rotation rewrites the seal. With the seal as it was, a manifest that
  // fails its check was changed: the reads find and report it.
  MAILKMS_TRY(seal, inner_.get(kSealKey));
  {
    const std::shared_lock lock(key_mutex_);
    if (seal.value_or("") == seal_at_unlock_) return Ok{};
  }
  key_superseded_ = true;
  return make_error(Errc::sealed,
                    "the master key this keystored holds was rotated through another instance (the seal and the "
                    "manifest changed since it unsealed); nothing was written");
}

Result<std::optional<std::string>> AuthenticatedStorage::get(std::string_view key) {
  const Protection protection = protection_of(key);
  if (protection == Protection::none) return inner_.get(key);
  // An authenticated row carries its own tag: one read.
  if (protection == Protection::authenticated) {
    MAILKMS_TRY(row, inner_.get(key));
    return row_checked(key, std::nullopt, std::move(row));
  }
  // A tracked row is read with the manifest and its collection's list, in
  // one view: a change made between separate reads would look like
  // tampering. On PostgreSQL that is one statement, one round trip.
  const std::string collection = collection_of(key);
  const std::string list_key = std::string(kCollectionPrefix) + collection;
  const std::array<std::string_view, 3> keys{kRootKey, list_key, key};
  MAILKMS_TRY(rows, inner_.read_together(keys));
  MAILKMS_TRY(root, root_from(rows[0]));
  if (!root) return tampered(kRootKey, "the manifest is missing");
  MAILKMS_TRY(versions, collection_from(*root, collection, rows[1]));
  return row_checked(key, std::move(versions), std::move(rows[2]));
}

Result<std::optional<std::string>> AuthenticatedStorage::row_checked(std::string_view key,
                                                                    const std::optional<Versions>& versions,
                                                                    std::optional<std::string> row) {
  const auto expected = versions ? versions->find(key) : Versions::const_iterator{};
  if (versions && expected == versions->end()) {
    // Not made here: ignored, as if it were not there.
    if (row) (void)tampered(key, "a row the manifest does not name (inserted): ignored");
    return std::optional<std::string>();
  }
  if (!row) {
    if (versions) return tampered(key, "the row was deleted");
    return std::optional<std::string>();
  }
  std::uint64_t version = 0;
  auto payload = decode(key, *row, version);
  if (!payload) {
    if (payload.error().code != Errc::corrupt) return std::move(payload).error();
    return tampered(key, "the row was changed");
  }
  if (versions ? version != expected->second : version != 0) {
    return tampered(key, "an older copy of the row was put back");
  }
  return std::optional<std::string>(std::move(*payload));
}

Status AuthenticatedStorage::put(std::string_view key, std::string_view value) {
  const Protection protection = protection_of(key);
  if (protection == Protection::none) return inner_.put(key, value);
  if (protection == Protection::authenticated) {
    MAILKMS_TRY(row, encode(key, 0, value));
    return inner_.put(key, row);
  }
  return inner_.transaction([&]() -> Status {
    MAILKMS_TRY(root, require_root());
    const std::string collection = collection_of(key);
    MAILKMS_TRY(versions, read_collection(root, collection));
    ++root.counter;
    versions[std::string(key)] = root.counter;
    MAILKMS_TRY(row, encode(key, root.counter, value));
    MAILKMS_CHECK(inner_.put(key, row));
    return write_manifest(root, collection, versions);
  });
}

Status AuthenticatedStorage::remove(std::string_view key) {
  if (protection_of(key) != Protection::tracked) return inner_.remove(key);
  return inner_.transaction([&]() -> Status {
    MAILKMS_TRY(root, require_root());
    const std::string collection = collection_of(key);
    MAILKMS_TRY(versions, read_collection(root, collection));
    MAILKMS_CHECK(inner_.remove(key));
    const auto listed = versions.find(key);
    if (listed == versions.end()) return Ok{};
    versions.erase(listed);
    ++root.counter;
    return write_manifest(root, collection, versions);
  });
}

Result<std::vector<std::pair<std::string, std::string>>> AuthenticatedStorage::scan(std::string_view prefix,
                                                                                   std::string_view after,
                                                                                   std::size_t limit) {
  const Protection protection = protection_of(prefix);
  const bool spans_guarded = std::any_of(kTracked.begin(), kTracked.end(), [&](auto p) { return p.starts_with(prefix) && p != prefix; }) ||
                             std::any_of(kAuthenticated.begin(), kAuthenticated.end(), [&](auto p) { return p.starts_with(prefix) && p != prefix; });
  if (spans_guarded && protection == Protection::none) {
    return make_error(Errc::invalid_argument, "a scan of \"" + std::string(prefix) + "\" would mix guarded rows with others");
  }
  if (protection == Protection::none) return inner_.scan(prefix, after, limit);
  if (protection == Protection::authenticated) return scan_checked(prefix, after, limit, static_cast<int>(protection));
  std::vector<std::pair<std::string, std::string>> out;
  MAILKMS_CHECK(inner_.read_transaction([&]() -> Status {
    MAILKMS_TRY(found, scan_checked(prefix, after, limit, static_cast<int>(protection)));
    out = std::move(found);
    return Ok{};
  }));
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> AuthenticatedStorage::scan_checked(std::string_view prefix,
                                                                                           std::string_view after,
                                                                                           std::size_t limit,
                                                                                           int protection_value) {
  const auto protection = static_cast<Protection>(protection_value);
  std::optional<Versions> versions;
  if (protection == Protection::tracked) {
    MAILKMS_TRY(root, require_root());
    MAILKMS_TRY(listed, read_collection(root, collection_of(prefix)));
    versions = std::move(listed);
  }
  MAILKMS_TRY(rows, inner_.scan(prefix, after, limit));
  const bool complete = rows.size() < limit;
  const std::string last_read = rows.empty() ? std::string() : rows.back().first;
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [key, row] : rows) {
    std::uint64_t version = 0;
    const auto expected = versions ? versions->find(key) : Versions::const_iterator{};
    if (versions && expected == versions->end()) {
      (void)tampered(key, "a row the manifest does not name (inserted): ignored");
      continue;
    }
    auto payload = decode(key, row, version);
    if (!payload) {
      if (payload.error().code != Errc::corrupt) return std::move(payload).error();
      return tampered(key, "the row was changed");
    }
    if (versions ? version != expected->second : version != 0) {
      return tampered(key, "an older copy of the row was put back");
    }
    out.emplace_back(std::move(key), std::move(*payload));
  }
  if (versions) {
    // Every listed row in the range read must have been there.
    for (auto it = versions->lower_bound(prefix); it != versions->end() && it->first.starts_with(prefix); ++it) {
      if (!after.empty() && it->first <= after) continue;
      if (!complete && it->first > last_read) break;
      // `out` is in key order, as the scan returned it.
      const bool present = std::binary_search(out.begin(), out.end(), it->first,
                                              [](const auto& a, const auto& b) { return key_of(a) < key_of(b); });
      if (!present) return tampered(it->first, "the row was deleted");
    }
  }
  return out;
}

Result<std::size_t> AuthenticatedStorage::adopt_unauthenticated_rows() {
  std::size_t adopted = 0;
  MAILKMS_CHECK(inner_.transaction([&]() -> Status {
    MAILKMS_TRY(existing, read_root());
    if (existing) return Ok{};
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& prefixes : {std::vector<std::string_view>(kTracked.begin(), kTracked.end()),
                                 std::vector<std::string_view>(kAuthenticated.begin(), kAuthenticated.end())}) {
      for (const auto prefix : prefixes) {
        MAILKMS_TRY(found, inner_.scan(prefix));
        for (auto& row : found) {
          if (std::string_view(row.second).starts_with(kMagic)) {
            return tampered(kRootKey, "the manifest is missing but " + row.first +
                                          " is authenticated: the manifest was removed");
          }
          rows.push_back(std::move(row));
        }
      }
    }
    Root root;
    std::map<std::string, Versions, std::less<>> lists;
    for (const auto& [key, value] : rows) {
      std::uint64_t version = 0;
      if (protection_of(key) == Protection::tracked) {
        version = ++root.counter;
        lists[collection_of(key)][key] = version;
      }
      MAILKMS_TRY(row, encode(key, version, value));
      MAILKMS_CHECK(inner_.put(key, row));
    }
    ++root.counter;
    for (const auto& [collection, versions] : lists) MAILKMS_CHECK(write_manifest(root, collection, versions));
    if (lists.empty()) {
      MAILKMS_TRY(root_row, encode(kRootKey, root.counter, root_json(root.counter, root.collections).dump()));
      MAILKMS_CHECK(inner_.put(kRootKey, root_row));
    }
    adopted = rows.size();
    return Ok{};
  }));
  return adopted;
}

bool AuthenticatedStorage::named_by_manifest(std::string_view key, std::uint64_t version,
                                             const std::map<std::string, Versions, std::less<>>& lists) {
  const auto list = lists.find(collection_of(key));
  if (list == lists.end()) return false;
  const auto listed = list->second.find(key);
  return listed != list->second.end() && listed->second == version;
}

Result<AuthenticatedStorage::Rekeyed> AuthenticatedStorage::rekey_rows(const smime::SecretBytes& new_master_key,
                                                                        const Resealer& reseal) {
  MAILKMS_TRY(new_key, hkdf_sha256(new_master_key, kKeyLabel));
  // The manifest is read whole first: its own rows are tagged again on the way.
  MAILKMS_TRY(root, require_root());
  std::map<std::string, Versions, std::less<>> lists;
  for (const auto& [collection, version] : root.collections) {
    MAILKMS_TRY(versions, read_collection(root, collection));
    lists.emplace(collection, std::move(versions));
  }
  Rekeyed counts;
  std::string after;
  while (true) {
    // Every row of the database, a page at a time: what is not tagged may
    // still be a barrier record.
    MAILKMS_TRY(rows, inner_.scan({}, after, 1000));
    if (rows.empty()) break;
    after = rows.back().first;
    for (const auto& [key, value] : rows) {
      const bool manifest = key == kRootKey || key.starts_with(kCollectionPrefix);
      if (protection_of(key) == Protection::none && !manifest) {
        MAILKMS_TRY(resealed, reseal(key, value));
        if (!resealed) continue;
        MAILKMS_CHECK(inner_.put(key, *resealed));
        ++counts.resealed;
        continue;
      }
      std::uint64_t version = 0;
      auto payload = decode(key, value, version);
      if (payload && tracked_prefix(key)) {
        if (!named_by_manifest(key, version, lists)) payload = make_error(Errc::corrupt, "not the version the manifest names");
      } else if (payload && protection_of(key) == Protection::authenticated && version != 0) {
        payload = make_error(Errc::corrupt, "an authenticated row with a version");
      }
      if (!payload) {
        if (payload.error().code != Errc::corrupt) return std::move(payload).error();
        report_tamper(key, "left as it was by the master key's rotation: it failed its check before");
        ++counts.left;
        continue;
      }
      std::optional<std::string> resealed;
      if (!manifest) {
        MAILKMS_TRY(found, reseal(key, *payload));
        resealed = std::move(found);
      }
      if (resealed) ++counts.resealed;
      MAILKMS_TRY(mac, row_tag(new_key, key, version, resealed ? *resealed : *payload));
      MAILKMS_CHECK(inner_.put(key, tagged_row(version, mac, resealed ? *resealed : *payload)));
      ++counts.tagged;
    }
  }
  return counts;
}

}  // namespace mailkms::keystore
