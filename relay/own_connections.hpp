// mailtap's own upstream connections, so that one that comes back to a listener is
// recognised: a firewall REDIRECT that also catches mailtap's own traffic (an `output` chain
// without `meta skuid != mailtap`, README "Transparent interception") sends each upstream
// connection back to mailtap, which would relay it again, and again, until max_sessions is
// taken. The listener answers such a connection 421 4.4.6 instead (server::admit).
//
// A connection is known by both ends: the local endpoint it left from (the accepted one's
// peer) and the destination it dialled (the accepted one's original destination, read from
// connection tracking). The local endpoint alone is not enough: connect(2) gives the same
// source port to connections to different destinations, so a client of mailtap's listener may
// well have the port an upstream connection has.
// Threading: any thread (a mutex); sessions add and remove, the acceptors ask.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <map>
#include <mutex>

namespace mailtap {

class own_connections {
 public:
  using endpoint = boost::asio::ip::tcp::endpoint;
  // An IPv4-mapped IPv6 address counts as its IPv4 address (a dual-stack listener sees an
  // IPv4 peer so), everywhere.
  void add(const endpoint& local, const endpoint& dialled);
  void remove(const endpoint& local);
  // Whether one of ours left from `peer` (whatever it dialled).
  bool left_from(const endpoint& peer) const;
  // Whether an accepted connection from `peer`, redirected from `original_destination`, is one
  // of ours.
  bool is_ours(const endpoint& peer, const endpoint& original_destination) const;

 private:
  mutable std::mutex mutex_;
  std::map<endpoint, endpoint> dialled_from_;   // local endpoint -> destination
};

}  // namespace mailtap
