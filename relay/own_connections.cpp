// Recognising mailtap's own upstream connections at its listeners (own_connections.hpp).
#include "relay/own_connections.hpp"

namespace mailtap {

namespace {
own_connections::endpoint canonical(const own_connections::endpoint& e) {
  const auto a = e.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return {boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6()), e.port()};
  return e;
}
}  // namespace

void own_connections::add(const endpoint& local, const endpoint& dialled) {
  std::lock_guard lock(mutex_);
  dialled_from_[canonical(local)] = canonical(dialled);
}

void own_connections::remove(const endpoint& local) {
  std::lock_guard lock(mutex_);
  dialled_from_.erase(canonical(local));
}

bool own_connections::left_from(const endpoint& peer) const {
  std::lock_guard lock(mutex_);
  return dialled_from_.contains(canonical(peer));
}

bool own_connections::is_ours(const endpoint& peer, const endpoint& original_destination) const {
  std::lock_guard lock(mutex_);
  const auto it = dialled_from_.find(canonical(peer));
  return it != dialled_from_.end() && it->second == canonical(original_destination);
}

}  // namespace mailtap
