#include "appliance/registry/schema1.h"

#include <cstdint>

#include <nlohmann/json.hpp>

namespace gatecache::registry {

namespace {

// Decodes unpadded base64url (RFC 4648 section 5), as JWS uses it.
std::optional<std::string> decode_base64url(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    int value;
    if (c >= 'A' && c <= 'Z') {
      value = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      value = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      value = c - '0' + 52;
    } else if (c == '-' || c == '+') {
      value = 62;
    } else if (c == '_' || c == '/') {
      value = 63;
    } else if (c == '=') {
      break;
    } else {
      return std::nullopt;
    }
    buffer = (buffer << 6) | static_cast<uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

} // namespace

std::optional<std::string> schema1_payload(std::string_view body) {
  auto document = nlohmann::json::parse(body, nullptr, false);
  if (document.is_discarded() || !document.is_object()) {
    return std::nullopt;
  }

  auto signatures = document.find("signatures");
  if (signatures == document.end() || !signatures->is_array() ||
      signatures->empty()) {
    return std::nullopt;
  }

  const auto &first = (*signatures)[0];
  if (!first.is_object() || !first.contains("protected") ||
      !first["protected"].is_string()) {
    return std::nullopt;
  }
  auto header_text = decode_base64url(first["protected"].get<std::string>());
  if (!header_text) {
    return std::nullopt;
  }

  auto header = nlohmann::json::parse(*header_text, nullptr, false);
  if (header.is_discarded() || !header.is_object() ||
      !header.contains("formatLength") ||
      !header["formatLength"].is_number_unsigned() ||
      !header.contains("formatTail") || !header["formatTail"].is_string()) {
    return std::nullopt;
  }

  auto length = header["formatLength"].get<uint64_t>();
  auto tail = decode_base64url(header["formatTail"].get<std::string>());
  if (!tail || length > body.size()) {
    return std::nullopt;
  }

  std::string payload(body.substr(0, length));
  payload += *tail;
  return payload;
}

} // namespace gatecache::registry
