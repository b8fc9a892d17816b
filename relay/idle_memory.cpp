// Idle release of the heap's free pages (idle_memory.hpp).
#include "relay/idle_memory.hpp"

#include <malloc.h>

#include <memory>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

namespace mailtap {

void idle_memory::on_idle() {
  if (armed_.exchange(true)) return;
  boost::asio::post(context_, [this] {
    auto timer = std::make_shared<boost::asio::steady_timer>(context_, settle_);
    timer->async_wait([this, timer](const boost::system::error_code& ec) {
      // Disarmed first: a session that ends from here on arms the next release.
      armed_.store(false);
      if (!ec) release_if_still_idle();
    });
  });
}

void idle_memory::release_if_still_idle() {
  if (!idle_()) return;
  // Returns every whole free page of every arena to the kernel (madvise), not only the top of
  // the main heap; nothing that is in use moves.
  ::malloc_trim(0);
  ++releases_;
}

}  // namespace mailtap
