// The accept loop with backoff (accept_loop.hpp).
#include "relay/accept_loop.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace mailtap {

namespace asio = boost::asio;

asio::awaitable<void> accept_loop(asio::ip::tcp::acceptor& acceptor, accept_handlers handlers) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(handlers.context_for_next(), asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      handlers.failed(ec);
      asio::steady_timer backoff(acceptor.get_executor(), accept_backoff);
      co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    handlers.serve(std::move(socket));
  }
}

}  // namespace mailtap
