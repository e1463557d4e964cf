// The engine's own DER reader (smime/src/der.hpp), which reads fields of
// CMS from outside: every element it returns lies inside the input, and
// re-encoding an element gives back its bytes.
#include "der.hpp"
#include "fuzz_support.hpp"

using namespace mailkms;

namespace {

bool inside(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

// Walks every element, into constructed ones, no deeper than `depth`.
void walk(std::string_view input, int depth) {
  smime::der::Reader reader(input);
  while (!reader.empty()) {
    const auto tag = reader.peek_tag();
    auto element = reader.next();
    if (!element) return;
    if (!tag || *tag != element->tag) fuzz::violated("peek_tag differs from the tag read");
    if (!inside(element->whole, input) || !inside(element->value, element->whole)) {
      fuzz::violated("an element outside its input");
    }
    if (element->whole.size() < element->value.size() + 2) fuzz::violated("an element shorter than its contents");
    // What the writer makes of it, the reader reads back.
    const std::string again = smime::der::encode(element->tag, element->value);
    smime::der::Reader rereader(again);
    const auto reread = rereader.next();
    if (!reread || reread->tag != element->tag || reread->value != element->value || !rereader.empty()) {
      fuzz::violated("an encoded element does not read back");
    }
    if ((element->tag & 0x20) != 0 && depth < 32) walk(element->value, depth + 1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > std::size_t{16} * 1024) return 0;
  const std::string_view input = fuzz::as_text(data, size);
  walk(input, 0);
  smime::der::Reader reader(input);
  (void)reader.next_if(smime::der::tag::sequence);
  (void)reader.expect(smime::der::tag::octet_string);
  return 0;
}
