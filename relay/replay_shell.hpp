// The network shell of `mailtap replay`: drives replay/'s sans-I/O machines over Asio, the
// way relay/sink_server.cpp drives the sink (one leg_stream per connection, the machine's
// actions dispatched with std::visit). The server accepts live clients on one listener and
// plays a script to each; the client connects to a target and re-drives scripts, several at
// a time. TLS comes from relay/tls_context.hpp: the server presents the relay's certificate
// (the generated self-signed pair, or --tls-cert/--tls-key); the client does not verify the
// target's (a replay reproduces a conversation, it does not judge trust).
// Threading: everything runs on one io_context on the calling thread.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "relay/config.hpp"
#include "replay/client_fsm.hpp"
#include "replay/report.hpp"
#include "replay/script.hpp"
#include "replay/server_fsm.hpp"

namespace mailtap {

struct replay_server_options {
  endpoint listen;
  replay::timing pace;
  replay::server_options server;                 // what counts as a divergence (--compare-message)
  std::size_t sessions = 1;                      // sessions to serve, then exit; 0: until SIGINT/SIGTERM
  std::filesystem::path cert_file, key_file;     // empty: the generated pair in state_dir
  std::filesystem::path state_dir;
};

// Serves `s` until `o.sessions` sessions have ended (or a signal). `ready` is called once
// with the bound address ("127.0.0.1:PORT"), `session_done` with each session's report as it
// ends. False and a one-line `error` when it cannot listen or load its certificate.
bool run_replay_server(const replay::script& s, const replay_server_options& o,
                       const std::function<void(const std::string&)>& ready,
                       const std::function<void(const replay::server_session&)>& session_done, std::string& error);

struct replay_client_options {
  endpoint target;
  replay::client_options client;
  std::size_t jobs = 1;                          // captures replayed at once
  // --tls-on-connect: TLS from connect (true) or not (false) whatever the capture says; unset:
  // as recorded (script::implicit_tls).
  std::optional<bool> tls_on_connect;
};

// Replays every capture against the target, at most `o.jobs` at once; one run per path, in
// the order given. A capture that cannot be read is an unreadable run (its one-line error).
std::vector<replay::client_run> run_replay_clients(const std::vector<std::filesystem::path>& captures,
                                                   const replay_client_options& o);

}  // namespace mailtap
