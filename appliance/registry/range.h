// The Range request header of RFC 9110, section 14.2, for blob responses.
//
// gatecache serves one byte range per response and never multipart. A
// well-formed request for several ranges is ignored and gets the whole blob
// with 200, as RFC 9110, section 14.2 lets a server do with a Range it does
// not support. A malformed header gets 416 RANGE_INVALID, so that a client
// resuming a download with a broken header gets an error, not the whole
// blob.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gatecache::registry {

enum class RangeKind {
  // No header, a unit other than "bytes", several well-formed ranges, or a
  // suffix range of an empty body: send the whole body with 200. RFC 9110,
  // section 14.2: a server must ignore a range unit it does not understand
  // and may ignore a Range it does not support.
  None,
  // One range that overlaps the body: send `first` to `last` with 206.
  Satisfiable,
  // Valid syntax but no overlap with the body: 416 with
  // `Content-Range: bytes */<size>`.
  Unsatisfiable,
  // Malformed header: 416 RANGE_INVALID.
  Invalid,
};

struct ByteRange {
  RangeKind kind = RangeKind::None;
  uint64_t first = 0; // First byte, set when `kind` is Satisfiable.
  uint64_t last = 0;  // Last byte, inclusive, at most size - 1.
};

// Parses a Range header for a body of `size` bytes. Accepts `bytes=a-b`,
// `bytes=a-` and `bytes=-n` (the last n bytes), and returns None for a
// well-formed set of several ranges. The unit is case-insensitive. Optional
// whitespace is accepted around the whole value and around commas, and empty
// list elements are skipped, as RFC 9110, section 5.6.1 requires of recipients.
// Positions of any length are valid: a last-pos at or beyond the end is clamped
// to size - 1, a first-pos at or beyond the end is Unsatisfiable, and a suffix
// longer than the body selects the whole body. A Satisfiable `first` and `last`
// are always below `size`, so they fit `int64_t` and `off_t` whenever `size`
// does.
ByteRange parse_range(std::string_view header, uint64_t size);

// Returns the Content-Range value of a 206 response: "bytes 0-99/1000".
std::string content_range(uint64_t first, uint64_t last, uint64_t size);

// Returns the Content-Range value of a 416 response: "bytes */1000".
std::string unsatisfied_content_range(uint64_t size);

} // namespace gatecache::registry
