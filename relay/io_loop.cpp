// An I/O thread's wait: a short busy poll while a lone session is open (io_loop.hpp).
#include "relay/io_loop.hpp"

namespace mailtap {

bool keeps_polling(std::uint64_t sessions_open, std::chrono::steady_clock::duration since_work,
                   std::chrono::microseconds busy_poll) {
  return sessions_open == 1 && since_work < busy_poll;
}

void run_io_context(boost::asio::io_context& context, const std::atomic<std::uint64_t>& sessions_open,
                    std::chrono::microseconds busy_poll) {
  if (busy_poll.count() <= 0) {
    context.run();
    return;
  }
  using clock = std::chrono::steady_clock;
  auto last_work = clock::now();
  while (!context.stopped()) {
    if (keeps_polling(sessions_open.load(std::memory_order_relaxed), clock::now() - last_work, busy_poll)) {
      if (context.poll() != 0) last_work = clock::now();
      continue;
    }
    // Sleeps until a handler has run (0: stopped, or out of work).
    if (context.run_one() == 0) break;
    last_work = clock::now();
  }
}

}  // namespace mailtap
