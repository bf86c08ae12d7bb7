// Classification of clients into clusters, run on every request.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "appliance/config/config.h"

namespace gatecache::scheduler {

class ClusterMap {
public:
  // Builds the map from `clusters`. A cluster's index is its position in
  // `clusters`. With no cluster configured, the map contains one
  // cluster "default" (index 0, weight 1) that every client belongs to.
  // A source whose address does not parse is skipped with a warning; the
  // config loader rejects such sources before they get here.
  explicit ClusterMap(const std::vector<config::ClusterConfig> &clusters);

  // Returns the cluster of a client. A verified client certificate name
  // (`client_name`, empty when none) that some cluster lists in
  // `client_names` decides first. Otherwise the longest source prefix
  // containing the address of `peer` decides, "ip:port" or "[ipv6]:port"
  // as `front::Request::peer` writes it (a bare address is accepted too).
  // IPv4-mapped IPv6 peers (::ffff:a.b.c.d) match IPv4 sources. With equal
  // prefixes, the cluster listed first wins. Returns nullopt when no
  // cluster matches.
  std::optional<size_t> classify(std::string_view peer,
                                 std::string_view client_name) const;

  const std::vector<std::string> &names() const { return names_; }

  const std::vector<unsigned> &weights() const { return weights_; }

  size_t size() const { return names_.size(); }

private:
  // A source network with its address bytes in network order. IPv4
  // networks use the first 4 bytes.
  struct Network {
    std::array<uint8_t, 16> address{};
    unsigned prefix_length = 0;
    size_t cluster = 0;
  };

  static bool contains(const Network &network, const uint8_t *address);

  std::vector<std::string> names_;
  std::vector<unsigned> weights_;
  std::map<std::string, size_t, std::less<>> by_client_name_;
  // Sorted by prefix length, longest first, so the first match is the
  // longest prefix.
  std::vector<Network> ipv4_;
  std::vector<Network> ipv6_;
  bool match_all_ = false; // True when no cluster is configured.
};

} // namespace gatecache::scheduler
