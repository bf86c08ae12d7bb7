#include "appliance/scheduler/clusters.h"

#include <algorithm>
#include <cstring>

#include <arpa/inet.h>

#include "common/log.h"

namespace gatecache::scheduler {

namespace {

enum class Family { None, Ipv4, Ipv6 };

// Maximum length of the text inet_pton(3) accepts for IPv6 (INET6_ADDRSTRLEN),
// plus the terminating NUL. Longer input is no address.
constexpr size_t MaxAddressText = 46;

// Parses a literal address into `bytes`. IPv4-mapped IPv6 addresses come
// back as IPv4, so they compare with IPv4 networks.
Family parse_address(std::string_view text, uint8_t *bytes) {
  char buffer[MaxAddressText + 1];
  if (text.empty() || text.size() > MaxAddressText) {
    return Family::None;
  }
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';

  if (inet_pton(AF_INET, buffer, bytes) == 1) {
    return Family::Ipv4;
  }
  if (inet_pton(AF_INET6, buffer, bytes) != 1) {
    return Family::None;
  }
  static constexpr uint8_t MappedPrefix[12] = {0, 0, 0, 0, 0,    0,
                                               0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(bytes, MappedPrefix, sizeof MappedPrefix) == 0) {
    std::memmove(bytes, bytes + 12, 4);
    return Family::Ipv4;
  }
  return Family::Ipv6;
}

// Takes the address out of "ip:port", "[ipv6]:port", "[ipv6]" or a bare
// address, and drops an IPv6 zone ("fe80::1%eth0").
std::string_view peer_address(std::string_view peer) {
  std::string_view address = peer;
  if (!peer.empty() && peer.front() == '[') {
    size_t close = peer.find(']');
    if (close == std::string_view::npos) {
      return {};
    }
    address = peer.substr(1, close - 1);
  } else if (std::count(peer.begin(), peer.end(), ':') == 1) {
    address = peer.substr(0, peer.find(':'));
  }
  size_t zone = address.find('%');
  if (zone != std::string_view::npos) {
    address = address.substr(0, zone);
  }
  return address;
}

} // namespace

ClusterMap::ClusterMap(const std::vector<config::ClusterConfig> &clusters) {
  if (clusters.empty()) {
    names_.push_back("default");
    weights_.push_back(1);
    match_all_ = true;
    return;
  }

  for (size_t index = 0; index < clusters.size(); ++index) {
    const config::ClusterConfig &cluster = clusters[index];
    names_.push_back(cluster.name);
    weights_.push_back(std::max(1u, cluster.weight));
    for (const std::string &client_name : cluster.client_names) {
      by_client_name_.emplace(client_name, index);
    }
    for (const config::Cidr &source : cluster.sources) {
      Network network;
      network.cluster = index;
      Family family = parse_address(source.address, network.address.data());
      unsigned max_prefix = source.ipv6 ? 128 : 32;
      if (family == Family::None || source.prefix_length > max_prefix) {
        GC_LOG(Config, warn,
               "skipping source '{}' of cluster '{}': not an IP network",
               source.str(), cluster.name);
        continue;
      }
      network.prefix_length = source.prefix_length;
      // A mapped IPv6 source (::ffff:10.0.0.0/104) is an IPv4 network.
      if (family == Family::Ipv4 && source.ipv6) {
        network.prefix_length =
            source.prefix_length >= 96 ? source.prefix_length - 96 : 0;
      }
      (family == Family::Ipv4 ? ipv4_ : ipv6_).push_back(network);
    }
  }

  auto longest_first = [](const Network &a, const Network &b) {
    return a.prefix_length > b.prefix_length;
  };
  std::stable_sort(ipv4_.begin(), ipv4_.end(), longest_first);
  std::stable_sort(ipv6_.begin(), ipv6_.end(), longest_first);
}

std::optional<size_t> ClusterMap::classify(std::string_view peer,
                                           std::string_view client_name) const {
  if (match_all_) {
    return 0;
  }
  if (!client_name.empty()) {
    auto it = by_client_name_.find(client_name);
    if (it != by_client_name_.end()) {
      return it->second;
    }
  }

  uint8_t address[16];
  Family family = parse_address(peer_address(peer), address);
  if (family == Family::None) {
    return std::nullopt;
  }
  const std::vector<Network> &networks = family == Family::Ipv4 ? ipv4_ : ipv6_;
  for (const Network &network : networks) {
    if (contains(network, address)) {
      return network.cluster;
    }
  }
  return std::nullopt;
}

bool ClusterMap::contains(const Network &network, const uint8_t *address) {
  unsigned whole_bytes = network.prefix_length / 8;
  if (std::memcmp(network.address.data(), address, whole_bytes) != 0) {
    return false;
  }
  unsigned rest_bits = network.prefix_length % 8;
  if (rest_bits == 0) {
    return true;
  }
  auto mask = static_cast<uint8_t>(0xff << (8 - rest_bits));
  return (network.address[whole_bytes] & mask) == (address[whole_bytes] & mask);
}

} // namespace gatecache::scheduler
