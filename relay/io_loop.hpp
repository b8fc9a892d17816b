// How an I/O thread waits for work. Sleeping in epoll_wait(2) and being woken costs a round
// trip through the scheduler, and on a virtual machine through the host: tens of µs each time
// (README "Performance"). A lone session's conversation is a chain of such wake-ups, one per
// packet on each leg, so the relay added that much to every round trip it timed. While exactly
// one session is open, a thread that has just run a handler polls (epoll_wait with no timeout)
// for up to `busy_poll` before it sleeps; with no session, or with several (when the cores have
// other work to do and spinning would take time from the peers), it sleeps at once, as
// io_context::run() does. haproxy's `busy-polling` option answers the same cost, for every
// wait. busy_poll zero: always io_context::run().
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>

#include <boost/asio/io_context.hpp>

namespace mailtap {

// Runs `context` until it is stopped or out of work, polling as above while `sessions_open`
// reads 1.
void run_io_context(boost::asio::io_context& context, const std::atomic<std::uint64_t>& sessions_open,
                    std::chrono::microseconds busy_poll);

}  // namespace mailtap
