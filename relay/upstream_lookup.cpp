// Upstream name lookups on worker threads, with a deadline (upstream_lookup.hpp).
#include "relay/upstream_lookup.hpp"

#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace mailtap {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// One session waiting for a name. Everything in it but `ex` is guarded by shared_state::mutex.
struct waiter {
  asio::any_io_executor ex;
  asio::steady_timer* wake = nullptr;   // the waiting coroutine's timer while it waits, on ex's thread
  bool gone = false;                    // stopped waiting (deadline, cancelled, its io_context destroyed)
  bool done = false;
  lookup_result result;
};

// One lookup of host:port, shared by every session that asked for it while it was queued or
// running.
struct job {
  std::string host;
  std::uint16_t port = 0;
  std::string key;
  std::vector<std::shared_ptr<waiter>> waiters;
  bool anyone_waiting() const {
    for (const auto& w : waiters)
      if (!w->gone) return true;
    return false;
  }
};

}  // namespace

struct name_lookups::shared_state {
  std::mutex mutex;
  name_lookups::resolve_fn resolve;
  std::size_t max_threads = 1;
  std::size_t running = 0;                                   // worker threads alive
  std::map<std::string, std::shared_ptr<job>> in_flight;    // by key, queued or running
  std::deque<std::shared_ptr<job>> queued;
  bool closed = false;                                       // the name_lookups is gone: post nothing
  std::uint64_t started = 0;
};

namespace {

// Hands the answer to every session still waiting for it; under s->mutex.
void answer(const std::shared_ptr<name_lookups::shared_state>& s, job& j, const lookup_result& r) {
  for (auto& w : j.waiters) {
    if (w->gone || s->closed) continue;
    w->done = true;
    w->result = r;
    asio::post(w->ex, [w, s] {
      std::lock_guard lock(s->mutex);
      if (w->wake) w->wake->cancel();
    });
  }
}

// A worker: runs its job, then queued ones, and ends when none is left. It owns a reference
// to the shared state, so it may outlive the name_lookups (closed then: it posts nothing).
void work(std::shared_ptr<name_lookups::shared_state> s, std::shared_ptr<job> j) {
  for (;;) {
    lookup_result r = s->resolve(j->host, j->port);
    std::lock_guard lock(s->mutex);
    s->in_flight.erase(j->key);
    answer(s, *j, r);
    j.reset();
    while (!s->closed && !s->queued.empty()) {
      auto next = std::move(s->queued.front());
      s->queued.pop_front();
      if (next->anyone_waiting()) {
        j = std::move(next);
        break;
      }
      s->in_flight.erase(next->key);   // every session asking for it gave up while it was queued
    }
    if (!j) {
      --s->running;
      return;
    }
    ++s->started;
  }
}

}  // namespace

name_lookups::name_lookups(std::size_t max_threads, resolve_fn resolve) : state_(std::make_shared<shared_state>()) {
  state_->resolve = std::move(resolve);
  state_->max_threads = max_threads == 0 ? 1 : max_threads;
}

name_lookups::~name_lookups() {
  std::lock_guard lock(state_->mutex);
  state_->closed = true;
  state_->queued.clear();
}

std::uint64_t name_lookups::started() const {
  std::lock_guard lock(state_->mutex);
  return state_->started;
}

asio::awaitable<lookup_result> name_lookups::lookup(asio::any_io_executor ex, std::string host, std::uint16_t port,
                                                    clock::time_point deadline) {
  asio::steady_timer wake(ex, deadline);
  auto me = std::make_shared<waiter>();
  me->ex = ex;
  me->wake = &wake;
  {
    std::lock_guard lock(state_->mutex);
    const std::string key = host + "\n" + std::to_string(port);
    auto& j = state_->in_flight[key];
    if (!j) {
      j = std::make_shared<job>();
      j->host = std::move(host);
      j->port = port;
      j->key = key;
      j->waiters.push_back(me);
      if (state_->running < state_->max_threads) {
        try {
          std::thread(work, state_, j).detach();
          ++state_->running;
          ++state_->started;
        } catch (const std::system_error& e) {
          state_->in_flight.erase(key);
          co_return lookup_result{{}, std::string("cannot start a lookup thread: ") + e.what(), false};
        }
      } else {
        state_->queued.push_back(j);
      }
    } else {
      j->waiters.push_back(me);
    }
  }
  // However this coroutine ends (answered, deadline, cancelled, or its frame destroyed with its
  // io_context), its waiter is gone before the timer is: nothing is posted for it afterwards.
  struct leave {
    shared_state& s;
    waiter& w;
    ~leave() {
      std::lock_guard lock(s.mutex);
      w.gone = true;
      w.wake = nullptr;
    }
  } guard{*state_, *me};
  auto [ec] = co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
  std::lock_guard lock(state_->mutex);
  if (me->done) co_return std::move(me->result);
  if (!ec) co_return lookup_result{{}, "no answer in time", true};
  co_return lookup_result{{}, "cancelled", false};
}

lookup_result name_lookups::system_resolve(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found);
  lookup_result r;
  if (rc != 0) {
    r.error = rc == EAI_SYSTEM ? std::string(std::strerror(errno)) : std::string(::gai_strerror(rc));
    return r;
  }
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    tcp::endpoint ep;
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    if (a->ai_addrlen > ep.capacity()) continue;
    std::memcpy(ep.data(), a->ai_addr, a->ai_addrlen);
    ep.resize(a->ai_addrlen);
    r.addresses.push_back(ep);
  }
  ::freeaddrinfo(found);
  return r;
}

}  // namespace mailtap
