// How an I/O thread waits for work. Sleeping in epoll_wait(2) and being woken costs a round
// trip through the scheduler, and on a virtual machine through the host: tens of µs each time
// (README "Performance"). A lone session's conversation is a chain of such wake-ups, one per
// packet on each leg, so the relay added that much to every round trip it timed. While exactly
// one session is open, a thread that has just run a handler polls (epoll_wait with a zero
// timeout) for up to `busy_poll` before it sleeps. That costs CPU: a lone session whose peers
// keep its thread busy at intervals under `busy_poll` (a message body streaming in, a client
// sending a byte every 100 µs) keeps one core busy until it ends or a second session opens.
// With no session, or with several (when the cores have other work to do and polling would
// take time from the peers), a thread sleeps as soon as it has nothing to run. haproxy's
// `busy-polling` option answers the same cost, for every wait. busy_poll zero: io_context::run().
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>

#include <boost/asio/io_context.hpp>

namespace mailtap {

// Whether a thread whose last handler ran `since_work` ago polls rather than sleeps.
bool keeps_polling(std::uint64_t sessions_open, std::chrono::steady_clock::duration since_work,
                   std::chrono::microseconds busy_poll);

// Runs `context` until it is stopped or out of work, polling as above while `sessions_open`
// reads 1. Between handlers it goes straight to the blocking wait when it does not poll.
void run_io_context(boost::asio::io_context& context, const std::atomic<std::uint64_t>& sessions_open,
                    std::chrono::microseconds busy_poll);

}  // namespace mailtap
