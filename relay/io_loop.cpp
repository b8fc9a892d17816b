// An I/O thread's wait: a short busy poll while a lone session is open (io_loop.hpp).
#include "relay/io_loop.hpp"

namespace mailtap {

void run_io_context(boost::asio::io_context& context, const std::atomic<std::uint64_t>& sessions_open,
                    std::chrono::microseconds busy_poll) {
  if (busy_poll.count() <= 0) {
    context.run();
    return;
  }
  using clock = std::chrono::steady_clock;
  auto last_work = clock::now();
  while (!context.stopped()) {
    if (context.poll() != 0) {
      last_work = clock::now();
      continue;
    }
    if (context.stopped()) break;
    if (sessions_open.load(std::memory_order_relaxed) == 1 && clock::now() - last_work < busy_poll) continue;
    // Sleep until one handler has run (run_one returns 0 once stopped or out of work).
    if (context.run_one() == 0) break;
    last_work = clock::now();
  }
}

}  // namespace mailtap
