// Name lookups of upstream hosts, each with a deadline. glibc's getaddrinfo(3) cannot be
// cancelled and, behind a nameserver that does not answer, takes its own time (resolv.conf's
// timeout × attempts per server: 10 s and more). Asio's resolver runs every lookup of an
// io_context on one helper thread, one after another, and a session could not give up on it:
// six sessions behind a silent nameserver got their 421 after 5, 5, 10, 10, 15 and 15 s, and a
// SIGTERM waited for glibc. Here each lookup runs on a worker thread of its own (at most
// max_threads at once, the rest queued), sessions that ask for the same name while it is being
// looked up share that one lookup, and a session stops waiting at its deadline or when it ends;
// an answer nobody waits for any more is dropped.
// Threading: lookup() runs on the caller's executor (a session's io_context thread); workers
// are detached threads that only ever post to an executor whose waiter is still there, and
// never after the name_lookups is destroyed (the server destroys it before its io_contexts).
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mailtap {

struct lookup_result {
  std::vector<boost::asio::ip::tcp::endpoint> addresses;   // in the order getaddrinfo gave them
  std::string error;                                       // empty: found (addresses may still be empty)
  bool timed_out = false;                                  // the deadline came first
};

class name_lookups {
 public:
  using clock = std::chrono::steady_clock;
  // Looks a name up, blocking: getaddrinfo by default (system_resolve); tests give a slow one.
  using resolve_fn = std::function<lookup_result(const std::string& host, std::uint16_t port)>;

  explicit name_lookups(std::size_t max_threads = 4, resolve_fn resolve = system_resolve);
  // Answers still to come are dropped; a worker still inside getaddrinfo ends on its own.
  ~name_lookups();
  name_lookups(const name_lookups&) = delete;
  name_lookups& operator=(const name_lookups&) = delete;

  // host:port's addresses, on `ex`; timed_out once `deadline` passes first. Cancelling the
  // awaiting operation (awaitable_operators' ||: the session ended) stops the wait at once,
  // and the result is then an error "cancelled".
  boost::asio::awaitable<lookup_result> lookup(boost::asio::any_io_executor ex, std::string host, std::uint16_t port,
                                               clock::time_point deadline);

  // getaddrinfo(3), stream sockets, any family, AI_ADDRCONFIG (as Asio's resolver asks).
  static lookup_result system_resolve(const std::string& host, std::uint16_t port);

  // Lookups started on a worker so far (a name several sessions asked for at once counts once).
  std::uint64_t started() const;

  struct shared_state;

 private:
  std::shared_ptr<shared_state> state_;
};

}  // namespace mailtap
